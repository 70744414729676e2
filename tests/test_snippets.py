"""The Reproduce page's code is built from the configurations, and the runtime chapter's comparisons."""
import ast

import pytest

from lib.config import QuantSpec
from lib.grids import GRIDS, expand_grid, grid_path
from lib.runtime_report import identical_transcripts, own_reference_spec
from lib.snippets import snippet, spec_line

STUDY = {job.config.quant.slug: job.config.quant for g in GRIDS for job in expand_grid(grid_path(g))}


@pytest.mark.parametrize("slug", sorted(STUDY))
def test_every_configuration_rebuilds_from_its_snippet(slug):
    spec = STUDY[slug]
    assert eval(spec_line(spec), {"QuantSpec": QuantSpec}) == spec
    ast.parse(snippet(spec))  # valid Python (shell lines are comments)


@pytest.mark.parametrize("library,expected", [("ctranslate2", "ct2-fp32"), ("onnxruntime", "ort-fp32"),
                                              ("openvino", "ov-fp32"), ("whisper_cpp", "ggml-float16"),
                                              ("torch_cast", "fp32")])
def test_each_runtime_is_compared_with_its_own_reference(library, expected):
    spec = next(s for s in STUDY.values() if s.library == library)
    assert own_reference_spec(spec).slug == expected


def test_identical_transcripts_are_counted_after_normalization():
    base = [{"id": f"1-1-{i}", "split": "test-clean", "hypothesis": h} for i, h in enumerate(["Hello, world.", "a b"])]
    other = [{"id": "1-1-0", "split": "test-clean", "hypothesis": "hello world"},
             {"id": "1-1-1", "split": "test-clean", "hypothesis": "a c"},
             {"id": "1-1-9", "split": "test-clean", "hypothesis": "not in base"}]
    assert identical_transcripts(base, other, "test-clean") == (1, 2)


def _blocks(markdown: str) -> list[tuple[str, str, str]]:
    """``(pick, language, code)`` of every fenced block in the Reproduce page's snippets, in page order."""
    import re

    out, pick = [], "prelude"
    for part in re.split(r"(```\w*\n.*?\n```)", markdown, flags=re.S):
        fence = re.match(r"```(\w*)\n(.*)\n```", part, flags=re.S)
        if fence:
            out.append((pick, fence.group(1), fence.group(2)))
        elif part.strip().startswith("**"):
            pick = part.strip().split("**")[1]
    return out


@pytest.mark.real_weights
@pytest.mark.real_data
def test_every_snippet_the_book_shows_runs_offline(tmp_path):
    """Each pick's code on the Reproduce page (linked from the landing page) runs as shown, offline, on the
    embedded whisper-base and the JFK clip: the harness's call and the runtime's own tools."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from lib.data import jfk_path
    from lib.models import load_model
    from lib.paths import REPO_ROOT
    from lib.snippets import AUDIO, MODEL, ship_snippets_markdown
    from lib.tables import study_table

    blocks = _blocks(ship_snippets_markdown(study_table()).data)
    assert blocks and blocks[0][0] == "prelude" and len({pick for pick, _, _ in blocks}) > 1
    base = load_model("embedded:whisper-base")
    model_dir = tmp_path / "whisper-base"
    base.model.save_pretrained(model_dir)
    base.processor.save_pretrained(model_dir)
    audio = jfk_path()

    def fill(code):
        return code.replace(MODEL, str(model_dir)).replace(AUDIO, str(audio))

    env = {**{k: v for k, v in os.environ.items() if k != "LIBRISPEECH_DIR"}, "PYTHONPATH": str(REPO_ROOT), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    prelude = fill(blocks[0][2])
    for pick, language, code in blocks[1:]:
        if language == "bash":
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", fill(code)], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=600)
        else:  # the harness's call follows the prelude; a runtime's own Python block stands alone
            source = prelude + "\n" + fill(code) if "quantize(model, spec" in code else fill(code)
            done = subprocess.run([sys.executable, "-c", source], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=600)
        assert done.returncode == 0, f"{pick} ({language}): {done.stderr[-1500:]}"
        if language == "python":
            assert "ask not what your country can do for you" in done.stdout.lower().replace(",", ""), (pick, done.stdout)
