"""Run each configuration of the YAML grids (:mod:`lib.grids`) once, through papermill by default.

Finished slugs are skipped unless forced; every failure is collected and
reported at the end without stopping the sweep (an unreadable result file counts as not done).

>>> from types import SimpleNamespace as J
>>> [j.slug for j in prioritize([J(slug="slow"), J(slug="a")], [], ["slow"])]
['a', 'slow']
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from . import executors
from .config import ConfigError
from .footprint import measured_elsewhere
from .grids import Job, expand_grid, grid_path
from .locks import held_elsewhere
from .machine import result_cpu
from .notebooks import failure_line, first_line
from .paths import RUNS_DIR, portable
from .results import RESULTS_DIR, ResultStore

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"ran {len(self.ran)}, skipped {len(self.skipped)} (already done), failed {len(self.failed)}"]
        lines += [f"  FAILED {slug}: {first_line(err)}" for slug, err in self.failed.items()]
        return "\n".join(lines)


def prioritize(jobs: list[Job], first: list[str], last: list[str]) -> list[Job]:
    """Stable reorder: jobs matching ``first[0]``, ``first[1]``, ..., the rest, then ``last[0]``, ``last[1]``, ...

    >>> from types import SimpleNamespace as J
    >>> jobs = [J(slug="a-x"), J(slug="slow"), J(slug="b"), J(slug="c-x"), J(slug="slower")]
    >>> [j.slug for j in prioritize(jobs, ["c"], ["slower", "slow"])]
    ['c-x', 'a-x', 'b', 'slower', 'slow']
    """
    def rank(job: Job) -> tuple[int, int]:
        for i, key in enumerate(first):
            if key in job.slug:
                return (0, i)
        for i, key in enumerate(last):
            if key in job.slug:
                return (2, i)
        return (1, 0)

    return sorted(jobs, key=rank)


def is_done(store: ResultStore, slug: str, retry_failed: bool, refresh_outdated: bool = False,
            todo: int = 0) -> bool:
    """Done: ok with nothing left to decode (``todo`` utterances), failed (unless retried) or outdated (unless
    refreshed)."""
    state = store.state(slug)
    return ((state == "ok" and not todo) or (state == "failed" and not retry_failed)
            or (state == "outdated" and not refresh_outdated))


class DataToday:
    """Today's utterances and their audio hashes, read once per sweep, to count what each job still lacks.

    >>> # DataToday(None).todo(store, job) -> (utterances to decode, utterances without fidelity)
    """

    def __init__(self, data: str | None = None):
        self.data, self._by_split = data, {}

    def utterances(self, split: str, limit: int | None):
        from .data import load_split

        if split not in self._by_split:
            self._by_split[split] = load_split(split, None, self.data)
        return self._by_split[split][:limit]

    def todo(self, store: ResultStore, job: Job) -> tuple[int | None, int | None]:
        """Utterances ``job`` still has to decode and to score for fidelity; ``(None, None)`` without data."""
        from .data import DataError, coverage, resolve_data_dir
        from .fidelity import fidelity_store, fidelity_subset

        c = job.config
        try:
            today = coverage({s: self.utterances(s, c.limit) for s in c.split})
        except DataError:
            return None, None
        n = sum(len(v) for v in today.values())
        summary = store.load_or_none(job.slug)
        if summary is None or summary.get("status") != "ok":
            return n, n
        root = None if self.data == "hub" else resolve_data_dir(self.data)
        wer = n - len(store.valid_lines(job.slug, summary, today, root))
        if c.noise is not None:  # a noisy run has no fidelity pass (lib.fidelity.ensure_fidelity)
            return wer, 0
        done = {(r["split"], r["id"]): r.get("audio_sha256") for r in fidelity_store(store.root).load_rows(job.slug)}
        subset = fidelity_subset([u for s in c.split for u in self.utterances(s, c.limit)])
        fidelity = sum(1 for u in subset if done.get((u.split, u.id)) != u.sha256)
        return wer, fidelity


def footprint_done(fstore: ResultStore, slug: str, retry_failed: bool, refresh_outdated: bool = False) -> bool:
    """Like :func:`is_done`; with ``refresh_outdated`` a footprint timed on another CPU class than the study's
    is not done when this machine is of the study's class (:func:`lib.footprint.measured_elsewhere`)."""
    if not is_done(fstore, slug, retry_failed):
        return False
    return not (refresh_outdated and measured_elsewhere(fstore.load(slug), fstore))


