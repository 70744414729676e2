"""Committed artifacts are portable: no absolute path of the machine that made them (STYLE principle 13)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO


def tracked(*folders: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", *folders], cwd=REPO, capture_output=True, text=True, check=True)
    return [p for p in out.stdout.split("\0") if p]


def test_no_committed_result_or_page_holds_a_machine_path():
    parent = str(REPO.parent)  # e.g. /work: catches this checkout, its siblings (../shared) and other worktrees
    if parent == "/":
        pytest.skip("the repository sits at the filesystem root: every absolute path would match")
    offenders = []
    for name in tracked("results", "book"):
        try:
            text = (REPO / name).read_text()
        except (UnicodeDecodeError, FileNotFoundError):  # binary (figures), or deleted but not yet committed
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if parent + "/" in line:
                at = line.index(parent + "/")
                offenders.append(f"{name}:{number}: …{line[max(0, at - 30):at + 70].strip()}…")
                break
    assert not offenders, (f"{len(offenders)} committed file(s) hold a path under {parent}/ (first line each; "
                           "python scripts/portable_paths.py --root <old root> rewrites the ones under a "
                           "repository root):\n" + "\n".join(offenders[:25]))


def test_a_traceback_names_files_relative_to_the_repository_and_site_packages():
    from lib.paths import REPO_ROOT, portable

    site = next(p for p in sys.path if p.endswith("site-packages"))
    trace = (f'File "{site}/torch/nn/modules/module.py", line 1, in _call_impl\n'
             f'File "{REPO_ROOT}/lib/evaluate.py", line 120, in evaluate\n')
    assert portable(trace) == ('File "<site-packages>/torch/nn/modules/module.py", line 1, in _call_impl\n'
                               'File "lib/evaluate.py", line 120, in evaluate\n')
    assert portable(None) is None and portable("no paths here") == "no paths here"


def test_a_failed_result_is_saved_without_machine_paths(tmp_path):
    from lib.paths import REPO_ROOT
    from lib.results import ResultStore

    store = ResultStore(tmp_path)
    store.save("x", {"status": "failed", "error": f"RuntimeError in {REPO_ROOT}/lib/quantize/torch_ao.py",
                     "traceback": f'File "{REPO_ROOT}/lib/evaluate.py", line 3'})
    saved = store.load("x")
    assert saved["error"] == "RuntimeError in lib/quantize/torch_ao.py"
    assert saved["traceback"] == 'File "lib/evaluate.py", line 3'


def test_the_parameter_cell_names_folders_relative_to_the_repository():
    from lib.config import RunConfig
    from lib.grids import Job
    from lib.paths import REPO_ROOT
    from lib.notebooks import notebook_parameters

    params = notebook_parameters(Job("g", RunConfig()), REPO_ROOT / "results", REPO_ROOT / "results" / "footprint",
                                 force=False, data=None)
    assert (params["results_dir"], params["footprint_dir"]) == ("results", "results/footprint")


@pytest.mark.notebook
def test_papermill_records_repository_relative_paths(tmp_path, monkeypatch):
    import jupytext
    import nbformat

    import lib.paths
    import lib.notebooks

    for module in (lib.paths, lib.notebooks):
        monkeypatch.setattr(module, "REPO_ROOT", tmp_path)  # the repository is tmp_path for this run
    header = "---\nkernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n"
    notebook = jupytext.reads(header + "```{code-cell} ipython3\n:tags: [parameters]\nx = 1\n```\n", fmt="md:myst")
    output = tmp_path / "book" / "page.ipynb"
    output.parent.mkdir()
    lib.notebooks.run_papermill(notebook, output, {"x": 2})
    recorded = nbformat.read(output, as_version=4).metadata.papermill
    assert (recorded.input_path, recorded.output_path) == ("book/.page.source.ipynb", "book/.page.part.ipynb")
    assert sorted(p.name for p in output.parent.iterdir()) == ["page.ipynb"]  # the converted source is gone
