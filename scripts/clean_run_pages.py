"""Clean the committed run pages as the runner now writes them (:func:`lib.notebooks.cleaned_notebook`): no stderr
outputs (library warnings, torchao ``.so`` load failures, tqdm bars), no machine paths.

    python scripts/clean_run_pages.py           # rewrite book/runs/*.ipynb in place
    python scripts/clean_run_pages.py --check   # list what would change, change nothing
"""
from __future__ import annotations

import argparse

from lib.paths import RUNS_DIR
from lib.notebooks import cleaned_notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="list the pages that would change")
    a = parser.parse_args(argv)
    changed = 0
    for page in sorted(RUNS_DIR.glob("*.ipynb")):
        text = page.read_text()
        new = cleaned_notebook(text)
        if new != text:
            changed += 1
            if a.check:
                print(page.name)
            else:
                page.write_text(new)
    print(f"{changed} page(s) {'would change' if a.check else 'cleaned'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
