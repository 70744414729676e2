"""What the change of decoding recipe did: WER of each refreshed row before and after, and rows per recipe.

Results decoded with the older recipe (transformers' seek loop) are archived under ``older-decoding/``
when the sweep re-runs them (``--refresh-outdated``), so the change is measured, not assumed.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .grids import GRIDS, expand_grid, grid_path
from .machine import result_cpu
from .metrics import corpus_wer
from .results import RESULTS_DIR, ResultStore
from .scoring import common_rows, score_rows
from .tables import quant_label, split_tag


def decoding_changes(results_dir: Path | str = RESULTS_DIR) -> pd.DataFrame:
    """Each refreshed row's transcripts with the older decoding (archived) against one ``generate`` call per
    batch, **on the utterances both cover** (the older rows covered a smaller sample): WER before and after,
    how many transcripts are identical, and the CPU class of each run.

    Columns are labels, e.g. ``'WER other older'``, ``'WER other one call'``, ``'ΔWER other'``,
    ``'identical other'`` (``'98 of 101'``), ``'n other'``, ``'CPU older → now'``. Empty until the sweep has
    re-run an outdated row with ``--refresh-outdated``; a row whose older transcripts were not archived is left
    out (only its summary was kept then, so nothing can be matched).
    """
    store = ResultStore(results_dir)
    folder = store.root / "older-decoding"
    rows = []
    for slug, old in store.older_decoding().items():
        new = store.get(slug) or {}
        old_path = folder / f"{slug}.jsonl"
        if new.get("status") != "ok" or store.is_outdated(slug, new) or not old_path.exists():
            continue
        old_rows = ResultStore(folder).load_rows(slug)
        new_rows = store.load_rows(slug)
        row = {"configuration": quant_label(new["config"]["quant"])}
        for split in new["metrics"]:
            before, after = common_rows(score_rows(old_rows), score_rows(new_rows), split)
            if not before:
                continue
            tag = split_tag(split).replace("_", "-")
            same = sum(a["hypothesis"] == b["hypothesis"] for a, b in zip(before, after))
            row[f"n {tag}"] = len(before)
            row[f"WER {tag} older"], row[f"WER {tag} one call"] = corpus_wer(before), corpus_wer(after)
            row[f"ΔWER {tag}"] = row[f"WER {tag} one call"] - row[f"WER {tag} older"]
            row[f"identical {tag}"] = f"{same} of {len(before)}"
        row["CPU older → now"] = f"{result_cpu(old)} → {result_cpu(new)}"
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index("configuration").rename_axis(None).round(2)


def fp32_unchanged(results_dir: Path | str = RESULTS_DIR) -> dict[str, str]:
    """Glue-ready facts of the fp32 row in :func:`decoding_changes`: identical transcripts per split and the CPU
    classes of the two runs, e.g. ``{'fp32_identical': '30 of 30 (test-clean) and 101 of 101 (test-other)',
    'fp32_classes': 'AVX2 → AMX', 'fp32_class_count': 'two', ...}``, and the CPU classes the whole table's runs
    span (``decoding_class_count``, ``decoding_classes``); ``'not re-run yet'`` before the fp32 row is refreshed."""
    table = decoding_changes(results_dir)
    fp32 = [i for i in table.index if i.lower().startswith("fp32")] if len(table) else []
    from .cpu_classes import number_word, words_list

    every = list(dict.fromkeys(c for pair in (table["CPU older → now"] if len(table) else []) for c in pair.split(" → ")))
    table_facts = {"decoding_class_count": number_word(len(every)), "decoding_classes": words_list(every)}
    if not fp32:
        return {"fp32_identical": "not re-run yet", "fp32_classes": "–", "fp32_class_count": "no", **table_facts}
    row = table.loc[fp32[0]]
    parts = [f"{row[f'identical {t}']} (test-{t})" for t in ("clean", "other") if f"identical {t}" in row
             and isinstance(row[f"identical {t}"], str)]
    classes = list(dict.fromkeys(row["CPU older → now"].split(" → ")))
    return {"fp32_identical": " and ".join(parts), "fp32_classes": row["CPU older → now"],
            "fp32_class_count": number_word(len(classes)), **table_facts}


def decoding_counts(results_dir: Path | str = RESULTS_DIR) -> dict[str, int]:
    """Finished WER rows of the study by decoding recipe, e.g. ``{'current': 12, 'older': 30}``."""
    store = ResultStore(results_dir)
    slugs = {j.slug for g in GRIDS for j in expand_grid(grid_path(g))}
    states = [store.state(s) for s in slugs]
    return {"current": states.count("ok"), "older": states.count("outdated")}
