"""Evaluate one configuration end to end: load, quantize, transcribe, score, save.

Bad input (unknown model, missing split, bad data dir) raises at once.  A
failure inside quantization or decoding is recorded as a ``failed`` result
with its error, so a sweep goes on.  Only utterances a stored result does not
cover are decoded (incremental when the data grow).
"""
from __future__ import annotations

import json
import logging
import resource
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from .checks import check_run
from .locks import configuration_lock, held_elsewhere
from .config import ConfigError, RunConfig
from .data import (DataError, calibration_for, coverage, describe_data, jfk_path, load_audio, load_split,
                   resolve_data_dir, speaker_fold, speaker_of)
from .metrics import serialized_bytes, stored_bytes
from .noise import noisy_utterances
from .paths import portable
from .results import RESULTS_DIR, ResultStore
from .machine import environment
from .scoring import metrics_by_split
from .transcribe import decoding_recipe, transcribe

log = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def encoder_output(model, processor, audio):
    import torch

    from .transcribe import features

    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)  # a runtime: none
    with torch.no_grad():
        return model.get_encoder()(features(processor, [audio]).to(dtype)).last_hidden_state.float()


def cosine(a, b) -> float:
    import torch

    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def checkpoint_key(config: RunConfig, split: str, utterances, summary: dict[str, Any]) -> dict[str, Any]:
    """What saved batches of ``split`` are valid for: the same run, utterances, model, library versions and decoding."""
    return {"slug": config.slug, "config": config.to_dict(), "split": split, "ids": [u.id for u in utterances],
            "model": summary.get("model"), "packages": summary["environment"]["packages"],
            "decoding": summary["decoding"]}


@dataclass
class Plan:
    """What a run of ``config`` has to do today (the driver's half of :func:`evaluate`, shared with
    :mod:`lib.cluster`): the data's identity, today's utterances, the stored lines still valid (``kept``) and the
    utterances left to decode (``todo``, per split in id order). ``reuse`` is a stored result returned as it is
    (failed or outdated, not retried or refreshed). For a run with ``config.noise``, the utterances hold the
    noisy audio (mixed here, the one place a run's audio is loaded) and keep the clean files' hashes, so
    stored rows are matched as for clean runs."""

    config: RunConfig
    data_info: dict[str, Any]
    utterances: dict[str, list]
    today: dict[str, dict[str, str | None]]
    stored: dict[str, Any] | None
    kept: dict[tuple[str, str], str]
    todo: dict[str, list]
    reuse: dict[str, Any] | None = None
    noise: dict[str, Any] | None = None  # lib.noise.noise_record of a noisy run (its utterances hold noisy audio)
    others: dict[tuple[str, str], str] = field(default_factory=dict)  # stored lines of ids today's data lacks
    others_coverage: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def decodes(self) -> bool:
        """Whether anything is decoded: no usable stored result, or utterances it does not cover."""
        return self.reuse is None and (self.stored is None or any(self.todo.values()))


def plan_run(config: RunConfig, data: str | None, store: ResultStore, force: bool = False,
             retry_failed: bool = False, refresh_outdated: bool = False) -> Plan:
    """Read and check the data first, then the stored result; say what is left to decode (see :class:`Plan`)."""
    check_run(config)  # backend support and model source: a bad spec fails before any data or model work
    data_info = describe_data(data)  # a bad data path fails here, before any cache lookup or model work
    utterances, noise = noisy_utterances({s: load_split(s, config.limit, data) for s in config.split},
                                         config.noise, data)
    today = coverage(utterances)
    if force:
        store.discard_checkpoints(config.slug)
    stored = None if force else store.load_or_none(config.slug)
    kept: dict[tuple[str, str], str] = {}  # (split, id) -> the stored JSONL line, kept byte for byte
    others: dict[tuple[str, str], str] = {}
    others_coverage: dict[str, dict[str, Any]] = {}
    reuse = None
    if stored is not None:
        state = store.state(config.slug)
        if (state == "failed" and not retry_failed) or (state == "outdated" and not refresh_outdated):
            reuse = stored
        elif state == "ok":
            root = None if data == "hub" else resolve_data_dir(data)
            references = {(s, u.id): u.reference for s, utts in utterances.items() for u in utts}
            kept, others, others_coverage = store.sorted_lines(config.slug, stored, today, root, references)
    todo = {s: [u for u in utts if (s, u.id) not in kept] for s, utts in utterances.items()}
    return Plan(config, data_info, utterances, today, stored, kept, todo, reuse, noise, others, others_coverage)


