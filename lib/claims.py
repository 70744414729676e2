"""The paper's claims, the rows of this study that test each, and the verdicts they get.

Every claim's target and the slug substrings of its rows are defined here once; :mod:`lib.plots` draws
the compression targets from :data:`COMPRESSION_CLAIMS`.

>>> [(c.target_pct, c.figure_label) for c in COMPRESSION_CLAIMS]
[(57.0, 'dynamic int8 (paper)'), (71.0, 'nf4 / int3 (paper, up to)')]
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .results import RESULTS_DIR, ResultStore
from .scoring import compare_gap_change, compare_wer
from .tables import find_row, finished
from .verdicts import NOT_MEASURED, NOT_RESOLVABLE, GapReading, Interval, NoiseVerdict, StaticReading, StaticVerdict


#: The paper's first claim, as the paper states it, and its rows: every whole-model dynamic int8 of the paper's
#: libraries and of torchao (weight int8, activations int8 quantized per call). Quanto's weight-only int8 is no
#: dynamic quantization, and the runtimes' dynamic int8 rows are the Runtimes chapter's.
DYNAMIC_INT8_CLAIM = "Dynamic int8 keeps, or even improves, fp32's accuracy"
DYNAMIC_INT8_ROWS = ("__pt-dyn-int8-aint8-pc__test", "__pt-dyn-int8-aint8-pt__test", "__torchao-dyn-int8-aint8__test",
                     "__bnb-dyn-int8-aint8-threshold6__test", "__bnb-dyn-int8-aint8-threshold0__test",
                     "__quanto-dyn-int8-aint8__test")
#: Static against dynamic int8 (per-channel) for each static recipe: eager requantizes every Linear output,
#: PT2E quantizes Linear inputs only (scheme chapter, "Why torch.ao static collapses"). Each recipe is read
#: against the same library's dynamic int8: (recipe, static row, dynamic row). The 4-utterance rows calibrate on
#: the unscored pool; the 64-utterance rows as users calibrate, on the sample's speakers cross-fitted over two
#: folds (each fold scored by the model calibrated on the other fold).
STATIC_CLAIM = "Static quantization is worse than dynamic"
DYNAMIC_REFERENCE_ROW = "__pt-dyn-int8-aint8-pc__test"
ORT_DYNAMIC_ROW = "__ort-dyn-int8-aint8-pc__test"
STATIC_ROWS = (("torch.ao eager static (4 utterances)", "__pt-static-int8-aint8-pc-cal4__test", DYNAMIC_REFERENCE_ROW),
               ("PT2E static (4 utterances)", "__pt-static-int8-aint8-pc-cal4-methodpt2e__test", DYNAMIC_REFERENCE_ROW),
               ("PT2E static (64 cross-fitted)", "__pt-static-int8-aint8-pc-cal64-methodpt2e-xspk2__test",
                DYNAMIC_REFERENCE_ROW),
               ("ONNX Runtime static (4 utterances)", "__ort-static-int8-auint8-pc-cal4__test", ORT_DYNAMIC_ROW),
               ("ONNX Runtime static (64 cross-fitted)", "__ort-static-int8-auint8-pc-cal64-xspk2__test", ORT_DYNAMIC_ROW),
               # OpenVINO has no dynamic int8: its static rows are read against torch.ao's (the paper's dynamic)
               ("OpenVINO static (4 utterances)", "__ov-static-int8-aint8-cal4__test", DYNAMIC_REFERENCE_ROW),
               ("OpenVINO static (64 cross-fitted)", "__ov-static-int8-aint8-cal64-xspk2__test", DYNAMIC_REFERENCE_ROW))
#: The low bit-widths whose loss the paper places on test-other.
LOW_BIT_ROWS = ("__bnb-wo-nf4-double_quant1__", "__hqq-wo-int3-g64__test")
#: How far (percentage points) a measured compression may lie from the paper's and still support it.
COMPRESSION_TOLERANCE_PCT = 2.0


@dataclass(frozen=True)
class CompressionClaim:
    """A size claim: the rows that test it (``primary``, slug substrings) and rows shown beside (``context``)."""

    claim: str
    target_pct: float
    figure_label: str
    primary: tuple[str, ...]
    context: tuple[str, ...] = ()


#: The paper quantizes every nn.Linear (quantize_dynamic), which unties and quantizes proj_out too.
COMPRESSION_CLAIMS = (
    CompressionClaim("Dynamic int8 shrinks the model by 57%", 57.0, "dynamic int8 (paper)",
                     ("__pt-dyn-int8-aint8-pc-projout__",), ("__pt-dyn-int8-aint8-pc__test",)),
    CompressionClaim("nf4 / int3 shrink the model by up to 71%", 71.0, "nf4 / int3 (paper, up to)",
                     LOW_BIT_ROWS, ("__bnb-wo-nf4__test",)),
)


def ci_verdict(lo: float, hi: float, better_if_negative: bool = True) -> str:
    """The verdict of a difference's 95% interval: ``ci_verdict(-0.9, -0.1)`` -> ``'supported'``."""
    if hi < 0:
        return "supported" if better_if_negative else "contradicted"
    if lo > 0:
        return "contradicted" if better_if_negative else "supported"
    return NOT_RESOLVABLE


