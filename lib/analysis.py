"""What the tables say: Pareto sets, ship candidates, cheap proxies of WER, how broken models fail, highlights.

Inputs are tables of :mod:`lib.tables` (plain column names); outputs are tables or facts for the prose.

>>> failure_mode(substitutions=40, deletions=5, insertions=900)
'loops (insertions)'
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .display import readable, status_counts
from .decoding import RECIPE
from .results import RESULTS_DIR, ResultStore
from .scoring import compare_wer, score_rows
from .tables import current_recipe, finished, quantized
from .verdicts import ConfirmationVerdict, End, Int8Answer, Interval, RecipeVerdict, RecipeWin, Row

#: The cheap proxies of WER and what each measures.
PROXIES = {"encoder_distance": "1 − encoder cosine (JFK clip)", "weight_error": "mean relative weight error"}


def pareto_front(df: pd.DataFrame, minimize: Iterable[str] = ("small_mb", "latency_ratio")) -> pd.DataFrame:
    """The rows of ``df`` that no other row beats on every column of ``minimize`` at once, sorted by them.

    A row is dominated when another is at least as good on all of ``minimize`` and better on one; a row that
    repeats an earlier row's values exactly is dropped too (one label per point). Rows missing a value are
    left out; the original index is kept. Filter first (e.g. :func:`lib.tables.finished`).

    >>> df = pd.DataFrame({"configuration": ["a", "b", "c", "d"], "small_mb": [300, 400, 500, 400],
    ...                    "latency_ratio": [1.5, 0.9, 0.9, 1.2]})
    >>> list(pareto_front(df)["configuration"])  # c: b is as fast and smaller; d: b is as small and faster
    ['a', 'b']
    """
    minimize = list(minimize)
    rows = df.dropna(subset=minimize)
    values = rows[minimize].to_numpy(dtype=float)
    keep = [not any(((other <= row).all() and (other < row).any()) or (j < i and (other == row).all())
                    for j, other in enumerate(values)) for i, row in enumerate(values)]
    return rows[pd.Series(keep, index=rows.index, dtype=bool)].sort_values(minimize, kind="stable")


def ship_candidates(df: pd.DataFrame, max_wer_increase: float = 1.0) -> pd.DataFrame:
    """Configurations within ``max_wer_increase`` WER points of fp32 on test-other (point estimate) that
    no other such configuration beats on both stored size and latency ratio.

    Only latencies timed on the study's CPU class compete (rows marked ``§`` are left out).
    """
    same_cpu = ~df["other_cpu"].fillna(False).astype(bool) if "other_cpu" in df else True
    return pareto_front(finished(df[(df["delta_wer_other"] <= max_wer_increase) & same_cpu])).reset_index(drop=True)


def proxy_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Finished quantized rows with the two cheap proxies next to their WER.

    ``encoder_distance`` is 1 − the encoder-output cosine against fp32 on the 11 s JFK clip;
    ``weight_error`` is the mean relative reconstruction error per layer. A proxy that is exactly zero
    (encoder untouched, or float16 weights, lossless for a model released in float16) is NaN: it ranks
    nothing and has no place on a log axis.
    """
    ok = quantized(finished(df)).copy()
    distance = 1.0 - ok["encoder_cosine"].astype(float)
    ok["encoder_distance"] = distance.where(distance > 1e-7)
    ok["weight_error"] = ok["weight_error"].astype(float).where(lambda e: e > 0)
    return ok


def proxy_correlations(df: pd.DataFrame, target: str = "wer_other") -> dict[str, Any]:
    """Spearman rank correlation of each proxy with ``target`` over the rows where both exist.

    >>> df = pd.DataFrame({"configuration": list("abcd"), "library": "HQQ", "status": "ok",
    ...                    "encoder_cosine": [0.99, 0.98, 0.9, 1.0], "weight_error": [0.1, 0.3, 0.2, 0.05],
    ...                    "wer_other": [11.0, 12.0, 50.0, 10.5]})
    >>> facts = proxy_correlations(df)
    >>> facts["encoder_distance_rho"], facts["encoder_distance_n"], facts["weight_error_rho"]
    (1.0, 3, 0.8)
    """
    frame = proxy_frame(df)
    facts: dict[str, Any] = {}
    for proxy in PROXIES:
        pair = frame[[proxy, target]].dropna()
        facts[f"{proxy}_rho"] = round(float(pair[proxy].corr(pair[target], method="spearman")), 2) if len(pair) > 2 \
            else float("nan")
        facts[f"{proxy}_n"] = len(pair)
    facts["encoder_blind"] = ", ".join(frame[frame["encoder_distance"].isna() & frame["encoder_cosine"].notna()]
                                       ["configuration"]) or "none"
    return facts


