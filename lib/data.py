"""LibriSpeech utterances as 16 kHz float32 audio with their reference text.

Two routes: an official-layout directory
(``<split>/<speaker>/<chapter>/<id>.flac`` + ``<speaker>-<chapter>.trans.txt``,
what the openslr tarballs unpack to), checked against a ``MANIFEST.tsv`` when
one is present; or ``hub`` (``datasets.load_dataset("openslr/librispeech_asr")``),
for machines that reach the hub.

>>> parse_transcript_line("1089-134686-0000 HE HOPED THERE WOULD BE STEW")
('1089-134686-0000', 'HE HOPED THERE WOULD BE STEW')
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .config import SPLITS, ConfigError
from .paths import REPO_ROOT

SAMPLE_RATE = 16_000
HUB_DATASET = "openslr/librispeech_asr"
_HUB_SPLITS = {"test-clean": ("clean", "test"), "test-other": ("other", "test"), "dev-clean": ("clean", "validation")}


class DataError(ValueError):
    """Missing, corrupt or misplaced audio; the message names the file and the fix."""


@dataclass(frozen=True)
class Utterance:
    id: str
    split: str
    reference: str
    audio: np.ndarray
    path: str = ""
    sha256: str | None = None  # of the audio file's bytes (``pcm:<hex>`` for hub audio: of its float32 samples)
    noise: dict | None = None  # the noise mixed into ``audio`` (lib.noise); ``sha256`` stays the clean file's

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def default_data_dir() -> Path | None:
    """``$LIBRISPEECH_DIR``, else ``../shared/data/librispeech`` beside the repository, else None."""
    env = os.environ.get("LIBRISPEECH_DIR")
    if env:
        return Path(env).expanduser()
    for candidate in (REPO_ROOT.parent / "shared" / "data" / "librispeech",
                      Path.cwd().parent / "shared" / "data" / "librispeech"):
        if candidate.is_dir():
            return candidate
    return None


def resolve_data_dir(data: str | os.PathLike | None) -> Path:
    """Pick and check the LibriSpeech directory; a bad path fails with the fix."""
    path = Path(data).expanduser() if data else default_data_dir()
    if path is None:
        raise DataError("no LibriSpeech directory found; set LIBRISPEECH_DIR=/path/to/LibriSpeech "
                        "(official layout: <split>/<speaker>/<chapter>/*.flac) or pass --data hub")
    if not path.is_dir():
        raise DataError(f"LibriSpeech directory {str(path)!r} does not exist; set LIBRISPEECH_DIR or --data")
    return path


def parse_transcript_line(line: str) -> tuple[str, str]:
    utt_id, _, text = line.strip().partition(" ")
    return utt_id, text.strip()


def read_manifest(root: Path) -> dict[str, dict[str, str]]:
    """``MANIFEST.tsv`` rows keyed by utterance id (empty when there is none)."""
    path = root / "MANIFEST.tsv"
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        return {row["utterance_id"]: row for row in csv.DictReader(f, delimiter="\t")}


def manifest_sha256(root: Path) -> str | None:
    path = root / "MANIFEST.tsv"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def load_audio(path: Path | str, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any libsndfile format to mono float32 at ``target_rate`` (polyphase resampling).

    E.g. 11.0 s of 44.1 kHz stereo (jfk.flac) -> 176,000 mono samples at 16 kHz.
    """
    import soundfile as sf

    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise DataError(f"cannot decode {path}: {exc}; re-download or replace this file") from None
    audio = audio.mean(axis=1)
    if rate != target_rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(rate, target_rate)
        audio = resample_poly(audio, target_rate // g, rate // g).astype(np.float32)
    return np.ascontiguousarray(audio, dtype=np.float32)


def list_split(root: Path, split: str) -> list[tuple[str, Path, str]]:
    """``(utterance_id, flac_path, reference)`` in utterance-id order, from the trans.txt files."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    split_dir = root / split
    if not split_dir.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name in SPLITS)
        raise DataError(f"split {split!r} is missing under {root} (present: {present or 'none'}); "
                        "unpack it there in the official layout or choose another split")
    rows = []
    for trans in sorted(split_dir.glob("*/*/*.trans.txt")):
        for line in trans.read_text().splitlines():
            if line.strip():
                utt_id, text = parse_transcript_line(line)
                rows.append((utt_id, trans.parent / f"{utt_id}.flac", text))
    if not rows:
        raise DataError(f"no <speaker>-<chapter>.trans.txt files under {split_dir}; is this the official layout?")
    return sorted(rows)


ALLOW_UNLISTED_ENV = "WHISPER_PTQ_ALLOW_UNLISTED"


def unlisted_allowed() -> bool:
    """Whether utterances missing from ``MANIFEST.tsv`` may be decoded (``--allow-unlisted`` sets
    ``$WHISPER_PTQ_ALLOW_UNLISTED=1``, so papermill kernels and Ray workers see it too)."""
    return os.environ.get(ALLOW_UNLISTED_ENV, "") not in ("", "0")


def iter_directory(root: Path, split: str, limit: int | None = None, verify: bool = True) -> Iterator[Utterance]:
    """Yield utterances of one split. With a manifest, both ways: each file's sha256 and each transcript must
    equal the manifest's, and an utterance the manifest does not list is refused (unless :func:`unlisted_allowed`).
    """
    manifest = read_manifest(root) if verify else {}
    for utt_id, path, text in list_split(root, split)[:limit]:
        if not path.exists():
            raise DataError(f"missing audio {path} (listed in its trans.txt); restore the file or fix the transcript")
        entry = manifest.get(utt_id)
        if manifest and entry is None and not unlisted_allowed():
            raise DataError(f"{utt_id} ({path.parent.name}/{path.name}) is not listed in {root}/MANIFEST.tsv; "
                            "add it to the manifest, remove it, or pass --allow-unlisted to decode it anyway")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if entry is not None:
            if digest != entry["sha256_flac"]:
                raise DataError(f"corrupt audio {path}: sha256 {digest[:12]}... does not match "
                                f"MANIFEST.tsv ({entry['sha256_flac'][:12]}...); restore the original file")
            if entry.get("transcript") is not None and text != entry["transcript"].strip():
                raise DataError(f"transcript of {utt_id} in its trans.txt differs from MANIFEST.tsv "
                                f"({text[:40]!r} vs {entry['transcript'][:40]!r}); restore the original line")
        yield Utterance(utt_id, split, text, load_audio(path), portable_path(path), digest)


def iter_hub(split: str, limit: int | None = None) -> Iterator[Utterance]:
    """Stream a split from the hub (networked machines only)."""
    config, hub_split = _HUB_SPLITS[split]
    try:
        import datasets

        ds = datasets.load_dataset(HUB_DATASET, config, split=hub_split, streaming=True)
        ds = ds.cast_column("audio", datasets.Audio(sampling_rate=SAMPLE_RATE))
        rows = sorted(ds, key=lambda r: r["id"])  # fixed order, same as the directory route
    except Exception as exc:
        raise DataError(f"cannot stream {HUB_DATASET} ({type(exc).__name__}); offline, set "
                        "LIBRISPEECH_DIR to an official-layout copy instead") from None
    for row in rows[:limit]:
        audio = np.asarray(row["audio"]["array"], dtype=np.float32)
        yield Utterance(row["id"], split, row["text"], audio, sha256="pcm:" + hashlib.sha256(audio.tobytes()).hexdigest())


def load_split(split: str, limit: int | None = None, data: str | os.PathLike | None = None) -> list[Utterance]:
    """All (or the first ``limit``) utterances of a split, in a fixed order."""
    if limit is not None and limit <= 0:
        raise ConfigError(f"limit must be a positive integer, got {limit}")
    if data == "hub":
        return list(iter_hub(split, limit))
    return list(iter_directory(resolve_data_dir(data), split, limit))


def portable_path(path: str | os.PathLike) -> str:
    """A path as a committed file may record it: relative to the repository's parent when inside it.

    >>> portable_path(REPO_ROOT.parent / "shared" / "data" / "x.flac")
    '../shared/data/x.flac'
    >>> portable_path("/elsewhere/LibriSpeech")
    'LibriSpeech'
    """
    path = Path(path).resolve() if Path(path).is_absolute() else Path(path)
    try:
        return str(Path("..") / path.relative_to(REPO_ROOT.parent.resolve()))
    except ValueError:
        return path.name if path.is_absolute() else str(path)


def describe_data(data: str | os.PathLike | None) -> dict[str, str | None]:
    """Provenance of the data source, recorded in every result (no absolute path: see :func:`portable_path`)."""
    if data == "hub":
        return {"kind": "hub", "dataset": HUB_DATASET, "manifest_sha256": None}
    root = resolve_data_dir(data)
    return {"kind": "directory", "path": portable_path(root), "manifest_sha256": manifest_sha256(root),
            **({"unlisted_allowed": True} if unlisted_allowed() else {})}


def coverage(utterances_by_split: dict[str, list[Utterance]]) -> dict[str, dict[str, str | None]]:
    """What audio a result covers: ``{split: {utterance id: audio sha256}}``.

    A stored row is valid for today's data only if today's file for its id has the same hash.
    """
    return {split: {u.id: u.sha256 for u in utts} for split, utts in utterances_by_split.items()}


def calibration_pool(data: str | os.PathLike | None = None) -> list[Utterance]:
    """Every unscored utterance: dev-clean, then ``extra/jfk.flac`` (static calibration and babble noise draw
    on these; they never appear in a scored split)."""
    root = resolve_data_dir(data) if data != "hub" else None
    pool: list[Utterance] = []
    if root is not None and (root / "dev-clean").is_dir():
        pool += list(iter_directory(root, "dev-clean"))
    jfk = jfk_path(root)
    if jfk is not None:
        pool.append(Utterance("jfk", "extra", JFK_TEXT, load_audio(jfk), portable_path(jfk),
                              hashlib.sha256(jfk.read_bytes()).hexdigest()))
    return pool


def calibration_set(count: int, data: str | os.PathLike | None = None) -> list[Utterance]:
    """The first ``count`` unscored utterances (:func:`calibration_pool`), for static calibration."""
    pool = calibration_pool(data)
    if count > len(pool):
        raise DataError(f"asked for {count} calibration utterances but only {len(pool)} exist "
                        "(dev-clean + jfk.flac); lower calibration or add dev-clean audio")
    return pool[:count]


def calibration_for(spec, data: str | os.PathLike | None = None, fold: int | None = None) -> list[Utterance] | None:
    """The calibration utterances a spec uses (:attr:`QuantSpec.calibration_count`: its ``calibration``, or
    ``options: {imatrix: n}``); None when it uses none.

    From the unscored pool (:func:`calibration_set`), or, with ``calibration_folds``, the scored sample's
    speakers cross-fitted (:func:`cross_speaker_calibration`) for the model that scores fold ``fold``; a use
    that scores no utterance (whisper-small timing, non-speech clips) takes fold 0's.

    >>> from lib.config import QuantSpec
    >>> calibration_for(QuantSpec(library="torch_ao", scheme="dynamic", weights="int8", activations="int8")) is None
    True
    """
    count = spec.calibration_count
    if not count:
        return None
    if spec.calibration_folds:
        return cross_speaker_calibration(count, spec.calibration_folds, fold or 0, data)
    return calibration_set(count, data)


#: The splits a result scores, whose speakers cross-speaker calibration draws on.
SCORED_SPLITS = ("test-clean", "test-other")


def speaker_of(utterance_id: str) -> str:
    """LibriSpeech speaker of an utterance id: ``'1089-134686-0000'`` -> ``'1089'``."""
    return utterance_id.split("-", 1)[0]


def speaker_fold(utterance_id: str, folds: int) -> int:
    """The fold of an utterance's speaker, from a hash of the speaker id, so that growing the sample never moves
    a speaker to another fold.

    >>> speaker_fold("1089-134686-0000", 2), speaker_fold("1089-134691-0001", 2)  # one speaker, one fold
    (1, 1)
    """
    return int(hashlib.sha256(speaker_of(utterance_id).encode()).hexdigest(), 16) % folds


def cross_speaker_calibration(count: int, folds: int, fold: int, data: str | os.PathLike | None = None
                              ) -> list[Utterance]:
    """``count`` utterances of the scored splits whose speakers are *not* in fold ``fold``: the calibration of
    the model that scores fold ``fold``. Taken round robin over those speakers (sorted; each speaker's
    utterances in id order), so a small calibration still spans many speakers."""
    by_speaker: dict[str, list[Utterance]] = {}
    root = None if data == "hub" else resolve_data_dir(data)
    for split in (s for s in SCORED_SPLITS if root is None or (root / s).is_dir()):
        for u in load_split(split, None, data):
            if speaker_fold(u.id, folds) != fold:
                by_speaker.setdefault(speaker_of(u.id), []).append(u)
    queues = [sorted(by_speaker[k], key=lambda u: u.id) for k in sorted(by_speaker)]
    chosen: list[Utterance] = []
    for depth in range(max((len(q) for q in queues), default=0)):
        chosen += [q[depth] for q in queues if depth < len(q)]
    if count > len(chosen):
        raise DataError(f"asked for {count} cross-speaker calibration utterances for fold {fold} of {folds}, but the "
                        f"other folds' speakers have {len(chosen)}; lower calibration or add LibriSpeech audio")
    return chosen[:count]


JFK_TEXT = ("And so my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")


def jfk_path(root: Path | None = None) -> Path | None:
    """The JFK clip in ``shared/data/extra`` (44.1 kHz stereo), if present."""
    candidates = [root.parent / "extra" / "jfk.flac"] if root else []
    candidates.append(REPO_ROOT.parent / "shared" / "data" / "extra" / "jfk.flac")
    return next((c for c in candidates if c.exists()), None)
