"""What to ship on each CPU class, chosen by code from the study's table (no pick is typed by hand).

Four goals per CPU class, each answered by one configuration (or "none qualifies"):

- **fastest** within the accuracy budget (:data:`ACCURACY_BUDGET`): the lowest latency ratio on that class;
  configurations whose latency interval overlaps the winner's are named as ties, never ranked;
- **accuracy first**: the fastest with no measurable loss (:data:`NO_LOSS`), faster than fp32 on that class;
- **smallest with no measurable loss** (:data:`NO_LOSS`): the smallest stored size on the whisper-small
  architecture whose ΔWER intervals include zero on both splits and whose fidelity to fp32 is within bounds;
- **maximum compression that still works** (:data:`STILL_WORKS`): the smallest stored size that has not
  collapsed.

Every WER bound uses the speaker-resampled 95% interval (the more honest one on this sample), on both splits.
The table's columns are the plain names of :mod:`lib.tables` (``delta_wer_other_high``, ``agree_other``,
``small_mb``, ``latency_ratio_<class>``...).

>>> class_column("AVX-512 VNNI")
'latency_ratio_avx_512_vnni'
"""
from __future__ import annotations

import math
import re

import numpy as np
from typing import Any

SPLITS = ("clean", "other")
ACCURACY_BUDGET = {"max_delta_wer_high": 1.5, "min_agreement": 98.0}
NO_LOSS = {"max_delta_nll_high": 0.01, "min_agreement": 99.0}
STILL_WORKS = {"max_delta_wer_other_high": 5.0, "min_agreement": 95.0}
AVOID = {"min_delta_wer_low": 5.0, "max_agreement": 90.0, "min_latency_ratio": 2.0}
#: A slowdown this large is named even where its timing was not shown quiet (marked so): interleaved pairs
#: share whatever else ran, and no foreign load seen on these machines moved a ratio by this much.
UNQUIET_SLOWDOWN = 4.0


def class_column(cpu_class: str, suffix: str = "") -> str:
    """Column of a latency ratio measured on ``cpu_class`` (``suffix``: ``'_low'``/``'_high'``)."""
    return "latency_ratio_" + re.sub(r"[^a-z0-9]+", "_", cpu_class.lower()).strip("_") + suffix


def _value(row, key: str) -> float:
    v = row.get(key) if hasattr(row, "get") else None
    return float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else float("nan")


def _all(row, key: str, test) -> bool:
    values = [_value(row, key.format(split=s)) for s in SPLITS]
    if key.startswith(("agree_", "dnll_")) and all(math.isnan(v) for v in values):
        return True  # no fidelity pass yet: the WER bounds decide alone (the pick says so)
    return all(not math.isnan(v) and test(v) for v in values)


def within_accuracy_budget(row) -> bool:
    """ΔWER upper bound ≤ 1.5 points and top-1 agreement ≥ 98% on both splits."""
    b = ACCURACY_BUDGET
    return (_all(row, "delta_wer_{split}_high", lambda v: v <= b["max_delta_wer_high"])
            and _all(row, "agree_{split}", lambda v: v >= b["min_agreement"]))


def no_measurable_loss(row) -> bool:
    """ΔWER interval includes 0 (or lies below it), ΔNLL upper bound ≤ 0.01 nats/token, agreement ≥ 99%,
    on both splits."""
    b = NO_LOSS
    return (_all(row, "delta_wer_{split}_low", lambda v: v <= 0)
            and _all(row, "dnll_{split}_high", lambda v: v <= b["max_delta_nll_high"])
            and _all(row, "agree_{split}", lambda v: v >= b["min_agreement"]))


def still_works(row) -> bool:
    """Not collapsed: ΔWER on test-other at most +5 points (upper bound) and agreement ≥ 95% on both splits."""
    b = STILL_WORKS
    return (_value(row, "delta_wer_other_high") <= b["max_delta_wer_other_high"]
            and _all(row, "agree_{split}", lambda v: v >= b["min_agreement"]))


