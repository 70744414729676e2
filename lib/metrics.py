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


@lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    """Whisper's English normalizer (openai/whisper's, as packaged by ``whisper-normalizer``)."""
    return _normalizer()(text)


def scorer_version() -> str:
    """What a score depends on besides the text, e.g. ``'whisper-normalizer 0.1.15, jiwer 4.0.0'``."""
    from importlib.metadata import version

    return f"whisper-normalizer {version('whisper-normalizer')}, jiwer {version('jiwer')}"


def utterance_errors(reference: str, hypothesis: str) -> dict[str, int]:
    """Word-level hits, substitutions, deletions, insertions after normalization.

    >>> utterance_errors("HE HOPED THERE WOULD BE STEW", "he hoped there would be a stew")
    {'hits': 6, 'substitutions': 0, 'deletions': 0, 'insertions': 1, 'ref_words': 6}
    """
    return dict(zip(("hits", "substitutions", "deletions", "insertions", "ref_words"), _errors(reference, hypothesis)))


@lru_cache(maxsize=200_000)
def _errors(reference: str, hypothesis: str) -> tuple[int, int, int, int, int]:
    import jiwer

    ref, hyp = normalize(reference), normalize(hypothesis)
    ref_words = len(ref.split())
    if ref_words == 0:  # jiwer refuses empty references; every hypothesis word is an insertion
        return (0, 0, 0, len(hyp.split()), 0)
    out = jiwer.process_words(ref, hyp if hyp.strip() else "")
    return (out.hits, out.substitutions, out.deletions, out.insertions, ref_words)


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


def median_interval(samples: Sequence[float], confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Median with a 95% percentile-bootstrap interval (``scipy.stats.bootstrap``), e.g. of latency ratios.

    >>> median_interval([1.0, 1.1, 0.9, 1.05, 0.95])["median"]
    1.0
    """
    from scipy import stats

    xs = np.asarray(samples, dtype=float)
    point = float(np.median(xs))
    if len(xs) < 3 or np.allclose(xs, xs[0]):
        return {"median": point, "low": point, "high": point}
    res = stats.bootstrap((xs,), np.median, method="percentile", confidence_level=confidence, n_resamples=2000,
                          rng=np.random.default_rng(seed))
    return {"median": point, "low": float(res.confidence_interval.low), "high": float(res.confidence_interval.high)}


def spearman_interval(x: Sequence[float], y: Sequence[float], confidence: float = 0.95, seed: int = 0
                      ) -> dict[str, float]:
    """Spearman's rank correlation with a 95% BCa bootstrap interval over the pairs (e.g. configurations).

    >>> round(spearman_interval([1, 2, 3, 4, 5, 6], [1, 3, 2, 4, 6, 5])["rho"], 3)
    0.886
    """
    from scipy import stats

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rho = float(stats.spearmanr(xs, ys).statistic)
    if len(xs) < 4:
        return {"rho": rho, "low": float("nan"), "high": float("nan"), "n": len(xs)}

    def statistic(a, b):
        return stats.spearmanr(a, b).statistic

    res = stats.bootstrap((xs, ys), statistic, paired=True, vectorized=False, method="percentile",
                          confidence_level=confidence, n_resamples=2000, rng=np.random.default_rng(seed))
    return {"rho": rho, "low": float(res.confidence_interval.low), "high": float(res.confidence_interval.high),
            "n": len(xs)}


def spread_pct(samples: Sequence[float]) -> float:
    """How far apart repeated timings lie: (max / min - 1) x 100.

    >>> round(spread_pct([8.3, 9.5, 9.6]), 1)
    15.7
    """
    return 100.0 * (max(samples) / min(samples) - 1)


def speaker(utterance_id: str) -> str:
    """LibriSpeech speaker of an utterance: ``'1089-134686-0000'`` -> ``'1089'``."""
    return utterance_id.split("-", 1)[0]


def _cluster_sums(arrays: Sequence[np.ndarray], clusters: Sequence[str] | None) -> list[np.ndarray]:
    if clusters is None:
        return [np.asarray(a, dtype=float) for a in arrays]
    keys = sorted(set(clusters))
    index = np.array([keys.index(c) for c in clusters])
    return [np.bincount(index, weights=np.asarray(a, dtype=float), minlength=len(keys)) for a in arrays]


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], *, baseline: Sequence[float] | None = None,
                   clusters: Sequence[str] | None = None, scale: float = 1.0, confidence: float = 0.95,
                   n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """A ratio of sums ``scale x Σnum / Σden`` (minus ``scale x Σbaseline / Σden`` when paired) with a 95% BCa
    bootstrap interval (``scipy.stats.bootstrap``, paired).

    Items are utterances; with ``clusters`` (one label per item, e.g. its speaker) whole clusters are resampled
    instead, which is the honest interval when utterances of one speaker are not independent. Corpus WER,
    mean KL divergence over token positions and top-1 agreement are all such ratios.

    >>> d = ratio_interval([1, 0, 2, 1], [10, 10, 10, 10], baseline=[0, 0, 1, 1], scale=100)
    >>> d["delta"], d["low"] <= d["delta"] <= d["high"]
    (5.0, True)
    """
    from scipy import stats

    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    base = np.zeros_like(num) if baseline is None else np.asarray(baseline, dtype=float)
    if not (len(num) == len(den) == len(base)) or not len(num):
        raise ValueError("a paired interval needs the same, non-empty item list for every array")
    n_items = len(num) if clusters is None else len(set(clusters))
    num, den, base = _cluster_sums([num, den, base], clusters)
    point = scale * (num.sum() - base.sum()) / den.sum()
    out = {"delta": float(point), "low": float(point), "high": float(point), "items": int(n_items),
           "resampled": "speakers" if clusters is not None else "utterances", "method": "BCa"}
    per_item = (num - base) / np.where(den > 0, den, 1)
    if np.allclose(per_item, per_item[0], rtol=0, atol=1e-12) or n_items < 3:  # no spread to resample
        return out

    def statistic(n, d, b, axis=-1):
        return scale * (n.sum(axis=axis) - b.sum(axis=axis)) / d.sum(axis=axis)

    for method in ("BCa", "percentile"):  # BCa is undefined when the resampled statistic barely varies
        res = stats.bootstrap((num, den, base), statistic, paired=True, vectorized=True, method=method,
                              confidence_level=confidence, n_resamples=n_resamples, rng=np.random.default_rng(seed))
        lo, hi = res.confidence_interval
        if np.isfinite(lo) and np.isfinite(hi):
            out.update(low=float(min(lo, point)), high=float(max(hi, point)), method=method)
            break
    return out


def paired_bootstrap_delta(base: Sequence[dict[str, int]], other: Sequence[dict[str, int]],
                           n_resamples: int = 2000, seed: int = 0,
                           clusters: Sequence[str] | None = None) -> dict[str, float]:
    """ΔWER (other - base, x100) with a 95% paired BCa bootstrap interval over utterances (or ``clusters``).

    Both lists hold per-utterance error counts for the same utterances in the same order.
    """
    if len(base) != len(other) or not base:
        raise ValueError("paired bootstrap needs the same, non-empty utterance list for both systems")
    errors = [[e["substitutions"] + e["deletions"] + e["insertions"] for e in rows] for rows in (base, other)]
    d = ratio_interval(errors[1], [e["ref_words"] for e in base], baseline=errors[0], clusters=clusters,
                       scale=100.0, n_resamples=n_resamples, seed=seed)
    return {"delta": d["delta"], "ci_low": d["low"], "ci_high": d["high"]}


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