def refresh_rank(store: ResultStore, slug: str) -> tuple[int, float]:
    """Sort key: new configurations first (in their order), then outdated results: the fp32 reference (every
    ΔWER is against it, and it is cheap), then the highest WER first.

    A degraded model is the one likely to emit the tokens that made the old decoding differ.
    """
    if store.state(slug) != "outdated":
        return (0, 0.0)
    summary = store.load(slug)
    if summary.get("config", {}).get("quant", {}).get("library") == "none":
        return (1, float("-inf"))
    return (1, -max((m.get("wer") or 0.0 for m in summary.get("metrics", {}).values()), default=0.0))


def run_grids(paths: Iterable[Path | str], *, only: str | None = None, force: bool = False,
              retry_failed: bool = False, refresh_outdated: bool = False, use_notebooks: bool = True,
              dry_run: bool = False,
              results_dir: Path | str = RESULTS_DIR, footprint_dir: Path | str | None = None,
              runs_dir: Path | str = RUNS_DIR, overrides: dict[str, Any] | None = None,
              data: str | None = None, progress: bool = True, first: Iterable[str] = (),
              last: Iterable[str] = (), footprint: bool = True, pause_file: Path | str | None = None,
              pause_poll_s: float = 10.0, after_job: Callable[[Job], Any] | None = None,
              during_job: Callable[[Job], Any] | None = None, during_job_every_s: float = 600.0,
              fidelity_only: bool = False, reverse: bool = False,
              decode_pending: Callable[[list[Job]], dict[str, str]] | None = None) -> SweepReport:
    """Run every job of the grids; returns what ran, what was skipped and what failed.

    ``footprint=False`` skips the whisper-small size/latency runs (WER only).
    ``first`` / ``last`` are slug substrings that move matching jobs to the
    front (in the order given) or the back, e.g. to run headline
    configurations early and very slow kernels at the end.
    While ``pause_file`` exists the sweep waits before starting the next job,
    so heavy work (tests, a book build) never overlaps a timed run.
    ``after_job`` is called with each job that ran, failed or not (e.g. to commit its result files);
    ``during_job`` every ``during_job_every_s`` seconds while a job runs (e.g. to commit its finished batches).
    ``refresh_outdated`` also re-runs results decoded with an older recipe, after every pending job.
    A finished job whose data grew decodes only the new utterances; ``fidelity_only`` runs just the
    teacher-forced fidelity pass for every job with a WER result (no decoding, no footprint).
    ``decode_pending`` is called once with the jobs that are not done, before any runs, and returns
    ``{slug: error}`` of those it failed without saving (:func:`lib.cluster.sweep_on_cluster` decodes them on
    Ray); each job is then run as usual, without ``force``/``retry_failed``/``refresh_outdated``, so its
    notebook reads the merged result instead of decoding again.
    """
    paths = list(paths)
    unique: dict[str, Job] = {}
    for job in (j for p in paths for j in expand_grid(p, overrides)):
        if not footprint:
            job = dataclasses.replace(job, footprint=False)
        unique.setdefault(job.slug, job)  # a configuration shared by two chapters runs once
    jobs = prioritize(list(unique.values()), list(first), list(last))
    if not jobs:
        raise ConfigError(f"{', '.join(Path(p).name for p in paths)}: no configurations; add entries under "
                          "'runs:' or 'expand:'")
    if only:
        jobs = [j for j in jobs if only in j.slug]
        if not jobs:
            raise ConfigError(f"--only {only!r} matches no configuration of {', '.join(Path(p).name for p in paths)}")
    store = ResultStore(results_dir)
    fstore = ResultStore(footprint_dir or Path(results_dir) / "footprint")
    if refresh_outdated:
        jobs.sort(key=lambda j: refresh_rank(store, j.slug))
    if reverse:  # e.g. a second sweep that meets the first in the middle
        jobs.reverse()
    report = SweepReport()
    today = DataToday(data)
    states = []
    for job in jobs:
        wer_todo, fidelity_todo = today.todo(store, job)
        if wer_todo is None:  # no data here: the run itself will say so
            wer_todo = fidelity_todo = 0 if not dry_run else None
        if fidelity_only:
            done = store.state(job.slug) not in ("ok", "outdated") or not fidelity_todo
        else:
            done = (not force and is_done(store, job.slug, retry_failed, refresh_outdated, wer_todo or 0)
                    and (not job.footprint or footprint_done(fstore, job.footprint_slug, retry_failed,
                                                             refresh_outdated)))
        states.append((job, wer_todo, fidelity_todo, done))
    predecoded: dict[str, str] | None = None
    if decode_pending is not None and not dry_run and not fidelity_only:
        predecoded = decode_pending([job for job, *_, done in states if not done])
        force = retry_failed = refresh_outdated = False  # decoded already: the runs below read the results
    executor = make_executor(fidelity_only, use_notebooks, store.root, fstore.root, runs_dir, force, data, progress,
                             retry_failed, refresh_outdated)
    for job, wer_todo, fidelity_todo, done in states:
        if predecoded and job.slug in predecoded:  # failed on the cluster, finished rows kept: nothing to show
            report.failed[job.slug] = predecoded[job.slug]
            continue
        if done or dry_run:
            (report.skipped if done else report.ran).append(job.slug)
            if dry_run and progress:
                saved = "" if done else ", ".join(f"{split} {n}" for split, n in store.saved_batches(job.slug).items())
                state = store.state(job.slug)  # "footprint": only the whisper-small timing is missing or re-timed
                label = ("outdated" if state == "outdated" else "done   " if done
                         else "decode" if state == "ok" and wer_todo
                         else "footprint" if state == "ok" and not fidelity_only else
                         "fidelity" if fidelity_only else "pending")
                counts = (f" (to decode: {wer_todo}, without fidelity: {fidelity_todo})" if wer_todo is not None
                          else " (data unavailable: utterances not counted)")
                print(f"{label} {job.slug}" + (f" (batches saved: {saved})" if saved else "") + counts, flush=True)
            continue
        wait_while_paused(pause_file, pause_poll_s)
        holder = held_elsewhere(store.root, job.slug)
        if holder is not None:  # another sweep is decoding it: never twice at once
            log.info("skip %s: being decoded by another process (pid %s)", job.slug, holder)
            report.skipped.append(job.slug)
            continue
        started = time.time()
        log.info("start %s", job.slug)
        periodic = (calling_every(during_job_every_s, functools.partial(during_job, job)) if during_job
                    else contextlib.nullcontext())
        try:
            with periodic:
                executor.run(job)
        except Exception as exc:  # one failing configuration never stops the sweep
            report.failed[job.slug] = portable(f"{failure_line(exc)}\n{traceback.format_exc()[-1500:]}")
            log.warning("FAILED %s: %s", job.slug, first_line(report.failed[job.slug]))
        else:
            report.ran.append(job.slug)
            for slug, st in ((job.slug, store), (job.footprint_slug, fstore)):
                if st.status(slug) == "failed":
                    report.failed[slug] = st.load(slug).get("error", "")
            log.info("done %s in %.0f s (wer: %s, footprint: %s)", job.slug, time.time() - started,
                     store.status(job.slug), fstore.status(job.footprint_slug))
        if after_job is not None:
            try:
                after_job(job)
            except Exception as exc:  # e.g. no git: the results are saved, only the hook failed
                log.warning("after_job failed for %s: %s: %s", job.slug, type(exc).__name__, exc)
    return report