def avoid_reason(row, cpu_class: str) -> str | None:
    """Why a configuration is to be avoided on ``cpu_class``, or None."""
    if row.get("status") == "failed":
        return "fails to run: " + str(row.get("error") or "")[:80]
    low = _value(row, "delta_wer_other_low")
    agree = min(_value(row, "agree_clean"), _value(row, "agree_other"))
    if low >= AVOID["min_delta_wer_low"] or (not math.isnan(agree) and agree < AVOID["max_agreement"]):
        return (f"collapses: ΔWER other at least {low:+.1f} points" if low >= AVOID["min_delta_wer_low"]
                else f"top-1 agreement with fp32 only {agree:.1f}%")
    ratio = _value(row, class_column(cpu_class))
    if quiet_timing(row, cpu_class) and ratio >= AVOID["min_latency_ratio"]:
        return f"{ratio:.1f}× slower than fp32 on {cpu_class}"
    if ratio >= UNQUIET_SLOWDOWN:
        return f"{ratio:.1f}× slower than fp32 on {cpu_class} (timing not shown quiet)"
    return None


def _name(row) -> str:
    from .display import readable

    return readable(row["configuration"])


def _pick(candidates, key: str, reason: str, cpu_class: str, tie_low: str | None = None,
          tie_high: str | None = None) -> dict[str, Any]:
    rows = [r for r in candidates if not math.isnan(_value(r, key))]
    if not rows:
        return {"configuration": None, "reason": "no configuration qualifies"}
    best = min(rows, key=lambda r: _value(r, key))
    ties = []
    if tie_low and tie_high:
        hi = _value(best, tie_high)
        ties = [_name(r) for r in rows if r is not best and _value(r, tie_low) <= hi]
    elif key == "small_mb":  # the same size within 0.5%: name them, do not pretend one is smaller
        ties = [_name(r) for r in rows if r is not best and _value(r, key) <= 1.005 * _value(best, key)]
    return {"configuration": _name(best), "slug": best["slug"], "row": best, "reason": reason,
            "ties": ties, "cpu_class": cpu_class}


def quiet_timing(row, cpu_class: str) -> bool:
    """Whether the row's latency on ``cpu_class`` is evidence: its record shows a quiet CPU over enough pairs
    (:func:`lib.machine.is_quiet`, stored by :func:`lib.tables.latency_by_class` as ``<column>_quiet``)."""
    flag = row.get(class_column(cpu_class, "_quiet"))
    return isinstance(flag, (bool, np.bool_)) and bool(flag)  # NaN (never timed) and None are not quiet


def ship_box(df, cpu_class: str) -> dict[str, Any]:
    """The three picks and the configurations to avoid on one CPU class. Only timings that pass the quiet rule
    count (:func:`quiet_timing`); rows timed without one are named in ``unquiet``."""
    rows = [r for _, r in df.iterrows() if r.get("status") == "ok" and r.get("library") != "fp32"]
    measured = [r for r in rows if not math.isnan(_value(r, class_column(cpu_class)))]
    timed = [r for r in measured if quiet_timing(r, cpu_class)]
    unquiet = [_name(r) for r in measured if not quiet_timing(r, cpu_class)]
    budget = [r for r in timed if within_accuracy_budget(r)]
    faster = faster_than_fp32(budget, cpu_class)
    fastest = _pick(faster, class_column(cpu_class), "lowest latency ratio within the accuracy budget, and "
                    "faster than fp32 (its whole interval below 1)", cpu_class,
                    class_column(cpu_class, "_low"), class_column(cpu_class, "_high"))
    if fastest["configuration"] is None and budget:
        near = min(budget, key=lambda r: _value(r, class_column(cpu_class)))
        fastest["reason"] = (f"nothing within the budget is faster than fp32 on {cpu_class}: keep fp32 for speed "
                             f"(the least slow is {_name(near)}, ×{_value(near, class_column(cpu_class)):.2f})")
    lossless = [r for r in faster_than_fp32(timed, cpu_class) if no_measurable_loss(r)]
    accuracy = _pick(lossless, class_column(cpu_class), "fastest with no measurable loss, and faster than fp32 "
                     "(its whole interval below 1)", cpu_class, class_column(cpu_class, "_low"),
                     class_column(cpu_class, "_high"))
    if accuracy["configuration"] is None:
        accuracy["reason"] = (f"nothing with no measurable loss is timed faster than fp32 on {cpu_class}: keep fp32"
                              if timed else f"no timing on {cpu_class} passes the quiet rule yet")
    smallest = _pick([r for r in rows if no_measurable_loss(r)], "small_mb",
                     "smallest stored size with no measurable loss", cpu_class)
    maximum = _pick([r for r in rows if still_works(r)], "small_mb",
                    "smallest stored size that has not collapsed", cpu_class)
    avoid = [{"configuration": _name(r), "slug": r["slug"], "reason": why, "bits": _value(r, "bits")}
             for _, r in df.iterrows() for why in [avoid_reason(r, cpu_class)] if why]
    order = {"col": 0, "top": 1, "fai": 3}  # collapses, then low agreement, then too slow, then fails to run
    # within each, the routes a reader would try first (8 bits and more) lead; int1/int2 rows come last
    avoid.sort(key=lambda a: (order.get(a["reason"][:3], 2), -(a["bits"] if a["bits"] == a["bits"] else 0),
                              a["configuration"]))
    if fastest["configuration"] is None and not timed:
        fastest["reason"] = (f"no timing on {cpu_class} passes the quiet rule yet ({len(unquiet)} timed without a "
                             "quiet record): re-time with benchmarks/cpu_class_latency.py on that class")
    return {"cpu_class": cpu_class, "fastest": fastest, "accuracy_first": accuracy, "smallest_no_loss": smallest,
            "max_compression": maximum, "avoid": avoid, "unquiet": unquiet}


