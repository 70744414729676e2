"""Can calibration rescue 3 and 4 bits? The calibration chapter's rows and verdicts.

Every calibrated row is read against the calibration-free row at the same bits and group size:

* **AutoRound** (SignRound rounding fitted on audio, ``experiments/calibrated_rounding.yml``) against **HQQ**
  (calibration-free, the Bit-width chapter's rows);
* **whisper.cpp k-quants with an importance matrix** (``experiments/calibrated.yml``, cross-fitted over speakers)
  against the same k-quant as ``whisper-quantize`` makes it (no matrix).

A pair's verdict (:class:`lib.verdicts.RescuePair`) needs a paired WER difference on test-other whose 95%
interval (speakers resampled) excludes 0, and names each row's usability level (:data:`lib.verdicts.LEVELS`,
the ship box's rules): calibration *rescues* a row when it is measurably better and reaches a better level.

>>> [p.route for p in PAIRS][:2]
['AutoRound rounding', 'AutoRound rounding']
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .results import RESULTS_DIR, ResultStore
from .ship import class_column, no_measurable_loss, still_works, within_accuracy_budget
from .verdicts import LEVELS, Interval, RescueAnswer, RescuePair

GRIDS = ("calibrated_rounding", "calibrated")


@dataclass(frozen=True)
class Pair:
    """A calibrated configuration and its calibration-free counterpart, by slug part (each ends at ``__``)."""

    route: str
    calibrated: str
    free: str
    bits: int


PAIRS = (
    Pair("AutoRound rounding", "autoround-wo-int3-g64-cal4-iters50__", "hqq-wo-int3-g64__", 3),
    Pair("AutoRound rounding", "autoround-wo-int4-g64-cal4-iters50__", "hqq-wo-int4-g64__", 4),
    Pair("AutoRound rounding", "autoround-wo-int3-g128-cal4-iters50__", "hqq-wo-int3-g128__", 3),
    Pair("AutoRound rounding (32 cross-fitted)", "autoround-wo-int3-g64-cal32-batch4-iters50-xspk2__",
         "hqq-wo-int3-g64__", 3),
    Pair("AutoRound rounding (32 cross-fitted)", "autoround-wo-int4-g64-cal32-batch4-iters50-xspk2__",
         "hqq-wo-int4-g64__", 4),
    Pair("importance matrix", "ggml-dyn-int4-aint8-g256-buildnative-imatrix64-xspk2__",
         "ggml-dyn-int4-aint8-g256-buildnative__", 4),
    Pair("importance matrix", "ggml-dyn-int3-aint8-g256-buildnative-imatrix64-xspk2__",
         "ggml-dyn-int3-aint8-g256-buildnative__", 3),
    Pair("importance matrix", "ggml-dyn-int2-aint8-g256-buildnative-imatrix64-xspk2__",
         "ggml-dyn-int2-aint8-g256-buildnative__", 2),
)


def rescue_table(limit: int | None = None) -> pd.DataFrame:
    """Every row of :data:`PAIRS` (calibrated and calibration-free), with the study table's columns, in pair
    order; ``route`` and ``calibrated`` say which side of which pair a row is. The HQQ rows come from the
    Bit-width grid (with their whisper-small footprints)."""
    from .tables import chapter_table

    frames = [chapter_table(g, limit=limit) for g in ("bitwidth", *GRIDS)]  # Bit-width first: its HQQ rows carry footprints
    every = pd.concat(frames, ignore_index=True).drop_duplicates("slug")
    rows = []
    for pair in PAIRS:
        for part, calibrated in ((pair.free, False), (pair.calibrated, True)):
            hit = every[every["slug"].str.contains(part, regex=False)]
            if len(hit) and not any(r["slug"] == hit.iloc[0]["slug"] for r in rows):
                rows.append(hit.iloc[0].to_dict() | {"route": pair.route if calibrated else "none (calibration-free)",
                                                     "calibrated": calibrated, "pair_bits": pair.bits})
    return pd.DataFrame(rows)


def level(row) -> str:
    """The row's usability: the best of :data:`lib.verdicts.LEVELS` whose rule it passes (both splits).

    >>> level({"delta_wer_other_high": 40.0, "agree_clean": 80.0, "agree_other": 80.0})
    "fails 'still works'"
    """
    if no_measurable_loss(row):
        return LEVELS[3]
    if within_accuracy_budget(row):
        return LEVELS[2]
    return LEVELS[1] if still_works(row) else LEVELS[0]


def _find(table: pd.DataFrame, part: str):
    hit = table[table["slug"].str.contains(part, regex=False)] if len(table) else table
    return hit.iloc[0] if len(hit) else None


def _row(table: pd.DataFrame, part: str):
    """The finished row whose slug contains ``part``, or None."""
    row = _find(table, part)
    return row if row is not None and row.get("status") == "ok" else None


def _calibration_words(row) -> str:
    """``'4 unscored calibration utterances'``, or for a cross-fitted row ``'32 utterances of the other speaker
    fold'`` (``'importance matrix from …'`` for whisper.cpp)."""
    import re

    slug = row.get("slug", "")
    n = re.search(r"-(?:cal|imatrix)(\d+)", slug)
    count = n.group(1) if n else "?"
    source = f"{count} utterances of the other speaker fold" if "-xspk" in slug else f"{count} unscored calibration utterances"
    return f"importance matrix from {source}" if "imatrix" in slug else source


