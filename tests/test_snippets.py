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
