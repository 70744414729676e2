"""Like for like: every comparison on one utterance set and one decoding recipe.

A chapter table's raw-WER columns hold only rows scored on the table's reference set (fp32's utterances,
:func:`lib.tables.reference_set_columns`); every ΔWER is on the utterances both rows cover. The rows still on
the older, smaller subset are the collapsed ones below: re-decoding them would cost hours each (every batch
loops to the token budget) and change no conclusion. They are listed in one table with their ΔWER on the
utterances they share with fp32 (:func:`older_subset_table`).

>>> import pandas as pd

from .tables import finished
>>> df = pd.DataFrame({"configuration": ["fp32", "a"], "status": "ok", "wer_other": [9.3, float("nan")],
...                    "n_other": [167, 101], "ref_n_other": [167, 167], "on_reference_other": [True, False]})
>>> mixed_sets(df)
[]
>>> mixed_sets(df.assign(wer_other=[9.3, 10.8]))
['a: WER other on 101 utterances beside a reference set of 167']
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from .tables import finished

#: slug parts of the rows that stay on the older subset, and why (ΔWER other above +80 there: they collapse)
COLLAPSED = {
    "hqq-wo-int1-g32__": "HQQ int1", "hqq-wo-int1-g64__": "HQQ int1", "hqq-wo-int1-g128__": "HQQ int1",
    "hqq-wo-int2-g32__": "HQQ int2", "hqq-wo-int2-g64__": "HQQ int2", "hqq-wo-int2-g128__": "HQQ int2",
    "quanto-wo-int2__": "quanto int2", "quanto-dyn-int8-aint8__": "quanto dynamic int8",
    "pt-static-int8-aint8-pc-cal4__": "torch.ao eager static", "pt-static-int8-aint8-pt-cal4__": "torch.ao eager static",
    "pt-static-int8-aint8-pc-enconly-cal4__": "torch.ao eager static",
}
WHY_NOT_REDECODED = ("collapsed on the older subset (ΔWER on test-other above +80 points): every batch loops to the "
                     "token budget, so a re-decode costs hours per row and cannot change the verdict 'collapses'")
SPLITS = ("clean", "other")


def mixed_sets(df: pd.DataFrame) -> list[str]:
    """Rows of a chapter table whose raw WER sits beside the reference set's without covering it (one line each);
    empty when the table is like for like."""
    problems = []
    for split in SPLITS:
        wer, n, ref = f"wer_{split}", f"n_{split}", f"ref_n_{split}"
        if wer not in df or ref not in df:
            continue
        shown = finished(df)[lambda d: d[wer].notna()]
        for _, r in shown.iterrows():
            if r[n] != r[ref] or r.get(f"on_reference_{split}") is False:
                problems.append(f"{r['configuration']}: WER {split} on {int(r[n])} utterances beside a reference "
                                f"set of {int(r[ref])}")
    return problems


def older_subset_table(df: pd.DataFrame) -> pd.DataFrame:
    """The rows not scored on the reference set, with their ΔWER against fp32 on the utterances both cover (and
    fp32's WER there), and why each was not re-decoded."""
    rows: list[dict[str, Any]] = []
    off = finished(df)[lambda d: d.get("on_reference_other", pd.Series(True, index=d.index)).eq(False)]
    for _, r in off.iterrows():
        row: dict[str, Any] = {"configuration": r["configuration"]}
        for split in SPLITS:
            if f"delta_wer_{split}" not in r or r[f"delta_wer_{split}"] != r[f"delta_wer_{split}"]:
                continue
            row[f"n {split}"] = int(r[f"common_{split}"])
            row[f"fp32 WER {split} (same utterances)"] = round(float(r[f"fp32_wer_{split}"]), 2)
            row[f"ΔWER {split} [95% CI]"] = f"{r[f'delta_wer_{split}']:+.2f} {r[f'delta_wer_{split}_ci']}"
        row["why it stays on the older subset"] = (WHY_NOT_REDECODED if any(k in r["slug"] for k in COLLAPSED)
                                                   else "not re-decoded yet (scripts/redecode.sh)")
        rows.append(row)
    return pd.DataFrame(rows).set_index("configuration").rename_axis(None) if rows else pd.DataFrame()


def redecode_effect(results_dir=None) -> pd.DataFrame:
    """Each row re-decoded on the whole sample: its ΔWER against fp32 on the older subset (older transcripts,
    archived in ``older-decoding/``, against today's fp32 on the utterances both cover) and on the whole sample
    now, with the width of each 95% interval (speakers resampled).

    Columns: ``n before``, ``ΔWER other before``, ``width before``, ``n now``, ``ΔWER other now``, ``width now``.
    """
    from .config import RunConfig
    from .results import RESULTS_DIR, ResultStore
    from .scoring import compare_wer
    from .tables import quant_label

    store = ResultStore(results_dir or RESULTS_DIR)
    archive = ResultStore(store.root / "older-decoding")
    fp32 = store.load_rows(RunConfig().slug)
    rows = []
    for slug, old in store.older_decoding().items():
        new = store.get(slug)
        if slug == RunConfig().slug or not new or new.get("status") != "ok" or store.is_outdated(slug, new) \
                or not archive.rows_path(slug).exists():
            continue
        before = compare_wer(fp32, archive.load_rows(slug), "test-other")
        now = compare_wer(fp32, store.load_rows(slug), "test-other")
        if not before or not now:
            continue
        rows.append({"configuration": quant_label(new["config"]["quant"]), "n before": before["utterances"],
                     "ΔWER other before": f"{before['delta']:+.2f} [{before['low_spk']:+.2f}, {before['high_spk']:+.2f}]",
                     "width before": round(before["high_spk"] - before["low_spk"], 2), "n now": now["utterances"],
                     "ΔWER other now": f"{now['delta']:+.2f} [{now['low_spk']:+.2f}, {now['high_spk']:+.2f}]",
                     "width now": round(now["high_spk"] - now["low_spk"], 2)})
    return pd.DataFrame(rows).set_index("configuration").rename_axis(None) if rows else pd.DataFrame()
