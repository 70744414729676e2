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
