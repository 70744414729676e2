"""Peak resident memory is measured in a fresh process, stored per footprint slug, and read into the tables."""
from lib.config import QuantSpec


def test_peak_memory_of_a_tiny_model_is_measured_in_its_own_process_and_stored(tmp_path):
    from lib.memory import peak_memory
    from lib.tables import memory_columns

    row = peak_memory(QuantSpec(library="torch_cast", weights="bfloat16"), model="test:tiny",
                      results_dir=tmp_path / "memory")
    assert row["status"] == "ok", row.get("error")
    assert 0 < row["baseline_mb"] <= row["loaded_mb"] <= row["peak_mb"]
    assert row["environment"]["cpu"]["logical_cores"] >= 1
    again = peak_memory(QuantSpec(library="torch_cast", weights="bfloat16"), model="test:tiny",
                        results_dir=tmp_path / "memory")
    assert again["started"] == row["started"]  # stored: not measured twice
    assert memory_columns(row["slug"], tmp_path)["peak_mb"] == row["peak_mb"]


def test_a_configuration_that_fails_is_a_failed_row_with_its_reason(tmp_path):
    from lib.memory import peak_memory

    row = peak_memory(QuantSpec(library="whisper_cpp", weights="fp32"), model="test:tiny",
                      results_dir=tmp_path / "memory")
    assert row["status"] == "failed" and row["error"]
