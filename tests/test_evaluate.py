import pytest

from lib.config import RunConfig
from lib.data import DataError
from lib.evaluate import evaluate
from lib.results import ResultStore


@pytest.fixture
def tiny_config():
    return RunConfig(model="test:tiny", split=("test-clean",), limit=2, batch_size=2, threads=1, max_new_tokens=8)


def test_end_to_end_writes_summary_and_rows(tiny_config, fake_librispeech, tmp_path):
    summary = evaluate(tiny_config, data=str(fake_librispeech), results_dir=tmp_path, progress=False)
    assert summary["status"] == "ok", summary.get("error")
    m = summary["metrics"]["test-clean"]
    assert m["utterances"] == 2 and m["audio_seconds"] == pytest.approx(2.0) and m["wall_seconds"] > 0
    assert summary["data"]["manifest_sha256"] and summary["model"]["kind"] == "test"
    assert summary["decoding"]["strategy"] == "greedy" and summary["environment"]["threads"] == 1
    assert summary["size"]["compression_pct"] == pytest.approx(0.0)
    rows = ResultStore(tmp_path).load_rows(tiny_config.slug)
    assert [r["id"] for r in rows] == ["1089-134686-0000", "61-70968-0000"]
    assert {"hypothesis", "reference", "wall_seconds", "cpu_seconds", "tokens", "audio_sha256"} <= set(rows[0])
    assert "substitutions" not in rows[0]  # raw output only: errors are counted when results are loaded
    from lib.scoring import score_rows

    assert {"substitutions", "ref_words"} <= set(score_rows(rows)[0])
    assert [r["encoder_passes"] for r in rows] == [1, 1]  # one batch, one encoder pass


def test_finished_slug_is_skipped_unless_forced(tiny_config, fake_librispeech, tmp_path, monkeypatch):
    first = evaluate(tiny_config, data=str(fake_librispeech), results_dir=tmp_path, progress=False)
    import lib.models

    def no_load(*a, **k):
        raise AssertionError("a finished slug must not load a model")

    monkeypatch.setattr(lib.models, "load_model", no_load)
    again = evaluate(tiny_config, data=str(fake_librispeech), results_dir=tmp_path)
    assert again["started"] == first["started"] and again["status"] == "ok"
    forced = evaluate(tiny_config, data=str(fake_librispeech), results_dir=tmp_path, force=True, progress=False)
    assert forced["status"] == "failed" and "must not load" in forced["error"]


def test_library_error_becomes_a_failed_row(tiny_config, fake_librispeech, tmp_path, monkeypatch):
    import lib.quantize

    def broken(*a, **k):
        raise RuntimeError("unsupported op: aten::quantized_gemm")

    monkeypatch.setattr(lib.quantize, "quantize", broken)
    summary = evaluate(tiny_config, data=str(fake_librispeech), results_dir=tmp_path, progress=False)
    assert summary["status"] == "failed" and summary["failed_stage"] == "quantize"
    assert "unsupported op" in summary["error"]
    assert ResultStore(tmp_path).status(tiny_config.slug) == "failed"


