"""Run the sweep's decoding on a Ray cluster: one task per configuration x shard of whole batches.

``python -m lib sweep experiments/scheme.yml --cluster auto`` starts a local Ray cluster (``ray.init()``, which
joins the cluster in ``RAY_ADDRESS`` when that is set); ``--cluster ray://HOST:PORT`` joins a running one.

* **Plan (driver).** :func:`lib.evaluate.plan_run` says what each configuration still lacks (``todo``, per split
  in utterance-id order), with the same slugs, grids and skip-if-done rules as the in-process sweep.
* **Shards.** A split's todo list is cut into consecutive runs of ``batches_per_shard`` whole batches
  (:func:`shard_ranges`). Batched decoding's numerics depend on which utterances share a batch, so cutting at
  batch boundaries is what makes a sharded run give exactly the rows of the in-process run.
* **Tasks (workers).** :func:`decode_shard` resolves the data itself (``LIBRISPEECH_DIR`` or the hub), checks
  the manifest hash and each file's hash against the driver's, loads and quantizes the model (the embedded
  whisper-base is rebuilt in the worker's cache if missing) and returns rows, per-batch seconds, its
  environment and the model's facts. It writes nothing.
* **Merge (driver).** The driver owns the results folder: each finished shard's batches go into the batch
  checkpoint the in-process run uses (``results/.partial``), so a killed sweep, on the cluster or not, resumes
  at the shards it lacks; when every shard is back, the rows are merged in utterance order and saved with
  :func:`lib.evaluate.complete_summary` / :func:`lib.evaluate.save_result`. A failed shard makes the
  configuration a failed row with that shard's error (never over finished rows); the other tasks go on.
* **Not on the cluster.** Latency is not measured (the timing recorded is per-task throughput) and footprint
  timing stays a single-machine measurement: the cluster sweep runs WER only. The fidelity pass is left to the
  driver's in-process step: after the merge, the per-configuration notebook (or :func:`lib.evaluate.evaluate`
  with ``--no-notebooks``) runs from the merged results, finds nothing to decode, and runs the teacher-forced
  fidelity pass where it is missing.

>>> shard_ranges(utterances=21, batch_size=4, batches_per_shard=2)  # (first batch, first utterance, end)
[(0, 0, 8), (2, 8, 16), (4, 16, 21)]
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import platform
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .config import ConfigError, RunConfig
from .grids import Job
from .locks import configuration_lock, held_elsewhere

log = logging.getLogger(__name__)
TIMING_NOTE = ("per-task throughput on the cluster's workers (tasks ran in parallel); latency and footprint "
               "are single-machine measurements and were not taken here")


def require_ray():
    """``import ray``, or one line naming the fix."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the cluster sweep needs Ray: pip install -r requirements.txt (it pins ray[client])") from None
    return ray


