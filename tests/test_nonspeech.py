"""Non-speech and one-word clips (lib.nonspeech): deterministic audio, hand-checked metrics, a tiny-model run."""
import json

import numpy as np
import pytest

from lib.config import QuantSpec, RunConfig
from lib.data import calibration_pool
from lib.nonspeech import (at_level, load_nonspeech, nonspeech_clips, nonspeech_metrics, nonspeech_slug,
                           one_word_clips, one_word_metrics, run_nonspeech, speech_empty, words)


def test_clips_are_deterministic_and_levelled():
    pool = calibration_pool()  # the synthetic dev-clean utterance and jfk clip (conftest)
    a = nonspeech_clips(lengths=(1,), levels=(-30, -50), pool=pool)
    b = nonspeech_clips(lengths=(1,), levels=(-30, -50), pool=pool)
    assert [c.id for c in a] == ["silence-1s", "white-m30dbfs-1s-s0", "white-m50dbfs-1s-s0", "pink-m30dbfs-1s-s0",
                                 "pink-m50dbfs-1s-s0", "babble-m30dbfs-1s-s0"]
    assert [c.sha256 for c in a] == [c.sha256 for c in b]
    assert len({c.sha256 for c in a}) == len(a)  # every clip is its own audio
    silence = a[0]
    assert silence.audio.dtype == np.float32 and len(silence.audio) == 16_000 and not silence.audio.any()
    for clip in a[1:]:
        rms_db = 20 * np.log10(np.sqrt(np.mean(clip.audio.astype(np.float64) ** 2)))
        assert rms_db == pytest.approx(clip.recipe["level_dbfs"], abs=0.01)
    assert set(a[-1].recipe["sources"]) <= {u.id for u in pool}
    other_seed = nonspeech_clips(kinds=("white",), lengths=(1,), levels=(-30,), seeds=(1,))[0]
    assert other_seed.id == "white-m30dbfs-1s-s1" and other_seed.sha256 != a[1].sha256


def test_one_word_clip_is_a_fixed_cut_of_its_source():
    pool = calibration_pool()
    clips = one_word_clips(pool)  # only the jfk cut's source exists in the synthetic pool
    assert [(c.id, c.expected) for c in clips] == [("word-jfk-and", "and")]
    jfk = next(u for u in pool if u.id == "jfk")
    assert np.array_equal(clips[0].audio, jfk.audio[:int(0.64 * 16_000)])
    assert clips[0].record()["source_sha256"] == jfk.sha256 and clips[0].utterance().split == "one-word"


def test_metrics_on_a_hand_made_table():
    rows = [{"id": "a", "split": "nonspeech", "hypothesis": "Thank you.", "audio_seconds": 30.0},  # 2 words
            {"id": "b", "split": "nonspeech", "hypothesis": "", "audio_seconds": 30.0},
            {"id": "c", "split": "nonspeech", "hypothesis": "Thank you!", "audio_seconds": 60.0},  # 2 words
            {"id": "d", "split": "nonspeech", "hypothesis": "Music", "audio_seconds": 30.0},  # 1 word
            {"id": "w1", "split": "one-word", "reference": "and", "hypothesis": "And.", "audio_seconds": 0.6},
            {"id": "w2", "split": "one-word", "reference": "if", "hypothesis": "", "audio_seconds": 0.6},
            {"id": "w3", "split": "one-word", "reference": "sir", "hypothesis": "Sir, I", "audio_seconds": 0.8}]
    m = nonspeech_metrics(rows)
    assert m["clips"] == 4 and m["words"] == 5 and m["minutes"] == 2.5
    assert m["words_per_min"] == pytest.approx(2.0) and m["low"] <= 2.0 <= m["high"]
    assert m["share_with_output"] == 0.75 and m["by_kind"] == {"a": 2, "b": 0, "c": 2, "d": 1}
    with_babble = nonspeech_metrics(rows + [{"id": "babble-x", "split": "nonspeech", "hypothesis": "a b c d e f",
                                             "audio_seconds": 30.0}])
    assert with_babble["words_per_min"] == pytest.approx(11 / 3) and with_babble["no_babble_wpm"] == pytest.approx(2.0)
    assert m["top_phrases"] == [("thank you", 2), ("music", 1)]
    w = one_word_metrics(rows)
    assert (w["clips"], w["exact"], w["empty"], w["extra"]) == (3, 1, 1, 1)
    assert w["outputs"] == {"w1": "and", "w2": "", "w3": "sir i"}
    assert speech_empty([{"hypothesis": "Hello."}, {"hypothesis": ""}, {"hypothesis": "..."}]) == \
        {"utterances": 3, "empty": 2, "share": 2 / 3}


