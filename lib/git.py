"""git, as the harness uses it: the commit a result was made at, and commits of finished results.

>>> sorted(git_commit())
['commit', 'lib_dirty']
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from .paths import REPO_ROOT


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