def connect(address: str = "auto", num_cpus: int | None = None, **options: Any) -> str:
    """Join or start a Ray cluster once per process; returns where it runs.

    ``"auto"``: ``ray.init()`` (the cluster in ``RAY_ADDRESS`` if set, else a local one with ``num_cpus``);
    ``"ray://HOST:PORT"``: a running cluster through Ray Client.
    """
    ray = require_ray()
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        local = address == "auto" and not os.environ.get("RAY_ADDRESS")
        kwargs = {"num_cpus": num_cpus, "include_dashboard": False} if local else {}
        if not local:
            check_reachable(address if address != "auto" else os.environ["RAY_ADDRESS"])
        try:
            ray.init(address=None if address == "auto" else address, log_to_driver=False, **kwargs, **options)
        except Exception as exc:  # one line, not Ray's traceback
            raise ConfigError(f"cannot join the Ray cluster at {address}: {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    return address if address != "auto" else os.environ.get("RAY_ADDRESS") or "local"


CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in one line, within ``timeout_s``, when nothing listens at a ``ray://HOST:PORT`` or ``HOST:PORT``.

    >>> check_reachable("ray://127.0.0.1:1", timeout_s=1)
    Traceback (most recent call last):
    lib.config.ConfigError: no Ray cluster answers at ray://127.0.0.1:1 (ConnectionRefusedError within 1 s); start one (ray start --head) or use --cluster auto
    """
    import socket

    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--cluster {address!r}: use auto, ray://HOST:PORT or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"no Ray cluster answers at {address} ({type(exc).__name__} within {timeout_s:g} s); "
                          "start one (ray start --head) or use --cluster auto") from None


def shard_ranges(utterances: int, batch_size: int, batches_per_shard: int) -> list[tuple[int, int, int]]:
    """``(first batch, start, stop)`` of each shard of a todo list: consecutive chunks of whole batches."""
    step = batch_size * batches_per_shard
    return [(start // batch_size, start, min(start + step, utterances)) for start in range(0, utterances, step)]


# --------------------------------------------------------------------------- worker side

class RecordedBatches:
    """An in-memory stand-in for :class:`lib.results.BatchCheckpoint`: collects the batches a task decodes."""

    def __init__(self):
        self.records: list[dict[str, Any]] = []

    def load(self) -> dict[int, dict[str, Any]]:
        return {}

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)


def worker_utterances(split: str, ids: list[str], sha256: list[str | None], data: str | None,
                      manifest_sha256: str | None) -> list:
    """The utterances ``ids`` of ``split`` as this worker sees them, checked against the driver's hashes."""
    from .data import (DataError, Utterance, describe_data, list_split, load_audio, load_split, portable_path,
                       read_manifest, resolve_data_dir)

    host = platform.node()
    if data == "hub":
        by_id = {u.id: u for u in load_split(split, None, "hub")}
    else:
        info = describe_data(data)  # no data here: DataError naming LIBRISPEECH_DIR
        if info["manifest_sha256"] != manifest_sha256:
            raise DataError(f"worker {host}: the LibriSpeech copy at {info['path']} has manifest sha256 "
                            f"{str(info['manifest_sha256'])[:12]}..., the driver's is {str(manifest_sha256)[:12]}...;"
                            " point LIBRISPEECH_DIR on every worker at the same copy")
        import hashlib

        root, wanted, by_id = resolve_data_dir(data), set(ids), {}
        manifest = read_manifest(root)
        for utt_id, path, text in list_split(root, split):
            if utt_id in wanted:
                if not path.exists():
                    raise DataError(f"worker {host}: missing audio {path}")
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if utt_id in manifest and digest != manifest[utt_id]["sha256_flac"]:
                    raise DataError(f"worker {host}: corrupt audio {path} (sha256 does not match MANIFEST.tsv)")
                by_id[utt_id] = Utterance(utt_id, split, text, load_audio(path), portable_path(path), digest)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(f"worker {host}: {len(missing)} utterance(s) of {split} not in its data, e.g. {missing[0]}")
    changed = [i for i, h in zip(ids, sha256) if by_id[i].sha256 != h]
    if changed:
        raise DataError(f"worker {host}: audio of {changed[0]} ({len(changed)} in all) differs from the driver's")
    return [by_id[i] for i in ids]


def ensure_model(spec: str) -> None:
    """Build the embedded whisper-base into this worker's cache if it is missing, one task at a time per node
    (concurrent tasks wait on a file lock instead of building it side by side); other specs load as usual."""
    from .models import cache_dir, embedded_whisper_base, parse_model_spec

    if parse_model_spec(spec)[0] != "embedded":
        return
    import fcntl

    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        embedded_whisper_base()


def decode_shard(config: dict[str, Any], split: str | None, ids: list[str], sha256: list[str | None],
                 first_batch: int, data: str | None, manifest_sha256: str | None) -> dict[str, Any]:
    """Decode one shard on a worker: ``{"records", "facts", "environment", "host", "peak_rss_mb"}``.

    ``records`` are the shard's batches as :func:`lib.transcribe.transcribe` checkpoints them, numbered from
    ``first_batch`` (their index in the split's todo list). With no ``ids`` it only loads and quantizes the model
    and returns its ``facts`` (model source, quantization, size, encoder cosine). An error comes back as
    ``{"error", "traceback", "stage", "host"}``: the driver makes it a failed row.
    """
    from .evaluate import Stage, load_quantized, peak_rss_mb
    from .machine import environment

    run = RunConfig.from_dict(config)
    stage, facts = Stage("data"), {}
    try:
        utterances = worker_utterances(split, ids, sha256, data, manifest_sha256) if ids else []
        if utterances and run.noise is not None:  # the same mix as the driver's plan (seeded per utterance id)
            from .noise import noisy_utterances

            utterances = noisy_utterances({split: utterances}, run.noise, data)[0][split]
        import torch

        torch.set_num_threads(run.threads)
        stage.name = "load"
        ensure_model(run.model)
        model, processor = load_quantized(run, data, facts, stage)
        stage.name = "transcribe"
        batches = RecordedBatches()
        if utterances:
            from .transcribe import transcribe

            transcribe(model, processor, utterances, run.batch_size, run.threads, progress=False,
                       max_new_tokens=run.max_new_tokens, checkpoint=batches)
        for record in batches.records:
            record["batch"] += first_batch
            for row in record["rows"]:
                row["batch"] += first_batch
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(), "stage": stage.name,
                "host": platform.node()}
    return {"records": batches.records, "facts": facts, "environment": environment(run.threads),
            "host": platform.node(), "peak_rss_mb": peak_rss_mb()}


