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
from .results import RESULTS_DIR, ResultStore
from .machine import reference_cpu, result_cpu
from .tables import quant_label, timing_spread_pct


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
        return None, {"cpu_classes_compared": "no second class yet", "cpu_fp32_seconds": "n/a", "cpu_faster": "n/a",
                      "cpu_spread": "n/a"}
    ratios, fp32_seconds, spreads = {}, {}, {}
    for store in stores:
        for x in store.summaries():
            if x.get("status") != "ok":
                continue
            label = result_cpu(x)
            ratios.setdefault(quant_label(x["quant"]), {})[f"latency ratio ({label})"] = x["latency_ratio"]
            fp32_seconds.setdefault(label, []).append(x["fp32_latency"]["median"])
            spreads.setdefault(label, {})[quant_label(x["quant"])] = timing_spread_pct(x)
    second = {quant_label(x["quant"]) for st in stores[1:] for x in st.summaries()}
    table = pd.DataFrame.from_dict(ratios, orient="index").loc[sorted(second & set(ratios))]
    study = reference_cpu(stores[0])
    table = table[sorted(table.columns, key=lambda c: c != f"latency ratio ({study})")].round(2)  # study's first
    labels = [c[len("latency ratio ("):-1] for c in table.columns]
    faster = {k: ", ".join(table.index[table[f"latency ratio ({k})"] < 0.95]) or "none" for k in labels}
    facts = {"cpu_classes_compared": " and ".join(labels),
             "cpu_fp32_seconds": ", ".join(f"{median(fp32_seconds[k]):.1f} s on {k}" for k in labels),
             "cpu_faster": "; ".join(f"on {k}: {v}" for k, v in faster.items()),
             "cpu_spread": ", ".join(f"{median([spreads[k][c] for c in table.index if c in spreads[k]]):.0f}% on {k}"
                                 for k in labels)}
    return table.rename_axis(None), facts
