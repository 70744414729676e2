"""git, as the harness uses it: the commit a result was made at, and commits of finished results.

>>> sorted(git_commit())
['commit', 'lib_dirty']
"""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any, Sequence

from .paths import REPO_ROOT

log = logging.getLogger(__name__)


def git(repo: Path | str, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """``git <args>`` in ``repo``, output captured as text (never raises on a non-zero exit)."""
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=timeout)


def git_commit() -> dict[str, Any]:
    """The commit of the code that ran, and whether ``lib/`` had uncommitted changes."""
    def run(*args):
        return git(REPO_ROOT, *args, timeout=10)

    try:
        sha = run("rev-parse", "HEAD").stdout.strip() or None
        dirty = bool(run("status", "--porcelain", "--untracked-files=no", "lib").stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "lib_dirty": None}
    return {"commit": sha, "lib_dirty": dirty}


def commit_results(job, paths: Sequence[str] = ("results", "book/runs"), repo: Path | str | None = None,
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


def commit_checkpoints(job, repo: Path | str | None = None) -> bool:
    """Commit the finished batches of the running ``job`` (``results/.partial``), so a row that outlives the
    session resumes in a fresh checkout instead of starting over; the message reads ``'Sweep checkpoint: ...'``.
    """
    repo = Path(repo or REPO_ROOT)
    partial = repo / "results" / ".partial"
    tracked = git(repo, "ls-files", "--", "results/.partial").stdout.strip()
    if not tracked and not any(partial.glob("*.jsonl")):
        return False  # nothing saved yet and nothing to delete
    return commit_results(job, paths=("results/.partial",), repo=repo, kind="checkpoint")
