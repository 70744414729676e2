"""Noise mixed into an utterance at a stated SNR, the same audio for the same recipe on every machine.

A :class:`~lib.config.NoiseSpec` (kind, SNR, seed, level measure) is data: a run records it, and its slug
names it. :func:`mix` scales the noise so that **active-speech RMS / noise RMS** is the requested SNR:

* *active speech* (:func:`active_rms`): the signal is cut into non-overlapping 20 ms frames (320 samples at
  16 kHz); a frame is active when its mean-square level is within 30 dB of the loud frames' level (the 95th
  percentile of frame levels). Active RMS is the RMS over active frames only, so the pauses between words do
  not lower the speech level (a whole-file RMS would, and the SNR would then depend on how much silence an
  utterance holds). No maintained active-level implementation (ITU-T P.56) is installed; this one is simple
  and stated.
* *noise RMS*: over the whole utterance, after the noise is cut to its length.

Noise is drawn from a generator seeded with ``(seed, sha256(utterance id))``, so an utterance's noise does
not depend on which other utterances, limit or batch a run holds (the incremental design decodes only new
utterances, and their noise must be what a full run would have given them):

* ``white``: Gaussian samples;
* ``pink``: white noise shaped to 1/f power with numpy's real FFT (amplitude ∝ 1/√f, DC removed);
* ``babble``: ``talkers`` streams of calibration-set speech (dev-clean + the jfk clip, never a scored
  utterance: :func:`check_unscored`), each at its own random start, looped or cropped to length, each
  brought to the same active RMS, then summed. With fewer pool utterances than talkers, an utterance serves
  as several talkers at different offsets.

The mix is not clipped: Whisper's log-mel features take float audio, and clipping would change the SNR.

>>> import numpy as np
>>> t = np.arange(16_000) / 16_000
>>> speech = (0.1 * np.sin(2 * np.pi * 500 * t) * (t < 0.5)).astype(np.float32)  # a 0.5 s tone, 0.5 s silence
>>> noisy = mix(speech, NoiseSpec(kind="white", snr_db=10), "1089-134686-0000")
>>> round(snr_db(speech, noisy - speech), 3)
10.0
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Sequence

import numpy as np

from .config import SCORED_SPLITS, NoiseSpec
from .data import SAMPLE_RATE, DataError, Utterance

__all__ = ["NoiseSpec", "active_rms", "mix", "noisy_utterances", "noise_record", "snr_db"]

FRAME_MS = 20  # frame length of the active-speech measure
ACTIVE_WITHIN_DB = 30.0  # a frame is active when its level is within this many dB of the loud frames'
LOUD_PERCENTILE = 95  # the loud frames' level: this percentile of frame levels (robust to a single click)


def frame_powers(audio: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mean square of each whole 20 ms frame (a trailing partial frame is left out unless it is all there is).

    >>> frame_powers(np.ones(800)).tolist()
    [1.0, 1.0]
    """
    x = np.asarray(audio, dtype=np.float64)
    size = rate * FRAME_MS // 1000
    frames = len(x) // size
    if frames == 0:
        return np.array([np.mean(x ** 2)]) if len(x) else np.zeros(0)
    return np.mean(x[:frames * size].reshape(frames, size) ** 2, axis=1)