def faster_than_fp32(rows, cpu_class: str) -> list:
    """The rows whose whole latency interval on ``cpu_class`` lies below fp32's (ratio 1)."""
    return [r for r in rows if has_latency_interval(r, cpu_class) and _value(r, class_column(cpu_class, "_high")) < 1.0]


def measured_classes(df) -> list[str]:
    """CPU classes with at least one latency ratio in the table, the most measured first."""
    from .display import CPU_CLASS_NAMES

    counts = {name: int(df[class_column(name)].notna().sum()) for name in CPU_CLASS_NAMES.values()
              if class_column(name) in df}
    return [name for name, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n]


def classes_by_evidence(df) -> list[str]:
    """:func:`measured_classes`, the classes with quiet timings first."""
    classes = measured_classes(df)
    return sorted(classes, key=lambda c: class_status(df, c) != "timed")


def _numbers(row, cpu_class: str) -> str:
    def get(key):
        return _value(row, key)

    parts = [f"{get('small_mb'):.0f} MB ({get('compression_pct'):.0f}% smaller)"]
    ratio = get(class_column(cpu_class))
    if not math.isnan(ratio):
        parts.append(f"latency ×{ratio:.2f} [{get(class_column(cpu_class, '_low')):.2f}, "
                     f"{get(class_column(cpu_class, '_high')):.2f}] on {cpu_class}")
    for split in SPLITS:
        if not math.isnan(get(f"delta_wer_{split}")):
            parts.append(f"ΔWER {split} {get(f'delta_wer_{split}'):+.2f} {row.get(f'delta_wer_{split}_ci')}")
    if not math.isnan(get("agree_other")):
        parts.append(f"top-1 agreement {get('agree_other'):.1f}% [{get('agree_other_low'):.1f}, "
                     f"{get('agree_other_high'):.1f}] (other)")
    else:
        parts.append("no fidelity pass yet: judged on WER alone")
    return "; ".join(parts)


GOAL_NAMES = {"fastest": "Fastest within the accuracy budget",
              "accuracy_first": "Accuracy first: fastest with no measurable loss",
              "smallest_no_loss": "Smallest with no measurable loss",
              "max_compression": "Maximum compression that still works"}


def ship_table(df, cpu_class: str):
    """The ship box of one CPU class as a table: goal, pick, its numbers and intervals, why."""
    import pandas as pd

    box = ship_box(df, cpu_class)
    rows = []
    for goal, name in GOAL_NAMES.items():
        pick = box[goal]
        if pick["configuration"] is None:
            rows.append({"goal": name, "pick": "none qualifies", "numbers": "", "why": pick["reason"]})
            continue
        why = pick["reason"] + (f"; within timing noise of it: {', '.join(pick['ties'])}" if pick.get("ties") else "")
        rows.append({"goal": name, "pick": pick["configuration"], "numbers": _numbers(pick["row"], cpu_class),
                     "why": why})
    return pd.DataFrame(rows).set_index("goal").rename_axis(None)


def avoid_table(df, cpu_class: str):
    """What to avoid on one CPU class and why."""
    import pandas as pd

    box = ship_box(df, cpu_class)
    return pd.DataFrame(box["avoid"], columns=["configuration", "reason"]).set_index("configuration").rename_axis(None)


