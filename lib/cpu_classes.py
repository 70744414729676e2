"""Which CPU class each result was measured on, and latencies of one configuration across classes.

Latency ratios are comparable only within one class (AVX2 vs AVX-512 VNNI changed several from "several
times slower than fp32" to "faster"), so the report compares the study's class and puts others beside it.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from statistics import median

import pandas as pd

from .config import RunConfig
from .footprint import FOOTPRINT_DIR
from .machine import MIN_PAIRS, QUIET_SHARE, reference_cpu, result_cpu
from .results import RESULTS_DIR, ResultStore
from .tables import quant_label, quiet_columns


def number_word(n: int) -> str:
    """``3`` -> ``'three'`` (up to ten; digits beyond)."""
    return ("zero one two three four five six seven eight nine ten".split() + [str(n)])[min(n, 11) if n <= 10 else 11]


def words_list(items) -> str:
    """``['AVX2', 'AMX', 'AVX-512 VNNI']`` -> ``'AVX2, AMX and AVX-512 VNNI'``.

    >>> words_list(["a"]), words_list(["a", "b"]), words_list(["a", "b", "c"])
    ('a', 'a and b', 'a, b and c')
    """
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else "none"


def cpu_classes(results_dir: Path | str = RESULTS_DIR, footprint_dir: Path | str = FOOTPRINT_DIR):
    """Finished WER runs and footprints per CPU class, and glue-ready facts.

    Facts: ``study_cpu`` (the class most footprints were timed on) and ``rtfx_change``, a sentence on
    how the fp32 WER run's test-other RTFx moved when it was re-run on another class (if it was).
    """
    store, fstore = ResultStore(results_dir), ResultStore(footprint_dir)
    counts = {name: Counter(result_cpu(x) for x in st.summaries() if x.get("status") == "ok")
              for name, st in (("WER runs", store), ("footprints (latency)", fstore))}
    table = pd.DataFrame(counts).fillna(0).astype(int).rename_axis("CPU class")
    study = reference_cpu(fstore) or "unknown"
    slug = RunConfig().slug
    before = store.older_decoding().get(slug)
    now = store.get(slug)
    change = "no run has been repeated on another class yet"
    if before and now and result_cpu(before) != result_cpu(now):
        rtfx = [x["metrics"]["test-other"]["rtfx"] for x in (before, now)]
        change = (f"the fp32 WER run's test-other RTFx went from {rtfx[0]:.2f} ({result_cpu(before)}) to "
                  f"{rtfx[1]:.2f} ({result_cpu(now)}) when it was re-run")
    return table, {"study_cpu": study, "rtfx_change": change}


def latency_by_cpu(footprint_dir: Path | str = FOOTPRINT_DIR):
    """Latency ratios of the configurations timed on a second CPU class (``benchmarks/cpu_class_latency.py``,
    stored under ``by-cpu/<class>/``) next to the study's, one column per class; ``None`` before any ran.

    Facts: ``cpu_classes_compared`` (e.g. ``'AVX2 and AVX-512 VNNI'``), ``cpu_fp32_seconds`` (fp32's
    median seconds per class), ``cpu_faster`` (the rows at least 5% faster than fp32, per class) and
    ``cpu_spread`` (the median timing spread of the shown rows, per class).
    """
    root = Path(footprint_dir)
    stores = [ResultStore(root)] + [ResultStore(d) for d in sorted((root / "by-cpu").glob("*")) if d.is_dir()]
    if len(stores) == 1:
        return None, {"cpu_classes_compared": "no second class yet", "cpu_class_count": "one",
                      "cpu_fp32_seconds": "n/a", "cpu_faster": "n/a",
                      "cpu_spread": "n/a"}
    ratios, fp32_seconds, quiet = {}, {}, {}
    for store in stores:
        for x in store.summaries():
            if x.get("status") != "ok":
                continue
            label, name = result_cpu(x), quant_label(x["quant"])
            if f"latency ratio ({label})" in ratios.get(name, {}):
                continue  # the first store of a class wins (the study's folder, then by-cpu/<class>)
            q = quiet_columns(x)
            low, high = x.get("latency_ratio_low"), x.get("latency_ratio_high")
            interval = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None and low != high else ""
            ratios.setdefault(name, {})[f"latency ratio ({label})"] = (
                f"{x['latency_ratio']:.2f}{interval}" + ("" if q["quiet"] else " ¶"))
            ratios[name][f"pairs, other CPU % ({label})"] = (
                f"{q['pairs']}, " + (f"{q['foreign_pct']:.1f}" if q["foreign_pct"] == q["foreign_pct"] else "not recorded"))
            fp32_seconds.setdefault(label, []).append(x["fp32_latency"]["median"])
            quiet.setdefault(label, {})[name] = q["quiet"]
    second = {quant_label(x["quant"]) for st in stores[1:] for x in st.summaries()}
    table = pd.DataFrame.from_dict(ratios, orient="index").loc[sorted(second & set(ratios))]
    study = reference_cpu(stores[0])
    labels = sorted({c[c.rindex("(") + 1:-1] for c in table.columns}, key=lambda k: (k != study, k))  # study's first
    table = table[[f"{kind} ({k})" for k in labels for kind in ("latency ratio", "pairs, other CPU %")]].fillna("–")

    def ratio(value):
        return float(value.split()[0]) if isinstance(value, str) and value != "–" else float("nan")

    faster = {k: ", ".join(n for n in table.index if ratio(table.loc[n, f"latency ratio ({k})"]) < 0.95
                           and quiet[k].get(n)) or "none" for k in labels}
    facts = {"cpu_classes_compared": words_list(labels), "cpu_class_count": number_word(len(labels)),
             "cpu_fp32_seconds": ", ".join(f"{median(fp32_seconds[k]):.1f} s on {k}" for k in labels),
             "cpu_faster": "; ".join(f"on {k}: {v}" for k, v in faster.items()),
             "cpu_quiet": "; ".join(f"{sum(quiet[k].get(n, False) for n in table.index)} of "
                                    f"{sum(n in quiet[k] for n in table.index)} on {k}" for k in labels),
             "quiet_rule": f"at least {MIN_PAIRS} interleaved pairs, and other processes used at most "
                           f"{100 * QUIET_SHARE:.0f}% of the CPU during them"}
    return table.rename_axis(None), facts
