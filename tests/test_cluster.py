"""The sweep on a local Ray cluster (``num_cpus=2``): the same rows as in-process, failures as rows, resume.

Tasks run in Ray's worker processes, so a test's stand-in for :func:`lib.cluster.decode_shard` is pickled by
value (this module is registered with Ray's cloudpickle); it points the worker's :mod:`lib.data` at the
synthetic ``../shared`` first, as ``conftest.self_contained_data`` does for the test process.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from lib.cluster import shard_ranges
from lib.config import RunConfig
from lib.grids import Job
from lib.results import ResultStore

pytestmark = pytest.mark.cluster
TIMING_FIELDS = {"wall_seconds", "cpu_seconds", "encoder_seconds", "batch_wall_seconds", "rtfx", "timing"}
SUMMARY_SKIP = {"environment", "started", "finished", "sessions", "harness", "peak_rss_mb"}


@pytest.mark.parametrize("utterances, batch_size, per_shard, expected", [
    (3, 2, 1, [(0, 0, 2), (1, 2, 3)]),
    (4, 2, 2, [(0, 0, 4)]),
    (0, 8, 8, []),
    (17, 8, 1, [(0, 0, 8), (1, 8, 16), (2, 16, 17)]),
])
def test_shards_are_consecutive_whole_batches(utterances, batch_size, per_shard, expected):
    assert shard_ranges(utterances, batch_size, per_shard) == expected


@pytest.fixture(scope="module")
def ray_cluster():
    import ray  # pinned in requirements.txt: a broken install fails, never skips
    from lib.cluster import connect

    connect("auto", num_cpus=2)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def in_test_view(repo_root: str, *args, fail_batch: int | None = None, kill_marker: str | None = None,
                 fail_slug: str | None = None):
    """:func:`lib.cluster.decode_shard` in a worker that sees the synthetic data; optionally a shard that raises
    (``fail_batch``) or whose worker dies the first time it runs (``kill_marker``)."""
    import lib.data
    from lib.cluster import decode_shard
    from lib.config import RunConfig

    lib.data.REPO_ROOT = Path(repo_root)
    config, split, ids, sha256, first_batch = args[:5]
    mine = fail_slug is None or RunConfig.from_dict(config).slug == fail_slug
    if ids and mine and first_batch == fail_batch:
        if kill_marker is None:
            raise RuntimeError("simulated decoder crash")
        if not Path(kill_marker).exists():
            Path(kill_marker).write_text("killed once\n")
            os._exit(1)  # the worker process dies: Ray runs the task again
    return decode_shard(*args)


@pytest.fixture
def decode(synthetic_shared):
    return functools.partial(in_test_view, str(synthetic_shared.parent / "repository"))


@pytest.fixture
def config():
    return RunConfig(model="test:tiny", split=("test-clean",), batch_size=2, threads=1, max_new_tokens=6)


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_FIELDS}
    return value


def stored(results_dir: Path, slug: str) -> tuple[dict, list[dict]]:
    store = ResultStore(results_dir)
    return store.load(slug), store.load_rows(slug)


def test_a_sharded_run_writes_the_in_process_result(ray_cluster, decode, config, fake_librispeech, tmp_path):
    from lib.cluster import decode_on_cluster
    from lib.evaluate import evaluate

    data = str(fake_librispeech)
    evaluate(config, data=data, results_dir=tmp_path / "local", progress=False, fidelity=False)
    failed = decode_on_cluster([Job("t", config, footprint=False)], results_dir=tmp_path / "ray", data=data,
                               batches_per_shard=1, decode=decode)
    assert failed == {}
    (local, local_rows), (ray_, ray_rows) = stored(tmp_path / "local", config.slug), stored(tmp_path / "ray", config.slug)
    assert ray_["status"] == "ok"
    assert [without_timing(r) for r in ray_rows] == [without_timing(r) for r in local_rows]
    assert [r["batch"] for r in ray_rows] == [0, 0, 1]  # two shards of one batch each, numbered as in-process
    keep = lambda s: {k: without_timing(v) for k, v in s.items() if k not in SUMMARY_SKIP}
    assert keep(ray_) == keep(local)
    executor = ray_["sessions"][-1]["executor"]
    assert executor["engine"] == "ray" and executor["tasks"] == 3  # the facts task + two shards
    assert ray_["environment"]["packages"] == local["environment"]["packages"]
    assert not list((tmp_path / "ray" / ".partial").glob("*.jsonl"))  # checkpoints go once merged


def test_a_raising_shard_is_a_failed_row_others_finish_and_a_retry_decodes_only_it(
        ray_cluster, decode, config, fake_librispeech, tmp_path):
    from lib.cluster import decode_on_cluster

    data, other = str(fake_librispeech), dataclasses.replace(config, max_new_tokens=5)
    jobs = [Job("t", config, footprint=False), Job("t", other, footprint=False)]
    broken = functools.partial(decode, fail_batch=1, fail_slug=config.slug)
    assert decode_on_cluster(jobs, results_dir=tmp_path, data=data, batches_per_shard=1, decode=broken) == {}
    failed, _ = stored(tmp_path, config.slug)
    assert failed["status"] == "failed" and failed["failed_stage"] == "transcribe"
    assert "test-clean shard 1" in failed["error"] and "simulated decoder crash" in failed["error"]
    assert stored(tmp_path, other.slug)[0]["status"] == "ok"
    assert ResultStore(tmp_path).saved_batches(config.slug) == {"test-clean": 1}  # shard 0's batch is kept
    decode_on_cluster(jobs, results_dir=tmp_path, data=data, batches_per_shard=1, decode=decode, retry_failed=True)
    summary, rows = stored(tmp_path, config.slug)
    assert summary["status"] == "ok" and [r["id"] for r in rows] == sorted({r["id"] for r in rows})
    assert len(rows) == 3 and summary["sessions"][-1]["executor"]["tasks"] == 2  # facts + the missing shard
    assert summary["metrics"]["test-clean"]["timing"]["resumed_batches"] == 1


def test_a_killed_worker_is_retried_without_duplicating_rows(ray_cluster, decode, config, fake_librispeech, tmp_path):
    from lib.cluster import decode_on_cluster

    marker = tmp_path / "killed"
    killer = functools.partial(decode, fail_batch=1, kill_marker=str(marker))
    decode_on_cluster([Job("t", config, footprint=False)], results_dir=tmp_path / "r", data=str(fake_librispeech),
                      batches_per_shard=1, decode=killer, max_retries=2)
    summary, rows = stored(tmp_path / "r", config.slug)
    assert marker.exists() and summary["status"] == "ok", summary.get("error")
    assert [r["id"] for r in rows] == ["1089-134686-0000", "61-70968-0000", "61-70968-0001"]


def test_skip_if_done_holds_across_cluster_and_in_process_sweeps(ray_cluster, decode, fake_librispeech, tmp_path,
                                                                 monkeypatch):
    import lib.evaluate
    from lib.cluster import sweep_on_cluster
    from lib.runner import run_grids

    grid = tmp_path / "grid.yml"
    grid.write_text(textwrap.dedent("""
        defaults: {model: 'test:tiny', split: [test-clean], limit: 2, threads: 1, max_new_tokens: 4}
        runs: [{library: none}, {library: none, max_new_tokens: 5}]
    """))
    monkeypatch.setenv("LIBRISPEECH_DIR", str(fake_librispeech))
    kw = dict(use_notebooks=False, results_dir=tmp_path / "r", progress=False)
    first = run_grids([grid], only="max4", **kw)  # in-process
    assert len(first.ran) == 1 and not first.failed

    def no_decoding(*a, **k):
        raise AssertionError("the driver must not decode what the cluster decoded")

    monkeypatch.setattr(lib.evaluate, "transcribe", no_decoding)
    on_cluster = sweep_on_cluster([grid], "auto", decode=decode, batches_per_shard=1, **kw)
    assert on_cluster.skipped == first.ran and len(on_cluster.ran) == 1 and not on_cluster.failed
    summary = ResultStore(tmp_path / "r").load(on_cluster.ran[0])
    assert summary["status"] == "ok" and summary["sessions"][-1]["executor"]["engine"] == "ray"
    again = run_grids([grid], **kw)  # in-process again: both done
    assert sorted(again.skipped) == sorted(first.ran + on_cluster.ran) and not again.ran
    json.dumps(summary)  # plain JSON


@pytest.mark.parametrize("argv", [["--threads-per-task", "2"], ["--batches-per-shard", "2"]])
def test_cluster_options_without_a_cluster_are_refused(argv, tmp_path, capsys):
    from lib.__main__ import main

    assert main(["sweep", "experiments/scheme.yml", *argv]) == 2
    assert "--cluster runs only" in capsys.readouterr().err