def merge_verdicts(verdicts: list[str], disagree: str = "mixed", name_each: bool = True) -> str:
    """One verdict when all agree, else ``disagree`` (naming each verdict unless ``name_each`` is False).

    A verdict that repeats is counted instead of listed again:

    >>> merge_verdicts(["supported", "supported"]), merge_verdicts(["supported", "contradicted"])
    ('supported', 'mixed: supported / contradicted')
    >>> merge_verdicts(["not resolvable", "supported", "supported"])
    'mixed: supported in 2 of 3 readings, not resolvable in 1'
    """
    if len(set(verdicts)) == 1:
        return verdicts[0]
    if not name_each:
        return disagree
    counts = Counter(verdicts)
    if max(counts.values()) == 1:
        return f"{disagree}: " + " / ".join(verdicts)
    ranked = sorted(counts, key=lambda v: -counts[v])  # stable: ties keep their first appearance
    return (f"{disagree}: {ranked[0]} in {counts[ranked[0]]} of {len(verdicts)} readings, "
            + ", ".join(f"{v} in {counts[v]}" for v in ranked[1:]))


def likelihood_verdict(lo: float, hi: float) -> str:
    """What a ΔNLL interval (quantized − fp32, nats/token on the reference) says: ``likelihood_verdict(0.01, 0.02)``
    -> ``'measurably less likely than fp32'``."""
    if hi < 0:
        return "more likely than fp32"
    if lo > 0:
        return "measurably less likely than fp32"
    return "no measurable change in likelihood"


def fidelity_text(r) -> str:
    """The fidelity evidence of one row, e.g. ``'fidelity (22 utterances): top-1 agreement 98.7% [97.9, 99.3],
    KLD 0.0123 [0.0101, 0.0150], ΔNLL +0.004 [-0.001, +0.010] nats/token: no measurable change in likelihood'``
    (test-other; speakers resampled)."""
    if pd.isna(r.get("kld_other")):
        return "fidelity not measured yet"
    return (f"fidelity on test-other ({int(r['fid_n_other'])} utterances): top-1 agreement {r['agree_other']:.1f}% "
            f"[{r['agree_other_low']:.1f}, {r['agree_other_high']:.1f}], KLD {r['kld_other']:.3g} "
            f"[{r['kld_other_low']:.3g}, {r['kld_other_high']:.3g}], ΔNLL {r['dnll_other']:+.3f} "
            f"[{r['dnll_other_low']:+.3f}, {r['dnll_other_high']:+.3f}] nats/token: "
            + likelihood_verdict(r["dnll_other_low"], r["dnll_other_high"]))