def failure_mode(substitutions: int, deletions: int, insertions: int, at_limit_pct: float = 0.0) -> str:
    """How a model fails, named after the error type that makes up most of its WER.

    Deletions with most outputs at their token limit are not silence: the model loops on tokens that the
    normalizer removes (e.g. strings of U+FFFD).

    >>> failure_mode(substitutions=12, deletions=310, insertions=4)
    'falls silent (deletions)'
    >>> failure_mode(substitutions=0, deletions=310, insertions=0, at_limit_pct=90.0)
    'loops on non-words (deletions after normalization)'
    """
    kind = max((substitutions, "substitutions"), (deletions, "deletions"), (insertions, "insertions"))[1]
    if kind == "deletions" and at_limit_pct >= 50.0:
        return "loops on non-words (deletions after normalization)"
    return {"substitutions": "wrong words (substitutions)", "deletions": "falls silent (deletions)",
            "insertions": "loops (insertions)"}[kind]


ERROR_PROFILE_COLUMNS = ["configuration", "WER", "substitutions %", "deletions %", "insertions %",
                         "output length %", "empty output %", "at token cap %", "failure mode"]


def error_profile(df: pd.DataFrame, min_wer: float = 20.0, results_dir: Path | str = RESULTS_DIR) -> pd.DataFrame:
    """How the configurations whose WER reaches ``min_wer`` on either split go wrong, both splits pooled.

    From the saved per-utterance rows: substitutions, deletions and insertions as % of reference words
    (they add up to the pooled WER), the output's length against the reference's (normalized words), the
    share of utterances transcribed as nothing, the share that decoded up to the ``max_new_tokens`` cap
    or its token budget, whichever is lower ("cap"; a repetition loop), and the failure mode that dominates. The result is a reader-facing table: its
    columns are already labels.
    """
    store = ResultStore(results_dir)
    wer_columns = [c for c in ("wer_clean", "wer_other") if c in df]
    if df.empty or not wer_columns:
        return pd.DataFrame(columns=ERROR_PROFILE_COLUMNS)
    bad = finished(df)[lambda d: d[wer_columns].max(axis=1) >= min_wer]
    records = []
    for _, row in bad.iterrows():
        utterances = score_rows(store.load_rows(row["slug"]))
        summary = store.get(row["slug"])
        if not utterances or summary is None:
            continue
        cap = summary["decoding"]["max_new_tokens"]
        words = sum(u["ref_words"] for u in utterances)
        counts = {k: sum(u[k] for u in utterances) for k in ("substitutions", "deletions", "insertions")}
        empty = 100.0 * sum(not u["hypothesis"].strip() for u in utterances) / len(utterances)
        capped = 100.0 * sum(u.get("text_tokens", 0) + 1 >= min(cap, RECIPE.budget(u["audio_seconds"]))
                             for u in utterances) / len(utterances)
        length = 100.0 * sum(u["hits"] + u["substitutions"] + u["insertions"] for u in utterances) / words
        records.append({"configuration": row["configuration"], "WER": 100.0 * sum(counts.values()) / words,
                        **{f"{k} %": 100.0 * v / words for k, v in counts.items()}, "output length %": length,
                        "empty output %": empty, "at token cap %": capped,
                        "failure mode": failure_mode(**counts, at_limit_pct=capped)})
    return pd.DataFrame(records, columns=ERROR_PROFILE_COLUMNS).sort_values("WER").reset_index(drop=True)


