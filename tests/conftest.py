"""Shared fixtures: a tiny random Whisper, a fake official-layout LibriSpeech, the real sample."""
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
    if not REAL_DATA.is_dir():
        pytest.fail(f"the LibriSpeech sample is expected at {REAL_DATA} (../shared beside the repository)")
    return REAL_DATA
