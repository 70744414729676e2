"""Noise mixing: the requested SNR on active speech, the same audio for the same seed, babble from unscored speech
only, noisy configurations named and expanded like every other."""
import hashlib
import json

import numpy as np
import pytest

from conftest import write_tone
from lib.config import ConfigError, NoiseSpec, QuantSpec, RunConfig
from lib.data import DataError, Utterance
from lib.grids import expand_grid, grid_path
from lib.noise import babble_pool, check_unscored, mix, noisy_utterances, rms

RATE = 16_000
FRAME = 320  # 20 ms


def bursts(amplitude=0.1, freq=500.0, pattern=(10, 15, 25, 5, 40, 20), seed_offset=0):
    """Sine bursts and silences in whole 20 ms frames (alternating, ``pattern`` in frames): a 500 Hz tone has
    exactly 10 cycles per frame, so every active frame's RMS is amplitude / √2."""
    parts = []
    for i, frames in enumerate(pattern):
        n = frames * FRAME
        t = np.arange(n) / RATE
        parts.append(amplitude * np.sin(2 * np.pi * freq * t) if i % 2 == 0 else np.zeros(n))
    return np.concatenate(parts).astype(np.float32)


def pool():
    """Unscored stand-ins for the calibration set: two 'speakers' of tone bursts."""
    return [Utterance("1272-128104-0001", "dev-clean", "A", bursts(0.3, 700.0, (30, 10, 50))),
            Utterance("jfk", "extra", "B", bursts(0.05, 300.0, (5, 5, 60, 5)))]


KINDS = ("white", "pink", "babble")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("snr", [20, 10, 5, 0, -5])
def test_the_mix_hits_the_requested_snr_on_active_speech(kind, snr):
    speech = bursts()
    noisy = mix(speech, NoiseSpec(kind=kind, snr_db=snr), "1089-134686-0000", pool=pool())
    noise = noisy.astype(np.float64) - speech
    active = 0.1 / np.sqrt(2)  # the bursts' RMS, by construction: silences do not count
    assert 20 * np.log10(active / rms(noise)) == pytest.approx(snr, abs=0.1)
    whole_file = 20 * np.log10(rms(speech) / rms(noise))
    assert abs(whole_file - snr) > 1.0  # a whole-file RMS would have put the noise elsewhere: "active" matters


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_audio_other_seed_or_utterance_other_audio(kind):
    speech = bursts()
    a = mix(speech, NoiseSpec(kind=kind, snr_db=5, seed=0), "1089-134686-0000", pool=pool())
    assert np.array_equal(a, mix(speech, NoiseSpec(kind=kind, snr_db=5, seed=0), "1089-134686-0000", pool=pool()))
    assert not np.allclose(a, mix(speech, NoiseSpec(kind=kind, snr_db=5, seed=1), "1089-134686-0000", pool=pool()))
    assert not np.allclose(a, mix(speech, NoiseSpec(kind=kind, snr_db=5, seed=0), "1089-134686-0001", pool=pool()))


def test_pink_noise_has_more_power_at_low_frequencies():
    speech = bursts(pattern=(200,))
    noise = mix(speech, NoiseSpec(kind="pink", snr_db=0), "1-1-1").astype(np.float64) - speech
    power = np.abs(np.fft.rfft(noise)) ** 2
    f = np.fft.rfftfreq(len(noise), 1 / RATE)
    low, high = power[(f > 50) & (f < 200)].mean(), power[(f > 3200) & (f < 6400)].mean()
    assert 10 * np.log10(low / high) == pytest.approx(10 * np.log10(np.sqrt(3200 * 6400) / np.sqrt(50 * 200)), abs=3)


def test_an_utterance_gets_the_same_noise_alone_or_among_others():
    """The incremental design decodes only new utterances: their noise must not depend on the rest of the run."""
    recipe = NoiseSpec(kind="white", snr_db=10)
    a, b = (Utterance(i, "test-clean", "X", bursts(0.1 + 0.05 * k)) for k, i in enumerate(["1-1-0", "1-1-1"]))
    alone = noisy_utterances({"test-clean": [b]}, recipe)[0]["test-clean"][0]
    together = noisy_utterances({"test-clean": [a, b]}, recipe)[0]["test-clean"][1]
    assert np.array_equal(alone.audio, together.audio) and alone.sha256 == b.sha256


@pytest.mark.parametrize("bad", [
    Utterance("1089-134686-0000", "test-clean", "X", bursts()),
    Utterance("3005-163389-0001", "test-other", "X", bursts()),
])
def test_babble_never_uses_a_scored_utterance(bad):
    with pytest.raises(DataError, match="scored utterance"):
        mix(bursts(), NoiseSpec(kind="babble", snr_db=0), "1-1-1", pool=pool() + [bad])
    with pytest.raises(DataError, match="scored utterance"):  # nor one of the run's own utterances
        check_unscored(pool(), scored_ids=["jfk"])


