import math

import pytest
import torch

from lib.metrics import (corpus_wer, normalize, paired_bootstrap_delta, rtfx, stored_bytes, summarize_samples,
                         utterance_errors, word_error_rate)


@pytest.mark.parametrize("ref, hyp, expected", [
    # hand-counted: S, D, I against normalized words
    ("HE HOPED THERE WOULD BE STEW", "He hoped there would be stew.", (0, 0, 0)),
    ("THE CAT SAT", "the dog sat", (1, 0, 0)),
    ("THE CAT SAT", "the sat", (0, 1, 0)),
    ("THE CAT SAT", "the cat sat down", (0, 0, 1)),
    ("MISTER QUILTER'S COLOR", "Mr. Quilter's colour", (0, 0, 0)),
    ("TWENTY FIVE", "25", (0, 0, 0)),
    ("A B C D", "", (0, 4, 0)),
])
def test_utterance_errors(ref, hyp, expected):
    e = utterance_errors(ref, hyp)
    assert (e["substitutions"], e["deletions"], e["insertions"]) == expected


def test_corpus_wer_weights_by_reference_words():
    # 1 error in 3 words + 0 in 1 word = 1/4, not the mean of per-utterance rates
    out = word_error_rate(["the cat sat", "hello"], ["the dog sat", "hello"])
    assert out["wer"] == pytest.approx(25.0)
    assert corpus_wer([]) != corpus_wer([]) or math.isnan(corpus_wer([]))


def test_normalizer_is_whispers():
    assert normalize("Hello, World! It's fine.") == "hello world it is fine"


@pytest.mark.parametrize("text,expected", [  # openai/whisper's English rules (tests/test_normalizer.py style)
    ("Mr. Quilter's colour, isn't it?", "mister quilter is color is not it"),
    ("twenty five dollars and 3 cents", "$25.03"),
    ("Um, the 1st of", "the 1st of"),
    ("He's gonna pay $5.50 [laughs] (or so)", "he is going to pay $5.50"),
    ("ONE HUNDRED AND TWENTY THOUSAND", "120000"),
    ("the theatre's centre was mm... organised", "the theater is center was organized"),
    ("two thousand and twenty", "2020"),
    ("it's 10:30 a.m.", "it is 10 30 a m"),
    ("Let's go to the 21st century", "let us go to the 21st century"),
    ("1.5 million", "1500000"),
])
def test_normalizer_rewrites_as_whisper_does(text, expected):
    assert normalize(text) == expected


def test_rtfx_and_latency_summary():
    assert rtfx(10.0, 2.0) == 5.0
    s = summarize_samples([4.0, 1.0, 3.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.5, 1.0, 4.0, 4)


def test_paired_bootstrap_identical_systems_have_zero_delta():
    errs = [utterance_errors("a b c", "a b d"), utterance_errors("x y", "x y")]
    d = paired_bootstrap_delta(errs, errs, n_resamples=200)
    assert d == {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0}


def test_paired_bootstrap_detects_a_worse_system():
    base = [utterance_errors("a b c d", "a b c d")] * 20
    worse = [utterance_errors("a b c d", "a b c e")] * 20
    d = paired_bootstrap_delta(base, worse, n_resamples=200)
    assert d["delta"] == pytest.approx(25.0) and d["ci_low"] > 0


def test_stored_bytes_counts_tied_weights_once(tiny_model):
    params = {id(p): p for p in tiny_model.parameters()}.values()
    buffers = list(tiny_model.buffers())
    expected = sum(p.numel() * 4 for p in params) + sum(b.numel() * b.element_size() for b in buffers)
    assert tiny_model.proj_out.weight is tiny_model.model.decoder.embed_tokens.weight
    assert stored_bytes(tiny_model) == expected


def test_stored_bytes_of_torch_quantized_tensor():
    q = torch.quantize_per_channel(torch.randn(4, 8), torch.ones(4, dtype=torch.float64),
                                   torch.zeros(4, dtype=torch.int64), 0, torch.qint8)
    model = torch.nn.Module()
    model.register_buffer("q", q)
    assert stored_bytes(model) == 32 + 4 * 8 + 4 * 8  # int8 data + float64 scales + int64 zero points
