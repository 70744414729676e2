import hashlib

import numpy as np
import pytest

from lib.data import DataError, calibration_set, describe_data, list_split, load_audio, load_split
from conftest import REAL_DATA, write_tone


def test_reads_official_layout_in_id_order(fake_librispeech):
    utts = load_split("test-clean", data=fake_librispeech)
    assert [u.id for u in utts] == ["1089-134686-0000", "61-70968-0000", "61-70968-0001"]
    assert utts[1].reference == "HE BEGAN A CONFUSED COMPLAINT"
    assert utts[2].audio.dtype == np.float32 and utts[2].duration == pytest.approx(1.5)


def test_limit_keeps_the_first_utterances(fake_librispeech):
    assert [u.id for u in load_split("test-clean", limit=2, data=fake_librispeech)] == \
        ["1089-134686-0000", "61-70968-0000"]


def test_corrupt_file_is_named(fake_librispeech):
    victim = fake_librispeech / "test-clean/61/70968/61-70968-0001.flac"
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DataError, match="corrupt audio .*61-70968-0001.flac"):
        load_split("test-clean", data=fake_librispeech)


def test_missing_file_is_named(fake_librispeech):
    (fake_librispeech / "test-clean/61/70968/61-70968-0000.flac").unlink()
    with pytest.raises(DataError, match="missing audio .*61-70968-0000.flac"):
        load_split("test-clean", data=fake_librispeech)


def test_missing_split_and_bad_dir(fake_librispeech, tmp_path):
    with pytest.raises(DataError, match="split 'test-other' is missing .*present: \\['dev-clean', 'test-clean'\\]"):
        load_split("test-other", data=fake_librispeech)
    with pytest.raises(DataError, match="does not exist; set LIBRISPEECH_DIR"):
        load_split("test-clean", data=tmp_path / "nowhere")


def test_undecodable_audio_without_manifest(tmp_path):
    from conftest import make_librispeech

    root = make_librispeech(tmp_path / "L", manifest=False)
    (root / "test-clean/1089/134686/1089-134686-0000.flac").write_bytes(b"not audio")
    with pytest.raises(DataError, match="cannot decode .*1089-134686-0000.flac"):
        load_split("test-clean", data=root)


def test_resamples_stereo_44k_to_mono_16k(tmp_path):
    write_tone(tmp_path / "x.flac", 2.0, rate=44_100, channels=2)
    audio = load_audio(tmp_path / "x.flac")
    assert audio.ndim == 1 and len(audio) == 32_000


def test_manifest_hash_is_recorded(fake_librispeech):
    info = describe_data(fake_librispeech)
    assert info["manifest_sha256"] == hashlib.sha256((fake_librispeech / "MANIFEST.tsv").read_bytes()).hexdigest()


def test_calibration_never_uses_scored_splits(fake_librispeech):
    ids = [u.id for u in calibration_set(1, fake_librispeech)]
    assert ids == ["1272-128104-0000"]
    with pytest.raises(DataError, match="calibration utterances"):
        calibration_set(50, fake_librispeech)


@pytest.mark.real_data
def test_real_sample_counts_match_its_manifest(real_data):
    from collections import Counter

    from lib.data import read_manifest

    expected = Counter(row["split"] for row in read_manifest(real_data).values())
    counts = {s: len(list_split(real_data, s)) for s in ("test-clean", "test-other", "dev-clean")}
    assert counts == dict(expected) and all(counts.values())