def test_the_babble_pool_is_the_calibration_set_and_rows_name_their_sources(fake_librispeech):
    speech = [Utterance(f"61-70968-000{i}", "test-clean", "X", bursts(0.1, 400.0 + 100 * i)) for i in range(2)]
    noisy, record = noisy_utterances({"test-clean": speech}, NoiseSpec(kind="babble", snr_db=5),
                                     str(fake_librispeech))
    pool_ids = {u.id for u in babble_pool(str(fake_librispeech))}
    assert {u.split for u in babble_pool(str(fake_librispeech))} <= {"dev-clean", "extra"}
    assert {p["id"] for p in record["pool"]} == pool_ids and "active-speech RMS" in record["measure"]
    for u in noisy["test-clean"]:
        assert len(u.noise["sources"]) == 6 and set(u.noise["sources"]) <= pool_ids
        assert not set(u.noise["sources"]) & {s.id for s in speech}


@pytest.mark.parametrize("noise, suffix", [
    ({"kind": "babble", "snr_db": 10}, "__test-clean__noise-babble-snr10-s0"),
    ({"kind": "white", "snr_db": 0, "seed": 3}, "__test-clean__noise-white-snr0-s3"),
    ({"kind": "pink", "snr_db": -5}, "__test-clean__noise-pink-snrm5-s0"),
    ({"kind": "babble", "snr_db": 2.5, "talkers": 4}, "__test-clean__noise-babble-snr2.5-s0-t4"),
])
def test_a_noisy_config_is_named_by_its_recipe_and_round_trips(noise, suffix):
    config = RunConfig(split=("test-clean",), quant=QuantSpec(library="hqq", scheme="weight_only", weights="int3",
                                                              group_size=64), noise=noise)
    assert config.slug == "whisper-base__hqq-wo-int3-g64" + suffix
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.slug == config.slug and isinstance(again.noise, NoiseSpec)
    limited = RunConfig.from_dict({**config.to_dict(), "limit": 2})
    assert limited.slug == config.slug + "__n2"


def test_a_clean_config_is_recorded_and_named_as_before():
    config = RunConfig(split=("test-clean",))
    assert "noise" not in config.to_dict() and config.slug == "whisper-base__fp32__test-clean"


