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
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .config import ConfigError, model_tag
from .footprint import measured_elsewhere
from .git import git
from .grids import EXPERIMENTS_DIR, Job, expand_grid, grid_path
from .locks import held_elsewhere
from .paths import REPO_ROOT, RUNS_DIR, portable, relative_to_repo
from .results import RESULTS_DIR, ResultStore
from .machine import result_cpu

log = logging.getLogger(__name__)
NOTEBOOK_SOURCE = REPO_ROOT / "notebooks" / "run_config.md"
LOG_DIR = REPO_ROOT / "logs" / "runs"  # live stdout/stderr of each per-configuration notebook (not committed)


@dataclass
class SweepReport:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"ran {len(self.ran)}, skipped {len(self.skipped)} (already done), failed {len(self.failed)}"]
        lines += [f"  FAILED {slug}: {first_line(err)}" for slug, err in self.failed.items()]
        return "\n".join(lines)


def first_line(error: str | None) -> str:
    """The reason a failure's record leads with, never blank: ``'ValueError: bad\\ntrace...'`` -> ``'ValueError: bad'``."""
    lines = [x.strip() for x in (error or "").splitlines() if x.strip()]
    return lines[0] if lines else "no error text was recorded (see logs/runs/<slug>.log)"


def failure_line(exc: BaseException) -> str:
    """One line for why a job raised: a notebook's own error (papermill's ``ename: evalue``, colour codes
    removed) rather than papermill's wrapper, e.g. ``'DataError: LibriSpeech directory 'x' does not exist; ...'``."""
    import re

    if getattr(exc, "ename", None):
        text = f"{exc.ename}: {exc.evalue}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return first_line(re.sub(r"\x1b\[[0-9;]*m", "", text))


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
                if fidelity_only:
                    from .fidelity import ensure_fidelity, job_lock

                    with job_lock(store.root, job.slug) as mine:  # two fidelity sweeps share the work
                        if mine:
                            ensure_fidelity(job.config, results_dir=store.root, data=data, progress=progress)
                elif use_notebooks:
                    execute_notebook(job, Path(runs_dir), store.root, fstore.root, force, data,
                                     retry_failed=retry_failed, refresh_outdated=refresh_outdated)
                else:
                    run_job(job, store.root, fstore.root, force, data, progress, retry_failed, refresh_outdated)
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


def run_chapter_grid(grid: str, limit: int | None = None, footprint: bool = True, **options: Any) -> SweepReport:
    """Run the configurations of a chapter's grid that have no result yet, with the fp32 run each ΔWER compares
    against (``baseline.yml`` with the same ``limit``); a chapter's ``run_missing`` cell calls this before it
    loads its table. ``footprint=False`` makes the runs WER-only; ``options`` go to :func:`run_grids`."""
    overrides = {"limit": limit} if limit else None
    return run_grids([grid_path("baseline"), grid_path(grid)], overrides=overrides, footprint=footprint, **options)


def commit_results(job: Job, paths: Sequence[str] = ("results", "book/runs"), repo: Path | str | None = None,
                   kind: str = "result") -> bool:
    """Commit only ``paths`` after ``job`` finished, so a sweep that outlives the session keeps its results.

    The message names the configuration, e.g. ``'Sweep result: HQQ weight-only int2 g32 (whisper-base__...)'``.
    Returns False, with git's reason logged, when git refuses (nothing new, or another commit holds the
    index lock); the files then wait for the next commit.
    """
    repo = Path(repo or REPO_ROOT)
    identity = [] if git(repo, "config", "user.email").stdout.strip() else [
        "-c", "user.name=whisper-ptq sweep", "-c", "user.email=sweep@whisper-ptq.invalid"]
    message = f"Sweep {kind}: {job.config.quant.label} ({job.slug})"
    existing = [p for p in paths if (repo / p).exists()]
    steps = {"add": ["add", "--", *existing],
             "commit": [*identity, "commit", "-q", "-m", message, "--only", "--", *existing]}
    for name, args in steps.items():
        out = git(repo, *args)
        if out.returncode != 0:
            reason = (out.stderr or out.stdout).strip().splitlines()
            log.warning("not committed: git %s: %s", name, reason[-1] if reason else "no output")
            return False
    return True


def commit_checkpoints(job: Job, repo: Path | str | None = None) -> bool:
    """Commit the finished batches of the running ``job`` (``results/.partial``), so a row that outlives the
    session resumes in a fresh checkout instead of starting over; the message reads ``'Sweep checkpoint: ...'``.
    """
    repo = Path(repo or REPO_ROOT)
    partial = repo / "results" / ".partial"
    tracked = git(repo, "ls-files", "--", "results/.partial").stdout.strip()
    if not tracked and not any(partial.glob("*.jsonl")):
        return False  # nothing saved yet and nothing to delete
    return commit_results(job, paths=("results/.partial",), repo=repo, kind="checkpoint")


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


def run_job(job: Job, results_dir: Path, footprint_dir: Path, force: bool = False, data: str | None = None,
            progress: bool = True, retry_failed: bool = False, refresh_outdated: bool = False) -> dict[str, Any]:
    """What the per-configuration notebook does, without papermill."""
    from .evaluate import evaluate  # looked up at call time, so tests can stand in for a run
    from .footprint import measure_footprint

    out = {"evaluate": evaluate(job.config, data=data, results_dir=results_dir, force=force, progress=progress,
                                retry_failed=retry_failed, refresh_outdated=refresh_outdated)}
    if job.footprint:
        out["footprint"] = measure_footprint(job.config.quant, model=job.footprint_model, results_dir=footprint_dir,
                                             force=force, data=data, retry_failed=retry_failed,
                                             refresh_outdated=refresh_outdated)
    return out


def notebook_parameters(job: Job, results_dir: Path, footprint_dir: Path, force: bool,
                        data: str | None, retry_failed: bool = False, refresh_outdated: bool = False) -> dict[str, Any]:
    """The per-configuration notebook's parameters; folders inside the repository are relative to it
    (``'results'``), since the kernel runs in the repository root and the cell is committed."""
    c = job.config
    return {"model": c.model, "split": list(c.split), "limit": c.limit, "quant": c.quant.to_dict(),
            "batch_size": c.batch_size, "threads": c.threads, "max_new_tokens": c.max_new_tokens,
            "footprint": job.footprint, "footprint_model": job.footprint_model,
            "results_dir": relative_to_repo(results_dir), "footprint_dir": relative_to_repo(footprint_dir),
            "force": force, "retry_failed": retry_failed, "refresh_outdated": refresh_outdated, "data": data,
            **({"noise": c.noise.to_dict()} if c.noise is not None else {})}  # clean runs: as before


def run_title(job: Job) -> str:
    """Page title of an executed run, e.g. ``'Run: HQQ weight-only int4 g64 (whisper-base, all utterances)'``,
    or for a run with an utterance limit ``'Smoke run, 2 utterances per split: HQQ weight-only int4 g64
    (whisper-base)'``."""
    c = job.config
    noise = f", {c.noise.label}" if c.noise is not None else ""
    if c.limit:
        return f"Smoke run, {c.limit} utterances per split: {c.quant.label} ({model_tag(c.model)}{noise})"
    return f"Run: {c.quant.label} ({model_tag(c.model)}, all utterances{noise})"


def execute_notebook(job: Job, runs_dir: Path, results_dir: Path, footprint_dir: Path, force: bool = False,
                     data: str | None = None, log_dir: Path | None = LOG_DIR, retry_failed: bool = False,
                     refresh_outdated: bool = False) -> Path:
    """Execute ``notebooks/run_config.md`` for one job; the output is ``runs_dir/<slug>.ipynb``.

    While it runs, the kernel's stdout/stderr (progress bars every 30 s) stream to
    ``log_dir/<slug>.log``, so a long run can be followed with ``tail -f``.
    """
    import jupytext

    runs_dir.mkdir(parents=True, exist_ok=True)
    output = runs_dir / f"{job.slug}.ipynb"
    notebook = jupytext.read(NOTEBOOK_SOURCE)
    notebook.cells[0].source = notebook.cells[0].source.replace("# One configuration", f"# {run_title(job)}", 1)
    os.environ.setdefault("TQDM_MININTERVAL", "30")  # a progress line every 30 s, not every batch
    with contextlib.ExitStack() as log:
        streams = {}
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            handle = log.enter_context(open(Path(log_dir) / f"{job.slug}.log", "w", buffering=1))
            streams = {"log_output": True, "stdout_file": handle, "stderr_file": handle}
        run_papermill(notebook, output, notebook_parameters(job, results_dir, footprint_dir, force, data,
                                                            retry_failed, refresh_outdated),
                      keep_failed=True, **streams)  # a failed run's notebook shows its error
    return output


def run_papermill(notebook, output: Path, parameters: dict[str, Any], keep_failed: bool = False,
                  **options: Any) -> None:
    """Execute a jupytext-read ``notebook`` with papermill into ``output`` (atomically: a partial file is renamed).

    The kernel runs in the repository root, and the paths papermill records in the notebook
    (``metadata.papermill.input_path``/``output_path``) are relative to it, e.g.
    ``'book/runs/.<slug>.source.ipynb'`` (the converted source, deleted afterwards), so an executed notebook
    holds no machine path. ``keep_failed`` keeps the output of a run that raised.
    """
    import jupytext
    import papermill

    source = output.with_name(f".{output.stem}.source.ipynb")
    partial = output.with_name(f".{output.stem}.part.ipynb")
    jupytext.write(notebook, source)
    succeeded = False
    try:
        with contextlib.chdir(REPO_ROOT):
            papermill.execute_notebook(relative_to_repo(source), relative_to_repo(partial), parameters=parameters,
                                       cwd=".", kernel_name="python3", progress_bar=False, **options)
        succeeded = True
    finally:
        source.unlink(missing_ok=True)
        if partial.exists() and (succeeded or keep_failed):
            partial.write_text(cleaned_notebook(partial.read_text()))
            os.replace(partial, output)


def _library_warning_display(output) -> bool:
    """A rich/NNCF progress display that carries a library warning (``UserWarning: install "ipywidgets"``)."""
    if output.get("output_type") != "display_data":
        return False
    plain = output.get("data", {}).get("text/plain", "")
    return "Warning: " in ("".join(plain) if isinstance(plain, list) else str(plain))


def cleaned_notebook(text: str) -> str:
    """An executed notebook (its JSON text) as the book shows it: without stderr outputs (library warnings,
    torchao's ``.so`` load failures, tqdm bars, which the live log under ``logs/runs`` keeps), with papermill's
    injected parameters folded (``hide-input``: one click shows what ran), the default parameters they
    replace removed (``remove-cell``), and this machine's paths made portable (:func:`lib.paths.portable`).
    Errors and printed results stay.

    >>> nb = '{"cells": [{"cell_type": "code", "id": "a", "source": "", "metadata": {}, "execution_count": 1, "outputs": ['
    >>> nb += '{"output_type": "stream", "name": "stderr", "text": "50%|#####"}, '
    >>> nb += '{"output_type": "stream", "name": "stdout", "text": "ok"}]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    >>> [o["name"] for o in __import__("json").loads(cleaned_notebook(nb))["cells"][0]["outputs"]]
    ['stdout']
    """
    import nbformat

    notebook = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    for cell in notebook.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:  # the record of what ran, folded away
            cell.metadata["tags"] = [*tags, "hide-input"]
        if "parameters" in tags and "remove-cell" not in tags:  # defaults that papermill overrode: misleading
            cell.metadata["tags"] = [*tags, "remove-cell"]
        if cell.get("outputs"):
            cell.outputs = [o for o in cell.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")
                            and not _library_warning_display(o)]
    return portable(nbformat.writes(notebook))


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


CHAPTER_SOURCES = REPO_ROOT / "notebooks"
def book_chapters(toc: Path = REPO_ROOT / "_toc.yml") -> tuple[str, ...]:
    """The chapter pages in book order, read from ``_toc.yml`` (the one chapter list): the root, then every
    ``file:`` entry (globs of run pages are not chapters).

    >>> book_chapters()[:3]
    ('intro', 'setup', 'baseline')
    """
    import yaml

    data = yaml.safe_load(toc.read_text())
    files = [data["root"]] + [c["file"] for part in data.get("parts", []) for c in part.get("chapters", [])
                              if "file" in c]
    return tuple(files)


CHAPTERS = book_chapters()
BOOK_DIR = REPO_ROOT / "book"


def notebook_defaults(notebook) -> dict[str, Any]:
    """The names and default values of a jupytext-read notebook's ``parameters`` cell (literals only).

    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("limit = None  # e.g. 5\\ngroup_size = 64",
    ...                                                               metadata={"tags": ["parameters"]})])
    >>> notebook_defaults(nb)
    {'limit': None, 'group_size': 64}
    """
    import ast

    for cell in notebook.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse(cell.source)
            return {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)}
    return {}


