"""Facts for the prose through myst-nb ``glue``: a chapter's highlights, one row's numbers as text."""
from __future__ import annotations

from typing import Any

from .analysis import highlights
from .tables import find_row


def glue_highlights(prefix: str, df) -> dict[str, Any]:
    """Glue :func:`lib.analysis.highlights` of a chapter table as ``<prefix>_counts``, ``<prefix>_best_clean``, ..."""
    from myst_nb import glue  # only inside a notebook kernel

    facts = highlights(df)
    for key, value in facts.items():
        glue(f"{prefix}_{key}", value, display=False)
    return facts


def glue_facts(prefix: str, facts: dict[str, Any]) -> dict[str, Any]:
    """Glue each fact as ``<prefix>_<key>`` (text); returns ``facts``."""
    from myst_nb import glue  # only inside a notebook kernel

    for key, value in facts.items():
        glue(f"{prefix}_{key}", value, display=False)
    return facts


ROW_FACTS = {"wer_clean": "{:.2f}", "wer_other": "{:.2f}", "encoder_cosine": "{:.3f}", "latency_ratio": "{:.2f}"}
_FACT_NAMES = {"encoder_cosine": "cosine"}


def row_facts(df, slug_part: str, prefix: str) -> dict[str, str]:
    """Glue-ready text for one row of a chapter table: WER per split, encoder cosine, latency ratio.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"slug": ["m__quanto-dyn-int8-aint8__t"], "status": ["ok"], "wer_clean": [106.951],
    ...                    "wer_other": [106.34], "encoder_cosine": [0.52247], "latency_ratio": [9.375]})
    >>> row_facts(df, "__quanto-dyn-int8-aint8__", "qd")["qd_wer_clean"], row_facts(df, "__quanto-dyn", "qd")["qd_cosine"]
    ('106.95', '0.522')
    >>> row_facts(df, "__absent__", "x")["x_wer_clean"]
    'pending'
    """
    row = find_row(df, slug_part)
    ok = row is not None and row["status"] == "ok"
    return {f"{prefix}_{_FACT_NAMES.get(col, col)}": (fmt.format(row[col]) if ok and col in row and row[col] == row[col]
                                                     else row["status"] if row is not None and not ok else "pending")
            for col, fmt in ROW_FACTS.items()}