def highlights(df: pd.DataFrame) -> dict[str, Any]:
    """Headline facts of a chapter table, for glue: counts and, per split, the configuration with the smallest
    ΔWER against fp32 (on the utterances both cover, with its speaker-resampled 95% interval), never the lowest
    raw WER, which may come from another utterance set. Rows tied with it (intervals overlapping its own) are
    counted, not ranked.

    >>> df = pd.DataFrame({"configuration": ["fp32", "a", "b"], "library": ["fp32", "HQQ", "HQQ"], "status": "ok",
    ...                    "delta_wer_clean": [None, 0.9, 0.6], "delta_wer_clean_low": [None, 0.1, -0.2],
    ...                    "delta_wer_clean_high": [None, 1.5, 1.4], "common_clean": [None, 99, 99]})
    >>> facts = highlights(df)
    >>> facts["counts"], facts["best_clean"], facts["best_clean_delta"], facts["best_other"]
    ('3 ok', 'b', '+0.60 [-0.20, +1.40], n = 99', 'none')
    >>> facts["best_clean_ties"]
    'within its interval: 1 more'
    """
    out: dict[str, Any] = {"counts": status_counts(df) if len(df) else "no configurations"}
    ok = quantized(finished(df)) if len(df) else df
    for key in ("clean", "other"):
        col = f"delta_wer_{key}"
        if len(ok) and col in ok and ok[col].notna().any():
            best = ok.loc[ok[col].idxmin()]
            low, high = best[f"{col}_low"], best[f"{col}_high"]
            ties = ok[(ok.index != best.name) & (ok[f"{col}_low"] <= high)]
            out[f"best_{key}"] = best["configuration"]
            out[f"best_{key}_delta"] = f"{best[col]:+.2f} [{low:+.2f}, {high:+.2f}], n = {int(best[f'common_{key}'])}"
            out[f"best_{key}_ties"] = f"within its interval: {len(ties)} more" if len(ties) else "no other row"
        else:
            out[f"best_{key}"], out[f"best_{key}_delta"], out[f"best_{key}_ties"] = "none", "–", "–"
    return out


def kld_rank_agreement(df: pd.DataFrame, split: str = "other", top: int = 3) -> dict[str, Any]:
    """Does mean KLD to fp32 rank configurations the way ΔWER does? Spearman ρ with a 95% bootstrap interval
    over configurations, and the rows where the two ranks disagree most (by rank difference).

    Facts: ``kld_rho``, ``kld_rho_low``, ``kld_rho_high``, ``kld_n``, ``kld_disagree`` (names), ``kld_disagree_text``.
    """
    from .metrics import spearman_interval

    ok = quantized(finished(df)).dropna(
        subset=[f"kld_{split}", f"delta_wer_{split}"])
    if len(ok) < 4:
        return {"kld_rho": float("nan"), "kld_rho_low": float("nan"), "kld_rho_high": float("nan"),
                "kld_n": len(ok), "kld_disagree": [], "kld_disagree_text": "too few configurations with both yet"}
    rho = spearman_interval(ok[f"kld_{split}"], ok[f"delta_wer_{split}"])
    gap = (ok[f"kld_{split}"].rank() - ok[f"delta_wer_{split}"].rank()).abs()
    worst = ok.assign(gap=gap).sort_values("gap", ascending=False).head(top)
    text = "; ".join(f"{r['configuration']} (KLD rank {int(ok[f'kld_{split}'].rank()[i])}, ΔWER rank "
                     f"{int(ok[f'delta_wer_{split}'].rank()[i])} of {len(ok)})" for i, r in worst.iterrows())
    return {"kld_rho": rho["rho"], "kld_rho_low": rho["low"], "kld_rho_high": rho["high"], "kld_n": len(ok),
            "kld_disagree": list(worst["configuration"]), "kld_disagree_text": text}