def test_at_level_leaves_silence_alone():
    assert not at_level(np.zeros(10), -30).any()


def test_tiny_model_run_is_stored_raw_and_scored_when_loaded(tmp_path, monkeypatch):
    config = RunConfig(model="test:tiny", split=("test-clean",), batch_size=4)
    clips = (nonspeech_clips(kinds=("silence", "white"), lengths=(1,), levels=(-30,))
             + one_word_clips(calibration_pool()))
    out = tmp_path / "nonspeech"
    summary = run_nonspeech(config, results_dir=out, clips=clips)
    assert summary["status"] == "ok" and summary["slug"] == "tiny__fp32__nonspeech" == nonspeech_slug(config)
    stored = json.loads((out / f"{summary['slug']}.json").read_text())
    assert [c["sha256"] for c in stored["clips"]] == [c.sha256 for c in clips]
    assert stored["environment"]["packages"] and stored["model"]["kind"] == "test"
    assert "ns_words_per_min" not in stored  # raw outputs only: scored when loaded
    rows = [json.loads(line) for line in (out / f"{summary['slug']}.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [c.id for c in clips] and all("hypothesis" in r for r in rows)

    speech = tmp_path / "speech"  # the configuration's WER result: one of its two utterances is empty
    speech.mkdir()
    (speech / f"{config.slug}.json").write_text(json.dumps({"slug": config.slug, "status": "ok"}))
    (speech / f"{config.slug}.jsonl").write_text("\n".join(json.dumps({"id": i, "hypothesis": h})
                                                           for i, h in (("u1", "hello"), ("u2", ""))) + "\n")
    table = load_nonspeech(out, speech, grid=None)
    row = table.iloc[0]
    assert row["status"] == "ok" and row["ns_clips"] == 2 and row["word_clips"] == 1
    assert row["ns_words"] == sum(words(r["hypothesis"]) for r in rows if r["split"] == "nonspeech")
    assert (row["speech_utterances"], row["speech_empty"], row["speech_share"]) == (2, 1, 0.5)

    import lib.nonspeech  # a finished slug is not decoded again
    monkeypatch.setattr(lib.nonspeech, "decode", lambda *a, **k: pytest.fail("decoded a finished slug"))
    assert run_nonspeech(config, results_dir=out, clips=clips)["status"] == "ok"


def test_a_failing_configuration_is_a_failed_row(tmp_path, monkeypatch):
    import lib.evaluate

    def broken(*args, **kwargs):
        raise RuntimeError("kernel missing")

    monkeypatch.setattr(lib.evaluate, "load_quantized", broken)
    config = RunConfig(model="test:tiny", quant=QuantSpec(library="hqq", scheme="weight_only", weights="int4",
                                                          group_size=64))
    clips = nonspeech_clips(kinds=("silence",), lengths=(1,))
    summary = run_nonspeech(config, results_dir=tmp_path, clips=clips)
    assert summary["status"] == "failed" and summary["failed_stage"] == "load" and "kernel missing" in summary["error"]
    row = load_nonspeech(tmp_path, tmp_path, grid=None).iloc[0]
    assert row["status"] == "failed" and "kernel missing" in row["error"]


def test_the_grid_names_each_configuration_once():
    from lib.grids import expand_grid, grid_path

    slugs = [nonspeech_slug(j.config) for j in expand_grid(grid_path("nonspeech"))]
    assert len(slugs) == len(set(slugs)) == 19 and slugs[0] == "whisper-base__fp32__nonspeech"


def test_a_result_on_other_clips_is_not_scored_beside_the_others(tmp_path):
    clips = nonspeech_clips(kinds=("silence",), lengths=(1,))
    for slug, sha in (("a__fp32__nonspeech", clips[0].sha256), ("b__x__nonspeech", "0" * 64)):
        (tmp_path / f"{slug}.json").write_text(json.dumps({"slug": slug, "status": "ok", "config": {},
                                                           "clips": [{"id": "silence-1s", "sha256": sha}]}))
        (tmp_path / f"{slug}.jsonl").write_text(json.dumps({"id": "silence-1s", "split": "nonspeech",
                                                            "hypothesis": "you", "audio_seconds": 1.0}) + "\n")
    table = load_nonspeech(tmp_path, tmp_path, grid=None)
    assert table["status"].tolist() == ["ok", "other clips"] and table["ns_words"].iloc[0] == 1