@pytest.mark.parametrize("noise, message", [
    ({"kind": "traffic", "snr_db": 5}, "unknown noise kind"),
    ({"kind": "white", "snr_db": "loud"}, "snr_db must be a number"),
    ({"kind": "white", "snr_db": 90}, "snr_db must be a number"),
    ({"kind": "white", "snr_db": 5, "seed": -1}, "seed must be a non-negative"),
    ({"kind": "white", "snr_db": 5, "talkers": 3}, "babble noise only"),
    ({"kind": "babble", "snr_db": 5, "level": "peak"}, "unknown noise level"),
    ({"kind": "babble", "snr_db": 5, "colour": 1}, "unknown noise field"),
    ({"kind": "babble"}, "needs kind and snr_db"),
])
def test_a_bad_recipe_fails_with_the_fix(noise, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(split=("test-clean",), noise=noise)


def test_noise_on_the_babble_source_split_is_refused():
    with pytest.raises(ConfigError, match="drop dev-clean"):
        RunConfig(split=("dev-clean",), noise={"kind": "white", "snr_db": 5})


def test_a_grid_crosses_noise_conditions_in_defaults_runs_and_expand(tmp_path):
    path = tmp_path / "g.yml"
    path.write_text("defaults: {model: 'embedded:whisper-base', split: [test-clean], noise: {kind: white, snr_db: 5}}\n"
                    "runs:\n  - {library: none}\n  - {library: none, noise: null}\n"
                    "expand:\n  - {library: hqq, scheme: weight_only, weights: int4, group_size: 64,\n"
                    "     noise: {snr_db: [20, 0], kind: [babble, pink]}}\n")
    slugs = [j.slug.removeprefix("whisper-base__") for j in expand_grid(path)]
    assert slugs == ["fp32__test-clean__noise-white-snr5-s0", "fp32__test-clean",
                     "hqq-wo-int4-g64__test-clean__noise-babble-snr20-s0",
                     "hqq-wo-int4-g64__test-clean__noise-pink-snr20-s0",
                     "hqq-wo-int4-g64__test-clean__noise-babble-snr0-s0",
                     "hqq-wo-int4-g64__test-clean__noise-pink-snr0-s0"]


def test_the_noise_grid_runs_fp32_first_at_every_condition_on_test_clean():
    jobs = expand_grid(grid_path("noise"))
    conditions = {(j.config.noise.kind, j.config.noise.snr_db) for j in jobs}
    assert conditions == {(k, s) for k in ("babble", "white") for s in (20.0, 10.0, 5.0, 0.0)}
    assert all(j.config.quant.is_baseline for j in jobs[:8]) and not any(j.config.quant.is_baseline for j in jobs[8:])
    assert all(j.config.split == ("test-clean",) and not j.footprint for j in jobs)
    assert len(jobs) == 8 * len({j.config.quant.slug for j in jobs})


def test_a_noisy_run_decodes_noisy_audio_keeps_clean_hashes_and_grows_incrementally(fake_librispeech, tmp_path,
                                                                                     monkeypatch):
    import lib.evaluate
    from lib.evaluate import evaluate
    from lib.results import ResultStore

    config = RunConfig(model="test:tiny", split=("test-clean",), batch_size=2, threads=1, max_new_tokens=8,
                       noise={"kind": "babble", "snr_db": 0})
    seen, real = {}, lib.evaluate.transcribe

    def spy(model, processor, utterances, *a, **k):
        seen.update({u.id: u for u in utterances})
        return real(model, processor, utterances, *a, **k)

    monkeypatch.setattr(lib.evaluate, "transcribe", spy)
    summary = evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False)  # fidelity: skipped
    assert summary["status"] == "ok" and summary["noise"]["kind"] == "babble" and summary["config"]["noise"]
    assert not (tmp_path / "fidelity").exists() or not any((tmp_path / "fidelity").glob("*.json"))
    clean = lib.evaluate.load_split("test-clean", None, str(fake_librispeech))
    pool = babble_pool(str(fake_librispeech))
    for u in clean:  # what was decoded is the clean audio plus the recipe's noise, named by the clean file's hash
        assert np.array_equal(seen[u.id].audio, mix(u.audio, config.noise, u.id, pool))
    rows = ResultStore(tmp_path).load_rows(config.slug)
    assert {r["audio_sha256"] for r in rows} == {u.sha256 for u in clean} and all(r["noise"]["snr_db"] == 0 for r in rows)

    folder = fake_librispeech / "test-clean" / "61" / "70968"  # the data grow: only the new utterance is decoded
    write_tone(folder / "61-70968-0002.flac", 1.2, freq=650)
    (folder / "61-70968.trans.txt").write_text((folder / "61-70968.trans.txt").read_text() + "61-70968-0002 NEW\n")
    digest = hashlib.sha256((folder / "61-70968-0002.flac").read_bytes()).hexdigest()
    with open(fake_librispeech / "MANIFEST.tsv", "a") as f:
        f.write(f"test-clean\t61-70968-0002\t1.2\t{digest}\tNEW\n")
    seen.clear()
    summary = evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False)
    assert list(seen) == ["61-70968-0002"] and summary["metrics"]["test-clean"]["utterances"] == 4


GRID = """defaults: {model: 'embedded:whisper-base', split: [test-clean]}
footprint: false
expand:
  - {library: none, noise: {snr_db: [20, 0], kind: babble}}
  - {library: hqq, scheme: weight_only, weights: int3, group_size: 64, noise: {snr_db: [20, 0], kind: babble}}
"""


def save_noisy(store, quant_slug, snr, errors):
    """Rows of 20 one-utterance speakers; ``errors(i)`` wrong words out of 10 in utterance i."""
    words = "a b c d e f g h i j".split()
    rows = [{"id": f"{i}-1-0", "split": "test-clean", "reference": " ".join(words),
             "hypothesis": " ".join(["x"] * errors(i) + words[errors(i):])} for i in range(20)]
    store.save(f"whisper-base__{quant_slug}__test-clean__noise-babble-snr{snr}-s0", {"status": "ok"}, rows)


@pytest.mark.parametrize("int3_at_0db, verdict", [
    (lambda i: 1 + 1 + i % 4, "supported"),         # the gap grows from 0 to 2.5 points on average
    (lambda i: 1, "not resolvable at this sample size"),  # the same gap at both ends
    (lambda i: i % 2, "contradicted"),              # at 0 dB int3 is better than fp32 on average
])
def test_the_noise_verdict_follows_the_interval_of_the_gap_change(tmp_path, int3_at_0db, verdict):
    from lib.claims import noise_claim
    from lib.results import ResultStore
    from lib.noise_tables import delta_pivot, missing_runs, noise_table, noise_takeaway

    grid = tmp_path / "noise.yml"
    grid.write_text(GRID)
    store = ResultStore(tmp_path / "results")
    save_noisy(store, "fp32", 20, lambda i: 1)
    save_noisy(store, "hqq-wo-int3-g64", 20, lambda i: 1)
    save_noisy(store, "fp32", 0, lambda i: 1)
    save_noisy(store, "hqq-wo-int3-g64", 0, int3_at_0db)
    table = noise_table(grid, results_dir=store.root)
    claim = noise_claim(table, store.root)
    reading, = claim.readings
    assert claim.verdict == reading.verdict == verdict and reading.utterances == 20
    assert (reading.configuration, reading.noise, reading.high_snr, reading.low_snr) == (
        "HQQ weight-only int3 g64", "babble", 20.0, 0.0)
    assert reading.change.low <= reading.change.delta <= reading.change.high and claim.skipped == ()
    assert missing_runs(table).loc["fp32"].tolist() == [2, 0, 0]
    assert delta_pivot(table).loc["HQQ weight-only int3 g64", "babble 20 dB"].startswith("+0.00")
    assert "fp32's WER is 10.00%" in noise_takeaway(table, claim)


