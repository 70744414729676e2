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