def pair_verdicts(table: pd.DataFrame, results_dir: Path | str = RESULTS_DIR) -> list[RescuePair]:
    """One :class:`lib.verdicts.RescuePair` per :data:`PAIRS` entry."""
    from .scoring import compare_wer

    store = ResultStore(results_dir)
    out = []
    for pair in PAIRS:
        cal, free = _row(table, pair.calibrated), _row(table, pair.free)
        if cal is None or free is None:
            names = [r["configuration"] if r is not None else p.rstrip("_")
                     for r, p in ((_find(table, pair.calibrated), pair.calibrated), (_find(table, pair.free), pair.free))]
            out.append(RescuePair(pair.route, pair.bits, "not yet measured", names[0], names[1]))
            continue
        diff = compare_wer(store.load_rows(free["slug"]), store.load_rows(cal["slug"]), "test-other")
        paired = Interval(diff["delta"], diff["low_spk"], diff["high_spk"]) if diff else None
        levels = (level(cal), level(free))
        if paired is None:
            outcome = "not yet measured"
        elif paired.high < 0:
            outcome = "rescues" if LEVELS.index(levels[0]) > LEVELS.index(levels[1]) else "improves"
        else:
            outcome = "worse" if paired.low > 0 else "no measurable change"
        klds = (cal.get("kld_other"), free.get("kld_other"))
        has_kld = all(k is not None and not math.isnan(k) for k in klds)
        out.append(RescuePair(pair.route, pair.bits, outcome, cal["configuration"], free["configuration"], paired,
                              levels, klds if has_kld else None,
                              100.0 * (klds[0] / klds[1] - 1) if has_kld and klds[1] else None,
                              _calibration_words(cal)))
    return out


def answers(table: pd.DataFrame, pairs: list[RescuePair]) -> dict[int, RescueAnswer]:
    """The chapter's answer at 3 and at 4 bits (:class:`lib.verdicts.RescueAnswer`)."""
    out = {}
    for bits in (3, 4):
        mine = tuple(p for p in pairs if p.bits == bits)
        measured = [p for p in mine if p.outcome != "not yet measured"]
        if not measured:
            out[bits] = RescueAnswer(bits, "not yet measured", mine)
            continue
        outcome = ("yes" if any(p.outcome == "rescues" for p in measured)
                   else "it helps" if any(p.outcome == "improves" for p in measured) else "no")
        calibrated = [_row(table, x.calibrated) for x in PAIRS if x.bits == bits]
        calibrated = [r for r in calibrated if r is not None and not math.isnan(r.get("delta_wer_other", math.nan))]
        best = min(calibrated, key=lambda r: r["delta_wer_other"]) if calibrated else None
        out[bits] = RescueAnswer(
            bits, outcome, mine, best["configuration"] if best is not None else None,
            Interval(best["delta_wer_other"], best["delta_wer_other_low"], best["delta_wer_other_high"])
            if best is not None else None, level(best) if best is not None else None)
    return out


