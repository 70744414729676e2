"""One lock per configuration, so two sweeps (in-process, papermill kernels or the Ray driver) never decode the
same configuration at once.

An advisory ``flock`` on ``<results>/.locks/<slug>.lock``: the kernel drops it when the holding process dies
(SIGKILL included), so a killed sweep never leaves a stale lock behind.

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> with configuration_lock(root, "a") as mine:
...     mine, held_elsewhere(root, "a")
(True, None)
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

LOCK_DIR = ".locks"


def lock_path(results_dir: Path | str, slug: str) -> Path:
    return Path(results_dir) / LOCK_DIR / f"{slug}.lock"


@contextlib.contextmanager
def configuration_lock(results_dir: Path | str, slug: str) -> Iterator[bool]:
    """Hold ``slug``'s lock while the block runs; yields False (and holds nothing) when another process holds it.

    Re-entrant within one process: a nested claim on a slug this process already holds yields True.
    """
    path = lock_path(results_dir, slug)
    key = str(path.resolve()) if path.parent.exists() else str(path)
    if key in _held:
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        _held.add(str(path.resolve()))
        try:
            yield True
        finally:
            _held.discard(str(path.resolve()))
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


_held: set[str] = set()


def held_elsewhere(results_dir: Path | str, slug: str) -> str | None:
    """The pid (as text) of another process that holds ``slug``'s lock, or None when it is free or ours."""
    path = lock_path(results_dir, slug)
    if not path.exists() or str(path.resolve()) in _held:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return path.read_text().strip() or "?"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
