"""Shared fixtures: a tiny random Whisper, a fake official-layout LibriSpeech, the real sample.

The fast tier is self-contained: unless a test is marked ``real_data`` or ``real_weights``, the data
directory the harness finds by default (``$LIBRISPEECH_DIR``, ``../shared``) and the JFK clip are a few
seconds of synthetic tones made here, so ``../shared`` is never read.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no busy-waiting threads if a sweep shares the CPU
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", category=DeprecationWarning)

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "librispeech"


def write_tone(path: Path, seconds: float, rate: int = 16_000, freq: float = 440.0, channels: int = 1) -> None:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    wave = (0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if channels > 1:
        wave = np.stack([wave] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, rate)


def make_librispeech(root: Path, manifest: bool = True) -> Path:
    """Official layout with two chapters in test-clean and one in dev-clean, plus MANIFEST.tsv."""
    layout = {"test-clean": {("61", "70968"): ["HE BEGAN A CONFUSED COMPLAINT", "A MAN SAID TO THE UNIVERSE"],
                             ("1089", "134686"): ["STUFF IT INTO YOU"]},
              "dev-clean": {("1272", "128104"): ["NOR IS MISTER QUILTER'S MANNER"]}}
    rows = ["split\tutterance_id\tduration_s\tsha256_flac\ttranscript"]
    for split, chapters in layout.items():
        for (spk, chap), texts in chapters.items():
            folder = root / split / spk / chap
            lines = []
            for i, text in enumerate(texts):
                utt = f"{spk}-{chap}-{i:04d}"
                write_tone(folder / f"{utt}.flac", 1.0 + 0.5 * i, freq=300 + 100 * i)
                lines.append(f"{utt} {text}")
                digest = hashlib.sha256((folder / f"{utt}.flac").read_bytes()).hexdigest()
                rows.append(f"{split}\t{utt}\t{1.0 + 0.5 * i}\t{digest}\t{text}")
            (folder / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    if manifest:
        (root / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session")
def synthetic_shared(tmp_path_factory) -> Path:
    """A stand-in for ``../shared``: ``data/librispeech`` (:func:`make_librispeech`) and a 44.1 kHz stereo
    ``data/extra/jfk.flac`` (2 s of tone), the layout :mod:`lib.data` looks for beside the repository."""
    shared = tmp_path_factory.mktemp("synthetic") / "shared"
    make_librispeech(shared / "data" / "librispeech")
    write_tone(shared / "data" / "extra" / "jfk.flac", 2.0, rate=44_100, channels=2)
    return shared


@pytest.fixture(autouse=True)
def self_contained_data(request, monkeypatch):
    """Point the harness's default data and JFK clip at :func:`synthetic_shared` (not for real-data tests)."""
    if request.node.get_closest_marker("real_data") or request.node.get_closest_marker("real_weights"):
        return
    import lib.data

    shared = request.getfixturevalue("synthetic_shared")
    monkeypatch.setattr(lib.data, "REPO_ROOT", shared.parent / "repository")  # ../shared of it is the synthetic one
    monkeypatch.setenv("LIBRISPEECH_DIR", str(shared / "data" / "librispeech"))  # also for subprocesses


@pytest.fixture
def fake_librispeech(tmp_path) -> Path:
    return make_librispeech(tmp_path / "LibriSpeech")


@pytest.fixture(scope="session")
def tiny():
    """A tiny random Whisper (d_model 128, 2+2 layers) with the embedded tokenizer."""
    from lib.models import load_model

    return load_model("test:tiny")


@pytest.fixture
def tiny_model(tiny):
    import copy

    return copy.deepcopy(tiny.model)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The LibriSpeech sample in ``../shared`` (tests that use it are marked ``real_data``)."""
    if not REAL_DATA.is_dir():
        pytest.fail(f"the LibriSpeech sample is expected at {REAL_DATA} (../shared beside the repository)")
    return REAL_DATA