def test_bad_data_dir_fails_fast_and_records_nothing(tiny_config, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        evaluate(tiny_config, data=str(tmp_path / "missing"), results_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_killed_run_resumes_at_the_batch_where_it_stopped(fake_librispeech, tmp_path, monkeypatch):
    import lib.transcribe

    config = RunConfig(model="test:tiny", split=("test-clean",), limit=2, batch_size=1, threads=1, max_new_tokens=4)
    real_generate, calls = lib.transcribe.generate, []

    def killed_after_first_batch(model, feats, *a, **k):
        calls.append(len(calls))
        if len(calls) == 3:  # warm-up, batch 0, then the process dies in batch 1
            raise KeyboardInterrupt
        return real_generate(model, feats, *a, **k)

    monkeypatch.setattr(lib.transcribe, "generate", killed_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False)
    store = ResultStore(tmp_path)
    assert not store.exists(config.slug) and store.saved_batches(config.slug) == {"test-clean": 1}

    calls.clear()
    monkeypatch.setattr(lib.transcribe, "generate", lambda *a, **k: calls.append(1) or real_generate(*a, **k))
    summary = evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False)
    assert summary["status"] == "ok", summary.get("error")
    assert len(calls) == 2  # warm-up + batch 1 only: batch 0 came from the checkpoint
    assert summary["metrics"]["test-clean"]["timing"]["resumed_batches"] == 1
    from lib.tables import run_summary_table

    assert run_summary_table(summary).loc["test-clean batches resumed from checkpoint", "value"] == 1
    assert [r["id"] for r in store.load_rows(config.slug)] == ["1089-134686-0000", "61-70968-0000"]
    assert store.saved_batches(config.slug) == {}  # cleared once the result is saved


def test_a_checkpoint_from_another_configuration_is_not_reused(fake_librispeech, tmp_path):
    from lib.results import BatchCheckpoint

    old = BatchCheckpoint(tmp_path / "c.jsonl", {"slug": "a", "packages": {"torch": "2.12.0"}})
    old.append({"batch": 0, "rows": [{"id": "x"}], "seconds": {"loop": 1.0, "model": 1.0, "encoder": 0.5}})
    assert BatchCheckpoint(tmp_path / "c.jsonl", {"slug": "a", "packages": {"torch": "2.12.0"}}).load()[0]["rows"]
    assert BatchCheckpoint(tmp_path / "c.jsonl", {"slug": "a", "packages": {"torch": "2.13.0"}}).load() == {}
    assert not (tmp_path / "c.jsonl").exists()


def test_saved_batches_leave_out_checkpoints_of_an_older_decoding(tmp_path):
    from lib.results import BatchCheckpoint
    from lib.decoding import RECIPE

    DECODING = RECIPE.as_dict()

    store, record = ResultStore(tmp_path), {"batch": 0, "rows": [], "seconds": {"loop": 1.0}}
    store.checkpoint("s", "test-clean", {"decoding": dict(DECODING)}).append(record)
    store.checkpoint("s", "test-other", {"decoding": {**DECODING, "single_generate_call": None}}).append(record)
    BatchCheckpoint(tmp_path / ".partial" / "s__dev-clean.jsonl", {"slug": "s"}).append(record)  # no recipe
    assert store.saved_batches("s") == {"test-clean": 1}


def test_a_torn_last_checkpoint_line_is_dropped(tmp_path):
    from lib.results import BatchCheckpoint

    cp = BatchCheckpoint(tmp_path / "c.jsonl", {"slug": "a"})
    for b in range(2):
        cp.append({"batch": b, "rows": [], "seconds": {"loop": 1.0, "model": 1.0, "encoder": 0.5}})
    with open(cp.path, "a") as f:
        f.write('{"batch": 2, "rows": [{"id"')  # killed mid-write
    assert sorted(cp.load()) == [0, 1]
    cp.append({"batch": 2, "rows": [], "seconds": {"loop": 1.0, "model": 1.0, "encoder": 0.5}})
    assert sorted(cp.load()) == [0, 1, 2]


def test_a_model_stuck_on_zero_timestamps_is_decoded_once_per_batch(tiny, fake_librispeech):
    """A degraded model that emits <|0.00|><|0.00|> made transformers' seek loop decode the same window forever."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from lib.data import load_split
    from lib.transcribe import encoder_timer, features, generate

    timestamp_begin = tiny.model.generation_config.no_timestamps_token_id + 1
    eos = tiny.model.generation_config.eos_token_id

    class ZeroTimestampsThenEnd(LogitsProcessor):
        def __init__(self):
            self.prompt = None

        def __call__(self, input_ids, scores):
            self.prompt = self.prompt or input_ids.shape[1]
            forced = timestamp_begin if input_ids.shape[1] - self.prompt < 2 else eos
            out = torch.full_like(scores, -float("inf"))
            out[:, forced] = 0.0
            return out

    utts = load_split("test-clean", 2, str(fake_librispeech))
    def stop_a_second_pass(*_):  # without the fix this test would hang instead of failing
        if enc["calls"] >= 2:
            raise RuntimeError("transformers decoded the window again")

    with encoder_timer(tiny.model) as enc:
        guard = tiny.model.get_encoder().register_forward_hook(stop_a_second_pass)
        try:
            ids = generate(tiny.model, features(tiny.processor, [u.audio for u in utts]), 8,
                           logits_processor=LogitsProcessorList([ZeroTimestampsThenEnd()]))
        finally:
            guard.remove()
    assert enc["calls"] == 1 and ids.shape[0] == 2
    assert (ids == timestamp_begin).sum(dim=1).tolist() == [2, 2]


def test_cross_speaker_calibration_scores_each_speaker_with_a_model_that_never_heard_it(fake_librispeech, tmp_path):
    """Two speaker folds (61 -> fold 0, 1089 -> fold 1): each fold's utterances are decoded by the model
    calibrated on the other fold's speaker, and the result records both calibrations."""
    from lib.config import QuantSpec
    from lib.data import speaker_fold

    spec = QuantSpec(library="auto_round", scheme="weight_only", weights="int4", group_size=32, calibration=1,
                     calibration_folds=2, options={"iters": 20})
    assert spec.slug == "autoround-wo-int4-g32-cal1-iters20-xspk2"
    config = RunConfig(model="test:tiny", split=("test-clean",), batch_size=2, threads=1, max_new_tokens=8, quant=spec)
    evaluate(RunConfig(model="test:tiny", split=("test-clean",), batch_size=2, threads=1, max_new_tokens=8),
             data=str(fake_librispeech), results_dir=tmp_path, progress=False)  # fp32: the fidelity reference
    summary = evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False)
    assert summary["status"] == "ok", summary.get("error")
    folds = summary["folds"]
    assert folds["0"]["quantization"]["calibration_ids"] == ["1089-134686-0000"]
    assert folds["1"]["quantization"]["calibration_ids"] == ["61-70968-0000"]
    assert folds["0"]["scored"] == {"test-clean": 2} and folds["1"]["scored"] == {"test-clean": 1}
    rows = ResultStore(tmp_path).load_rows(config.slug)
    assert {(r["id"], r["fold"]) for r in rows} == {(r["id"], speaker_fold(r["id"], 2)) for r in rows}
    assert len(rows) == 3 and summary["quantization"]["fold_seconds"].keys() == {"0", "1"}
    from lib.fidelity import fidelity_store

    fidelity = fidelity_store(tmp_path)  # each fold's model scores its own fold's utterances
    assert fidelity.get(config.slug)["status"] == "ok", fidelity.get(config.slug).get("error")
    assert {speaker_fold(r["id"], 2) for r in fidelity.load_rows(config.slug)} == {0, 1}


def test_cross_speaker_calibration_needs_folds_of_two_or_more_and_calibration():
    from lib.config import ConfigError, QuantSpec

    with pytest.raises(ConfigError, match="calibration_folds must be 2 or more"):
        QuantSpec(library="auto_round", scheme="weight_only", weights="int4", group_size=32, calibration=1,
                  calibration_folds=1)
    with pytest.raises(ConfigError, match="needs calibration utterances"):
        QuantSpec(library="hqq", scheme="weight_only", weights="int4", group_size=32, calibration_folds=2)