# --------------------------------------------------------------------------- driver side

@dataclass
class Shard:
    """One task: batches ``first_batch ..`` of ``split``'s todo list (``ids`` in order)."""

    split: str
    index: int
    first_batch: int
    ids: list[str]
    sha256: list[str | None]

    def label(self) -> str:
        return f"{self.split} shard {self.index} ({self.ids[0]} .. {self.ids[-1]})"


@dataclass
class ClusterRun:
    """One configuration on the cluster: its plan, summary under construction, checkpoints and pending shards."""

    job: Job
    plan: Any
    summary: dict[str, Any]
    keeps_rows: bool
    sessions: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: dict[str, Any] = field(default_factory=dict)
    finished: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    resumed: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    tasks: int = 0
    hosts: set[str] = field(default_factory=set)
    peak_rss_mb: float = 0.0
    failures: list[str] = field(default_factory=list)
    failed_stage: str = "transcribe"
    traceback: str = ""

    @property
    def config(self) -> RunConfig:
        return self.job.config


def decode_on_cluster(jobs: Iterable[Job], *, results_dir: Path | str, data: str | None = None,
                      force: bool = False, retry_failed: bool = False, refresh_outdated: bool = False,
                      batches_per_shard: int = 8, max_retries: int = 2,
                      decode: Callable[..., dict[str, Any]] = decode_shard) -> dict[str, str]:
    """Decode what ``jobs`` lack on the connected Ray cluster and save each merged result; returns the failures
    that were not saved (a failure never replaces finished rows), ``{slug: error}``.

    Each configuration first runs one task without utterances, for the model's facts and the worker's
    environment (the checkpoint key); then one task per shard that its checkpoint does not already hold.
    ``max_retries`` re-runs a task whose worker died; an error raised inside a task is not retried.
    """
    from .evaluate import new_summary, plan_run, prior_sessions
    from .results import ResultStore

    ray = require_ray()
    store = ResultStore(results_dir)
    remote = ray.remote(decode if inspect.isfunction(decode) else lambda *args: decode(*args))  # e.g. a partial
    pending: dict[Any, tuple[ClusterRun, Shard | None]] = {}
    runs: list[ClusterRun] = []

    def submit(run: ClusterRun, shard: Shard | None) -> None:
        c = run.config
        options = {"num_cpus": c.threads, "max_retries": max_retries}
        args = (c.to_dict(), shard.split if shard else None, shard.ids if shard else [],
                shard.sha256 if shard else [], shard.first_batch if shard else 0, data,
                run.plan.data_info.get("manifest_sha256"))
        pending[remote.options(**options).remote(*args)] = (run, shard)
        run.pending += 1
        run.tasks += 1

    unsaved: dict[str, str] = {}
    locks = contextlib.ExitStack()  # each configuration's lock (lib.locks), held until its result is saved
    for job in jobs:
        if job.config.quant.calibration_folds:  # one model per speaker fold: the single-machine runner does that
            unsaved[job.slug] = ("ConfigError: cross-speaker calibration (calibration_folds) quantizes one model per "
                                 "speaker fold; decode it without --cluster")
            continue
        if not locks.enter_context(configuration_lock(store.root, job.slug)):
            unsaved[job.slug] = (f"ConfigurationBusy: {job.slug} is being decoded by another process (pid "
                                 f"{held_elsewhere(store.root, job.slug) or '?'})")
            continue
        try:
            plan = plan_run(job.config, data, store, force, retry_failed, refresh_outdated)
        except Exception as exc:  # bad input (e.g. no data on the driver): this configuration only
            unsaved[job.slug] = f"{type(exc).__name__}: {exc}"
            continue
        if not plan.decodes:
            continue  # nothing to decode: the in-process step returns or completes the stored result
        keeps_rows = (refresh_outdated and store.archive_outdated(job.slug) is not None) or bool(plan.kept)
        run = ClusterRun(job, plan, new_summary(job.config, plan.data_info, env={}, noise=plan.noise), keeps_rows,
                         prior_sessions(plan))
        runs.append(run)
        submit(run, None)
    log.info("cluster: %d configuration(s) to decode", len(runs))
    with locks:
        _collect(ray, pending, unsaved, store, batches_per_shard, submit)
    return unsaved


