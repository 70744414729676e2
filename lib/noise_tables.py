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
from .display import readable
from .grids import expand_grid, grid_path
from .results import RESULTS_DIR, ResultStore
from .metrics import corpus_wer
from .scoring import compare_wer, score_rows
from .tables import baseline_config, finished
from .verdicts import NoiseVerdict

#: fp32's WER (%) above which a noisy condition is not used for the noise verdict: the reference itself has
#: failed (in 0 dB babble it transcribes the background talkers), so a ΔWER there compares two failures.
NOISE_REFERENCE_LIMIT = 50.0

GRID = "noise"
SPLIT = "test-clean"
NOT_RUN = "not run"
COLUMNS = ["configuration", "library", "bits", "noise", "snr_db", "condition", "status", "wer", "n",
           "delta_wer", "delta_wer_low", "delta_wer_high", "delta_wer_low_utt", "delta_wer_high_utt",
           "delta_wer_ci", "common", "fp32_wer", "error", "slug", "fp32_slug"]


def condition_label(kind: str, snr_db: float) -> str:
    return "clean" if kind == "clean" else f"{kind} {snr_db:g} dB"


def condition_order(df: pd.DataFrame) -> list[str]:
    """Conditions for a table's columns: clean, then each kind (in grid order) from high SNR to low."""
    kinds = list(dict.fromkeys(df["noise"]))
    ranked = df.assign(_k=df["noise"].map(kinds.index), _c=df["noise"] != "clean", _s=-df["snr_db"].fillna(0))
    return list(dict.fromkeys(ranked.sort_values(["_c", "_k", "_s"], kind="stable")["condition"]))


def clean_config(config: RunConfig) -> RunConfig:
    """The study's clean run of a noisy configuration (both test splits; ΔWER then reads its test-clean rows)."""
    return dataclasses.replace(config, noise=None, split=("test-clean", "test-other"))


def _row(store: ResultStore, config: RunConfig, kind: str, snr: float) -> dict[str, Any]:
    q = config.quant
    row: dict[str, Any] = {"configuration": readable(q.label), "library": LIBRARY_NAMES[q.library], "bits": q.bits,
                           "noise": kind, "snr_db": snr, "condition": condition_label(kind, snr),
                           "slug": config.slug, "fp32_slug": baseline_config(config).slug}
    summary = store.get(config.slug)
    row["status"] = summary["status"] if summary else NOT_RUN
    row["error"] = (summary or {}).get("error")
    if not summary or summary["status"] != "ok":
        return row
    rows = store.load_rows(config.slug)
    scored = [r for r in score_rows(rows) if r["split"] == SPLIT]
    row.update(wer=corpus_wer(scored), n=len(scored))
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
    conditions = condition_order(cells)
    configurations = list(dict.fromkeys(cells["configuration"]))
    return cells.pivot(index="configuration", columns="condition", values="cell").reindex(
        index=configurations, columns=conditions).rename_axis(None, axis=1)


def wer_pivot(df: pd.DataFrame) -> pd.DataFrame:
    """WER (%) per configuration and noisy condition over the configuration's own rows (``n`` of them), fp32
    included; a condition without a result reads ``not run`` (or ``failed``). The clean WERs are left out:
    the study's clean runs need not cover the same utterances as fp32 (their ΔWER in :func:`delta_pivot` does)."""
    noisy = df[df["noise"] != "clean"]
    cells = noisy.assign(cell=[f"{w:.2f}" if s == "ok" else s for w, s in zip(noisy["wer"], noisy["status"])])
    conditions = condition_order(cells)
    configurations = list(dict.fromkeys(cells["configuration"]))
    return cells.pivot(index="configuration", columns="condition", values="cell").reindex(
        index=configurations, columns=conditions).rename_axis(None, axis=1)


