"""Benchmarks measure and are not run here; these checks only catch a script that no longer imports
(e.g. a lib function it uses was renamed)."""
import importlib.util
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_benchmark_script_imports_and_has_a_main(script, monkeypatch):
    # pt2e_inductor.py points Inductor at a fresh cache at import: monkeypatch removes it again afterwards
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.main) and module.__doc__.strip()


def test_cpu_class_latency_picks_one_grid_row_per_headline_and_a_folder_per_class(tmp_path):
    spec = importlib.util.spec_from_file_location("benchmark_cpu", SCRIPTS[0].parent / "cpu_class_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    jobs = module.headline_jobs()  # StopIteration here: a headline substring no longer names a grid row
    assert len(jobs) == len(module.HEADLINE) == len({j.slug for j in jobs})
    assert [j.slug for j in module.headline_jobs(only="hqq")] == [j.slug for j in jobs if "hqq" in j.slug]
    assert module.by_cpu_dir("AVX-512 VNNI", tmp_path) == tmp_path / "by-cpu" / "avx-512-vnni"
