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
from typing import Any

from .checks import check_run
from .config import ConfigError, RunConfig
from .data import (DataError, calibration_set, coverage, describe_data, jfk_path, load_audio, load_split,
                   resolve_data_dir)
from .metrics import serialized_bytes, stored_bytes
from .paths import portable
from .results import RESULTS_DIR, ResultStore, environment
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
    """
    store = store or ResultStore(results_dir)
    check_run(config)  # backend support and model source: a bad spec fails before any data or model work
    data_info = describe_data(data)  # a bad data path fails here, before any cache lookup or model work
    utterances = {s: load_split(s, config.limit, data) for s in config.split}
    today = coverage(utterances)
    if force:
        store.discard_checkpoints(config.slug)
    stored = None if force else store.load_or_none(config.slug)
    kept: dict[tuple[str, str], str] = {}  # (split, id) -> the stored JSONL line, kept byte for byte
    if stored is not None:
        state = store.state(config.slug)
        if state == "failed" and not retry_failed:
            return stored
        if state == "outdated" and not refresh_outdated:
            return stored
        if state == "ok":
            kept = store.valid_lines(config.slug, stored, today, None if data == "hub" else resolve_data_dir(data))
    todo = {s: [u for u in utts if (s, u.id) not in kept] for s, utts in utterances.items()}
    if stored is not None and not any(todo.values()):
        if fidelity and stored.get("status") == "ok":
            update_fidelity(config, store, data, progress=progress)
        if stored_matches(stored, today):
            return stored
        if len(kept) == len(store.load_rows(config.slug)):  # a result from before coverage was recorded
            stored = {**stored, "coverage": today, "metrics": metrics_by_split(
                [json.loads(line) for line in kept.values()], config.split)}
            store.save(config.slug, stored)
            return stored
        return restricted_summary(stored, store, config, kept, today)
    refreshing = refresh_outdated and store.archive_outdated(config.slug) is not None
    summary: dict[str, Any] = {"slug": config.slug, "config": config.to_dict(),
                               "decoding": decoding_recipe(config.batch_size, config.threads, config.max_new_tokens),
                               "data": data_info, "environment": environment(config.threads),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    sessions = (list(stored.get("sessions") or [session_record(stored)]) if kept and stored else [])
    stage = "load"
    try:
        import torch

        from .models import load_model
        from .quantize import quantize

        torch.set_num_threads(config.threads)
        loaded = load_model(config.model)
        summary["model"] = loaded.source
        fp32_bytes = stored_bytes(loaded.model)
        jfk = jfk_path()
        jfk_audio = load_audio(jfk) if jfk else None
        reference_encoding = encoder_output(loaded.model, loaded.processor, jfk_audio) if jfk else None
        stage = "quantize"
        calibration = calibration_set(config.quant.calibration, data) if config.quant.scheme == "static" else None
        model, meta = quantize(loaded.model, config.quant, calibration=calibration, processor=loaded.processor)
        summary["quantization"] = meta
        size = stored_bytes(model)
        summary["size"] = {"stored_bytes": size, "fp32_stored_bytes": fp32_bytes,
                           "compression_pct": 100.0 * (1 - size / fp32_bytes), "serialized": serialized_bytes(model)}
        if reference_encoding is not None and getattr(model.get_encoder(), "exposes_output", True):
            summary["encoder_cosine_jfk"] = cosine(reference_encoding,
                                                   encoder_output(model, loaded.processor, jfk_audio))
        stage = "transcribe"
        new_rows, timings = [], {}
        harness = {"total_seconds": 0.0, "model_seconds": 0.0}
        for split, utts in todo.items():
            if not utts:
                continue
            checkpoint = store.checkpoint(config.slug, split, checkpoint_key(config, split, utts, summary))
            rows, timing = transcribe(model, loaded.processor, utts, config.batch_size, config.threads,
                                      progress=progress, desc=f"{config.quant.slug} {split}",
                                      max_new_tokens=config.max_new_tokens, checkpoint=checkpoint)
            new_rows += [{**r, "session": len(sessions)} for r in rows]
            timings[split] = timing
            for k in harness:
                harness[k] += timing[k]
        sessions.append({"started": summary["started"], "environment": summary["environment"],
                         "decoded": {s: len(u) for s, u in todo.items()}, "timing": timings,
                         "harness": {**harness, "overhead_share": 1 - harness["model_seconds"] / harness["total_seconds"]
                                     if harness["total_seconds"] else None}})
        lines = merged_lines(utterances, kept, new_rows)
        rows_all = [json.loads(line) for line in lines]
        summary["metrics"] = metrics_by_split(rows_all, config.split)
        for split, timing in timings.items():  # this session's timing of the split it decoded
            summary["metrics"][split]["timing"] = timing
        summary["harness"] = sessions[-1]["harness"]
        summary["sessions"] = sessions
        summary["coverage"] = today
        summary["peak_rss_mb"] = peak_rss_mb()
        summary["status"] = "ok"
    except (ConfigError, DataError):
        raise  # bad input: fail fast with its one-line fix, record nothing
    except Exception as exc:
        summary.update(status="failed", failed_stage=stage, error=portable(f"{type(exc).__name__}: {exc}")[:2000],
                       traceback=portable(traceback.format_exc())[-4000:])
        lines = None
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if summary["status"] == "failed" and (refreshing or kept):  # a failure never replaces finished rows
        return summary
    store.save_lines(config.slug, summary, lines)
    if summary["status"] == "ok":
        store.discard_checkpoints(config.slug)
        if fidelity:
            update_fidelity(config, store, data, model=model, processor=loaded.processor, progress=progress)
    return summary


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
    """Run the fidelity pass where it is missing; a failure there is recorded by it and never fails the run."""
    from .fidelity import FidelityUnavailable, ensure_fidelity

    try:
        ensure_fidelity(config, results_dir=store.root, data=data, **kwargs)
    except FidelityUnavailable as exc:
        log.info("fidelity skipped for %s: %s", config.slug, exc)