def accuracy_takeaway(df: pd.DataFrame) -> str:
    """A chapter's takeaway from its table: how many configurations cannot be told from fp32 on either split
    (speaker-resampled ΔWER intervals containing 0), the smallest of them on the whisper-small architecture,
    and which lose accuracy measurably on test-other.

    >>> df = pd.DataFrame({"configuration": ["a", "b"], "status": "ok", "library": "HQQ", "small_mb": [300.0, 200.0],
    ...     "delta_wer_clean_low": [-1.0, 0.5], "delta_wer_clean_high": [1.0, 2.0], "delta_wer_other_low": [-1, 2.0],
    ...     "delta_wer_other_high": [1.0, 9.0], "delta_wer_other": [0.1, 5.0]})
    >>> accuracy_takeaway(df)
    '1 of 2 configurations cannot be told apart from fp32 on either split; the smallest of them is a (300 MB on the whisper-small architecture). 1 lose accuracy measurably on test-other, the least b (ΔWER other +5.00).'
    """
    ok = quantized(finished(df))
    cols = [f"delta_wer_{s}_{b}" for s in ("clean", "other") for b in ("low", "high")]
    if ok.empty or any(c not in ok for c in cols):
        return "No configuration of this chapter has a ΔWER interval yet."
    same = ok[(ok["delta_wer_clean_low"] <= 0) & (ok["delta_wer_clean_high"] >= 0)
              & (ok["delta_wer_other_low"] <= 0) & (ok["delta_wer_other_high"] >= 0)]
    text = f"{len(same)} of {len(ok)} configurations cannot be told apart from fp32 on either split"
    sized = same.dropna(subset=["small_mb"]) if "small_mb" in same else same.iloc[:0]
    if len(sized):
        best = sized.sort_values("small_mb").iloc[0]
        text += f"; the smallest of them is {best['configuration']} ({best['small_mb']:.0f} MB on the whisper-small architecture)"
    worse = ok[ok["delta_wer_other_low"] > 0].sort_values("delta_wer_other")
    if len(worse):
        least = worse.iloc[0]
        text += (f". {len(worse)} lose accuracy measurably on test-other, the least {least['configuration']} "
                 f"(ΔWER other {least['delta_wer_other']:+.2f})")
    return text + "."


def footprint_takeaway(df: pd.DataFrame, cpu: str) -> str:
    """The Footprint chapter's takeaway from its table (rows timed on ``cpu``): the smallest configuration and its
    compression, and how many quantized configurations run at least 5% faster or slower than fp32.

    >>> df = pd.DataFrame({"configuration": ["fp32", "a", "b"], "status": "ok", "small_mb": [967.0, 300.0, 200.0],
    ...                    "compression_pct": [0.0, 69.0, 79.3], "latency_ratio": [1.0, 1.2, 0.9]})
    >>> footprint_takeaway(df, "AVX2")
    'The smallest configuration, b, stores 200 MB on the whisper-small architecture, 79% less than fp32; on AVX2, 1 of 2 quantized configurations run at least 5% faster than fp32 and 1 at least 5% slower.'
    """
    ok = finished(df)[lambda d: d["configuration"] != "fp32"].dropna(subset=["small_mb"])
    if ok.empty:
        return "No quantized configuration has a footprint on this CPU class yet."
    small = ok.sort_values("small_mb").iloc[0]
    timed = ok.dropna(subset=["latency_ratio"])
    faster, slower = int((timed["latency_ratio"] < 0.95).sum()), int((timed["latency_ratio"] > 1.05).sum())
    text = (f"The smallest configuration, {small['configuration']}, stores {small['small_mb']:.0f} MB on the "
            f"whisper-small architecture, {small['compression_pct']:.0f}% less than fp32; on {cpu}, {faster} of "
            f"{len(timed)} quantized configurations run at least 5% faster than fp32 and {slower} at least 5% slower")
    if faster == 0:
        text += ": here quantization buys size, not speed"
    elif slower > faster:
        text += ": here a smaller model is more often slower than faster"
    return text + "."


_TOP_K = re.compile(r"mix-top(\d+)-(\w+)")
NO_GAINS = "No top-k recipe has a fidelity and footprint result yet"


def recipe_name(row) -> str:
    """A short name of a mixed-grid row for prose: ``'int4 g64 + top 5 at int8'``, ``'uniform int4 g32'``,
    ``'the community recipe (encoder and every fc1 at int8)'``; other rows by their readable configuration.

    >>> recipe_name(pd.Series({"configuration": "x", "recipe": "mix-top5-int8", "weights": "int4", "group_size": 64.0}))
    'int4 g64 + top 5 at int8'
    """
    recipe, weights, group = (getattr(row, c, None) for c in ("recipe", "weights", "group_size"))
    named = isinstance(recipe, str) and isinstance(weights, str)
    size = f" g{int(group)}" if named and group is not None and pd.notna(group) else ""
    top = _TOP_K.match(recipe) if named else None
    if top:
        return f"{weights}{size} + top {top.group(1)} at {top.group(2)}"
    if named and recipe == "uniform":
        return f"uniform {weights}{size}"
    if recipe == "enc-fc1-int8":
        return "the community recipe (encoder and every fc1 at int8)"
    return readable(row.configuration)


