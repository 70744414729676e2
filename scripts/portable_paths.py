"""Rewrite machine paths in committed notebooks and result files as repository-relative ones.

What the runner now records relative to the repository (papermill's ``input_path``/``output_path``, the
parameter cell's ``results_dir``/``footprint_dir``, tracebacks of failed rows), older files hold as absolute
paths of the machine that made them. This rewrites them in place:

* ``<root>/.venv/lib/python3.11/site-packages/x.py`` (any ``.../site-packages/``) -> ``<site-packages>/x.py``
* ``<root>/lib/evaluate.py`` -> ``lib/evaluate.py``; ``<root>`` alone -> ``.``
* papermill's ``input_path`` -> the converted source the runner now names (``book/runs/.<slug>.source.ipynb``)

``data.path`` (the LibriSpeech directory) is left alone: it is not under ``<root>``.

    python scripts/portable_paths.py --root /work/main          # the root the files were made in
    python scripts/portable_paths.py --root /work/main --check  # list what would change, change nothing
"""
from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = r"\.venv/lib/python[\d.]+/site-packages/"  # the project's own venv, absolute (under root) or relative
SITE_PACKAGES = re.compile(r"(?<![\w.])/[^\s\"'\\]*?/site-packages/")  # any other absolute site-packages


def portable_text(text: str, root: str, relative_name: str | None = None) -> str:
    """``text`` with ``root``'s absolute paths made relative; ``relative_name`` is the file's path in the repository.

    >>> portable_text('File "/w/r/.venv/lib/python3.11/site-packages/torch/nn.py", line 2 in /w/r/lib/x.py', "/w/r")
    'File "<site-packages>/torch/nn.py", line 2 in lib/x.py'
    >>> portable_text("W1126 11346 .venv/lib/python3.11/site-packages/torch/a.py:630] x; in /w/r", "/w/r")
    'W1126 11346 <site-packages>/torch/a.py:630] x; in .'
    """
    text = re.sub(rf"(?:{re.escape(root.rstrip('/'))}/)?{VENV}", "<site-packages>/", text)
    text = SITE_PACKAGES.sub("<site-packages>/", text)
    if relative_name and relative_name.endswith(".ipynb"):
        path = Path(relative_name)
        text = re.sub(r'"input_path": "[^"]*"', f'"input_path": "{path.parent / f".{path.stem}.source.ipynb"}"', text)
        text = re.sub(r'"output_path": "[^"]*"', f'"output_path": "{path.parent / f".{path.stem}.part.ipynb"}"', text)
    text = text.replace(root.rstrip("/") + "/", "")
    return re.sub(rf"{re.escape(root.rstrip('/'))}(?![\w/.-])", ".", text)


def tracked_files(folders=("book", "results")) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", *folders], cwd=REPO, capture_output=True, text=True, check=True)
    return [p for p in out.stdout.split("\0") if p.endswith((".ipynb", ".json", ".jsonl", ".md", ".txt"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(REPO), help="the repository root the files were written in")
    parser.add_argument("--check", action="store_true", help="list the files that would change")
    a = parser.parse_args(argv)
    changed = 0
    for name in tracked_files():
        path = REPO / name
        text = path.read_text()
        new = portable_text(text, a.root, name)
        if new != text:
            changed += 1
            if a.check:
                print(name)
            else:
                path.write_text(new)
    print(f"{changed} file(s) {'would change' if a.check else 'rewritten'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