def active_rms(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """RMS over the active 20 ms frames (see the module docstring); 0.0 for silence.

    >>> t = np.arange(16_000) / 16_000
    >>> tone = np.sin(2 * np.pi * 500 * t)
    >>> burst = tone * (t < 0.24)  # 12 whole frames of tone, then silence
    >>> round(active_rms(burst), 4), round(rms(burst), 4)  # active RMS is the tone's, whole-file RMS is not
    (0.7071, 0.3464)
    """
    powers = frame_powers(audio, rate)
    if not len(powers) or powers.max() <= 0:
        return 0.0
    loud = np.percentile(powers, LOUD_PERCENTILE)
    active = powers[powers >= loud * 10 ** (-ACTIVE_WITHIN_DB / 10)]
    return float(np.sqrt(active.mean()))


def rms(audio: np.ndarray) -> float:
    x = np.asarray(audio, dtype=np.float64)
    return float(np.sqrt(np.mean(x ** 2))) if len(x) else 0.0


def snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    """The SNR this module targets: ``20 log10(active_rms(speech) / rms(noise))``."""
    return 20.0 * float(np.log10(active_rms(speech) / rms(noise)))


def utterance_rng(seed: int, utterance_id: str) -> np.random.Generator:
    """The generator of one utterance's noise: a function of the seed and the id only (not of the process)."""
    digest = int.from_bytes(hashlib.sha256(utterance_id.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def white(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n)


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with 1/f power: white noise's spectrum divided by √f (DC set to zero)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    spectrum[0] = 0.0
    spectrum[1:] /= np.sqrt(f[1:])
    return np.fft.irfft(spectrum, n)


def check_unscored(pool: Sequence[Utterance], scored_ids: Sequence[str] = ()) -> None:
    """Raise :class:`~lib.data.DataError` when a babble source is a scored utterance (a test split, or one of
    ``scored_ids``, the utterances of the run itself): babble must never contain speech that is scored."""
    scored = set(scored_ids)
    bad = [u.id for u in pool if u.split in SCORED_SPLITS or u.id in scored]
    if bad:
        raise DataError(f"babble pool holds scored utterance(s) {bad[:3]}; babble is built from the calibration "
                        "set only (dev-clean + extra/jfk.flac)")
    if not pool:
        raise DataError("babble needs calibration speech: no dev-clean audio or extra/jfk.flac found; add "
                        "dev-clean to the LibriSpeech directory or use white/pink noise")


def babble_pool(data: str | os.PathLike | None = None) -> list[Utterance]:
    """Every calibration utterance (dev-clean, then the jfk clip): the speech babble is made of."""
    from .data import calibration_pool

    pool = calibration_pool(data)
    check_unscored(pool)
    return pool


def babble(n: int, rng: np.random.Generator, pool: Sequence[Utterance], talkers: int
           ) -> tuple[np.ndarray, list[str]]:
    """``talkers`` pool streams summed, each at unit active RMS from a random start; returns the noise and the
    source ids, talker by talker."""
    check_unscored(pool)
    order = rng.permutation(len(pool))
    out, sources = np.zeros(n), []
    for t in range(talkers):
        source = pool[order[t % len(pool)]]
        audio = np.asarray(source.audio, dtype=np.float64)
        start = int(rng.integers(len(audio)))
        stream = audio[(start + np.arange(n)) % len(audio)]
        level = active_rms(audio)
        out += stream / level if level > 0 else stream
        sources.append(source.id)
    return out, sources


def noise_for(n: int, recipe: NoiseSpec, utterance_id: str, pool: Sequence[Utterance] | None = None
              ) -> tuple[np.ndarray, list[str]]:
    """The unscaled noise of one utterance and its babble sources (empty for white/pink)."""
    rng = utterance_rng(recipe.seed, utterance_id)
    if recipe.kind == "white":
        return white(n, rng), []
    if recipe.kind == "pink":
        return pink(n, rng), []
    return babble(n, rng, babble_pool() if pool is None else pool, recipe.talkers)


def mix(speech: np.ndarray, recipe: NoiseSpec, utterance_id: str, pool: Sequence[Utterance] | None = None
        ) -> np.ndarray:
    """``speech`` plus the recipe's noise at ``recipe.snr_db`` (active-speech RMS / noise RMS), as float32.

    ``pool`` is the babble speech (default: :func:`babble_pool` of the default data). Silent speech
    (no active frame) is returned unchanged: its SNR is undefined.
    """
    return _mix(speech, recipe, utterance_id, pool)[0]


def _mix(speech, recipe: NoiseSpec, utterance_id: str, pool) -> tuple[np.ndarray, list[str]]:
    speech = np.asarray(speech, dtype=np.float32)
    level = active_rms(speech)
    noise, sources = noise_for(len(speech), recipe, utterance_id, pool)
    if level == 0.0 or rms(noise) == 0.0:
        return speech.copy(), sources
    scale = level / (rms(noise) * 10 ** (recipe.snr_db / 20))
    return (speech.astype(np.float64) + scale * noise).astype(np.float32), sources


def level_measure() -> str:
    """How the SNR's two levels are measured, in words (recorded in every noisy result)."""
    return (f"active-speech RMS ({FRAME_MS} ms frames within {ACTIVE_WITHIN_DB:g} dB of the "
            f"{LOUD_PERCENTILE}th-percentile frame level) / noise RMS over the utterance")


def describe_kind(recipe: NoiseSpec, data: str | os.PathLike | None = None) -> str:
    """What a recipe's noise is made of, e.g. ``'6 talkers from 1272-128104-0001, ..., jfk (calibration set)'``."""
    if recipe.kind == "white":
        return "Gaussian samples, flat spectrum"
    if recipe.kind == "pink":
        return "Gaussian samples shaped to 1/f power (numpy real FFT)"
    try:
        ids = [u.id for u in babble_pool(data)]
    except DataError as exc:
        return f"{recipe.talkers} talkers from the calibration set ({exc})"
    return (f"{recipe.talkers} talker streams, each at its own random offset, drawn from {len(ids)} calibration "
            f"utterances ({', '.join(ids)}); never a scored utterance")


def noise_record(recipe: NoiseSpec, pool: Sequence[Utterance] = ()) -> dict[str, Any]:
    """What a result records of its noise: the recipe, how levels were measured, and the babble pool."""
    return {**recipe.to_dict(), "measure": level_measure(),
            "rng": "numpy default_rng([seed, sha256(utterance id)[:8]])",
            "pool": [{"id": u.id, "split": u.split, "sha256": u.sha256} for u in pool]}


def noisy_utterances(utterances: dict[str, list[Utterance]], recipe: NoiseSpec | None,
                     data: str | os.PathLike | None = None) -> tuple[dict[str, list[Utterance]], dict | None]:
    """Each utterance with ``recipe``'s noise mixed in (same id, reference and clean-audio ``sha256``; its
    ``noise`` field holds the recipe and babble sources), and the run's :func:`noise_record`.
    ``recipe=None`` returns the utterances as they are and no record."""
    if recipe is None:
        return utterances, None
    pool: list[Utterance] = []
    if recipe.kind == "babble":
        pool = babble_pool(data)
        check_unscored(pool, [u.id for utts in utterances.values() for u in utts])
    out = {}
    for split, utts in utterances.items():
        out[split] = []
        for u in utts:
            audio, sources = _mix(u.audio, recipe, u.id, pool)
            info = {**recipe.to_dict(), **({"sources": sources} if sources else {})}
            out[split].append(dataclasses.replace(u, audio=audio, noise=info))
    return out, noise_record(recipe, pool)
