"""No silent wrong answer: each way a careless run got a wrong answer with exit code 0, or lost a stored row, is a
case here (issue "No silent wrong answer"). Every case failed on the harness before the fix."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO
from lib.config import ConfigError, RunConfig, model_tag
from lib.data import DataError
from lib.evaluate import ConfigurationBusy, evaluate
from lib.results import ResultStore
from test_incremental import add_utterance, decoded_ids


@pytest.fixture
def config():
    return RunConfig(model="test:tiny", split=("test-clean",), batch_size=2, threads=1, max_new_tokens=8)


def run(config, data, results, **kw):
    return evaluate(config, data=str(data), results_dir=results, progress=False, fidelity=False, **kw)


# 1. Model identity -------------------------------------------------------------------------------------------

def test_an_empty_local_folder_is_refused_not_served_a_cached_result(tmp_path):
    from lib.checks import check_run

    folder = tmp_path / "whisper-base"
    folder.mkdir()
    with pytest.raises(ConfigError, match="holds no weight files"):
        check_run(RunConfig(model=f"local:{folder}"))


def test_two_local_models_in_same_named_folders_get_different_slugs(tmp_path):
    tags = []
    for i, payload in enumerate((b"fine-tune A", b"fine-tune B")):
        folder = tmp_path / str(i) / "whisper-base"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(payload)
        tags.append(model_tag(f"local:{folder}"))
    assert tags[0] != tags[1] and all(t.startswith("whisper-base-") for t in tags)
    assert model_tag("embedded:whisper-base") == "whisper-base"  # stored results keep their names


# 2. The data, checked against MANIFEST.tsv both ways ---------------------------------------------------------

def add_unlisted(root, utt="61-70968-0002"):
    """An utterance in the audio and trans.txt, but not in MANIFEST.tsv."""
    manifest = (root / "MANIFEST.tsv").read_text()
    add_utterance(root, utt)
    (root / "MANIFEST.tsv").write_text(manifest)


def test_an_utterance_missing_from_the_manifest_is_refused(config, fake_librispeech, tmp_path):
    add_unlisted(fake_librispeech)
    with pytest.raises(DataError, match="not listed in .*MANIFEST.tsv.*--allow-unlisted"):
        run(config, fake_librispeech, tmp_path)
    assert not list(tmp_path.glob("*.json"))  # nothing recorded


def test_allowing_unlisted_data_is_recorded(config, fake_librispeech, tmp_path, monkeypatch):
    add_unlisted(fake_librispeech)
    monkeypatch.setenv("WHISPER_PTQ_ALLOW_UNLISTED", "1")
    summary = run(config, fake_librispeech, tmp_path)
    assert summary["status"] == "ok" and summary["data"]["unlisted_allowed"] is True
    assert summary["metrics"]["test-clean"]["utterances"] == 4


def test_a_run_never_drops_stored_rows_of_utterances_it_did_not_decode(config, fake_librispeech, tmp_path,
                                                                      monkeypatch):
    run(config, fake_librispeech, tmp_path)
    store = ResultStore(tmp_path)
    before = store.load_lines(config.slug)
    copy = tmp_path / "copy"  # a copy of the sample with one utterance gone and one unlisted added
    import shutil

    shutil.copytree(fake_librispeech, copy)
    (copy / "test-clean/1089/134686/1089-134686-0000.flac").unlink()
    (copy / "test-clean/1089/134686/1089-134686.trans.txt").write_text("")
    add_unlisted(copy)
    monkeypatch.setenv("WHISPER_PTQ_ALLOW_UNLISTED", "1")
    summary = run(config, copy, tmp_path)
    assert summary["metrics"]["test-clean"]["utterances"] == 3  # scored on this copy's utterances
    after = store.load_lines(config.slug)
    assert set(before) <= set(after) and len(after) == 4  # the row this run did not decode is still there
    monkeypatch.delenv("WHISPER_PTQ_ALLOW_UNLISTED")
    seen = decoded_ids(monkeypatch)
    again = run(config, fake_librispeech, tmp_path)  # back on the real sample: nothing pending
    assert seen == [] and again["metrics"]["test-clean"]["utterances"] == 3


def test_an_edited_transcript_is_refused(config, fake_librispeech, tmp_path):
    run(config, fake_librispeech, tmp_path)
    trans = fake_librispeech / "test-clean/61/70968/61-70968.trans.txt"
    trans.write_text(trans.read_text().replace("UNIVERSE", "UNIVERSITY"))
    with pytest.raises(DataError, match="transcript of 61-70968-0001 .* differs from MANIFEST.tsv"):
        run(config, fake_librispeech, tmp_path)


def test_a_changed_reference_is_not_served_from_the_cache(config, fake_librispeech, tmp_path, monkeypatch):
    run(config, fake_librispeech, tmp_path)
    for name in ("test-clean/61/70968/61-70968.trans.txt", "MANIFEST.tsv"):  # both changed, consistently
        path = fake_librispeech / name
        path.write_text(path.read_text().replace("UNIVERSE", "UNIVERSITY"))
    seen = decoded_ids(monkeypatch)
    run(config, fake_librispeech, tmp_path)
    assert seen == ["61-70968-0001"]
    rows = {r["id"]: r for r in ResultStore(tmp_path).load_rows(config.slug)}
    assert rows["61-70968-0001"]["reference"] == "A MAN SAID TO THE UNIVERSITY"


# 3. A torn or merge-conflicted JSONL -------------------------------------------------------------------------

CONFLICT = "<<<<<<< HEAD\n{}\n=======\n{}\n>>>>>>> other\n"


def test_a_conflicted_jsonl_names_its_file_and_counts_as_not_done(config, fake_librispeech, tmp_path, caplog):
    run(config, fake_librispeech, tmp_path)
    store = ResultStore(tmp_path)
    store.rows_path(config.slug).write_text(CONFLICT)
    assert store.get(config.slug) is None and store.state(config.slug) == "pending"
    assert f"{config.slug}.jsonl, line 1: not valid JSON" in store.problem(config.slug)
    summary = run(config, fake_librispeech, tmp_path)  # re-run: decoded again, the file restored
    assert summary["status"] == "ok" and store.get(config.slug) is not None


def test_a_conflicted_jsonl_leaves_the_other_commands_working(tmp_path, fake_librispeech, config):
    grid = tmp_path / "g.yml"
    grid.write_text("defaults: {model: 'test:tiny', split: [test-clean], batch_size: 2, threads: 1, "
                    "max_new_tokens: 8}\nfootprint: false\nruns:\n  - {library: none}\n")
    results = tmp_path / "r"
    run(config, fake_librispeech, results)
    ResultStore(results).rows_path(config.slug).write_text(CONFLICT)
    from lib.runner import run_grids

    report = run_grids([grid], dry_run=True, results_dir=results, progress=False)
    assert report.ran == [config.slug]  # listed as to do, not a crash


# 4. `chapter` checks its parameters and never overwrites a page with a failed run ---------------------------

@pytest.mark.parametrize("params,message", [
    ({"group_size": "abc"}, "parameter group_size takes an int"),
    ({"nonexistent": 3}, "no parameter 'nonexistent'"),
])
def test_chapter_refuses_a_bad_parameter_and_leaves_the_page(params, message, monkeypatch):
    import lib.notebooks

    page = REPO / "book" / "bitwidth.ipynb"
    before = page.read_bytes()
    monkeypatch.setattr(lib.notebooks, "run_papermill", lambda *a, **k: pytest.fail("executed"))
    with pytest.raises(ConfigError, match=message):
        lib.notebooks.execute_chapter("bitwidth", params)
    assert page.read_bytes() == before


def test_a_failed_chapter_exits_non_zero_and_leaves_the_page(monkeypatch, tmp_path):
    import papermill

    import lib.notebooks

    page = tmp_path / "book" / "scope.ipynb"
    page.parent.mkdir()
    page.write_text("committed")
    monkeypatch.setattr(lib.notebooks, "BOOK_DIR", page.parent)
    monkeypatch.setattr(lib.notebooks, "REPO_ROOT", tmp_path)

    def boom(notebook, output, parameters, **kw):
        raise papermill.PapermillExecutionError(3, 3, "table = x", "KeyError", "'wer_clean'", [])

    monkeypatch.setattr(lib.notebooks, "run_papermill", boom)
    with pytest.raises(lib.notebooks.ChapterFailed, match=r"failed at cell 3: KeyError: 'wer_clean'.*left as it was"):
        lib.notebooks.execute_chapter("scope", {})
    assert page.read_text() == "committed"


def test_a_row_whose_file_is_unreadable_is_named_in_the_table(monkeypatch, tmp_path):
    from lib.tables import grid_table

    results = tmp_path / "r"
    slug = "whisper-base__hqq-wo-int4-g64__test-clean+test-other"
    ResultStore(results).save(slug, {"slug": slug, "status": "ok"})
    ResultStore(results).summary_path(slug).write_text('{"status": "ok", "metrics": {')  # torn copy
    df = grid_table("bitwidth", results_dir=results, footprint_dir=tmp_path / "f", bootstrap=False)
    row = df[df["slug"] == slug].iloc[0]
    assert row["status"] == "unreadable" and f"{slug}.json, line 1" in row["error"]


# 5. The sweep shows why a run failed, and resolves paths once -------------------------------------------------

def test_a_notebook_failure_shows_the_notebooks_own_error():
    import papermill

    from lib.notebooks import failure_line
    from lib.runner import SweepReport

    exc = papermill.PapermillExecutionError(2, 2, "run()", "DataError", "\x1b[0;31mLibriSpeech directory 'x' does not exist",
                                            [])
    report = SweepReport(failed={"s": failure_line(exc) + "\ntraceback..."})
    assert report.text().splitlines()[1] == "  FAILED s: DataError: LibriSpeech directory 'x' does not exist"
    assert SweepReport(failed={"s": ""}).text().splitlines()[1].startswith("  FAILED s: no error text")


def test_relative_paths_are_resolved_once_where_they_were_typed(tmp_path, monkeypatch):
    import argparse

    from lib.__main__ import absolute_inputs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIBRISPEECH_DIR", "../x")
    a = argparse.Namespace(data="data", results="res", allow_unlisted=False)
    absolute_inputs(a)
    assert os.environ["LIBRISPEECH_DIR"] == str(tmp_path / "../x") and a.data == str(tmp_path / "data")


# 6. A speed measured under other settings is not this run's ---------------------------------------------------

def test_a_cached_speed_from_other_threads_and_batch_is_not_returned(config, fake_librispeech, tmp_path):
    first = run(config, fake_librispeech, tmp_path)
    assert first["metrics"]["test-clean"]["rtfx"] > 0
    other = RunConfig.from_dict({**config.to_dict(), "threads": 2, "batch_size": 1})
    again = run(other, fake_librispeech, tmp_path)
    assert "rtfx" not in again["metrics"]["test-clean"] and again["metrics"]["test-clean"]["wer"] is not None
    assert "timed at threads=1, batch_size=2" in again["speed_note"]


# 7. Smaller gaps ------------------------------------------------------------------------------------------------

HOLD = "import sys, time; from lib.locks import configuration_lock\n" \
       "with configuration_lock(sys.argv[1], sys.argv[2]):\n    print('held', flush=True); time.sleep(60)\n"


def test_a_configuration_decoded_elsewhere_is_not_decoded_twice(config, fake_librispeech, tmp_path, monkeypatch):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), config.slug], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigurationBusy, match=f"pid {holder.pid}"):
            run(config, fake_librispeech, tmp_path)
        from lib.runner import run_grids

        grid = tmp_path / "g.yml"
        grid.write_text("defaults: {model: 'test:tiny', split: [test-clean], batch_size: 2, threads: 1, "
                        "max_new_tokens: 8}\nfootprint: false\nruns:\n  - {library: none}\n")
        report = run_grids([grid], use_notebooks=False, results_dir=tmp_path, data=str(fake_librispeech),
                           progress=False)
        assert report.skipped == [config.slug] and not report.failed
    finally:
        holder.kill()
        holder.wait()
    assert run(config, fake_librispeech, tmp_path)["status"] == "ok"  # a killed holder leaves no stale lock


def test_an_io_failure_is_one_line_naming_the_path_and_the_first_error():
    from lib.__main__ import io_error_line

    try:
        try:
            raise OSError(28, "No space left on device", "results/x.jsonl")
        except OSError:
            raise OSError(30, "Read-only file system", "results/x.json")
    except OSError as exc:
        assert io_error_line(exc) == "I/O failure at results/x.jsonl: [Errno 28] No space left on device"


def test_an_unreachable_ray_cluster_fails_in_one_line_within_seconds():
    from lib.cluster import connect

    started = time.time()
    with pytest.raises(ConfigError, match="no Ray cluster answers at ray://127.0.0.1:1"):
        connect("ray://127.0.0.1:1")
    assert time.time() - started < 15


def test_an_empty_grid_is_an_error(tmp_path):
    from lib.runner import run_grids

    grid = tmp_path / "empty.yml"
    grid.write_text("runs: []\n")
    with pytest.raises(ConfigError, match="no configurations"):
        run_grids([grid], dry_run=True, results_dir=tmp_path, progress=False)


def test_warnings_go_to_stderr_and_progress_to_stdout(capsys):
    from lib.__main__ import log_to_stdout

    log_to_stdout()
    try:
        logging.getLogger("lib.results").warning("corrupt file")
        logging.getLogger("lib.runner").info("start x")
    finally:
        lib_logger = logging.getLogger("lib")
        for handler in [h for h in lib_logger.handlers if getattr(h, "_lib_cli", False)]:
            lib_logger.removeHandler(handler)
        lib_logger.setLevel(logging.NOTSET)
    out = capsys.readouterr()
    assert "corrupt file" in out.err and "corrupt file" not in out.out and "start x" in out.out


def test_result_files_are_written_0644(config, fake_librispeech, tmp_path):
    run(config, fake_librispeech, tmp_path)
    for path in (ResultStore(tmp_path).summary_path(config.slug), ResultStore(tmp_path).rows_path(config.slug)):
        assert path.stat().st_mode & 0o777 == 0o644
