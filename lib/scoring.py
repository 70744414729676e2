"""Score stored raw transcripts when results are loaded: the one place where rows become WER.

Rows keep the raw hypothesis; word errors are computed here from ``reference`` and ``hypothesis`` (cached per
text pair in the process, see :func:`lib.metrics.utterance_errors`), so a normalizer change re-scores every
result without decoding anything again. A comparison between two configurations uses only the utterances both
cover (:func:`common_rows`) and says over how many utterances and reference words it was made.

>>> rows = [{"id": "1-2-0", "split": "test-clean", "reference": "A B C", "hypothesis": "a b", "audio_seconds": 2.0,
...          "wall_seconds": 1.0, "cpu_seconds": 1.0, "encoder_seconds": 0.1, "batch": 0, "batch_wall_seconds": 1.0}]
>>> round(split_metrics(score_rows(rows))["wer"], 2)
33.33
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from .metrics import (corpus_wer, paired_bootstrap_delta, ratio_interval, rtfx, scorer_version, speaker,
                      summarize_samples, utterance_errors)

ERROR_FIELDS = ("hits", "substitutions", "deletions", "insertions", "ref_words")


def score_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with their word-error counts recomputed from the raw text (stored counts, if any, are ignored)."""
    return [{**r, **utterance_errors(r["reference"], r["hypothesis"])} for r in rows]


def split_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Corpus WER, error counts and speed over scored rows of one split."""
    audio = sum(r["audio_seconds"] for r in rows)
    wall = sum(r["wall_seconds"] for r in rows)
    return {"utterances": len(rows), "speakers": len({speaker(r["id"]) for r in rows}), "wer": corpus_wer(rows),
            **{k: sum(r[k] for r in rows) for k in ERROR_FIELDS[1:]},
            "audio_seconds": audio, "wall_seconds": wall, "cpu_seconds": sum(r["cpu_seconds"] for r in rows),
            "encoder_seconds": sum(r["encoder_seconds"] for r in rows), "rtfx": rtfx(audio, wall),
            "batch_wall_seconds": summarize_samples(list({(r.get("session"), r["batch"]): r["batch_wall_seconds"]
                                                          for r in rows}.values())),
            "scorer": scorer_version()}


def metrics_by_split(rows: Sequence[dict[str, Any]], splits: Sequence[str]) -> dict[str, dict[str, Any]]:
    scored = score_rows(rows)
    return {s: split_metrics([r for r in scored if r["split"] == s]) for s in splits}


def common_rows(base: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]], split: str | None = None
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of ``base`` and ``other`` for the utterances both cover (same id and, where recorded, same
    audio hash), in ``base``'s order, optionally of one split."""
    def key(r):
        return r["split"], r["id"]

    theirs = {key(r): r for r in other if split is None or r["split"] == split}
    pairs = [(r, theirs[key(r)]) for r in base if (split is None or r["split"] == split) and key(r) in theirs
             and same_audio(r, theirs[key(r)])]
    return [a for a, _ in pairs], [b for _, b in pairs]


def same_audio(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """False only when both rows record an audio hash and the hashes differ."""
    ha, hb = a.get("audio_sha256"), b.get("audio_sha256")
    return ha is None or hb is None or ha == hb


def compare_wer(base: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]], split: str) -> dict[str, Any] | None:
    """ΔWER of ``other`` against ``base`` on ``split`` over the utterances both cover, with two 95% intervals:
    resampling utterances and resampling speakers (``_spk``). None when they share no utterance."""
    b, o = common_rows(score_rows(base), score_rows(other), split)
    if not b:
        return None
    speakers = [speaker(r["id"]) for r in b]
    utt = paired_bootstrap_delta(b, o)
    spk = paired_bootstrap_delta(b, o, clusters=speakers)
    return {"delta": utt["delta"], "low": utt["ci_low"], "high": utt["ci_high"], "low_spk": spk["ci_low"],
            "high_spk": spk["ci_high"], "utterances": len(b), "speakers": len(set(speakers)),
            "ref_words": sum(r["ref_words"] for r in b), "wer_base": corpus_wer(b), "wer": corpus_wer(o)}


def compare_gap_change(base_a: Sequence[dict[str, Any]], other_a: Sequence[dict[str, Any]],
                       base_b: Sequence[dict[str, Any]], other_b: Sequence[dict[str, Any]], split: str
                       ) -> dict[str, Any] | None:
    """How much ``other``'s ΔWER against ``base`` changes from condition a to condition b (e.g. 20 dB to 0 dB
    SNR): ``ΔWER_b − ΔWER_a`` in points, over the utterances all four cover, with two 95% intervals that
    resample utterances and speakers (``_spk``), each utterance's four transcripts staying together.

    Positive: the gap to ``base`` is wider in condition b. None when the four share no utterance.

    >>> row = lambda i, hyp: {"id": f"1-1-{i}", "split": "s", "reference": "a b c d", "hypothesis": hyp}
    >>> right, wrong = [row(i, "a b c d") for i in range(4)], [row(i, "a b c x") for i in range(4)]
    >>> compare_gap_change(right, right, right, wrong, "s")["delta"]  # gap 0 points at a, 25 at b
    25.0
    """
    def keyed(rows):
        return {(r["split"], r["id"]): r for r in score_rows(rows) if r["split"] == split}

    sets = [keyed(rows) for rows in (base_a, other_a, base_b, other_b)]
    keys = [k for k in sets[0] if all(k in s for s in sets[1:])
            and all(same_audio(sets[0][k], s[k]) for s in sets[1:])]
    if not keys:
        return None
    b_a, o_a, b_b, o_b = ([s[k] for k in keys] for s in sets)

    def errors(rows):
        return np.array([r["substitutions"] + r["deletions"] + r["insertions"] for r in rows], dtype=float)

    words = [r["ref_words"] for r in b_a]
    # ΔWER_b − ΔWER_a = [(o_b + b_a) − (b_b + o_a)] / words: one paired ratio of sums (lib.metrics.ratio_interval)
    num, base = errors(o_b) + errors(b_a), errors(b_b) + errors(o_a)
    speakers = [speaker(k[1]) for k in keys]
    utt = ratio_interval(num, words, baseline=base, scale=100.0)
    spk = ratio_interval(num, words, baseline=base, clusters=speakers, scale=100.0)
    return {"delta": utt["delta"], "low": utt["low"], "high": utt["high"], "low_spk": spk["low"],
            "high_spk": spk["high"], "utterances": len(keys), "speakers": len(set(speakers)),
            "delta_a": corpus_wer(o_a) - corpus_wer(b_a), "delta_b": corpus_wer(o_b) - corpus_wer(b_b)}