def _short(row, cpu_class: str) -> str:
    def get(key):
        return _value(row, key)

    parts = [f"{get('small_mb'):.0f} MB, {get('compression_pct'):.0f}% smaller"]
    parts.append(latency_text(row, cpu_class))
    parts.append(f"ΔWER other {get('delta_wer_other'):+.2f} {row.get('delta_wer_other_ci')}")
    if not math.isnan(get("agree_other")):
        parts.append(f"top-1 agreement {get('agree_other'):.1f}%")
    else:  # no fidelity pass: the WER interval decides alone
        parts.append("no fidelity pass yet: judged on WER alone")
    return "; ".join(parts)


def has_latency_interval(row, cpu_class: str) -> bool:
    """Whether a row's latency ratio on ``cpu_class`` comes with an interval (interleaved pairs). An older
    footprint (median of 3) stores the ratio as its own bounds: it cannot show a whole interval below fp32's."""
    ratio, low, high = (_value(row, class_column(cpu_class, s)) for s in ("", "_low", "_high"))
    return not any(math.isnan(v) for v in (ratio, low, high)) and not (low == high == ratio)


def latency_text(row, cpu_class: str) -> str:
    """``'latency ×0.69 [0.65, 0.79]'`` (interleaved pairs) or ``'latency ×1.35 (median of 3, no interval)'``."""
    ratio, low, high = (_value(row, class_column(cpu_class, s)) for s in ("", "_low", "_high"))
    if math.isnan(ratio):
        return f"not timed on {cpu_class}"
    if not has_latency_interval(row, cpu_class):
        return f"latency ×{ratio:.2f} (median of 3, no interval; not evidence)"
    if not quiet_timing(row, cpu_class):
        return f"latency ×{ratio:.2f} [{low:.2f}, {high:.2f}] (CPU not shown quiet; not evidence)"
    return f"latency ×{ratio:.2f} [{low:.2f}, {high:.2f}]"


