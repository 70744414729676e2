"""The committed report builds with warnings as errors, and its pages show real numbers."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", "-W", "-n", "--keep-going", "--path-output", str(out), "book/"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "_build" / "html"


def test_every_chapter_is_rendered(built):
    from lib.notebooks import CHAPTERS  # the one chapter list, read from _toc.yml

    for page in CHAPTERS:
        assert (built / f"{page}.html").exists(), page


def test_baseline_page_shows_the_result_file_wer(built):
    summary = json.loads((REPO / "results" / "whisper-base__fp32__test-clean+test-other.json").read_text())
    html = (built / "baseline.html").read_text()
    assert f"{summary['metrics']['test-other']['wer']:.2f}" in html
    assert "Traceback" not in html


def test_chapter_sources_are_in_sync_with_executed_notebooks():
    import jupytext
    import nbformat

    for source in sorted((REPO / "notebooks").glob("*.md")):
        if source.stem == "run_config":
            continue
        executed = nbformat.read(REPO / "book" / f"{source.stem}.ipynb", as_version=4)
        want = [c.source for c in jupytext.read(source).cells if c.cell_type == "code"]
        have = [c.source for c in executed.cells if c.cell_type == "code"
                and "injected-parameters" not in c.metadata.get("tags", [])]
        assert have == want, f"book/{source.stem}.ipynb is stale: run python -m lib chapter {source.stem}"


ABSOLUTE_PATH = re.compile(r"(?<![\w.:/<>-])/(?:work|home|root|tmp|usr|opt|mnt|private|Users|var)/[\w.+-]+")
LIBRARY_STDERR = ("Failed to load", "_pytree.py", "TqdmWarning", "it/s]", "UserWarning", "FutureWarning")


def _visible_text(html: str) -> str:
    """The page's text outside <script>/<style> and the search index (what a reader can see or copy)."""
    return re.sub(r"<(script|style)\b.*?</\1>", "", html, flags=re.S)


def test_built_pages_hold_no_machine_path_no_stray_traceback_and_no_unexplained_mark(built):
    """A reader never sees this machine's paths, a traceback outside the run log, library stderr on any page
    (run pages included), or a ‡/§ the page leaves undefined (a page that uses a mark must say what it means)."""
    parent = str(REPO.parent)
    legends = {"‡": "older", "§": "CPU class"}
    pages = sorted(built.glob("*.html")) + sorted((built / "runs").glob("*.html"))
    assert len(pages) > 20
    for page in pages:
        html = _visible_text(page.read_text())
        name = page.relative_to(built).as_posix()
        assert parent + "/" not in html, f"{name} shows a path under {parent}/"
        hit = ABSOLUTE_PATH.search(html)
        assert not hit, f"{name} shows an absolute machine path: {hit.group(0)}"
        if page.name != "runlog.html" and page.parent == built:
            assert "Traceback (most recent call last)" not in html, f"{name} shows a traceback"
        for marker in LIBRARY_STDERR:
            assert marker not in html, f"{name} shows library stderr ({marker!r})"
        assert "stderr" not in re.findall(r'class="([^"]*output[^"]*)"', html).__str__(), f"{name} renders stderr"
        for mark, words in legends.items():
            if mark in html:
                assert words in html, f"{name} uses {mark} without saying what it means"


def test_sidebar_labels_the_smoke_runs(built):
    """Run pages made with an utterance limit sit under their own labelled section of the sidebar."""
    html = (built / "intro.html").read_text()
    assert "Smoke runs" in html
    smoke = html[html.index("Smoke runs"):]
    assert "__n2.html" in smoke and "__n2.html" not in html[:html.index("Smoke runs")]


EXECUTED_CHAPTERS = ("setup", "baseline", "footprint", "runtimes", "bitwidth", "scheme", "noise", "nonspeech",
                     "calibration")


def _html_outputs(name: str) -> list[str]:
    import nbformat

    notebook = nbformat.read(REPO / "book" / f"{name}.ipynb", as_version=4)
    return ["".join(o.get("data", {}).get("text/html", "")) for c in notebook.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if "text/html" in o.get("data", {})]


@pytest.mark.parametrize("name", EXECUTED_CHAPTERS)
def test_rendered_chapter_tables_show_no_pandas_residue(name):
    """A chapter's tables show every row and column whole: no NaN, no 'rows × columns' footer, no cell cut by
    pandas ('...'), no error cut mid-expression ('== …'), and no count printed as a float ('99.0 ')."""
    for html in _html_outputs(name):
        text = re.sub(r"<[^>]+>", " ", re.sub(r"<style\b.*?</style>", "", html, flags=re.S))
        assert "NaN" not in text, f"{name}: a table shows NaN"
        assert " rows × " not in text, f"{name}: a table was truncated by pandas"
        assert not re.search(r"\w\.\.\. ", text), f"{name}: a cell was cut by pandas: {text[:200]}"
        assert not re.search(r"(==|\(|,|=) ?…", text), f"{name}: an error was cut mid-expression"


@pytest.mark.parametrize("name", ("setup", "baseline"))
def test_counts_on_setup_and_baseline_are_integers(name):
    """Utterances, speakers, errors and words read '99', never '99.0' (these pages' tables hold no other x.0)."""
    for html in _html_outputs(name):
        text = re.sub(r"<[^>]+>", " ", re.sub(r"<style\b.*?</style>", "", html, flags=re.S))
        hit = re.search(r"(?<![\d.])\d+\.0(?![\d.])", text)
        assert not hit, f"{name}: a count shows as a float: {text[max(0, hit.start() - 80):hit.end() + 20]}"