def new_summary(config: RunConfig, data_info: dict[str, Any], env: dict[str, Any] | None = None,
                noise: dict[str, Any] | None = None) -> dict[str, Any]:
    """The head of a run's summary: what ran, on which data, where (``env``: this machine unless given), and
    the noise mixed in (``noise``, :func:`lib.noise.noise_record`; only for a noisy run)."""
    return {"slug": config.slug, "config": config.to_dict(),
            "decoding": decoding_recipe(config.batch_size, config.threads, config.max_new_tokens),
            "data": data_info, **({"noise": noise} if noise else {}),
            "environment": environment(config.threads) if env is None else env,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def prior_sessions(plan: Plan) -> list[dict[str, Any]]:
    """The decoding sessions of the stored rows this run keeps (none when it starts afresh)."""
    return list(plan.stored.get("sessions") or [session_record(plan.stored)]) if plan.kept and plan.stored else []


@dataclass
class Stage:
    """How far a run got (``load``, ``quantize``, ``transcribe``): a failure records it."""

    name: str = "load"


def load_quantized(config: RunConfig, data: str | None, facts: dict[str, Any], stage: Stage, fold: int | None = None):
    """Load and quantize ``config``'s model; returns ``(model, processor)`` and fills ``facts`` as it goes with
    ``model`` (its source), ``quantization``, ``size`` and ``encoder_cosine_jfk`` (when the JFK clip exists).
    ``fold``: with cross-speaker calibration, the speaker fold the model will score (:func:`lib.data.calibration_for`)."""
    from .models import load_model
    from .quantize import quantize

    loaded = load_model(config.model)
    facts["model"] = loaded.source
    fp32_bytes = stored_bytes(loaded.model)
    jfk = jfk_path()
    jfk_audio = load_audio(jfk) if jfk else None
    reference_encoding = encoder_output(loaded.model, loaded.processor, jfk_audio) if jfk else None
    stage.name = "quantize"
    calibration = calibration_for(config.quant, data, fold)
    model, meta = quantize(loaded.model, config.quant, calibration=calibration, processor=loaded.processor)
    if config.quant.calibration_folds:
        meta = {**meta, "calibration_ids": [u.id for u in calibration], "fold": fold}
    facts["quantization"] = meta
    size = stored_bytes(model)
    facts["size"] = {"stored_bytes": size, "fp32_stored_bytes": fp32_bytes,
                     "compression_pct": 100.0 * (1 - size / fp32_bytes), "serialized": serialized_bytes(model)}
    if reference_encoding is not None and getattr(model.get_encoder(), "exposes_output", True):
        facts["encoder_cosine_jfk"] = cosine(reference_encoding, encoder_output(model, loaded.processor, jfk_audio))
    return model, loaded.processor


def complete_summary(summary: dict[str, Any], plan: Plan, sessions: list[dict[str, Any]],
                     new_rows: list[dict[str, Any]], timings: dict[str, dict[str, Any]],
                     session_extra: dict[str, Any] | None = None) -> list[str]:
    """Record this session, merge its rows with the kept lines and score them all; returns the JSONL lines.

    ``summary`` is completed in place (``metrics``, ``harness``, ``sessions``, ``coverage``, ``status: ok``).
    """
    harness = {"total_seconds": 0.0, "model_seconds": 0.0}
    for timing in timings.values():
        for k in harness:
            harness[k] += timing[k]
    sessions.append({"started": summary["started"], "environment": summary["environment"],
                     "decoded": {s: len(u) for s, u in plan.todo.items()}, "timing": timings,
                     "harness": {**harness, "overhead_share": 1 - harness["model_seconds"] / harness["total_seconds"]
                                 if harness["total_seconds"] else None}, **(session_extra or {})})
    lines = merged_lines(plan.utterances, plan.kept, new_rows)
    rows_all = [json.loads(line) for line in lines]
    summary["metrics"] = metrics_by_split(rows_all, plan.config.split)
    for split, timing in timings.items():  # this session's timing of the split it decoded
        summary["metrics"][split]["timing"] = timing
    summary["harness"] = sessions[-1]["harness"]
    summary["sessions"] = sessions
    summary["coverage"] = plan.today
    if plan.others:  # rows of utterances today's data lacks: kept, never dropped (scored when that data is back)
        lines = lines + sorted(plan.others.values(), key=lambda x: (json.loads(x)["split"], json.loads(x)["id"]))
        summary["metrics"] = metrics_by_split([json.loads(line) for line in lines], plan.config.split)
        for split, timing in timings.items():
            summary["metrics"][split]["timing"] = timing
        summary["coverage"] = {s: {**plan.others_coverage.get(s, {}), **plan.today.get(s, {})}
                               for s in {*plan.today, *plan.others_coverage}}
    return lines


def record_failure(summary: dict[str, Any], stage: str, exc: BaseException | None = None,
                   error: str | None = None, trace: str | None = None) -> None:
    """Mark ``summary`` failed at ``stage`` with its error (from ``exc``, or ``error``/``trace`` as given)."""
    summary.update(status="failed", failed_stage=stage,
                   error=portable(error or f"{type(exc).__name__}: {exc}")[:2000],
                   traceback=portable(trace or traceback.format_exc())[-4000:])
    if getattr(exc, "outcome", None):  # e.g. lib.runtimes.NotOffered: what this CPU offers, not a bug
        summary["outcome"] = exc.outcome


def save_result(store: ResultStore, summary: dict[str, Any], lines: list[str] | None, keeps_rows: bool) -> bool:
    """Save a finished run; a failure is not saved over finished rows (``keeps_rows``). Returns whether saved."""
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if summary["status"] == "failed" and keeps_rows:  # a failure never replaces finished rows
        return False
    store.save_lines(summary["slug"], summary, lines)
    if summary["status"] == "ok":
        store.discard_checkpoints(summary["slug"])
    return True


def evaluate(config: RunConfig, *, data: str | None = None, results_dir=RESULTS_DIR, force: bool = False,
             progress: bool = True, store: ResultStore | None = None, retry_failed: bool = False,
             refresh_outdated: bool = False, fidelity: bool = True) -> dict[str, Any]:
    """Decode whatever of ``config``'s utterances its stored result does not cover yet; return the summary.

    The data are read and checked first, so a bad data path fails before any cache lookup. A stored row counts
    only for the same utterance with the same audio (:func:`lib.results.stored_coverage`); when the data grow,
    only the new utterances are decoded and merged, and the rows already there are kept byte for byte. It runs
    everything again with ``force``, with ``retry_failed`` if it failed, and with ``refresh_outdated`` if it
    was decoded with an older recipe. With ``fidelity``, the teacher-forced fidelity pass
    (:mod:`lib.fidelity`) runs after decoding on the same quantized model, where the fp32 reference exists.
    The cluster executor (:mod:`lib.cluster`) shares its pieces: :func:`plan_run`, :func:`load_quantized`,
    :func:`complete_summary`, :func:`save_result`.
    """
    store = store or ResultStore(results_dir)
    plan = plan_run(config, data, store, force, retry_failed, refresh_outdated)
    if plan.reuse is None and plan.decodes:
        with configuration_lock(store.root, config.slug) as mine:
            if not mine:
                raise ConfigurationBusy(f"{config.slug} is being decoded by another process (pid "
                                        f"{held_elsewhere(store.root, config.slug) or '?'}); wait for it to finish "
                                        "or stop it, then run again")
            plan = plan_run(config, data, store, force, retry_failed, refresh_outdated)  # it may have finished
            return _evaluate(config, plan, store, data, progress, refresh_outdated, fidelity)
    return _evaluate(config, plan, store, data, progress, refresh_outdated, fidelity)


class ConfigurationBusy(ConfigError):
    """Another process holds the configuration's lock (:mod:`lib.locks`): nothing is decoded or recorded."""


def _evaluate(config: RunConfig, plan: Plan, store: ResultStore, data: str | None, progress: bool,
              refresh_outdated: bool, fidelity: bool) -> dict[str, Any]:
    """:func:`evaluate` once the plan is made (under the configuration's lock when it decodes)."""
    if plan.reuse is not None:
        return speed_for(plan.reuse, config)
    stored, kept, today, todo = plan.stored, plan.kept, plan.today, plan.todo
    if not plan.decodes:
        if fidelity and stored.get("status") == "ok":
            update_fidelity(config, store, data, progress=progress)
        if stored_matches(stored, today):
            return speed_for(stored, config)
        if len(kept) == len(store.load_rows(config.slug)):  # a result from before coverage was recorded
            stored = {**stored, "coverage": today, "metrics": metrics_by_split(
                [json.loads(line) for line in kept.values()], config.split)}
            store.save(config.slug, stored)
            return speed_for(stored, config)
        return speed_for(restricted_summary(stored, store, config, kept, today), config)
    refreshing = refresh_outdated and store.archive_outdated(config.slug) is not None
    summary = new_summary(config, plan.data_info, noise=plan.noise)
    sessions = prior_sessions(plan)
    stage = Stage()
    try:
        import torch

        torch.set_num_threads(config.threads)
        new_rows, timings, models = [], {}, {}
        if config.quant.calibration_folds and plan.kept:  # a resumed cross-fitted run keeps its folds' records
            summary["folds"] = dict((plan.stored or {}).get("folds") or {})
        for fold, fold_todo in fold_groups(config, todo).items():
            model, processor = load_quantized(config, data, summary, stage, fold)
            if fold is not None:
                summary.setdefault("folds", {})[str(fold)] = fold_record(config, summary.pop("quantization"), fold_todo)
                models[fold] = model
            stage.name = "transcribe"
            for split, utts in fold_todo.items():
                if not utts:
                    continue
                part = split if fold is None else f"{split}.fold{fold}"
                checkpoint = store.checkpoint(config.slug, part, checkpoint_key(config, part, utts, summary))
                rows, timing = transcribe(model, processor, utts, config.batch_size, config.threads,
                                          progress=progress, desc=f"{config.quant.slug} {part}",
                                          max_new_tokens=config.max_new_tokens, checkpoint=checkpoint)
                new_rows += [{**r, "session": len(sessions), **({"fold": fold} if fold is not None else {})}
                             for r in rows]
                timings[split] = add_timing(timings.get(split), timing)
        if models:
            summary["quantization"] = folds_quantization(summary["folds"])
            model = models
        lines = complete_summary(summary, plan, sessions, new_rows, timings)
        summary["peak_rss_mb"] = peak_rss_mb()
        summary["status"] = "ok"
    except (ConfigError, DataError):
        raise  # bad input: fail fast with its one-line fix, record nothing
    except Exception as exc:
        record_failure(summary, stage.name, exc)
        lines = None
    if not save_result(store, summary, lines, keeps_rows=refreshing or bool(kept)):
        return summary
    if summary["status"] == "ok" and fidelity:
        by_fold = isinstance(model, dict)
        update_fidelity(config, store, data, model=None if by_fold else model, fold_models=model if by_fold else None,
                        processor=processor, progress=progress)
    if summary["status"] == "ok" and plan.others:  # the file keeps rows today's data lacks: score today's only
        today_lines = {k: line for k, line in zip(((s, u.id) for s, utts in plan.utterances.items() for u in utts),
                                                   lines)}
        return restricted_summary(summary, store, config, today_lines, today)
    return summary


def fold_groups(config: RunConfig, todo: dict[str, list]) -> dict[int | None, dict[str, list]]:
    """The utterances to decode, per model: ``{None: todo}``, or with cross-speaker calibration one group per
    speaker fold (each decoded by the model calibrated on the other folds).

    >>> from lib.config import QuantSpec
    >>> fold_groups(RunConfig(), {"test-clean": []})
    {None: {'test-clean': []}}
    """
    folds = config.quant.calibration_folds
    if not folds:
        return {None: todo}
    groups = {f: {s: [u for u in utts if speaker_fold(u.id, folds) == f] for s, utts in todo.items()}
              for f in range(folds)}
    return {f: g for f, g in groups.items() if any(g.values())}


def fold_record(config: RunConfig, meta: dict[str, Any], todo: dict[str, list]) -> dict[str, Any]:
    """One fold's model: its quantization facts, calibration ids and the utterances it scores; raises if a
    calibration speaker is among them (the point of cross-fitting)."""
    scored = {speaker_of(u.id) for utts in todo.values() for u in utts}
    heard = {speaker_of(i) for i in meta["calibration_ids"]}
    if scored & heard:
        raise RuntimeError(f"cross-speaker calibration of fold {meta['fold']} heard speakers it scores: "
                           f"{sorted(scored & heard)[:3]}")
    return {"quantization": meta, "calibration_speakers": len(heard), "scored_speakers": len(scored),
            "scored": {s: len(u) for s, u in todo.items()}}


def folds_quantization(folds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The result's ``quantization`` record for a cross-fitted run: the first fold's, without its calibration
    ids (each fold's record, ids included, is under ``folds``), and each fold's quantization seconds."""
    first = dict(next(iter(folds.values()))["quantization"])
    first.pop("calibration_ids", None)
    first.pop("fold", None)
    first["fold_seconds"] = {k: f["quantization"].get("seconds") for k, f in folds.items()}
    return first


def add_timing(total: dict[str, Any] | None, timing: dict[str, Any]) -> dict[str, Any]:
    """Two timings of one split (two folds' models) as one: seconds and batch counts add up."""
    if total is None:
        return dict(timing)
    return {k: (total.get(k, 0) + v if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
            for k, v in timing.items()}


SPEED_FIELDS = ("rtfx", "wall_seconds", "cpu_seconds", "encoder_seconds", "batch_wall_seconds", "timing")


def speed_settings(summary: dict[str, Any]) -> dict[str, Any]:
    """The settings a stored result's speed was measured under, e.g. ``{'threads': 2, 'batch_size': 8}``."""
    decoding = summary.get("decoding") or {}
    config = summary.get("config") or {}
    return {k: decoding.get(k, config.get(k)) for k in ("threads", "batch_size")}


def speed_for(summary: dict[str, Any], config: RunConfig) -> dict[str, Any]:
    """A stored result as the answer to ``config``: its WER stands (transcripts do not depend on threads or
    batch size), but a speed measured under other settings is not this run's: its speed fields are dropped and
    ``speed_note`` says where they were measured.

    >>> s = {"status": "ok", "decoding": {"threads": 2, "batch_size": 8}, "metrics": {"test-clean": {"wer": 5.0, "rtfx": 9.0}}}
    >>> out = speed_for(s, RunConfig(threads=1, batch_size=1))
    >>> out["metrics"]["test-clean"], out["speed_note"]
    ({'wer': 5.0}, 'speed not shown: the stored result was timed at threads=2, batch_size=8 (asked: threads=1, batch_size=1); pass --force to time it here')
    """
    measured = speed_settings(summary)
    asked = {"threads": config.threads, "batch_size": config.batch_size}
    if summary.get("status") != "ok" or measured == asked or None in measured.values():
        return summary
    def text(d):
        return ", ".join(f"{k}={v}" for k, v in d.items())

    metrics = {split: {k: v for k, v in m.items() if k not in SPEED_FIELDS}
               for split, m in (summary.get("metrics") or {}).items()}
    return {**summary, "metrics": metrics, "speed_measured_at": measured,
            "speed_note": f"speed not shown: the stored result was timed at {text(measured)} "
                          f"(asked: {text(asked)}); pass --force to time it here"}


def session_record(summary: dict[str, Any]) -> dict[str, Any]:
    """The decoding session of a result recorded before sessions were: its environment and timing."""
    return {"started": summary.get("started"), "environment": summary.get("environment"),
            "decoded": {s: m.get("utterances") for s, m in (summary.get("metrics") or {}).items()},
            "timing": {s: m.get("timing") for s, m in (summary.get("metrics") or {}).items()},
            "harness": summary.get("harness")}


def merged_lines(utterances: dict[str, list], kept: dict[tuple[str, str], str], new_rows: list[dict[str, Any]]
                 ) -> list[str]:
    """JSONL lines in today's utterance order: stored lines unchanged, new rows serialized."""
    new = {(r["split"], r["id"]): json.dumps(r) for r in new_rows}
    return [kept.get((s, u.id)) or new[(s, u.id)] for s, utts in utterances.items() for u in utts]


def stored_matches(stored: dict[str, Any], today: dict[str, dict[str, str | None]]) -> bool:
    return stored.get("coverage") == today


def restricted_summary(stored: dict[str, Any], store: ResultStore, config: RunConfig,
                       kept: dict[tuple[str, str], str], today: dict[str, dict[str, str | None]]) -> dict[str, Any]:
    """A stored result that covers more than today's data, scored on today's utterances only (not saved)."""
    rows = [json.loads(line) for line in kept.values()]
    return {**stored, "metrics": metrics_by_split(rows, config.split), "coverage": today,
            "note": "scored on the utterances of today's data only; the stored result covers more"}


def update_fidelity(config: RunConfig, store: ResultStore, data: str | None, **kwargs: Any) -> None:
    """Run the fidelity pass where it is missing; a failure there is recorded by it and never fails the run.

    A noisy run has none: the pass forces fp32's transcript of the clean audio, which is not its reference."""
    from .fidelity import FidelityUnavailable, ensure_fidelity

    if config.noise is not None:
        log.info("fidelity skipped for %s: noisy audio (the fidelity reference is fp32 on clean audio)", config.slug)
        return

    try:
        ensure_fidelity(config, results_dir=store.root, data=data, **kwargs)
    except FidelityUnavailable as exc:
        log.info("fidelity skipped for %s: %s", config.slug, exc)