def noise_design_facts(grid: str | Path = GRID, data: str | None = None) -> dict[str, Any]:
    """Glue-ready facts of the grid's design: ``snrs`` (``'20, 10, 5 and 0'``), ``conditions``, ``talkers``,
    ``pool`` (babble source utterances), ``utterances`` (test-clean utterances in today's data)."""
    from .data import DataError, list_split, resolve_data_dir
    from .noise import babble_pool

    recipes = [j.config.noise for j in expand_grid(grid_path(grid)) if j.config.noise is not None]
    snrs = [f"{s:g}" for s in sorted({r.snr_db for r in recipes}, reverse=True)]
    try:
        utterances, pool = len(list_split(resolve_data_dir(data), SPLIT)), len(babble_pool(data))
    except DataError:
        utterances, pool = "no", "no"
    return {"snrs": ", ".join(snrs[:-1]) + " and " + snrs[-1] if len(snrs) > 1 else "".join(snrs),
            "conditions": len({(r.kind, r.snr_db, r.seed) for r in recipes}),
            "talkers": max((r.talkers for r in recipes if r.kind == "babble"), default=0),
            "pool": pool, "utterances": utterances}


def noise_conditions_table(grid: str | Path = GRID, data: str | None = None) -> pd.DataFrame:
    """The noise conditions of the grid, one row per kind: SNRs, seed, how levels are measured, what the noise is."""
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


def noise_takeaway(df: pd.DataFrame, claim: NoiseVerdict | None = None) -> str:
    """One sentence for the chapter: per noise kind, fp32's WER at the lowest SNR where it still works (WER at
    most :data:`NOISE_REFERENCE_LIMIT`%; a lower SNR where it fails is named) and the nearest and furthest
    configuration from it there (ΔWER with its interval), then the verdict; or which runs are missing.

    >>> noise_takeaway(pd.DataFrame(columns=COLUMNS))
    'No noisy run of experiments/noise.yml has a result: the tables above list each configuration with the conditions it lacks.'
    """
    noisy = finished(df)[lambda d: d["noise"] != "clean"]
    if noisy.empty:
        return ("No noisy run of experiments/noise.yml has a result: the tables above list each configuration with "
                "the conditions it lacks.")
    parts = []
    for kind in dict.fromkeys(noisy["noise"]):
        rows = noisy[noisy["noise"] == kind]
        fp32 = rows[rows["configuration"] == "fp32"].set_index("snr_db")["wer"]
        snrs = sorted(rows["snr_db"].unique())
        working = [x for x in snrs if x in fp32.index and fp32[x] <= NOISE_REFERENCE_LIMIT]
        snr = working[0] if working else snrs[0]
        failed = [x for x in snrs if x < snr and x in fp32.index]
        text = f"in {kind} noise "
        if failed:
            text += (f"fp32 itself fails at {', '.join(f'{x:g}' for x in failed)} dB (WER "
                     f"{', '.join(f'{fp32[x]:.2f}%' for x in failed)}); at {snr:g} dB, the lowest SNR where it works, ")
        else:
            text += f"at {snr:g} dB "
        text += "fp32's WER is " + (f"{fp32[snr]:.2f}%" if snr in fp32.index else "not measured")
        if snr in fp32.index and fp32[snr] > NOISE_REFERENCE_LIMIT:
            text += " (fp32 itself fails here, so these ΔWERs compare failures)"
        quantized = rows[rows["snr_db"] == snr].dropna(subset=["delta_wer"])
        if len(quantized):
            near = quantized.loc[quantized["delta_wer"].abs().idxmin()]
            far = quantized.loc[quantized["delta_wer"].abs().idxmax()]
            text += (f"; nearest to it: {near['configuration']} ({near['delta_wer']:+.2f} {near['delta_wer_ci']}), "
                     f"furthest: {far['configuration']} ({far['delta_wer']:+.2f} {far['delta_wer_ci']})")
        parts.append(text)
    measured = f"{len(noisy)} of {int((df['noise'] != 'clean').sum())} noisy runs have a result"
    sentence = measured + "; " + "; ".join(parts) + "."
    if claim is not None:
        sentence += f" Does the gap to fp32 grow as SNR falls? {claim.verdict.capitalize()}."
    return sentence[0].upper() + sentence[1:]
