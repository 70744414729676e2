"""What the change of decoding recipe did: WER of each refreshed row before and after, and rows per recipe.

Results decoded with the older recipe (transformers' seek loop) are archived under ``older-decoding/``
when the sweep re-runs them (``--refresh-outdated``), so the change is measured, not assumed.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .grids import GRIDS, expand_grid, grid_path
from .results import RESULTS_DIR, ResultStore
from .tables import quant_label, split_tag


def decoding_changes(results_dir: Path | str = RESULTS_DIR) -> pd.DataFrame:
    """WER of each refreshed row with the older decoding (archived) and with one ``generate`` call per batch.

    Columns are labels, e.g. ``'WER other older'``, ``'WER other one call'``, ``'ΔWER other'``.
    Empty until the sweep has re-run an outdated row with ``--refresh-outdated``.
    """
    store = ResultStore(results_dir)
    rows = []
    for slug, old in store.older_decoding().items():
        new = store.get(slug) or {}
        if new.get("status") != "ok" or store.is_outdated(slug, new):
            continue
        row = {"configuration": quant_label(new["config"]["quant"])}
        for split, m in new["metrics"].items():
            if split not in old.get("metrics", {}):
                continue
            col = f"WER {split_tag(split).replace('_', '-')}"
            before, after = old["metrics"][split]["wer"], m["wer"]
            row[f"{col} older"], row[f"{col} one call"], row[f"Δ{col}"] = before, after, after - before
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index("configuration").rename_axis(None).round(2)


def decoding_counts(results_dir: Path | str = RESULTS_DIR) -> dict[str, int]:
    """Finished WER rows of the study by decoding recipe, e.g. ``{'current': 12, 'older': 30}``."""
    store = ResultStore(results_dir)
    slugs = {j.slug for g in GRIDS for j in expand_grid(grid_path(g))}
    states = [store.state(s) for s in slugs]
    return {"current": states.count("ok"), "older": states.count("outdated")}
