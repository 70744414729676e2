"""Teacher-forced fidelity to fp32 on a tiny random Whisper, and the intervals behind every verdict."""
import copy

import numpy as np
import pytest

from lib.data import Utterance
from lib.fidelity import ReferenceCache, fidelity_stats, reference_text, utterance_fidelity
from lib.models import load_model


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(0)
    return [Utterance(f"{spk}-1-{i:04d}", "test-clean", "HE HOPED THERE WOULD BE STEW",
                      (0.1 * rng.standard_normal(16_000 + 4000 * i)).astype(np.float32), sha256=f"x{spk}{i}")
            for i, spk in enumerate(["11", "11", "22"])]


@pytest.fixture
def cache(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("WHISPER_PTQ_CACHE", str(tmp_path / "cache"))
    return ReferenceCache({"model": "test:tiny"}, lambda: tiny)


def fp32_rows(tiny, clips):
    """fp32's greedy transcripts of the clips, as stored rows (the forced tokens)."""
    from lib.transcribe import features, generate

    rows = []
    for u in clips:
        ids = generate(tiny.model, features(tiny.processor, [u.audio]), 12)[0]
        rows.append({"id": u.id, "split": u.split, "tokens": [int(t) for t in ids if t < 50257], "hypothesis": ""})
    return rows


def mean_kld(model, tiny, clips, cache):
    rows = [utterance_fidelity(model, tiny.processor, u, r, cache) for u, r in zip(clips, fp32_rows(tiny, clips))]
    return fidelity_stats(rows), rows


def test_fp32_against_itself_is_exactly_zero_and_fully_agrees(tiny, clips, cache):
    stats, rows = mean_kld(copy.deepcopy(tiny.model), tiny, clips, cache)
    assert stats["kld_mean"] == 0.0 and stats["kld_max"] == 0.0
    assert stats["agreement"] == 100.0 and stats["delta_nll"] == 0.0
    assert all(r["positions"] == len(t["tokens"]) + 1 for r, t in zip(rows, fp32_rows(tiny, clips)))


def test_a_perturbed_copy_diverges_and_agrees_less(tiny, clips, cache):
    import torch

    noisy = copy.deepcopy(tiny.model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in noisy.model.decoder.parameters():
            p.add_(0.5 * p.std() * torch.randn_like(p))
    stats, _ = mean_kld(noisy, tiny, clips, cache)
    assert stats["kld_mean"] > 1e-3 and stats["agreement"] < 100.0 and stats["delta_nll"] != 0.0


def test_fewer_bits_diverge_more(tiny, clips, cache):
    from lib.config import QuantSpec
    from lib.quantize import quantize

    kld = {}
    for bits in ("int8", "int4", "int2"):
        model, _ = quantize(copy.deepcopy(tiny.model), QuantSpec(library="hqq", scheme="weight_only", weights=bits,
                                                                 group_size=64), measure_error=False)
        kld[bits] = mean_kld(model, tiny, clips, cache)[0]["kld_mean"]
    assert 0 < kld["int8"] < kld["int4"] < kld["int2"], kld


def test_the_speaker_bootstrap_is_at_least_as_wide_when_speakers_differ():
    from lib.metrics import ratio_interval

    rng = np.random.default_rng(1)
    speakers = [f"s{k}" for k in range(12) for _ in range(10)]
    effect = {s: rng.normal(0, 3) for s in set(speakers)}  # each speaker shifts all of its utterances
    errors = [max(0.0, 4 + effect[s] + rng.normal(0, 0.5)) for s in speakers]
    words = [20.0] * len(speakers)
    utt = ratio_interval(errors, words, scale=100)
    spk = ratio_interval(errors, words, clusters=speakers, scale=100)
    assert spk["high"] - spk["low"] >= utt["high"] - utt["low"]
    assert spk["items"] == 12 and spk["resampled"] == "speakers"


def test_rescoring_a_changed_hypothesis_changes_the_wer_without_a_model(tmp_path, monkeypatch):
    from lib.results import ResultStore
    from lib.scoring import metrics_by_split

    import lib.models

    monkeypatch.setattr(lib.models, "load_model", lambda *a, **k: pytest.fail("scoring must not load a model"))
    store = ResultStore(tmp_path)
    row = {"id": "1-2-0", "split": "test-clean", "reference": "A B C D", "hypothesis": "a b c d", "audio_seconds": 1,
           "wall_seconds": 1, "cpu_seconds": 1, "encoder_seconds": 0, "batch": 0, "batch_wall_seconds": 1,
           "substitutions": 0, "deletions": 0, "insertions": 0, "ref_words": 4}
    store.save("s", {"status": "ok"}, [row])
    assert metrics_by_split(store.load_rows("s"), ["test-clean"])["test-clean"]["wer"] == 0.0
    store.save("s", {"status": "ok"}, [{**row, "hypothesis": "a b x d"}])  # the frozen counts still say 0
    assert metrics_by_split(store.load_rows("s"), ["test-clean"])["test-clean"]["wer"] == 25.0


@pytest.mark.parametrize("reference, text", [
    ("HE HOPED THERE WOULD BE STEW", "He hoped there would be stew."),
    ("I'M SURE I SAW IT", "I'm sure I saw it."),
    ("", ""),
])
def test_reference_text_is_sentence_case(reference, text):
    assert reference_text(reference) == text


@pytest.mark.parametrize("library,weights,expect_logits", [("onnxruntime", "fp32", True),
                                                           ("openvino", "fp32", True),
                                                           ("ctranslate2", "fp32", True)])
def test_a_runtime_scores_through_its_own_logits_or_says_why_not(library, weights, expect_logits, tiny, clips,
                                                                  cache):
    from lib.config import QuantSpec
    from lib.quantize import quantize

    runtime, _ = quantize(copy.deepcopy(tiny.model), QuantSpec(library=library, weights=weights),
                          processor=tiny.processor, measure_error=False)
    if not expect_logits:
        with pytest.raises(NotImplementedError, match="no teacher-forced logits"):
            mean_kld(runtime, tiny, clips, cache)
        return
    stats, _ = mean_kld(runtime, tiny, clips, cache)
    assert stats["kld_mean"] < 1e-6 and stats["agreement"] == 100.0 and abs(stats["delta_nll"]) < 1e-3


def test_a_runtime_without_logits_says_why():
    from lib.fidelity import runtime_logprobs
    from lib.runtimes import RuntimeModel

    class NoLogits(RuntimeModel):
        runtime = "example"
        logits_note = "its bindings expose no logits"

    with pytest.raises(NotImplementedError, match="no teacher-forced logits: its bindings expose no logits"):
        runtime_logprobs(NoLogits("."), None, [1, 2])