def rescue_view(table: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The chapter's table, one row per configuration in pair order: usability level, ΔWER on both splits
    against fp32 (95% interval, speakers resampled), KLD and top-1 agreement on test-other, calibration route,
    stored MB and latency ratio per CPU class (whisper-small architecture; ¶ where the timing's record does not
    show a quiet CPU). AutoRound's rows are fake-quant: no CPU kernel runs them, so they have no size or
    latency of their own. An importance-matrix row writes the same ggml types as its plain k-quant, so it shows
    that row's size and timing, marked with the format it shares them with."""
    plain = {p.calibrated: p.free for p in PAIRS if p.route == "importance matrix"}
    rows = []
    for _, r in table.iterrows():
        ok = r.get("status") == "ok"
        out = {"configuration": r["configuration"], "calibration": r["route"] if r["calibrated"] else "none",
               "bits": int(r["pair_bits"])}
        for split in ("clean", "other"):
            d = r.get(f"delta_wer_{split}")
            out[f"ΔWER {split} [95% CI]"] = (f"{d:+.2f} [{r[f'delta_wer_{split}_low']:+.2f}, "
                                             f"{r[f'delta_wer_{split}_high']:+.2f}]" if ok and d == d else "")
        kld, agree = r.get("kld_other"), r.get("agree_other")
        out["KLD other"] = f"{kld:.3g}" if ok and kld == kld and kld is not None else ""
        out["top-1 agree other %"] = f"{agree:.1f}" if ok and agree == agree and agree is not None else ""
        out["level"] = level(r) if ok and r.get("delta_wer_other") == r.get("delta_wer_other") else r.get("status")
        emulated = "autoround-" in r["slug"]
        shared = next((_find(table, free) for cal, free in plain.items() if cal in r["slug"]), None)
        source, mark = (shared, f" ({shared['configuration'].split(' (')[0].removeprefix('whisper.cpp ')}'s)") \
            if shared is not None else (r, "")
        mb = source.get("small_mb")
        out["MB (whisper-small)"] = "fake-quant" if emulated else (f"{mb:.0f}{mark}" if mb == mb and mb is not None
                                                                   else "")
        for c in classes:
            col = class_column(c)
            v = source.get(col)
            out[f"latency ratio {c}"] = ("emulated" if emulated else
                                         f"{v:.2f} [{source.get(col + '_low'):.2f}, {source.get(col + '_high'):.2f}]"
                                         + ("" if source.get(col + "_quiet") is True else " ¶") + mark
                                         if v == v and v is not None else "")
        rows.append(out)
    if not rows:
        return pd.DataFrame()
    view = pd.DataFrame(rows).set_index("configuration").rename_axis(None)
    first = ["level", "ΔWER other [95% CI]", "ΔWER clean [95% CI]"]  # the key columns first, for phone width
    view = view[first + [c for c in view.columns if c not in first]]
    return view.drop(columns=[c for c in view.columns if c.startswith("latency") and (view[c] == "").all()])


def per_tensor_rows(limit: int | None = None) -> list[dict[str, str]]:
    """The calibrated grid's per-tensor recipes (whisper.cpp mixed ggml types): configuration, status and, for a
    failed row, its reason in one line."""
    from .display import brief_error
    from .tables import chapter_table

    grid = chapter_table("calibrated", limit=limit)
    rows = grid[grid["slug"].str.contains("-sens-", regex=False)]
    return [{"configuration": r["configuration"], "status": r["status"],
             "reason": brief_error(r["error"]) if r["status"] == "failed" else ""} for _, r in rows.iterrows()]


def chapter_facts(table: pd.DataFrame, pairs: list[RescuePair], results: dict[int, RescueAnswer]) -> dict[str, str]:
    """Glue values: the answer at 3 and 4 bits (word and sentence), each pair's sentence, and counts."""
    facts = {f"answer{b}": a.outcome for b, a in results.items()}
    facts |= {f"answer{b}_sentence": a.sentence() for b, a in results.items()}
    facts["pairs_measured"] = str(sum(p.outcome != "not yet measured" for p in pairs))
    facts["pairs"] = str(len(pairs))
    recipes = per_tensor_rows()
    facts["per_tensor"] = ("; ".join(f"{r['configuration']}: {r['status']}" + (f" ({r['reason']})" if r["reason"] else "")
                                     for r in recipes) or "no per-tensor recipe in the grid")
    return facts
