"""Where the repository is, and how to write a path or a traceback so that it means the same on any machine.

>>> portable(f"File {REPO_ROOT}/lib/evaluate.py, line 3")
'File lib/evaluate.py, line 3'
"""
from __future__ import annotations

import site
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNS_DIR = REPO_ROOT / "book" / "runs"  # the executed per-configuration notebooks: the book's run pages


def _prefixes() -> list[tuple[str, str]]:
    """(absolute prefix, replacement) pairs, longest first: site-packages, then the repository."""
    packages = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    pairs = [(p.rstrip("/") + "/", "<site-packages>/") for p in packages if p]
    pairs += [(str(Path(sys.prefix)) + "/", "<python>/"), (str(REPO_ROOT) + "/", ""), (str(REPO_ROOT), "."),
              (str(REPO_ROOT.parent) + "/", "../"),
              (str(Path.home()) + "/", "~/")]
    return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)


def portable(text: str | None) -> str | None:
    """``text`` with this machine's absolute prefixes replaced: the repository by relative paths,
    site-packages by ``<site-packages>/``, the home directory by ``~/`` (for tracebacks that get committed)."""
    if not text:
        return text
    for prefix, replacement in _prefixes():
        text = text.replace(prefix, replacement)
    return text


def relative_to_repo(path: Path | str) -> str:
    """``path`` relative to the repository when it lies inside it, else unchanged:
    ``relative_to_repo(REPO_ROOT / "results")`` -> ``'results'``."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
