"""A result belongs to the audio it was computed on; growing data decodes only the new utterances."""
import hashlib
import json

import pytest

from conftest import write_tone
from lib.config import RunConfig
from lib.data import DataError
from lib.evaluate import evaluate
from lib.results import ResultStore


@pytest.fixture
def config():
    return RunConfig(model="test:tiny", split=("test-clean",), batch_size=2, threads=1, max_new_tokens=8)


def add_utterance(root, utt="61-70968-0002", text="THE NEW ONE", seconds=1.2):
    spk, chap, _ = utt.split("-")
    folder = root / "test-clean" / spk / chap
    write_tone(folder / f"{utt}.flac", seconds, freq=650)
    trans = folder / f"{spk}-{chap}.trans.txt"
    trans.write_text(trans.read_text() + f"{utt} {text}\n")
    digest = hashlib.sha256((folder / f"{utt}.flac").read_bytes()).hexdigest()
    with open(root / "MANIFEST.tsv", "a") as f:
        f.write(f"test-clean\t{utt}\t{seconds}\t{digest}\t{text}\n")


def decoded_ids(monkeypatch):
    """Record which utterances ``transcribe`` is asked to decode."""
    import lib.evaluate

    seen, real = [], lib.evaluate.transcribe

    def spy(model, processor, utterances, *a, **k):
        seen.extend(u.id for u in utterances)
        return real(model, processor, utterances, *a, **k)

    monkeypatch.setattr(lib.evaluate, "transcribe", spy)
    return seen


def test_growing_the_manifest_decodes_only_the_new_ids(config, fake_librispeech, tmp_path, monkeypatch):
    evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False, fidelity=False)
    store = ResultStore(tmp_path)
    before = store.load_lines(config.slug)
    add_utterance(fake_librispeech)
    seen = decoded_ids(monkeypatch)
    summary = evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False, fidelity=False)
    assert seen == ["61-70968-0002"]
    after = store.load_lines(config.slug)
    assert len(after) == 4 and set(before) <= set(after)  # the stored rows, byte for byte
    assert [json.loads(x)["id"] for x in after] == sorted(json.loads(x)["id"] for x in after)
    assert summary["metrics"]["test-clean"]["utterances"] == 4
    assert len(summary["sessions"]) == 2 and summary["sessions"][1]["decoded"] == {"test-clean": 1}


def test_a_result_on_other_audio_is_not_reused(config, fake_librispeech, tmp_path, monkeypatch):
    evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False, fidelity=False)
    victim = fake_librispeech / "test-clean/61/70968/61-70968-0000.flac"
    write_tone(victim, 1.0, freq=900)  # other audio under the same id (the manifest follows it)
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    manifest = fake_librispeech / "MANIFEST.tsv"
    manifest.write_text("\n".join(
        line if "61-70968-0000" not in line else "\t".join(line.split("\t")[:3] + [digest] + line.split("\t")[4:])
        for line in manifest.read_text().splitlines()) + "\n")
    seen = decoded_ids(monkeypatch)
    summary = evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False, fidelity=False)
    assert seen == ["61-70968-0000"]
    assert summary["coverage"]["test-clean"]["61-70968-0000"] == digest


def test_a_bad_data_source_fails_before_any_cache_lookup(config, fake_librispeech, tmp_path, monkeypatch):
    evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False, fidelity=False)
    with pytest.raises(DataError, match="does not exist"):
        evaluate(config, data=str(tmp_path / "nonexistent"), results_dir=tmp_path)
    import datasets

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="cannot stream"):
        evaluate(config, data="hub", results_dir=tmp_path)


def test_a_smaller_data_set_is_scored_on_its_own_utterances(config, fake_librispeech, tmp_path):
    evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False, fidelity=False)
    smaller = RunConfig.from_dict({**config.to_dict(), "limit": None})
    (fake_librispeech / "test-clean/1089").rename(tmp_path / "moved")  # one chapter gone
    manifest = fake_librispeech / "MANIFEST.tsv"
    manifest.write_text("".join(x for x in manifest.read_text().splitlines(True) if "1089-134686" not in x))
    summary = evaluate(smaller, data=str(fake_librispeech), results_dir=tmp_path, progress=False, fidelity=False)
    assert summary["metrics"]["test-clean"]["utterances"] == 2 and "note" in summary


def test_a_partial_result_is_compared_on_the_common_set():
    from lib.scoring import compare_wer

    def row(i, hyp):
        return {"id": f"{i}-1-0", "split": "test-other", "reference": "a b c d", "hypothesis": hyp}

    base = [row(i, "a b c d") for i in range(6)]
    other = [row(i, "a b c x") for i in range(4)]  # not yet decoded on the last two
    d = compare_wer(base, other, "test-other")
    assert d["utterances"] == 4 and d["ref_words"] == 16 and d["delta"] == pytest.approx(25.0)


def test_the_token_budget_leaves_a_normal_transcript_untouched_and_stops_a_loop(tiny):
    import numpy as np

    from lib.decoding import RECIPE
    from lib.transcribe import features, generate

    audio = [np.sin(np.arange(16_000) / (3 + i)).astype(np.float32) * 0.1 for i in range(2)]
    feats = features(tiny.processor, audio)
    free = generate(tiny.model, feats, 60)  # a random model decodes to the cap: a loop
    assert (free < 50257).sum(dim=1).min() >= 50
    long_enough = generate(tiny.model, feats, 60, durations=[30.0, 30.0])  # budget above the cap
    assert long_enough.tolist() == free.tolist()
    cut = generate(tiny.model, feats, 60, durations=[1.0, 30.0])  # row 0: budget 28 tokens
    assert int((cut[0] < 50257).sum()) <= RECIPE.budget(1.0) < int((free[0] < 50257).sum())
    width = min(cut.shape[1], free.shape[1])
    assert cut[1, :width].tolist() == free[1, :width].tolist()  # the other row decodes exactly as before
    kept = 4 + RECIPE.budget(1.0)  # the prompt, then the budget
    assert cut[0, :kept].tolist() == free[0, :kept].tolist()  # a prefix of the unbudgeted transcript


def test_a_result_decoded_before_the_budget_is_current_unless_a_transcript_reaches_it():
    from lib.decoding import RECIPE, outdated_fields

    v2 = {k: v for k, v in RECIPE.as_dict().items() if not k.startswith("budget") and k != "version"}
    short = [{"text_tokens": 20, "audio_seconds": 6.0}]
    looped = [{"text_tokens": 439, "audio_seconds": 6.0}]
    assert outdated_fields(v2, lambda: short) == []
    assert outdated_fields(v2, lambda: looped) == ["budget"]
    assert outdated_fields({**v2, "single_generate_call": None}, lambda: short) == ["single_generate_call"]
