"""Tables for the book, built from result files only (no number is typed by hand)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from .footprint import FOOTPRINT_DIR
from .quantize import LIBRARY_ORDER
from .results import RESULTS_DIR, ResultStore

SPLIT_COLUMNS = {"test-clean": "WER clean", "test-other": "WER other"}
LIBRARY_NAMES = {"none": "fp32", "torch_ao": "torch.ao", "torchao": "torchao", "quanto": "quanto", "hqq": "HQQ",
                 "bnb": "bitsandbytes"}


def run_summary_table(summary: dict[str, Any] | None):
    """A small key/value table for one result (WER run or footprint run); failures show their error."""
    import pandas as pd

    if not summary:
        return pd.DataFrame()
    rows: list[tuple[str, Any]] = [("slug", summary["slug"]), ("status", summary.get("status"))]
    if summary.get("status") != "ok":
        rows += [("failed at", summary.get("failed_stage")), ("error", summary.get("error"))]
    for split, m in (summary.get("metrics") or {}).items():
        rows += [(f"{split} WER (x100)", round(m["wer"], 2)), (f"{split} utterances", m["utterances"]),
                 (f"{split} RTFx", round(m["rtfx"], 2))]
    size = summary.get("size")
    if size:
        rows += [("stored MB", round(size["stored_bytes"] / 1e6, 1)),
                 ("compression % vs fp32", round(size["compression_pct"], 1))]
    if "latency" in summary:
        rows += [("latency median s", round(summary["latency"]["median"], 3)),
                 ("fp32 latency median s", round(summary["fp32_latency"]["median"], 3)),
                 ("latency ratio to fp32", round(summary["latency_ratio"], 3))]
    if "encoder_cosine_jfk" in summary:
        rows.append(("encoder cosine vs fp32 (JFK)", round(summary["encoder_cosine_jfk"], 5)))
    werr = (summary.get("quantization") or {}).get("weight_error") or {}
    if werr.get("mean") is not None:
        rows.append(("mean relative weight error", round(werr["mean"], 5)))
    return pd.DataFrame(rows, columns=["field", "value"]).set_index("field")