def _delta_text(r) -> str:
    common = (f" on {int(r['common_other'])} test-other utterances" if pd.notna(r.get("common_other")) else "")
    return (f"{r['configuration']}: ΔWER clean {r['delta_wer_clean']:+.2f} {r['delta_wer_clean_ci']}, "
            f"other {r['delta_wer_other']:+.2f} {r['delta_wer_other_ci']}{common}; {fidelity_text(r)}")


def accuracy_word(r) -> str:
    """What a row's ΔWER intervals (both splits) say against fp32: ``'loses'`` (an interval above zero),
    ``'improves'`` (one below zero, none above) or ``'keeps'`` (both include zero).

    >>> accuracy_word({"delta_wer_clean_low": -0.5, "delta_wer_clean_high": 0.3,
    ...                "delta_wer_other_low": 0.2, "delta_wer_other_high": 1.9})
    'loses'
    """
    lows = [r[f"delta_wer_{s}_low"] for s in ("clean", "other")]
    highs = [r[f"delta_wer_{s}_high"] for s in ("clean", "other")]
    if any(low > 0 for low in lows):
        return "loses"
    return "improves" if any(high < 0 for high in highs) else "keeps"


def _dynamic_int8(df):
    readings = _named(df, DYNAMIC_INT8_ROWS)
    if not readings:
        return "not measured", "no dynamic int8 WER result"
    holds = [r for r in readings if accuracy_word(r) != "loses"]
    verdict = ("supported" if len(holds) == len(readings) else "contradicted" if not holds
               else f"depends on the library: holds for {len(holds)} of {len(readings)}")
    parts = [f"{_delta_text(r)} ({accuracy_word(r)})" for r in readings]
    return verdict, "; ".join(parts) + " (negative = better than fp32)"


def _static_pairs(df):
    """``(recipe, static row, dynamic row)`` for each :data:`STATIC_ROWS` entry whose two rows are finished."""
    pairs = []
    for recipe, static_part, dynamic_part in STATIC_ROWS:
        static, dyn = find_row(df, static_part), find_row(df, dynamic_part)
        if static is not None and dyn is not None and static["status"] == dyn["status"] == "ok":
            pairs.append((recipe, static, dyn))
    return pairs


def static_claim(df, store) -> StaticVerdict:
    """The paper's second claim, each static recipe of :data:`STATIC_ROWS` against its library's dynamic int8."""
    readings = []
    for recipe, static, dyn in _static_pairs(df):
        split_verdicts, intervals = [], []
        for split in ("test-clean", "test-other"):
            d = compare_wer(store.load_rows(dyn["slug"]), store.load_rows(static["slug"]), split)
            split_verdicts.append(ci_verdict(d["low_spk"], d["high_spk"], better_if_negative=False))
            intervals.append(Interval(d["delta"], d["low_spk"], d["high_spk"]))
        same = static.get("library") == dyn.get("library")
        readings.append(StaticReading(recipe, *intervals, merge_verdicts(split_verdicts, name_each=False),
                                      "dynamic int8" if same else f"{dyn['configuration']}"))
    if not readings:
        return StaticVerdict("not measured")
    return StaticVerdict(merge_verdicts([r.verdict for r in readings], disagree="depends on the recipe"),
                         tuple(readings))


def _low_bits_on_other(df):
    low = [r for s in LOW_BIT_ROWS if (r := find_row(df, s)) is not None and r["status"] == "ok"]
    if not low:
        return "not measured", "no nf4/int3 WER result"
    verdicts = []
    for r in low:
        other_loss = r["delta_wer_other_low"] > 0
        mainly_other = r["delta_wer_other"] > r["delta_wer_clean"]
        verdicts.append("supported" if other_loss and mainly_other else
                        "contradicted" if (r["delta_wer_clean_high"] < 0 and r["delta_wer_other_high"] < 0)
                        else NOT_RESOLVABLE)
    return merge_verdicts(verdicts), "; ".join(_delta_text(r) for r in low)