def _collect(ray, pending: dict, unsaved: dict[str, str], store, batches_per_shard: int, submit) -> None:
    """Wait for every shard, accept it, and save each configuration whose shards are all back."""
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        run, shard = pending.pop(ref)
        run.pending -= 1
        try:
            result = ray.get(ref)
        except Exception as exc:  # the worker died max_retries + 1 times, or the task could not run
            result = {"error": f"{type(exc).__name__}: {str(exc)[:1500]}", "traceback": "", "stage":
                      "transcribe" if shard else "load", "host": "?"}
        accept(run, shard, result, store, batches_per_shard, submit)
        if run.pending == 0:
            error = finish(run, store, batches_per_shard)
            if error:
                unsaved[run.job.slug] = error


def accept(run: ClusterRun, shard: Shard | None, result: dict[str, Any], store, batches_per_shard: int,
           submit: Callable[[ClusterRun, Shard | None], None]) -> None:
    """Take one task's result: the facts task submits the shards; a shard's batches go into its checkpoint."""
    from .evaluate import checkpoint_key

    run.hosts.add(result.get("host", "?"))
    run.peak_rss_mb = max(run.peak_rss_mb, result.get("peak_rss_mb") or 0.0)
    if "error" in result:
        where = shard.label() if shard else "model load"
        run.failures.append(f"{where} failed on {result.get('host')}: {result['error']}")
        run.failed_stage = result.get("stage", "transcribe")
        run.traceback = result.get("traceback", "")
        log.warning("cluster: %s: %s", run.job.slug, run.failures[-1])
        return
    if shard is None:  # the facts task: the checkpoint key is now known
        log.info("cluster: %s: model loaded and quantized on %s", run.job.slug, result["host"])
        run.summary["environment"] = result["environment"]
        run.summary.update(result["facts"])
        c = run.config
        for split, utts in run.plan.todo.items():
            if not utts:
                continue
            checkpoint = store.checkpoint(c.slug, split, checkpoint_key(c, split, utts, run.summary))
            run.checkpoints[split] = checkpoint
            run.finished[split] = checkpoint.load()
            run.resumed[split] = len(run.finished[split])
            for index, (first, start, stop) in enumerate(shard_ranges(len(utts), c.batch_size, batches_per_shard)):
                n_batches = -(-(stop - start) // c.batch_size)
                if all(b in run.finished[split] for b in range(first, first + n_batches)):
                    continue  # decoded before (a killed sweep, on the cluster or in-process)
                submit(run, Shard(split, index, first, [u.id for u in utts[start:stop]],
                                  [u.sha256 for u in utts[start:stop]]))
        return
    if result["environment"]["packages"] != run.summary["environment"]["packages"]:
        run.failures.append(f"{shard.label()}: worker {result['host']} has other package versions than the "
                            "first worker; install requirements.txt on every worker")
        return
    for record in result["records"]:
        if record["batch"] not in run.finished[shard.split]:
            run.checkpoints[shard.split].append(record)
            run.finished[shard.split][record["batch"]] = record
    log.info("cluster: %s: %s done on %s", run.job.slug, shard.label(), result["host"])


def finish(run: ClusterRun, store, batches_per_shard: int) -> str | None:
    """Merge a configuration whose tasks are all back and save it; returns the error of a failure not saved."""
    from .evaluate import complete_summary, record_failure, save_result

    summary, sessions = run.summary, run.sessions
    if run.failures:
        error = "; ".join(run.failures)
        record_failure(summary, run.failed_stage, error=error, trace=run.traceback or error)
        saved = save_result(store, summary, None, keeps_rows=run.keeps_rows)
        return None if saved else error
    new_rows, timings = [], {}
    for split, batches in run.finished.items():
        records = [batches[b] for b in sorted(batches)]
        new_rows += [{**r, "session": len(sessions)} for record in records for r in record["rows"]]
        timings[split] = {"total_seconds": sum(r["seconds"]["loop"] for r in records),
                          "model_seconds": sum(r["seconds"]["model"] for r in records),
                          "encoder_seconds": sum(r["seconds"]["encoder"] for r in records),
                          "resumed_batches": run.resumed[split]}
    import ray

    executor = {"engine": "ray", "version": ray.__version__, "tasks": run.tasks,
                "batches_per_shard": batches_per_shard, "hosts": sorted(run.hosts), "timing": TIMING_NOTE}
    lines = complete_summary(summary, run.plan, sessions, new_rows, timings, session_extra={"executor": executor})
    summary["peak_rss_mb"] = run.peak_rss_mb
    summary["status"] = "ok"
    save_result(store, summary, lines, keeps_rows=run.keeps_rows)
    log.info("cluster: %s saved (%d task(s) on %s)", run.job.slug, run.tasks, ", ".join(sorted(run.hosts)))
    return None


def sweep_on_cluster(paths: Iterable[Path | str], address: str = "auto", *, threads_per_task: int | None = None,
                     batches_per_shard: int = 8, max_retries: int = 2, num_cpus: int | None = None,
                     decode: Callable[..., dict[str, Any]] = decode_shard, **options: Any):
    """:func:`lib.runner.run_grids` with the decoding on Ray; returns its :class:`~lib.runner.SweepReport`.

    ``threads_per_task`` overrides each configuration's ``threads`` (torch threads in a task; Ray reserves as
    many CPUs for it). Footprint runs are left out (they are single-machine measurements). The driver then runs
    each configuration's notebook (or :func:`lib.evaluate.evaluate`) from the merged results: nothing is decoded
    again there; the fidelity pass runs in-process where missing.
    """
    from .results import RESULTS_DIR
    from .runner import run_grids

    overrides = {**(options.pop("overrides", None) or {}),
                 **({"threads": threads_per_task} if threads_per_task else {})}
    results_dir = options.get("results_dir", RESULTS_DIR)
    flags = {k: options.get(k, False) for k in ("force", "retry_failed", "refresh_outdated")}

    def decode_pending(jobs: list[Job]) -> dict[str, str]:
        if not jobs:
            return {}
        connect(address, num_cpus=num_cpus)
        started = time.time()
        failed = decode_on_cluster(jobs, results_dir=results_dir, data=options.get("data"), **flags,
                                   batches_per_shard=batches_per_shard, max_retries=max_retries, decode=decode)
        log.info("cluster: decoding took %.0f s", time.time() - started)
        return failed

    options.pop("footprint", None)  # never timed on a cluster
    return run_grids(paths, overrides=overrides or None, footprint=False, decode_pending=decode_pending, **options)