def test_a_condition_where_fp32_itself_fails_is_left_out_of_the_verdict_and_named(tmp_path):
    from lib.claims import noise_claim, noise_reference_note
    from lib.results import ResultStore
    from lib.noise_tables import noise_table, noise_takeaway

    grid = tmp_path / "noise.yml"
    grid.write_text(GRID.replace("[20, 0]", "[20, 10, 0]"))
    store = ResultStore(tmp_path / "results")
    for snr, fp32, int3 in ((20, 1, 1), (10, 1, 3), (0, 9, 6)):  # at 0 dB fp32 gets 90% of the words wrong
        save_noisy(store, "fp32", snr, lambda i, e=fp32: e)
        save_noisy(store, "hqq-wo-int3-g64", snr, lambda i, e=int3: e)
    table = noise_table(grid, results_dir=store.root)
    claim = noise_claim(table, store.root)
    reading, = claim.readings
    assert claim.verdict == "supported"  # from 20 to 10 dB the gap grows by 20 points; 0 dB is not used
    assert (reading.low_snr, round(reading.at_low, 2), claim.skipped) == (10.0, 20.0, (("babble", 0.0, 90.0),))
    assert ("fp32 itself fails at 0 dB (WER 90.00%); at 10 dB, the lowest SNR where it works, fp32's WER is 10.00%; "
            "nearest to it: HQQ weight-only int3 g64 (+20.00") in noise_takeaway(table, claim)
    assert noise_reference_note(table).startswith("fp32 itself fails in babble noise at 0 dB (WER 90.00%)")


def test_without_noisy_results_the_chapter_says_what_is_missing(tmp_path):
    from lib import plots
    from lib.claims import noise_claim
    from lib.noise_tables import missing_runs, noise_table, noise_takeaway

    grid = tmp_path / "noise.yml"
    grid.write_text(GRID)
    table = noise_table(grid, results_dir=tmp_path)
    claim = noise_claim(table, tmp_path)
    assert (claim.verdict, claim.readings, claim.needed, claim.missing_runs) == ("not yet measured", (), 4, 4)
    assert [name for name, _conditions in claim.missing] == ["fp32", "HQQ weight-only int3 g64"]
    assert "pending" not in noise_takeaway(table, claim)
    assert missing_runs(table)["not run"].tolist() == [2, 2]
    assert plots.noise_delta_wer(table).axes  # a figure with its empty panels


def test_the_claims_table_carries_the_noise_verdict(tmp_path):
    import pandas as pd

    from lib.claims import NOISE_CLAIM, claims_table

    claims = claims_table(pd.DataFrame({"slug": pd.Series([], dtype=str), "status": []}), results_dir=tmp_path)
    assert claims.index[-1] == NOISE_CLAIM and claims.loc[NOISE_CLAIM, "verdict"] == "not yet measured"
    assert claims.loc[NOISE_CLAIM, "sentence"].startswith("Not yet measured: the verdict compares fp32")


def test_a_cluster_worker_mixes_the_same_noise_as_the_driver(fake_librispeech, tmp_path):
    from lib.cluster import decode_shard
    from lib.data import describe_data
    from lib.evaluate import evaluate
    from lib.results import ResultStore

    data = str(fake_librispeech)
    config = RunConfig(model="test:tiny", split=("test-clean",), batch_size=2, threads=1, max_new_tokens=6,
                       noise={"kind": "pink", "snr_db": 5, "seed": 2})
    evaluate(config, data=data, results_dir=tmp_path, progress=False)
    local = ResultStore(tmp_path).load_rows(config.slug)
    shard = decode_shard(config.to_dict(), "test-clean", [r["id"] for r in local], [r["audio_sha256"] for r in local],
                         0, data, describe_data(data)["manifest_sha256"])
    remote = [row for record in shard["records"] for row in record["rows"]]
    keep = ("id", "hypothesis", "tokens", "audio_sha256", "noise")
    assert [{k: r[k] for k in keep} for r in remote] == [{k: r[k] for k in keep} for r in local]