def _sized_rows(df, parts) -> list:
    """The rows named by slug substrings ``parts`` that have a measured compression."""
    return [r for s in parts if (r := find_row(df, s)) is not None and pd.notna(r.get("compression_pct"))]


def _compression(df, claim: CompressionClaim):
    found, extra = _sized_rows(df, claim.primary), _sized_rows(df, claim.context)
    if found:
        best = max(found, key=lambda r: r["compression_pct"])
        verdict = "supported" if abs(best["compression_pct"] - claim.target_pct) <= COMPRESSION_TOLERANCE_PCT \
            else "contradicted"
    else:
        verdict = "not measured"
    evidence = "; ".join(f"{r['configuration']}: {r['compression_pct']:.1f}% ({r['small_mb']:.1f} MB)"
                         for r in found + extra) or "no footprint result"
    return verdict, evidence + (" on the whisper-small architecture" if found + extra else "")


def _named(df, parts) -> list:
    return [r for p in parts if (r := find_row(df, p)) is not None and r["status"] == "ok" and "delta_wer_other_low" in r]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def claim_sentences(df: pd.DataFrame, claims: pd.DataFrame) -> dict[str, str]:
    """Each claim's verdict as a sentence that names its evidence and intervals (speakers resampled)."""
    out = {}
    readings = _named(df, DYNAMIC_INT8_ROWS)
    if readings:
        by_word: dict[str, list[str]] = {}
        for r in readings:
            by_word.setdefault(accuracy_word(r), []).append(
                f"{r['configuration']} (ΔWER clean {r['delta_wer_clean']:+.2f} {r['delta_wer_clean_ci']}, other "
                f"{r['delta_wer_other']:+.2f} {r['delta_wer_other_ci']})")
        words = {"improves": "Improves on fp32", "keeps": "keeps fp32's accuracy (both intervals include zero)",
                 "loses": "loses accuracy"}
        out[DYNAMIC_INT8_CLAIM] = (_capital(claims.loc[DYNAMIC_INT8_CLAIM, "verdict"]) + ". " + "; ".join(
            f"{_capital(words[w])}: {', '.join(by_word[w])}" for w in ("improves", "keeps", "loses") if w in by_word)
            + ".")
    else:
        out[DYNAMIC_INT8_CLAIM] = "No result yet."
    low = _named(df, LOW_BIT_ROWS)
    out["nf4 / int3 lose accuracy mainly on test-other"] = (
        "; ".join(f"{r['configuration']} loses {r['delta_wer_clean']:+.2f} {r['delta_wer_clean_ci']} on test-clean "
                  f"and {r['delta_wer_other']:+.2f} {r['delta_wer_other_ci']} on test-other"
                  + (" (supports the claim)" if r["delta_wer_other_low"] > 0 and r["delta_wer_other"] > r["delta_wer_clean"]
                     else " (not resolvable)") for r in low) + ".") if low else "No result yet."
    for claim in COMPRESSION_CLAIMS:
        primary, context = _sized_rows(df, claim.primary), _sized_rows(df, claim.context)
        met = [r for r in primary if abs(r["compression_pct"] - claim.target_pct) <= COMPRESSION_TOLERANCE_PCT]
        text = (f"Met within {COMPRESSION_TOLERANCE_PCT:.0f} points by " + ", ".join(
            f"{r['configuration']} ({r['compression_pct']:.1f}%)" for r in met) if met else
            f"Not met within {COMPRESSION_TOLERANCE_PCT:.0f} points of {claim.target_pct:.0f}%")
        if context:
            text += "; " + ", ".join(f"{r['configuration']} gives {r['compression_pct']:.1f}%" for r in context)
        out[claim.claim] = text + " (whisper-small architecture, stored bytes)."
    return out


