import subprocess
import sys

import pytest

from conftest import REPO


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lib", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args, message", [
    (["run", "--model", "no such model"], "unknown model spec"),
    (["run", "--split", "test-dirty"], "unknown split"),
    (["run", "--limit", "0"], "limit must be a positive integer"),
    (["run", "--model", "footprint:whisper-small"], "not for WER"),
    (["run", "--library", "tensorrt"], "unknown library"),
    (["run", "--library", "hqq", "--weights", "int5", "--group-size", "64"], "supported:"),
    (["run", "--data", "/no/such/librispeech", "--limit", "1"], "does not exist"),
])
def test_bad_input_is_one_clear_line(args, message):
    out = run_cli(*args)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], out.stderr[-2000:]


def test_table_prints_the_study_as_markdown():
    out = run_cli("table", "--status", "ok")
    assert out.returncode == 0, out.stderr[-2000:]
    header, rule, *rows = out.stdout.strip().splitlines()
    assert header.split("|")[1].strip() == "configuration" and "small MB" in header and "WER other" in header
    assert rows and all("| ok " in r for r in rows) and any(r.startswith("| fp32 ") for r in rows)
    assert "nan" not in out.stdout


def test_compact_table_keeps_the_last_line_of_an_error():
    import pandas as pd

    from lib.report import compact_table

    df = pd.DataFrame({"configuration": ["a", "b"], "status": ["failed", "pending"], "small MB": [None, None],
                       "error": ["Traceback ...\nRuntimeError: FX tracing failed", None]})
    assert list(compact_table(df)["reason"]) == ["RuntimeError: FX tracing failed", ""]