def make_executor(fidelity_only: bool, use_notebooks: bool, results_dir: Path, footprint_dir: Path,
                  runs_dir: Path | str, force: bool, data: str | None, progress: bool, retry_failed: bool,
                  refresh_outdated: bool):
    """The executor a sweep hands each job to (:mod:`lib.executors`): fidelity only, papermill or in-process."""
    common = dict(results_dir=results_dir, footprint_dir=footprint_dir, force=force, data=data, progress=progress,
                  retry_failed=retry_failed, refresh_outdated=refresh_outdated)
    if fidelity_only:
        return executors.FidelityOnly(**common)
    return executors.Papermill(**common, runs_dir=Path(runs_dir)) if use_notebooks else executors.InProcess(**common)


def run_chapter_grid(grid: str, limit: int | None = None, footprint: bool = True, **options: Any) -> SweepReport:
    """Run the configurations of a chapter's grid that have no result yet, with the fp32 run each ΔWER compares
    against (``baseline.yml`` with the same ``limit``); a chapter's ``run_missing`` cell calls this before it
    loads its table. ``footprint=False`` makes the runs WER-only; ``options`` go to :func:`run_grids`."""
    overrides = {"limit": limit} if limit else None
    return run_grids([grid_path("baseline"), grid_path(grid)], overrides=overrides, footprint=footprint, **options)