def claims_table(df: pd.DataFrame, results_dir: Path | str = RESULTS_DIR, noise: bool = True) -> pd.DataFrame:
    """The paper's claims with a verdict, a sentence and the evidence from this study's result files; with
    ``noise``, the last row is the noise verdict (:func:`noise_claim`, the noise grid's results in ``results_dir``)."""
    store = ResultStore(results_dir)
    static = static_claim(df, store)
    rows = [(DYNAMIC_INT8_CLAIM, *_dynamic_int8(df)),
            ("Static quantization is worse than dynamic", static.outcome, static.evidence()),
            ("nf4 / int3 lose accuracy mainly on test-other", *_low_bits_on_other(df))]
    rows += [(claim.claim, *_compression(df, claim)) for claim in COMPRESSION_CLAIMS]
    table = pd.DataFrame(rows, columns=["claim", "verdict", "evidence"]).set_index("claim").rename_axis(None)
    table["sentence"] = pd.Series(claim_sentences(df, table))
    table.loc[STATIC_CLAIM, "sentence"] = static.sentence()
    table["key"] = pd.Series(claim_keys(df, store))
    table.loc[STATIC_CLAIM, "key"] = static.key()
    table["paper"] = pd.Series({c.claim: f"−{c.target_pct:g}%" for c in COMPRESSION_CLAIMS})
    table["here"] = pd.Series({c.claim: here for c in COMPRESSION_CLAIMS if (here := _compression_here(df, c))})
    if noise:  # the third claim in the noise sense, from experiments/noise.yml (lib.noise_tables)
        from .noise_tables import noise_table

        found = noise_claim(noise_table(results_dir=results_dir, clean=False), results_dir)
        table.loc[NOISE_CLAIM, ["verdict", "evidence", "sentence", "key"]] = [
            found.verdict, found.evidence(), found.sentence(), found.key()]
    return table


def _short_delta(r, split: str = "other") -> str:
    return f"{r[f'delta_wer_{split}']:+.2f} {r[f'delta_wer_{split}_ci']}"


def claim_keys(df: pd.DataFrame, store: ResultStore) -> dict[str, str]:
    """The key numbers of each claim in a line, for the landing page: ΔWER on test-other with its interval,
    row by row (speakers resampled), or the measured compression."""
    keys = {}
    dynamic = _named(df, DYNAMIC_INT8_ROWS)
    keys[DYNAMIC_INT8_CLAIM] = "; ".join(f"{r['configuration']} {accuracy_word(r)}: other {_short_delta(r)}"
                                         for r in sorted(dynamic, key=lambda r: r["delta_wer_other"]))
    keys["nf4 / int3 lose accuracy mainly on test-other"] = "; ".join(
        f"{r['configuration']}: other {_short_delta(r)}, clean {_short_delta(r, 'clean')}"
        for r in _named(df, LOW_BIT_ROWS))
    for claim in COMPRESSION_CLAIMS:
        keys[claim.claim] = _compression_here(df, claim) or ""
    return keys


def _compression_here(df: pd.DataFrame, claim: CompressionClaim) -> str | None:
    """``'−56.9% (torch.ao dynamic ... +proj_out)'``: the primary row closest to the paper's number."""
    found = _sized_rows(df, claim.primary)
    if not found:
        return None
    best = min(found, key=lambda r: abs(r["compression_pct"] - claim.target_pct))
    return f"−{best['compression_pct']:.1f}% ({best['configuration']})"


