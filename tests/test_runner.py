import json
import textwrap

import nbformat
import pytest

from lib.config import ConfigError
from lib.results import ResultStore
from lib.grids import Job, expand_grid
from lib.git import commit_results
from lib.notebooks import execute_notebook
from lib.runner import run_grids, sweep_status

TINY_DEFAULTS = "defaults: {model: 'test:tiny', split: [test-clean], limit: 1, threads: 1, max_new_tokens: 4}"


def write_grid(tmp_path, body: str, name: str = "grid.yml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def grid(tmp_path):
    return write_grid(tmp_path, f"""
        title: test
        {TINY_DEFAULTS}
        footprint: false
        runs:
          - {{library: none}}
          - {{library: torch_ao, scheme: dynamic, weights: int8, activations: int8, granularity: per_channel}}
        expand:
          - {{library: hqq, scheme: weight_only, weights: [int4, int2], group_size: 64}}
    """)


@pytest.fixture
def data(fake_librispeech, monkeypatch):
    monkeypatch.setenv("LIBRISPEECH_DIR", str(fake_librispeech))
    return str(fake_librispeech)


def test_expand_grid_crosses_lists_and_keeps_file_order(grid):
    slugs = [j.slug for j in expand_grid(grid)]
    assert slugs == ["tiny__fp32__test-clean__n1__max4", "tiny__pt-dyn-int8-aint8-pc__test-clean__n1__max4",
                     "tiny__hqq-wo-int4-g64__test-clean__n1__max4", "tiny__hqq-wo-int2-g64__test-clean__n1__max4"]
    assert [j.slug for j in expand_grid(grid, {"limit": 3})][0] == "tiny__fp32__test-clean__n3__max4"


def test_grid_duplicates_are_dropped_and_bad_grids_named(tmp_path):
    dup = write_grid(tmp_path, f"""
        {TINY_DEFAULTS}
        runs: [{{library: none}}, {{library: none}}]
    """, "dup.yml")
    assert len(expand_grid(dup)) == 1
    bad = write_grid(tmp_path, "runz: []\n", "bad.yml")
    with pytest.raises(ConfigError, match="unknown grid key"):
        expand_grid(bad)
    with pytest.raises(ConfigError, match="not found"):
        expand_grid(tmp_path / "missing.yml")
    invalid = write_grid(tmp_path, f"{TINY_DEFAULTS}\nruns: [{{library: hqq, weights: int5}}]\n", "invalid.yml")
    with pytest.raises(ConfigError, match="supported"):
        expand_grid(invalid)


def test_malformed_yaml_is_one_line_naming_the_file_and_line(tmp_path):
    broken = write_grid(tmp_path, f"""
        {TINY_DEFAULTS}
        runs:
          - {{library: hqq, weights: int4
    """, "broken.yml")
    with pytest.raises(ConfigError) as caught:
        expand_grid(broken)
    message = str(caught.value)
    assert message.startswith("broken.yml, line 5: malformed YAML") and "\n" not in message, message


MERGE_CONFLICT = '<<<<<<< HEAD\n{"status": "ok"}\n=======\n{"status": "failed"}\n>>>>>>> sweep\n'


def test_a_corrupt_summary_is_named_once_and_its_configuration_runs_again(grid, data, tmp_path, caplog):
    store = ResultStore(tmp_path / "r")
    slug = expand_grid(grid)[0].slug
    store.summary_path(slug).parent.mkdir(parents=True)
    store.summary_path(slug).write_text(MERGE_CONFLICT)
    with caplog.at_level("WARNING", logger="lib.results"):
        report = run_grids([grid], use_notebooks=False, results_dir=tmp_path / "r", progress=False, only="fp32")
    assert report.ran == [slug] and not report.failed and store.status(slug) == "ok"  # re-run, file replaced
    named = [r.getMessage() for r in caplog.records if f"{slug}.json" in r.getMessage()]
    assert len(named) == 1 and "line 1: not valid JSON" in named[0], named
    assert sweep_status([grid], tmp_path / "r")[0]["wer"] == "ok"


def test_the_sweep_logs_each_job_with_a_timestamp(grid, tmp_path, capsys, monkeypatch):
    import logging
    import re

    import lib.evaluate
    from lib.__main__ import log_to_stdout

    def instant(config, results_dir, **kw):
        ResultStore(results_dir).save(config.slug, {"status": "ok"})

    monkeypatch.setattr(lib.evaluate, "evaluate", instant)
    log_to_stdout()
    try:
        run_grids([grid], use_notebooks=False, results_dir=tmp_path / "r", progress=False, only="fp32")
    finally:
        lib_logger = logging.getLogger("lib")
        for handler in [h for h in lib_logger.handlers if getattr(h, "_lib_cli", False)]:
            lib_logger.removeHandler(handler)
        lib_logger.setLevel(logging.NOTSET)
    lines = capsys.readouterr().out.splitlines()
    slug = expand_grid(grid)[0].slug
    assert re.fullmatch(rf"\[\d\d:\d\d:\d\d\] start {slug}", lines[0]), lines
    assert re.fullmatch(rf"\[\d\d:\d\d:\d\d\] done {slug} in \d+ s \(wer: ok, footprint: None\)", lines[1]), lines


def test_skips_done_slugs_and_forces_reruns(grid, data, tmp_path):
    kw = dict(use_notebooks=False, results_dir=tmp_path / "r", progress=False)
    finished = []
    first = run_grids([grid], after_job=lambda job: finished.append(job.slug), **kw)
    assert len(first.ran) == 4 and not first.failed and not first.skipped and finished == first.ran
    second = run_grids([grid], after_job=lambda job: finished.append(job.slug), **kw)
    assert second.ran == [] and len(second.skipped) == 4 and len(finished) == 4
    forced = run_grids([grid], only="hqq-wo-int2", force=True, **kw)
    assert forced.ran == ["tiny__hqq-wo-int2-g64__test-clean__n1__max4"]


def test_failing_configuration_is_recorded_while_others_complete(grid, data, tmp_path, monkeypatch):
    import lib.quantize.torch_ao as backend

    def broken(*a, **k):
        raise RuntimeError("unsupported operator: quantized::linear_dynamic")

    working = backend.apply
    monkeypatch.setattr(backend, "apply", broken)
    report = run_grids([grid], use_notebooks=False, results_dir=tmp_path / "r", progress=False)
    slug = "tiny__pt-dyn-int8-aint8-pc__test-clean__n1__max4"
    assert list(report.failed) == [slug] and "unsupported operator" in report.failed[slug]
    store = ResultStore(tmp_path / "r")
    assert store.status(slug) == "failed"
    assert [store.status(s) for s in report.ran if s != slug] == ["ok", "ok", "ok"]
    assert "FAILED" in report.text()

    monkeypatch.setattr(backend, "apply", working)  # the library is fixed: --retry-failed re-runs only the failure
    again = run_grids([grid], use_notebooks=False, results_dir=tmp_path / "r", progress=False, retry_failed=True)
    assert again.ran == [slug] and not again.failed and store.status(slug) == "ok"


def test_interrupted_sweep_resumes_where_it_stopped(grid, data, tmp_path, monkeypatch):
    import lib.evaluate

    real = lib.evaluate.evaluate
    calls = []

    def interrupted(config, **kw):
        calls.append(config.slug)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the machine stops mid-sweep
        return real(config, **kw)

    monkeypatch.setattr(lib.evaluate, "evaluate", interrupted)
    kw = dict(use_notebooks=False, results_dir=tmp_path / "r", progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_grids([grid], **kw)
    monkeypatch.setattr(lib.evaluate, "evaluate", real)
    resumed = run_grids([grid], **kw)
    assert len(resumed.skipped) == 2 and resumed.ran == calls[2:] + [expand_grid(grid)[3].slug]


def test_commit_results_commits_only_the_result_paths(grid, tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-gitconfig"))  # a fresh machine: no git identity
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = tmp_path / "repo"
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True, check=True).stdout
    (repo / "results").mkdir(parents=True)
    git("init", "-q")
    (repo / "results" / "a.json").write_text("{}")
    (repo / "notes.md").write_text("work in progress")
    git("add", "notes.md")  # staged by someone else: must not ride along
    job = expand_grid(grid)[0]
    assert commit_results(job, repo=repo)
    assert git("log", "--format=%s %ae").strip() == f"Sweep result: fp32 ({job.slug}) sweep@whisper-ptq.invalid"
    assert git("show", "--name-only", "--format=").split() == ["results/a.json"]
    assert not commit_results(job, repo=repo)  # nothing new: git's refusal is reported, not raised
    (tmp_path / "not-a-repo" / "results").mkdir(parents=True)
    assert not commit_results(job, repo=tmp_path / "not-a-repo")  # git add fails: reported, not raised


def test_commit_checkpoints_commits_finished_batches_and_their_removal(grid, tmp_path, monkeypatch):
    import subprocess

    from lib.git import commit_checkpoints

    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = tmp_path / "repo"
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True, check=True).stdout
    partial = repo / "results" / ".partial"
    partial.mkdir(parents=True)
    git("init", "-q")
    job = expand_grid(grid)[0]
    assert not commit_checkpoints(job, repo=repo)  # nothing saved yet
    (partial / f"{job.slug}__test-clean.jsonl").write_text('{"key": {}}\n{"batch": 0}\n')
    (repo / "results" / "other.json").write_text("{}")  # a finished result is not a checkpoint's business
    assert commit_checkpoints(job, repo=repo)
    assert git("log", "--format=%s").strip() == f"Sweep checkpoint: fp32 ({job.slug})"
    assert git("show", "--name-only", "--format=").split() == [f"results/.partial/{job.slug}__test-clean.jsonl"]
    (partial / f"{job.slug}__test-clean.jsonl").unlink()  # the row finished: its checkpoint is discarded
    assert commit_checkpoints(job, repo=repo)
    assert git("ls-files", "results/.partial").strip() == ""


def test_during_job_is_called_while_each_job_runs(grid, tmp_path, monkeypatch):
    import time

    import lib.evaluate

    real, seen = lib.evaluate.evaluate, []

    def slow(config, **kw):
        time.sleep(0.3)
        return real(config, **kw)

    monkeypatch.setattr(lib.evaluate, "evaluate", slow)
    report = run_grids([grid], use_notebooks=False, results_dir=tmp_path / "r", progress=False, only="hqq",
                       footprint=False, during_job=lambda job: seen.append(job.slug), during_job_every_s=0.05)
    assert not report.failed and set(seen) == set(report.ran) and len(seen) >= 2 * len(report.ran)


def test_a_failing_after_job_hook_never_stops_the_sweep(grid, data, tmp_path):
    def broken(job):
        raise OSError("git: command not found")

    report = run_grids([grid], use_notebooks=False, results_dir=tmp_path / "r", progress=False, only="hqq",
                       after_job=broken)
    assert len(report.ran) == 2 and not report.failed


def test_a_pause_file_holds_the_next_job_until_it_is_removed(tmp_path):
    import threading
    import time

    from lib.runner import wait_while_paused

    pause = tmp_path / "sweep.pause"
    wait_while_paused(pause, poll_s=0.01)  # no file: returns at once
    pause.touch()
    threading.Timer(0.2, pause.unlink).start()
    started = time.monotonic()
    wait_while_paused(pause, poll_s=0.01)
    assert time.monotonic() - started >= 0.15 and not pause.exists()


def test_dry_run_lists_pending_slugs_without_running(grid, tmp_path, capsys):
    report = run_grids([grid], use_notebooks=False, results_dir=tmp_path / "r", dry_run=True)
    assert len(report.ran) == 4 and not list(tmp_path.rglob("*.json"))
    assert capsys.readouterr().out.count("pending ") == 4


def test_dry_run_says_when_only_the_footprint_is_left(tmp_path, data, capsys):
    grid = write_grid(tmp_path, f"""
        title: test
        {TINY_DEFAULTS}
        runs:
          - {{library: none}}
    """)
    job = expand_grid(grid)[0]
    run_grids([grid], use_notebooks=False, results_dir=tmp_path / "r", footprint=False, progress=False)
    capsys.readouterr()
    run_grids([grid], use_notebooks=False, results_dir=tmp_path / "r", dry_run=True)
    assert capsys.readouterr().out.startswith(f"footprint {job.slug}")


def test_dry_run_shows_the_batches_an_interrupted_run_kept(grid, tmp_path, capsys):
    slug = expand_grid(grid)[0].slug
    from lib.decoding import RECIPE

    DECODING = RECIPE.as_dict()

    checkpoint = ResultStore(tmp_path / "r").checkpoint(slug, "test-clean", {"slug": slug, "decoding": dict(DECODING)})
    for b in range(3):
        checkpoint.append({"batch": b, "rows": [], "seconds": {"loop": 1.0, "model": 1.0, "encoder": 0.5}})
    run_grids([grid], use_notebooks=False, results_dir=tmp_path / "r", dry_run=True)
    assert f"pending {slug} (batches saved: test-clean 3)" in capsys.readouterr().out


@pytest.mark.notebook
def test_papermill_executes_the_per_configuration_notebook(grid, data, tmp_path):
    job = Job("test", expand_grid(grid)[2].config, footprint=False)
    out = execute_notebook(job, tmp_path / "runs", tmp_path / "r", tmp_path / "f", data=data,
                           log_dir=tmp_path / "logs")
    assert out.name == f"{job.slug}.ipynb"
    assert "test-clean: 100%" in (tmp_path / "logs" / f"{job.slug}.log").read_text()  # progress, streamed
    nb = nbformat.read(out, as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    summary = json.loads((tmp_path / "r" / f"{job.slug}.json").read_text())
    assert summary["status"] == "ok" and summary["config"]["quant"]["library"] == "hqq"
    outputs = "".join(str(o) for c in nb.cells for o in c.get("outputs", []))
    assert "test-clean WER (x100)" in outputs


def test_refresh_outdated_reruns_results_decoded_with_an_older_recipe(grid, data, tmp_path, capsys, monkeypatch):
    kw = dict(use_notebooks=False, results_dir=tmp_path / "r", progress=False)
    run_grids([grid], **kw)
    store = ResultStore(tmp_path / "r")
    old = expand_grid(grid)[1].slug  # decoded before one generate call per batch was the rule
    summary = store.load(old)
    summary["decoding"].pop("single_generate_call")
    store.save(old, summary)
    assert store.state(old) == "outdated"
    status = sweep_status([grid], tmp_path / "r")
    assert [r["wer"] for r in status] == ["ok", "outdated", "ok", "ok"]
    from lib.machine import cpu_description, cpu_label

    assert {r["wer CPU"] for r in status} == {cpu_label(cpu_description())} and {r["footprint CPU"] for r in status} == {""}
    assert run_grids([grid], **kw).ran == []  # an outdated result still counts as done by default
    import lib.models

    with monkeypatch.context() as m:  # a refresh that fails keeps the finished result
        m.setattr(lib.models, "load_model", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("hub unreachable")))
        run_grids([grid], only=old, refresh_outdated=True, **kw)
    assert store.state(old) == "outdated" and store.load(old)["metrics"] == summary["metrics"]
    run_grids([grid], dry_run=True, refresh_outdated=True, results_dir=tmp_path / "r")
    assert f"outdated {old}" in capsys.readouterr().out
    refreshed = run_grids([grid], refresh_outdated=True, **kw)
    assert refreshed.ran == [old] and store.state(old) == "ok"
    assert store.load(old)["decoding"]["single_generate_call"] is True
    assert list(store.older_decoding()) == [old]  # the old summary is kept to measure what the change did

    from lib.decoding_audit import decoding_changes

    changes = decoding_changes(tmp_path / "r")
    assert list(changes.columns) == ["n clean", "WER clean older", "WER clean one call", "ΔWER clean",
                                     "identical clean", "CPU older → now"] and len(changes) == 1
    assert (tmp_path / "r" / "older-decoding" / f"{old}.jsonl").exists()  # transcripts kept: matched utterances
    row = changes.iloc[0]
    assert row["n clean"] == summary["metrics"]["test-clean"]["utterances"] and row["ΔWER clean"] == 0


def test_refresh_order_is_new_rows_then_the_fp32_reference_then_the_highest_wer(tmp_path):
    from lib.runner import refresh_rank
    from lib.decoding import RECIPE

    DECODING = RECIPE.as_dict()

    store = ResultStore(tmp_path)
    older = {k: v for k, v in DECODING.items() if k != "single_generate_call"}
    rows = {"fp32": ("none", 5.0, older), "int2": ("hqq", 90.0, older), "int8": ("hqq", 6.0, older),
            "new": ("hqq", 7.0, DECODING)}
    for slug, (library, wer, decoding) in rows.items():
        store.save(slug, {"status": "ok", "config": {"quant": {"library": library}}, "decoding": decoding,
                          "metrics": {"test-other": {"wer": wer}}})
    assert sorted(list(rows) + ["pending"], key=lambda s: refresh_rank(store, s)) == [
        "new", "pending", "fp32", "int2", "int8"]