def recipe_gains(df: pd.DataFrame) -> str:
    """What each top-k recipe buys over its own uniform base (the same bit-width and group size everywhere): the
    change of KLD on test-other and the whisper-small MB it costs, per base. ``df`` is
    :func:`lib.tables.recipe_table`.

    >>> recipe_gains(pd.DataFrame({"configuration": ["u3", "m"], "recipe": ["uniform", "mix-top5-int8"],
    ...     "weights": "int3", "status": "ok", "small_mb": [278.3, 292.4], "kld_other": [0.189, 0.108]}))
    'Against its own uniform base (KLD on test-other), keeping the k most sensitive groups at int8 gives: int3 (KLD 0.189) k=5 0.108 (-43%, +14 MB)'
    """
    need = ["small_mb", "kld_other", "recipe", "weights"]
    if any(c not in df for c in need):
        return NO_GAINS
    done = finished(df).dropna(subset=["small_mb", "kld_other"])
    key = (lambda r: (r.weights, r.group_size)) if "group_size" in df else (lambda r: (r.weights, None))
    base = {key(r): r for r in done[done["recipe"] == "uniform"].itertuples()}
    by_base: dict[tuple, list[str]] = {}
    high = "int8"
    for m in done[done["recipe"].str.match(_TOP_K.pattern)].itertuples():
        if key(m) not in base:
            continue
        b, (k, high) = base[key(m)], _TOP_K.match(m.recipe).groups()
        by_base.setdefault(key(m), []).append(
            f"k={k} {m.kld_other:.3g} ({100 * (m.kld_other / b.kld_other - 1):+.0f}%, {m.small_mb - b.small_mb:+.0f} MB)")
    if not by_base:
        return NO_GAINS
    parts = [f"{w}{f' g{int(g)}' if g == g and g is not None else ''} (KLD {base[(w, g)].kld_other:.3g}) "
             + ", ".join(items) for (w, g), items in by_base.items()]
    return (f"Against its own uniform base (KLD on test-other), keeping the k most sensitive groups at {high} "
            "gives: " + "; ".join(parts))


def _row(r) -> Row:
    """A table row (a Series or an itertuples row) as :class:`lib.verdicts.Row`."""
    return Row(recipe_name(r), float(_get(r, "small_mb")), float(_get(r, "kld_other")), float(_get(r, "wer_other")),
               _kld_bounds(r))


def _get(r, column: str, default: Any = None) -> Any:
    return r.get(column, default) if isinstance(r, pd.Series) else getattr(r, column, default)


def recipe_verdict(df: pd.DataFrame, results_dir: Path | str = RESULTS_DIR) -> RecipeVerdict:
    """Whether a mixed-precision recipe beats a uniform HQQ row at no larger stored size (whisper-small
    architecture): lower KLD on test-other and no higher WER on test-other. ``df`` is
    :func:`lib.tables.recipe_table`; where its rows name a ``slug`` with saved utterances, each win also carries
    the paired WER difference on test-other with its 95% interval (:func:`lib.scoring.compare_wer`). Rows
    decoded with an older decoding recipe are left out and named.

    >>> v = recipe_verdict(pd.DataFrame({"configuration": ["u4", "mix"], "recipe": ["uniform", "mix-top4-int8"],
    ...     "status": "ok", "small_mb": [298.1, 290.0], "kld_other": [0.05, 0.03], "wer_other": [9.0, 8.5]}))
    >>> v.outcome, v.wins[0].recipe.name, v.wins[0].uniform.small_mb
    ('beats', 'mix', 298.1)
    """
    need = ["small_mb", "kld_other", "wer_other"]
    if any(c not in df for c in need + ["recipe"]):
        return RecipeVerdict("no results")
    done = finished(df).dropna(subset=need)
    left_out = tuple(readable(n) for n in done.loc[~done.index.isin(current_recipe(done).index), "configuration"])
    done = current_recipe(done)  # one decoding recipe in one comparison
    uniform = done[done["recipe"] == "uniform"]
    mixed = done[done["recipe"].str.startswith("mix-") | (done["recipe"] == "enc-fc1-int8")]
    if mixed.empty or uniform.empty:
        return RecipeVerdict("no results")
    wins = [(u.small_mb - m.small_mb, m, u) for m in mixed.itertuples() for u in uniform.itertuples()
            if m.small_mb <= u.small_mb and m.kld_other < u.kld_other and m.wer_other <= u.wer_other]
    front = set(pareto_front(done, ("small_mb", "kld_other"))["configuration"])
    if not wins:
        front_only = []
        for m in mixed.itertuples():
            larger = uniform[uniform["small_mb"] >= m.small_mb]
            if m.configuration in front and not larger.empty:
                front_only.append((_row(m), _row(larger.loc[larger["small_mb"].idxmin()])))
        return RecipeVerdict("none beats", mixed=len(mixed), front_only=tuple(front_only), left_out=left_out)
    closest = {}  # per winning recipe, the uniform row it beats that is nearest in size
    for _gap, m, u in sorted(wins, key=lambda w: (w[1].small_mb, w[0])):
        closest.setdefault(m.configuration, (m, u))
    found = []
    for m, u in closest.values():
        diff = paired_wer(getattr(u, "slug", None), getattr(m, "slug", None), results_dir)
        found.append(RecipeWin(_row(m), _row(u), Interval(diff["delta"], diff["low"], diff["high"]) if diff else None,
                               on_front=m.configuration in front, kld_overlap=_intervals_overlap(m, u)))
    return RecipeVerdict("beats", mixed=len(mixed), wins=tuple(found), left_out=left_out)