def landing_claims(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims table of the landing page: verdict word, this study's key numbers, and the paper's number
    where it gives one."""
    out = claims[["verdict", "key", "paper"]].copy()
    out["paper"] = out["paper"].fillna("—")
    return out.rename(columns={"key": "this study (ΔWER in points, 95% interval, speakers resampled)",
                               "paper": "paper"})


# --------------------------------------------------------------------------- noise (experiments/noise.yml)

NOISE_CLAIM = "Aggressive formats lose more to fp32 as SNR falls"
#: The aggressive formats whose gap to fp32 the noise verdict follows (the low-bit rows of the third claim).
NOISE_AGGRESSIVE_ROWS = ("__bnb-wo-nf4-double_quant1__", "__hqq-wo-int3-g64__")
#: The two ends of the SNR range the verdict compares (dB): 20 dB and the lowest SNR at which fp32 still works.
NOISE_HIGH_SNR, NOISE_LOW_SNR = 20.0, 0.0


def noise_failed_snrs(df: pd.DataFrame, kind: str) -> list[float]:
    """The SNRs below :data:`NOISE_HIGH_SNR` at which fp32's WER in noise ``kind`` exceeds
    :data:`lib.noise_tables.NOISE_REFERENCE_LIMIT`: the verdict does not use them.

    >>> df = pd.DataFrame({"noise": "babble", "configuration": "fp32", "status": "ok",
    ...                    "snr_db": [20.0, 10.0, 0.0], "wer": [4.0, 12.0, 146.7]})
    >>> noise_failed_snrs(df, "babble")
    [0.0]
    """
    from .noise_tables import NOISE_REFERENCE_LIMIT

    ok = finished(df)
    fp32 = ok[(ok["noise"] == kind) & (ok["configuration"] == "fp32") & (ok["snr_db"] < NOISE_HIGH_SNR)].sort_values(
        "snr_db")
    return [float(x) for x in fp32.loc[fp32["wer"] > NOISE_REFERENCE_LIMIT, "snr_db"]]


def noise_skipped(df: pd.DataFrame) -> dict[str, list[tuple[float, float]]]:
    """Per noise kind, the ``(SNR, fp32 WER)`` conditions the verdict leaves out because fp32 fails there."""
    out = {}
    for kind in dict.fromkeys(df.loc[df["noise"] != "clean", "noise"]):
        fp32 = finished(df)[lambda d: (d["noise"] == kind) & (d["configuration"] == "fp32")]
        wer = dict(zip(fp32["snr_db"], fp32["wer"]))
        if skipped := noise_failed_snrs(df, kind):
            out[kind] = [(snr, float(wer[snr])) for snr in skipped]
    return out


def noise_reference_note(df: pd.DataFrame) -> str:
    """A warning for the ΔWER tables: the conditions where fp32 itself fails, whose ΔWERs compare two failures;
    ``''`` where there are none.

    >>> df = pd.DataFrame({"noise": "babble", "configuration": "fp32", "status": "ok",
    ...                    "snr_db": [20.0, 0.0], "wer": [4.0, 146.7]})
    >>> noise_reference_note(df)
    'fp32 itself fails in babble noise at 0 dB (WER 146.70%): the ΔWERs there compare two failures (a negative one does not mean that quantization helps), and the verdict below does not use them.'
    """
    skipped = noise_skipped(df)
    if not skipped:
        return ""
    where = "; ".join(f"in {kind} noise at {', '.join(f'{snr:g} dB (WER {wer:.2f}%)' for snr, wer in pairs)}"
                      for kind, pairs in skipped.items())
    return (f"fp32 itself fails {where}: the ΔWERs there compare two failures (a negative one does not mean that "
            "quantization helps), and the verdict below does not use them.")


def noise_gap_readings(df: pd.DataFrame, results_dir: Path | str = RESULTS_DIR) -> list[dict]:
    """For each aggressive row and noise kind: the change of its ΔWER against fp32 from 20 dB to the lowest SNR
    at which fp32 still works (not in :func:`noise_failed_snrs`; 0 dB where it does) and at which the row has a result
    (:func:`lib.scoring.compare_gap_change`), with a 95% interval resampling speakers, and its verdict (gap
    grows: ``supported``)."""
    from .noise_tables import SPLIT

    store = ResultStore(results_dir)
    out = []
    ok = finished(df)
    for part in NOISE_AGGRESSIVE_ROWS:
        for kind in dict.fromkeys(df.loc[df["noise"] != "clean", "noise"]):
            def pick(snr, fp32=False):
                rows = ok[(ok["noise"] == kind) & (ok["snr_db"] == snr)]
                rows = rows[rows["configuration"] == "fp32"] if fp32 else rows[rows["slug"].str.contains(part, regex=False)]
                return rows.iloc[0] if len(rows) else None

            skipped = noise_failed_snrs(df, kind)
            lows = sorted(s for s in ok.loc[(ok["noise"] == kind) & (ok["snr_db"] < NOISE_HIGH_SNR), "snr_db"].unique()
                          if s not in skipped)
            low = next((s for s in lows if pick(s, True) is not None and pick(s) is not None), None)
            if low is None:
                continue
            found = [pick(NOISE_HIGH_SNR, True), pick(NOISE_HIGH_SNR), pick(low, True), pick(low)]
            if any(r is None for r in found):
                continue
            d = compare_gap_change(*(store.load_rows(r["slug"]) for r in found), SPLIT)
            if d is None:
                continue
            out.append({"configuration": found[1]["configuration"], "noise": kind, "low_snr": float(low), **d,
                        "verdict": ci_verdict(d["low_spk"], d["high_spk"], better_if_negative=False)})
    return out


def noise_claim(df: pd.DataFrame, results_dir: Path | str = RESULTS_DIR) -> NoiseVerdict:
    """The noise verdict from :func:`lib.noise_tables.noise_table`'s ``df``: does the gap between the aggressive
    formats and fp32 grow from 20 dB to 0 dB SNR? Each reading is the difference of two ΔWERs on the same
    utterances (0 dB minus 20 dB), with its 95% interval resampling speakers; an interval above 0 supports the
    claim, below 0 contradicts it. Without the runs it needs, the verdict is ``not yet measured`` and
    ``missing`` names the runs without a result.

    >>> df = pd.DataFrame({"configuration": "fp32", "noise": "babble", "snr_db": [20.0, 0.0], "status": "not run",
    ...                    "condition": ["babble 20 dB", "babble 0 dB"], "slug": "x", "wer": float("nan")})
    >>> v = noise_claim(df)
    >>> v.verdict, v.needed, v.missing
    ('not yet measured', 2, (('fp32', 'babble 20 dB, babble 0 dB'),))
    """
    from .noise_tables import NOISE_REFERENCE_LIMIT

    readings = noise_gap_readings(df, results_dir)
    if not readings:
        wanted = df[(df["noise"] != "clean") & df["snr_db"].isin([NOISE_HIGH_SNR, NOISE_LOW_SNR])
                    & ((df["configuration"] == "fp32")
                       | df["slug"].str.contains("|".join(NOISE_AGGRESSIVE_ROWS), regex=True))]
        missing = wanted[wanted["status"] != "ok"]
        per = missing.groupby("configuration", sort=False)["condition"].agg(lambda c: ", ".join(c))
        return NoiseVerdict(NOT_MEASURED, needed=len(wanted), missing_runs=len(missing), missing=tuple(per.items()),
                            snrs=(NOISE_HIGH_SNR, NOISE_LOW_SNR))
    return NoiseVerdict(
        merge_verdicts([r["verdict"] for r in readings]),
        readings=tuple(GapReading(r["configuration"], r["noise"], NOISE_HIGH_SNR, r["low_snr"], r["delta_a"],
                                  r["delta_b"], Interval(r["delta"], r["low_spk"], r["high_spk"]), r["utterances"],
                                  r["verdict"]) for r in readings),
        skipped=tuple((kind, snr, wer) for kind, pairs in noise_skipped(df).items() for snr, wer in pairs),
        reference_limit=NOISE_REFERENCE_LIMIT, snrs=(NOISE_HIGH_SNR, NOISE_LOW_SNR))
