import json

import pytest

from lib.results import ResultStore, atomic_write_text
from lib.machine import environment


def test_summary_is_written_last_and_marks_done(tmp_path):
    store = ResultStore(tmp_path)
    assert not store.exists("a")
    store.save("a", {"status": "ok", "slug": "a"}, [{"id": "u1"}, {"id": "u2"}])
    assert store.exists("a") and store.status("a") == "ok"
    assert [r["id"] for r in store.load_rows("a")] == ["u1", "u2"]


def test_interrupted_write_leaves_nothing_that_counts(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)

    class Boom(Exception):
        pass

    def rows():
        yield {"id": "u1"}
        raise Boom

    with pytest.raises(Boom):
        store.save("b", {"status": "ok"}, rows())
    assert not store.exists("b")
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_text(path, json.dumps({"v": 1}))
    atomic_write_text(path, json.dumps({"v": 2}))
    assert json.loads(path.read_text()) == {"v": 2}


def test_environment_records_versions_cpu_and_git():
    env = environment(threads=2)
    assert env["threads"] == 2 and env["packages"]["torch"].startswith("2.13")
    assert env["cpu"]["logical_cores"] >= 1 and "simd" in env["cpu"]
    assert "commit" in env["git"]