def paired_wer(base_slug: Any, other_slug: Any, results_dir: Path | str = RESULTS_DIR,
               split: str = "test-other") -> dict[str, Any] | None:
    """:func:`lib.scoring.compare_wer` of two saved results (other minus base, paired over the utterances both
    cover), or None where either slug is missing or has no saved utterances."""
    if not isinstance(base_slug, str) or not isinstance(other_slug, str):
        return None
    store = ResultStore(results_dir)
    base, other = store.load_rows(base_slug), store.load_rows(other_slug)
    return compare_wer(base, other, split) if base and other else None


def int8_answer(df: pd.DataFrame, results_dir: Path | str = RESULTS_DIR) -> Int8Answer:
    """The chapter's question — does a recipe buy a smaller model at the accuracy of uniform int8? — answered
    for the recipe closest to int8 in KLD, in WER (paired, test-other) and in KLD, and whether it also beats
    the community recipe. ``df`` is :func:`lib.tables.recipe_table`.

    >>> a = int8_answer(pd.DataFrame({"configuration": ["u8", "m"], "recipe": ["uniform", "mix-top21-int8"],
    ...     "weights": ["int8", "int4"], "status": "ok", "small_mb": [397.0, 348.0], "kld_other": [6e-05, 0.0045],
    ...     "wer_other": [9.36, 8.99]}))
    >>> a.recipe.name, a.wer_matches, a.kld_matches, round(a.kld_ratio)
    ('int4 + top 21 at int8', True, False, 75)
    """
    need = ["small_mb", "kld_other", "wer_other", "recipe", "weights"]
    if any(c not in df for c in need):
        return Int8Answer("no results")
    done = current_recipe(finished(df).dropna(subset=need[:3]))
    int8 = done[(done["recipe"] == "uniform") & (done["weights"] == "int8")]
    mixed = done[done["recipe"].str.match(_TOP_K.pattern) | (done["recipe"] == "enc-fc1-int8")]
    if int8.empty or mixed.empty:
        return Int8Answer("no results")
    u, m = int8.loc[int8["small_mb"].idxmin()], mixed.loc[mixed["kld_other"].idxmin()]
    diff = paired_wer(u.get("slug"), m.get("slug"), results_dir)
    beaten = None
    community = done[done["recipe"] == "enc-fc1-int8"]
    if len(community) and m["recipe"] != "enc-fc1-int8":
        c = community.iloc[0]
        if m["small_mb"] <= c["small_mb"] and m["kld_other"] < c["kld_other"] and m["wer_other"] <= c["wer_other"]:
            beaten = _row(c)
    return Int8Answer("answered", recipe=_row(m), int8=_row(u),
                      paired=Interval(diff["delta"], diff["low"], diff["high"]) if diff is not None else None,
                      wer_matches=bool(diff["low"] <= 0 if diff is not None else m["wer_other"] <= u["wer_other"]),
                      kld_matches=_intervals_overlap(m, u), community=beaten)