@contextlib.contextmanager
def calling_every(seconds: float, callback: Callable[[], Any]):
    """Call ``callback`` every ``seconds`` in a background thread while the block runs (errors logged, not raised)."""
    import threading

    stop = threading.Event()

    def loop():
        while not stop.wait(seconds):
            try:
                callback()
            except Exception as exc:
                log.warning("periodic call failed: %s: %s", type(exc).__name__, exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def wait_while_paused(pause_file: Path | str | None, poll_s: float = 10.0) -> None:
    """Block while ``pause_file`` exists (``touch`` it to pause a sweep between jobs, ``rm`` to resume)."""
    if pause_file is None or not Path(pause_file).exists():
        return
    log.info("paused: waiting for %s to be removed", pause_file)
    while Path(pause_file).exists():
        time.sleep(poll_s)
    log.info("resumed")


def sweep_status(paths: Iterable[Path | str], results_dir: Path | str = RESULTS_DIR) -> list[dict[str, Any]]:
    """One row per job for the run log: its configuration's readable name, whether its WER and footprint
    results exist, the WER per split that its summary records, the CPU class each ran on, and for a failed
    run its stage, reason and traceback (made portable).

    A WER result decoded with the older recipe reads ``outdated`` (see :meth:`ResultStore.state`).
    """
    store, fstore = ResultStore(results_dir), ResultStore(Path(results_dir) / "footprint")

    def cpu(st: ResultStore, slug: str) -> str:
        summary = st.get(slug)
        return result_cpu(summary) if summary else ""

    rows = []
    for job in (j for p in paths for j in expand_grid(p)):
        summary = store.get(job.slug) or {}
        footprint = fstore.get(job.footprint_slug) or {}
        failed = next((s for s in (summary, footprint) if s.get("status") == "failed"), {})
        metrics = summary.get("metrics") or {}
        rows.append({"grid": job.grid, "slug": job.slug, "configuration": job.config.quant.label,
                     "limit": job.config.limit, "wer": store.state(job.slug),
                     "wer_clean": (metrics.get("test-clean") or {}).get("wer"),
                     "wer_other": (metrics.get("test-other") or {}).get("wer"),
                     "footprint": fstore.status(job.footprint_slug) or "pending", "wer CPU": cpu(store, job.slug),
                     "footprint CPU": cpu(fstore, job.footprint_slug),
                     "failed_run": ("WER (whisper-base)" if failed is summary else "footprint") if failed else "",
                     "failed_stage": failed.get("failed_stage") or "", "error": portable(failed.get("error")) or "",
                     "traceback": portable(failed.get("traceback")) or ""})
    return rows