def check_parameters(name: str, given: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` (one line) when a parameter is not in the chapter's parameters cell or its value
    has another type than the default's (None accepts anything; an int passes for a float).

    >>> check_parameters("bitwidth", {"group_size": "abc"}, {"group_size": 64})
    Traceback (most recent call last):
    lib.config.ConfigError: chapter bitwidth: parameter group_size takes an int (default 64), not 'abc'
    """
    for key, value in given.items():
        if key not in defaults:
            raise ConfigError(f"chapter {name}: no parameter {key!r}; it takes "
                              f"{', '.join(f'{k} (default {v!r})' for k, v in defaults.items()) or 'none'}")
        default = defaults[key]
        if default is None or value is None:
            continue
        wanted = type(default)
        ok = (isinstance(value, wanted) and not (wanted is int and isinstance(value, bool))
              or (wanted is float and isinstance(value, int) and not isinstance(value, bool)))
        if not ok:
            raise ConfigError(f"chapter {name}: parameter {key} takes a{'n' if wanted.__name__[0] in 'aeiou' else ''} "
                              f"{wanted.__name__} (default {default!r}), not {value!r}")


def execute_chapter(name: str, parameters: dict[str, Any] | None = None) -> Path:
    """Execute ``notebooks/<name>.md`` with papermill into ``book/<name>.ipynb``.

    Parameters are checked against the chapter's parameters cell first (:func:`check_parameters`); a failed
    execution raises :class:`ChapterFailed` and leaves the committed page as it was. Result files that cannot be
    read are named on stderr (the page names them in its rows' status: ``unreadable``).
    """
    import sys

    import jupytext
    import papermill

    from .results import unreadable_results

    source = CHAPTER_SOURCES / f"{name}.md"
    if not source.exists() or name == "run_config":
        chapters = sorted(p.stem for p in CHAPTER_SOURCES.glob("*.md") if p.stem != "run_config")
        raise ConfigError(f"no chapter {name!r}; chapters: {', '.join(chapters)}")
    notebook = jupytext.read(source)
    check_parameters(name, parameters or {}, notebook_defaults(notebook))
    for line in unreadable_results(RESULTS_DIR):
        print(f"warning: {line}", file=sys.stderr)
    output = BOOK_DIR / f"{name}.ipynb"
    try:
        run_papermill(notebook, output, parameters or {})
    except papermill.PapermillExecutionError as exc:
        raise ChapterFailed(f"chapter {name} failed at cell {exc.exec_count}: {failure_line(exc)}; "
                            f"{relative_to_repo(output)} was left as it was") from None
    return output


class ChapterFailed(ConfigError):
    """A chapter's execution raised; its committed page is untouched."""
