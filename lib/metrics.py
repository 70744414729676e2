"""Metrics, defined once: WER on normalized text, RTFx, latency summaries, stored bytes.

>>> normalize("Mr. Quilter's colour, isn't it?")
'mister quilter is color is not it'
>>> round(word_error_rate(["the cat sat"], ["the cat sat down"])["wer"], 2)
33.33
>>> rtfx(audio_seconds=30.0, compute_seconds=1.5)
20.0
"""
from __future__ import annotations

import statistics
from functools import lru_cache
from typing import Any, Iterable, Sequence

import numpy as np


def english_spelling_mapping() -> dict[str, str]:
    """openai/whisper's British-to-American spelling map, e.g. ``{'colour': 'color', ...}``.

    The hub checkpoints ship it as ``normalizer.json``, which is unreachable here; the
    ``whisper-normalizer`` package carries the same file (openai/whisper's ``normalizers/english.json``).
    """
    import json
    from importlib.resources import files

    return json.loads(files("whisper_normalizer").joinpath("normalizers/english.json").read_text())


@lru_cache(maxsize=1)
def _normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer(english_spelling_mapping())


def normalize(text: str) -> str:
    """Whisper's English normalizer: transformers' ``EnglishTextNormalizer`` with openai/whisper's spelling map."""
    return _normalizer()(text)


def utterance_errors(reference: str, hypothesis: str) -> dict[str, int]:
    """Word-level hits, substitutions, deletions, insertions after normalization.

    >>> utterance_errors("HE HOPED THERE WOULD BE STEW", "he hoped there would be a stew")
    {'hits': 6, 'substitutions': 0, 'deletions': 0, 'insertions': 1, 'ref_words': 6}
    """
    import jiwer

    ref, hyp = normalize(reference), normalize(hypothesis)
    ref_words = len(ref.split())
    if ref_words == 0:  # jiwer refuses empty references; every hypothesis word is an insertion
        return {"hits": 0, "substitutions": 0, "deletions": 0, "insertions": len(hyp.split()), "ref_words": 0}
    out = jiwer.process_words(ref, hyp if hyp.strip() else "")
    return {"hits": out.hits, "substitutions": out.substitutions, "deletions": out.deletions,
            "insertions": out.insertions, "ref_words": ref_words}