def ship_markdown(df, classes: list[str] | None = None, avoid_shown: int = 0) -> str:
    """The ship box as Markdown: per CPU class, one line per goal (pick, numbers, reason), then what to avoid.

    Numbers: stored size on the whisper-small architecture; latency ratio to fp32 on that class (median of
    interleaved pairs, 95% interval); ΔWER on test-other against fp32 (whisper-base, LibriSpeech sample,
    95% interval with speakers resampled); top-1 agreement with fp32 (teacher-forced, test-other).
    """
    lines = []
    for cpu_class in classes or measured_classes(df):
        box = ship_box(df, cpu_class)
        lines += [f"**{cpu_class}**", "", "| goal | pick | numbers |", "|---|---|---|"]
        for goal, name in GOAL_NAMES.items():
            pick = box[goal]
            if pick["configuration"] is None:
                lines.append(f"| {name} | — | {pick['reason']} |")
                continue
            ties = f" (tied with {', '.join(pick['ties'])})" if pick.get("ties") else ""
            lines.append(f"| {name} | {pick['configuration']}{ties} | {_short(pick['row'], cpu_class)} |")
        avoid = box["avoid"]
        if avoid and avoid_shown:
            shown = "; ".join(f"{a['configuration']} ({a['reason']})" for a in avoid[:avoid_shown])
            more = f"; and {len(avoid) - avoid_shown} more" if len(avoid) > avoid_shown else ""
            lines += ["", f"Avoid: {shown}{more}.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the reader's minute

def class_status(df, cpu_class: str) -> str:
    """``'timed'`` when the class has at least one quiet timing, else ``'no quiet timing'``."""
    rows = [r for _, r in df.iterrows() if r.get("status") == "ok"]
    return "timed" if any(quiet_timing(r, cpu_class) for r in rows) else "no quiet timing"


def _cell(pick: dict, cpu_class: str) -> str:
    if pick["configuration"] is None:
        return ("keep fp32" if "keep fp32" in pick["reason"] else
                "no quiet timing yet" if "quiet rule" in pick["reason"] else "none qualifies")
    row = pick["row"]
    ratio = _value(row, class_column(cpu_class))
    speed = (f"×{ratio:.2f} [{_value(row, class_column(cpu_class, '_low')):.2f}, "
             f"{_value(row, class_column(cpu_class, '_high')):.2f}]" if quiet_timing(row, cpu_class)
             else "speed not timed quietly")
    return f"**{pick['configuration']}**<br>{speed}"


def minute_table(df, classes: list[str] | None = None):
    """The landing page's table: goals as rows, CPU classes as columns; each cell the pick and its latency
    ratio to fp32 on that class (95% interval), or why there is none. Sizes and accuracy are in
    :func:`picks_table`, which is the same on every class."""
    import pandas as pd

    classes = classes or measured_classes(df)
    boxes = {c: ship_box(df, c) for c in classes}
    table = {c: {GOAL_NAMES[g]: _cell(boxes[c][g], c) for g in GOAL_NAMES} for c in classes}
    return pd.DataFrame(table)[classes]


def picks_table(df, classes: list[str] | None = None):
    """One row per configuration picked on any class: stored size on the whisper-small architecture, fp32's
    WER and the pick's ΔWER on each split (95% interval, speakers resampled, whisper-base on the sample), and
    its top-1 agreement with fp32 (teacher-forced, test-other)."""
    import pandas as pd

    rows = {}
    for cpu_class in classes or measured_classes(df):
        box = ship_box(df, cpu_class)
        for goal in GOAL_NAMES:
            pick = box[goal]
            if pick["configuration"] is None or pick["configuration"] in rows:
                continue
            r = pick["row"]
            agree = _value(r, "agree_other")
            rows[pick["configuration"]] = {
                "MB": f"{_value(r, 'small_mb'):.0f} ({_value(r, 'compression_pct'):.0f}% smaller)",
                **{f"WER {s}: fp32 → Δ": f"{_value(r, f'fp32_wer_{s}'):.2f} → {_value(r, f'delta_wer_{s}'):+.2f} "
                   f"{r.get(f'delta_wer_{s}_ci')}" for s in SPLITS},
                "top-1 agreement (other)": "not measured" if math.isnan(agree) else f"{agree:.1f}%"}
    return pd.DataFrame.from_dict(rows, orient="index")


def avoid_routes(df, classes: list[str] | None = None, shown: int = 6) -> list[dict[str, Any]]:
    """The routes a reader would try and should not, each with its number: at 8 bits and more first, one row per
    library and scheme (the first reason of the first class that names it), then the lower bit-widths."""
    candidates = []
    for cpu_class in classes or measured_classes(df):
        for a in ship_box(df, cpu_class)["avoid"]:
            if not a["reason"].startswith("fails to run"):  # a kernel this CPU or build lacks: no route to weigh
                candidates.append((a, df[df["slug"] == a["slug"]].iloc[0]))
    # the whole-model row speaks for its library and scheme (scope variants are in the complete list)
    candidates.sort(key=lambda c: (c[1].get("scope") != "all", bool(c[1].get("proj_out"))))
    seen, out = set(), []
    for a, row in candidates:
        family = (row.get("library"), row.get("scheme"))
        if family not in seen:
            seen.add(family)
            out.append({**a, "library": family[0]})
    out.sort(key=lambda a: -(a["bits"] if a["bits"] == a["bits"] else 0))
    return out[:shown]


def two_x_verdicts(df, classes: list[str] | None = None) -> dict[str, str]:
    """Per CPU class, whether a configuration is at least 2× faster than fp32 with no measurable loss: the
    accuracy-first pick's whole latency interval at or below 0.5. E.g.
    ``{'AVX-512 VNNI': 'reached: CTranslate2 int8_float32, ×0.47 [0.45, 0.51]', 'AVX2': 'not established: ...'}``.
    """
    out = {}
    for cpu_class in classes or measured_classes(df):
        pick = ship_box(df, cpu_class)["accuracy_first"]
        if pick["configuration"] is None:
            out[cpu_class] = f"not established: {pick['reason']}"
            continue
        r = pick["row"]
        ratio, low, high = (_value(r, class_column(cpu_class, x)) for x in ("", "_low", "_high"))
        text = f"{pick['configuration']}, ×{ratio:.2f} [{low:.2f}, {high:.2f}]"
        out[cpu_class] = (f"reached: {text}" if high <= 0.5 else
                          f"not reached: the fastest with no measurable loss is {text}" if low > 0.5 else
                          f"at the edge: {text} (its interval straddles ×0.50)")
    return out