def _kld_bounds(row) -> tuple[float, float] | None:
    """A row's 95% KLD interval on test-other, or None where the table has none."""
    low, high = _get(row, "kld_other_low"), _get(row, "kld_other_high")
    return None if low is None or high is None or pd.isna(low) or pd.isna(high) else (float(low), float(high))


def _intervals_overlap(m, u) -> bool:
    """Whether two rows' 95% KLD intervals on test-other overlap (False where either has none)."""
    a, b = _kld_bounds(m), _kld_bounds(u)
    return bool(a and b and a[1] >= b[0] and b[1] >= a[0])


def only_tag(slug: str) -> str | None:
    """The group tag of a single-group confirmation row's slug, else None.

    >>> only_tag("whisper-base__hqq-wo-int3-g64-only-dec5-fc2__test-clean+test-other")
    'dec5-fc2'
    """
    quant = slug.split("__")[1] if "__" in slug else slug
    return quant.split("-only-", 1)[1] if "-only-" in quant else None


def confirmation_table(sensitivity: pd.DataFrame, recipes: pd.DataFrame) -> pd.DataFrame:
    """The sensitivity map checked on the whole sample: each group quantized alone (the grid's ``only-`` rows)
    with its map rank and KLD (the fixed subset) beside its whole-sample KLD and ΔWER on test-other.

    ``sensitivity`` is :func:`lib.sensitivity.sensitivity_table`, ``recipes`` :func:`lib.tables.recipe_table`;
    ``end`` says whether the group is among the map's most or least sensitive. A row with no result keeps its
    status (``not run``) and empty numbers.
    """
    from .mixed_precision import group_of

    by_tag = {group_of(r.group).tag: r for r in sensitivity.itertuples()}
    median_rank = len(sensitivity) / 2
    rows = []
    for r in recipes.itertuples():
        tag = only_tag(r.slug)
        if tag is None or tag not in by_tag:
            continue
        g = by_tag[tag]
        done = r.status == "ok"
        rows.append({"rank": int(g.rank), "group": g.label, "end": "most" if g.rank <= median_rank else "least",
                     "map_kld": g.kld, "status": r.status,
                     **{c: (getattr(r, c, float("nan")) if done else float("nan"))
                        for c in ("kld_other", "wer_other", "delta_wer_other", "delta_wer_other_low",
                                  "delta_wer_other_high")}})
    return pd.DataFrame(rows).sort_values("rank").reset_index(drop=True) if rows else pd.DataFrame()


def confirmation_verdict(table: pd.DataFrame) -> ConfirmationVerdict:
    """Does the whole-sample run keep the map's most and least sensitive groups apart?

    ``table`` is :func:`confirmation_table`. The map holds when every finished most-sensitive group has a
    higher whole-sample KLD than every finished least-sensitive one.

    >>> t = pd.DataFrame({"end": ["most", "least"], "status": "ok", "group": ["a", "b"], "kld_other": [0.01, 0.001],
    ...     "delta_wer_other": [1.2, 0.1], "delta_wer_other_low": [0.4, -0.3], "delta_wer_other_high": [2.0, 0.5]})
    >>> v = confirmation_verdict(t)
    >>> v.outcome, v.most.above, v.least.above, v.pending
    ('holds', 1, 0, 0)
    """
    if table.empty or "status" not in table:
        return ConfirmationVerdict("no rows")
    done = finished(table).dropna(subset=["kld_other", "delta_wer_other"])
    ends = {end: done[done["end"] == end] for end in ("most", "least")}
    if ends["most"].empty or ends["least"].empty:
        return ConfirmationVerdict("waiting", done=len(done), total=len(table))

    def summary(part: pd.DataFrame) -> End:
        return End(len(part), float(part["delta_wer_other"].min()), float(part["delta_wer_other"].max()),
                   int((part["delta_wer_other_low"] > 0).sum()), int((part["delta_wer_other_high"] < 0).sum()),
                   float(part["kld_other"].min()), float(part["kld_other"].max()))

    apart = ends["most"]["kld_other"].min() > ends["least"]["kld_other"].max()
    overlap = None if apart else ends["least"].loc[ends["least"]["kld_other"].idxmax(), "group"]
    return ConfirmationVerdict("holds" if apart else "overlap", done=len(done), total=len(table),
                               most=summary(ends["most"]), least=summary(ends["least"]), overlap_group=overlap)