def corpus_wer(errors: Iterable[dict[str, int]]) -> float:
    """Corpus WER x100 = (S + D + I) / reference words, summed over utterances."""
    errors = list(errors)
    words = sum(e["ref_words"] for e in errors)
    wrong = sum(e["substitutions"] + e["deletions"] + e["insertions"] for e in errors)
    return 100.0 * wrong / words if words else float("nan")


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, Any]:
    """Corpus WER x100 plus the per-utterance error counts."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    per_utt = [utterance_errors(r, h) for r, h in zip(references, hypotheses)]
    return {"wer": corpus_wer(per_utt), "utterances": per_utt}


def rtfx(audio_seconds: float, compute_seconds: float) -> float:
    """Inverse real-time factor: seconds of audio transcribed per second of compute."""
    return audio_seconds / compute_seconds if compute_seconds > 0 else float("inf")


def summarize_samples(samples: Sequence[float]) -> dict[str, float]:
    """Raw latency samples -> median, min, p90, mean, n.

    >>> summarize_samples([3.0, 1.0, 2.0])["median"]
    2.0
    """
    xs = sorted(samples)
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "median": statistics.median(xs), "min": xs[0], "max": xs[-1],
            "p90": float(np.percentile(xs, 90)), "mean": statistics.fmean(xs)}


def spread_pct(samples: Sequence[float]) -> float:
    """How far apart repeated timings lie: (max / min - 1) x 100.

    >>> round(spread_pct([8.3, 9.5, 9.6]), 1)
    15.7
    """
    return 100.0 * (max(samples) / min(samples) - 1)


def paired_bootstrap_delta(base: Sequence[dict[str, int]], other: Sequence[dict[str, int]],
                           n_resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """ΔWER (other - base, x100) with a 95% paired-bootstrap CI over utterances.

    Both lists hold per-utterance error counts for the same utterances in the
    same order; each resample draws utterances with replacement and recomputes
    both corpus WERs on that draw.
    """
    if len(base) != len(other) or not base:
        raise ValueError("paired bootstrap needs the same, non-empty utterance list for both systems")
    words = np.array([e["ref_words"] for e in base], dtype=float)
    err_a = np.array([e["substitutions"] + e["deletions"] + e["insertions"] for e in base], dtype=float)
    err_b = np.array([e["substitutions"] + e["deletions"] + e["insertions"] for e in other], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), size=(n_resamples, len(base)))
    w = words[idx].sum(axis=1)
    deltas = 100.0 * (err_b[idx].sum(axis=1) - err_a[idx].sum(axis=1)) / w
    point = 100.0 * (err_b.sum() - err_a.sum()) / words.sum()
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return {"delta": float(point), "ci_low": float(lo), "ci_high": float(hi)}


# --------------------------------------------------------------------------- stored bytes

def tensor_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes a tensor really stores, including packed data, scales and zero points.

    Plain tensors count ``numel * element_size``; torch quantized tensors
    count their integer data plus per-channel scales/zero points; tensor
    subclasses (torchao, quanto) are unflattened into their inner tensors;
    tuples, lists and dicts are walked.  ``seen`` (ids of storages already
    counted) makes tied tensors count once.
    """
    import torch

    seen = set() if seen is None else seen
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(o, seen) for o in obj)
    if isinstance(obj, dict):
        return sum(tensor_bytes(o, seen) for o in obj.values())
    if not isinstance(obj, torch.Tensor):
        return 0
    if hasattr(obj, "__tensor_flatten__") and type(obj) not in (torch.Tensor, torch.nn.Parameter):
        names, _ctx = obj.__tensor_flatten__()
        return sum(tensor_bytes(getattr(obj, n), seen) for n in names)
    key = _storage_key(obj)
    if key in seen:
        return 0
    seen.add(key)
    if obj.is_quantized:
        total = obj.numel() * obj.element_size()
        if obj.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                             torch.per_channel_affine_float_qparams):
            total += tensor_bytes(obj.q_per_channel_scales(), seen) + tensor_bytes(obj.q_per_channel_zero_points(), seen)
        else:
            total += 8 + 8  # one float64 scale, one int64 zero point
        return total
    return obj.numel() * obj.element_size()


def _storage_key(t) -> tuple:
    try:
        return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
    except Exception:  # storage-less tensors (quantized, wrapper subclasses)
        return (id(t),)


def stored_bytes(model) -> int:
    """Bytes held by the model's state: every state_dict entry, tied tensors once.

    ``state_dict`` is the one view every library keeps complete: packed
    weights of torch dynamic/static modules, bitsandbytes' quant states,
    HQQ's metadata and quanto's scales all appear there.  A deployment runtime
    (:mod:`lib.runtimes`) is its model directory's bytes on disk.
    """
    if hasattr(model, "disk_bytes"):
        return model.disk_bytes()
    seen: set[int] = set()
    total = sum(tensor_bytes(v, seen) for v in model.state_dict().values())
    return total - _fp16_packed_overcount(model)


def _fp16_packed_overcount(model) -> int:
    """torch's fp16 dynamic Linear packs fp16 weights but unpacks them as fp32 in state_dict."""
    import torch

    over = 0
    for module in model.modules():
        if type(module).__name__ == "LinearPackedParams" and getattr(module, "dtype", None) == torch.float16:
            weight, _bias = module._weight_bias()
            over += weight.numel() * (weight.element_size() - 2)
    return over


def serialized_bytes(model) -> dict[str, Any]:
    """Size of ``torch.save(model.state_dict())``, or the error if the library cannot save."""
    import io

    import torch

    if hasattr(model, "disk_bytes"):
        return {"bytes": model.disk_bytes(), "method": "runtime model directory on disk", "error": None}
    buf = io.BytesIO()
    try:
        torch.save(model.state_dict(), buf)
    except Exception as exc:
        return {"bytes": None, "method": "torch.save(state_dict)", "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"bytes": buf.tell(), "method": "torch.save(state_dict)", "error": None}
