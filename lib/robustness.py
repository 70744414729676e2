"""The noise grid's results as tables: WER per configuration and condition, ΔWER against fp32 at the same SNR
and noise kind, and the runs still missing.

Report code only reads (the runner runs ``experiments/noise.yml``). Every ΔWER pairs a configuration's rows
with fp32's under the *same* recipe (kind, SNR, seed), over the utterances both cover
(:func:`lib.scoring.compare_wer`); the clean rows come from the study's own runs (test-clean of
``test-clean+test-other``), so a reader sees where each configuration starts.

>>> condition_label("babble", 0.0), condition_label("clean", float("nan"))
('babble 0 dB', 'clean')
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from .config import LIBRARY_NAMES, RunConfig
from .grids import expand_grid, grid_path
from .results import RESULTS_DIR, ResultStore
from .scoring import compare_wer, metrics_by_split
from .tables import baseline_config

GRID = "noise"
SPLIT = "test-clean"
NOT_RUN = "not run"
COLUMNS = ["configuration", "library", "bits", "noise", "snr_db", "condition", "status", "wer", "n",
           "delta_wer", "delta_wer_low", "delta_wer_high", "delta_wer_low_utt", "delta_wer_high_utt",
           "delta_wer_ci", "common", "fp32_wer", "error", "slug", "fp32_slug"]


def condition_label(kind: str, snr_db: float) -> str:
    return "clean" if kind == "clean" else f"{kind} {snr_db:g} dB"


def clean_config(config: RunConfig) -> RunConfig:
    """The study's clean run of a noisy configuration (both test splits; ΔWER then reads its test-clean rows)."""
    return dataclasses.replace(config, noise=None, split=("test-clean", "test-other"))


def _row(store: ResultStore, config: RunConfig, kind: str, snr: float) -> dict[str, Any]:
    q = config.quant
    row: dict[str, Any] = {"configuration": q.label, "library": LIBRARY_NAMES[q.library], "bits": q.bits,
                           "noise": kind, "snr_db": snr, "condition": condition_label(kind, snr),
                           "slug": config.slug, "fp32_slug": baseline_config(config).slug}
    summary = store.get(config.slug)
    row["status"] = summary["status"] if summary else NOT_RUN
    row["error"] = (summary or {}).get("error")
    if not summary or summary["status"] != "ok":
        return row
    rows = store.load_rows(config.slug)
    m = metrics_by_split(rows, (SPLIT,))[SPLIT]
    row.update(wer=m["wer"], n=m["utterances"])
    if q.is_baseline:
        return row
    d = compare_wer(store.load_rows(row["fp32_slug"]), rows, SPLIT)
    if d:
        row.update(delta_wer=d["delta"], delta_wer_low=d["low_spk"], delta_wer_high=d["high_spk"],
                   delta_wer_low_utt=d["low"], delta_wer_high_utt=d["high"], common=d["utterances"],
                   fp32_wer=d["wer_base"], delta_wer_ci=f"[{d['low_spk']:+.2f}, {d['high_spk']:+.2f}]")
    return row


def noise_table(grid: str | Path = GRID, overrides: dict[str, Any] | None = None,
                results_dir: Path | str = RESULTS_DIR, clean: bool = True) -> pd.DataFrame:
    """One row per configuration and condition of the noise grid, in grid order; with ``clean``, each
    configuration's clean test-clean row (from the study's runs) comes first.

    Columns: ``wer`` over ``n`` utterances; ``delta_wer`` against fp32 at the same condition with ``_low``/``_high``
    (95% BCa, speakers resampled: the interval the verdict uses) and ``_low_utt``/``_high_utt`` (utterances
    resampled), over ``common`` utterances; ``status`` is ``ok``, ``failed`` (with ``error``) or ``not run``.
    """
    store = ResultStore(results_dir)
    rows, seen = [], set()
    for job in expand_grid(grid_path(grid), overrides):
        c = job.config
        if clean and c.quant.slug not in seen:
            seen.add(c.quant.slug)
            rows.append(_row(store, clean_config(c), "clean", float("nan")))
        if c.noise is not None:
            rows.append(_row(store, c, c.noise.kind, c.noise.snr_db))
    return pd.DataFrame(rows, columns=COLUMNS)


def missing_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: noisy conditions with a result, failed, and not run (the clean rows are not counted).

    >>> df = pd.DataFrame({"configuration": ["fp32", "fp32"], "noise": ["babble", "white"], "status": ["ok", "not run"]})
    >>> missing_runs(df).loc["fp32"].tolist()
    [1, 0, 1]
    """
    noisy = df[df["noise"] != "clean"]
    counts = pd.crosstab(noisy["configuration"], noisy["status"])
    for status in ("ok", "failed", NOT_RUN):
        if status not in counts:
            counts[status] = 0
    order = list(dict.fromkeys(noisy["configuration"]))
    out = counts.loc[order, ["ok", "failed", NOT_RUN]].rename(columns={"ok": "measured", NOT_RUN: "not run"})
    return out.rename_axis("configuration").rename_axis(None, axis=1)


def delta_pivot(df: pd.DataFrame) -> pd.DataFrame:
    """ΔWER with its interval as text, configurations × conditions (e.g. ``'+1.20 [+0.31, +2.40]'``); a
    condition without a result reads ``not run`` (or ``failed``)."""
    quantized = df[df["configuration"] != "fp32"]

    def cell(r):
        if r["status"] != "ok":
            return r["status"]
        return f"{r['delta_wer']:+.2f} {r['delta_wer_ci']}" if pd.notna(r["delta_wer"]) else "no fp32 result"

    cells = quantized.assign(cell=quantized.apply(cell, axis=1) if len(quantized) else [])
    conditions = list(dict.fromkeys(cells["condition"]))
    configurations = list(dict.fromkeys(cells["configuration"]))
    return cells.pivot(index="configuration", columns="condition", values="cell").reindex(
        index=configurations, columns=conditions).rename_axis(None, axis=1)


def wer_pivot(df: pd.DataFrame) -> pd.DataFrame:
    """WER (%) per configuration and condition, fp32 included; blank where there is no result."""
    conditions = list(dict.fromkeys(df["condition"]))
    configurations = list(dict.fromkeys(df["configuration"]))
    return df.pivot(index="configuration", columns="condition", values="wer").reindex(
        index=configurations, columns=conditions).rename_axis(None, axis=1).round(2)


def recipe_table(grid: str | Path = GRID, data: str | None = None) -> pd.DataFrame:
    """The noise recipes of the grid, one row per kind: SNRs, seed, how levels are measured, what the noise is."""
    from .noise import describe_kind, level_measure

    recipes = {}
    for job in expand_grid(grid_path(grid)):
        n = job.config.noise
        if n is not None:
            recipes.setdefault(n.kind, []).append(n)
    rows = []
    for kind, found in recipes.items():
        snrs = sorted({n.snr_db for n in found}, reverse=True)
        rows.append({"noise": kind, "SNR (dB)": ", ".join(f"{s:g}" for s in snrs),
                     "seed": ", ".join(str(s) for s in sorted({n.seed for n in found})),
                     "made of": describe_kind(found[0], data), "level": level_measure()})
    return pd.DataFrame(rows, columns=["noise", "SNR (dB)", "seed", "made of", "level"]).set_index("noise")
