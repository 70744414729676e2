"""Result files loaded into DataFrames with plain column names (``wer_other``, ``small_mb``, ``latency_ratio``).

Report code only reads: nothing here runs a configuration (that is :mod:`lib.runner`'s job). The column
names are what :mod:`lib.analysis`, :mod:`lib.claims`, :mod:`lib.plots` and the tests share; they become
readable labels ("WER other", "small MB") only in :mod:`lib.display`.

>>> split_tag("test-other"), split_tag("dev-clean")
('other', 'dev_clean')
"""
from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from .config import LIBRARY_NAMES, QuantSpec, RunConfig, footprint_slug, weight_bits
from .footprint import FOOTPRINT_DIR
from .grids import GRIDS, expand_grid, grid_path
from .fidelity import fidelity_rows, fidelity_stats
from .metrics import spread_pct
from .scoring import compare_wer, metrics_by_split, score_rows
from .decoding import outdated_fields
from .display import readable
from .results import RESULTS_DIR, ResultStore
from .latency import Latency
from .machine import reference_cpu, result_cpu

NOISY_SPREAD_PCT = 10.0  # max/min of three identical forced-length runs; quiet runs here stay within ~7%


def finished(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` whose run finished (``status`` is ``ok``); failed and not-run rows are dropped.

    >>> finished(pd.DataFrame({"configuration": ["a", "b", "c"], "status": ["ok", "failed", "not run"]}))["configuration"].tolist()
    ['a']
    """
    return df[df["status"] == "ok"]


def quantized(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` that quantize something: the fp32 reference rows (library ``fp32``) are dropped; a
    table without a ``library`` column is returned whole.

    >>> quantized(pd.DataFrame({"configuration": ["fp32", "a"], "library": ["fp32", "HQQ"]}))["configuration"].tolist()
    ['a']
    """
    return df[df["library"] != LIBRARY_NAMES["none"]] if "library" in df else df


def current_recipe(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` decoded with today's decoding recipe: those flagged ``older_decoding`` (marked ‡ in
    the book) are dropped; a table without the column is returned whole.

    >>> current_recipe(pd.DataFrame({"configuration": ["a", "b"], "older_decoding": [False, True]}))["configuration"].tolist()
    ['a']
    """
    if "older_decoding" not in df:
        return df
    return df[~df["older_decoding"].fillna(False).astype(bool)]


def split_tag(split: str) -> str:
    """The short name of a split in column names: ``wer_clean``, ``delta_wer_other_low``, ``rtfx_dev_clean``."""
    return split.removeprefix("test-").replace("-", "_")


def quant_label(quant: dict[str, Any]) -> str:
    """The display name (:func:`lib.display.readable` of :attr:`QuantSpec.label`) of a stored quantization dict,
    e.g. ``'HQQ weight-only int4 g64'``; library ``none`` reads ``'fp32'`` whatever else the record holds. Every
    table names a configuration this one way, so prose, tables and figures agree.

    >>> quant_label({"library": "bnb", "scheme": "weight_only", "weights": "nf4", "options": {"double_quant": True}})
    'bitsandbytes weight-only nf4 double-quantized scales'
    """
    return "fp32" if quant.get("library", "none") == "none" else readable(QuantSpec.from_dict(quant).label)


def baseline_config(config: RunConfig) -> RunConfig:
    """The fp32 run that a quantized run is compared with: same model, splits, limit, recipe."""
    return dataclasses.replace(config, quant=QuantSpec())


def grid_table(grid: str | Path, overrides: dict[str, Any] | None = None, results_dir: Path | str = RESULTS_DIR,
               footprint_dir: Path | str = FOOTPRINT_DIR, bootstrap: bool = True) -> pd.DataFrame:
    """One row per configuration of a grid: WER scored from the stored raw text, ΔWER against fp32 on the
    utterances both cover, fidelity to fp32, size, and latency ratios per CPU class.

    Rows whose run failed keep their error; rows not yet run (or whose summary is unreadable) are ``pending``.
    Columns: ``wer_<split>`` (over the configuration's own rows, ``n_<split>`` of them); ``delta_wer_<split>``
    with ``_low``/``_high``/``_ci`` (95% BCa, speakers resampled: the interval every verdict uses) and
    ``_low_utt``/``_high_utt`` (utterances resampled), over ``common_<split>`` utterances and
    ``words_<split>`` reference words; ``kld_<split>``, ``agree_<split>`` (top-1 agreement, %) and
    ``dnll_<split>`` with ``_low``/``_high`` (:func:`lib.fidelity.fidelity_stats`); ``small_mb``,
    ``compression_pct``, ``latency_ratio`` (the study's CPU class) and ``latency_ratio_<class>`` with
    ``_low``/``_high`` for every class it was timed on (:func:`latency_by_class`).
    """
    store, fstore = ResultStore(results_dir), ResultStore(footprint_dir)
    study_cpu = reference_cpu(fstore)
    by_class = class_stores(footprint_dir)
    rows = []
    for job in expand_grid(grid_path(grid), overrides):
        q = job.config.quant
        row: dict[str, Any] = {"configuration": readable(q.label), "library": LIBRARY_NAMES[q.library],
                               "scheme": q.scheme, "weights": q.weights, "bits": q.bits,
                               "granularity": q.granularity or "default", "group_size": q.group_size,
                               "scope": q.scope, "proj_out": q.proj_out, "slug": job.slug}
        summary = store.get(job.slug)
        problem = None if summary else store.problem(job.slug)
        row["status"] = summary["status"] if summary else "unreadable" if problem else "pending"
        row["error"] = (summary or {}).get("error") or problem
        row["older_decoding"] = bool(summary and store.is_outdated(job.slug, summary))
        if summary and summary["status"] == "ok":
            base_slug = baseline_config(job.config).slug
            base_rows = store.load_rows(base_slug) if store.get(base_slug) else []
            q_rows = store.load_rows(job.slug)
            for split, m in metrics_by_split(q_rows, job.config.split).items():
                tag = split_tag(split)
                row.update(reference_set_columns(tag, m, same_utterances(q_rows, base_rows, split),
                                                 metrics_by_split(base_rows, [split])[split] if base_rows else None))
                row[f"n_{tag}"], row[f"rtfx_{tag}"] = m["utterances"], m["rtfx"]
                d = compare_wer(base_rows, q_rows, split) if bootstrap and not q.is_baseline else None
                if d:
                    row.update({f"delta_wer_{tag}": d["delta"], f"delta_wer_{tag}_low": d["low_spk"],
                                f"delta_wer_{tag}_high": d["high_spk"], f"delta_wer_{tag}_low_utt": d["low"],
                                f"delta_wer_{tag}_high_utt": d["high"], f"common_{tag}": d["utterances"],
                                f"words_{tag}": d["ref_words"], f"fp32_wer_{tag}": d["wer_base"],
                                f"delta_wer_{tag}_ci": f"[{d['low_spk']:+.2f}, {d['high_spk']:+.2f}]"})
                row.update(fidelity_columns(job.slug, split, results_dir))
            row["base_mb"] = summary["size"]["stored_bytes"] / 1e6
            row["encoder_cosine"] = summary.get("encoder_cosine_jfk")
            row["weight_error"] = (summary.get("quantization", {}).get("weight_error") or {}).get("mean")
        fp = fstore.get(job.footprint_slug) if job.footprint else None
        if not fp and job.footprint:  # timed only on another class: its record holds the same stored size
            fp = next((f for st in by_class if (f := st.get(job.footprint_slug)) and f.get("status") == "ok"), None)
        row["footprint"] = fp["status"] if fp else "pending"
        if fp and fp["status"] == "ok":
            row["small_mb"] = fp["size"]["stored_bytes"] / 1e6
            row["compression_pct"] = fp["size"]["compression_pct"]
            row["latency_s"] = fp["latency"]["median"]
            row["latency_ratio"] = fp["latency_ratio"]
            row["latency_cpu"] = result_cpu(fp)
            row["other_cpu"] = row["latency_cpu"] != study_cpu
        elif fp:
            row["error"] = row["error"] or fp.get("error")
        if job.footprint:
            row.update(latency_by_class(job.footprint_slug, by_class))
            row.update(memory_columns(job.footprint_slug, results_dir))
        rows.append(row)
    return pd.DataFrame(rows)


def memory_columns(footprint_slug: str, results_dir: Path | str = RESULTS_DIR) -> dict[str, Any]:
    """``peak_mb`` and ``loaded_mb`` (MiB, whisper-small architecture, one encoder pass and decode; the process
    baseline of Python, torch and transformers included) from ``results/memory`` (:mod:`lib.memory`)."""
    found = ResultStore(Path(results_dir) / "memory").get(footprint_slug)
    if not found or found.get("status") != "ok":
        return {}
    return {"peak_mb": found["peak_mb"], "loaded_mb": found["loaded_mb"], "baseline_mb": found["baseline_mb"]}


def same_utterances(rows, reference_rows, split: str) -> bool:
    """Whether ``rows`` cover exactly the utterances of ``reference_rows`` on ``split``: the same ids, and the
    same audio wherever both rows record its hash (rows decoded before hashes were stored carry none).

    >>> old = [{"id": "a", "split": "test-clean"}]
    >>> same_utterances([{"id": "a", "split": "test-clean", "audio_sha256": "x"}], old, "test-clean")
    True
    >>> same_utterances([{"id": "a", "split": "test-clean", "audio_sha256": "x"}],
    ...                 [{"id": "a", "split": "test-clean", "audio_sha256": "y"}], "test-clean")
    False
    """
    def audio(rs):
        return {r["id"]: r.get("audio_sha256") for r in rs if r["split"] == split}

    mine, theirs = audio(rows), audio(reference_rows)
    return (bool(theirs) and mine.keys() == theirs.keys()
            and all(mine[i] == theirs[i] for i in mine if mine[i] and theirs[i]))


def reference_set_columns(tag: str, metrics: dict[str, Any], on_reference: bool,
                          reference: dict[str, Any] | None) -> dict[str, Any]:
    """Raw-WER columns of one row and split, like for like: ``wer_<tag>`` only when the row covers the table's
    reference set (fp32's utterances); a row on another set keeps its WER as ``subset_wer_<tag>`` (its ΔWER is on
    the utterances both cover). ``ref_wer_<tag>``/``ref_n_<tag>`` are fp32 on the reference set, the value every
    fp32 line of a figure draws.

    >>> reference_set_columns("other", {"wer": 10.79, "utterances": 101}, False, {"wer": 9.33, "utterances": 167})
    {'wer_other': nan, 'subset_wer_other': 10.79, 'on_reference_other': False, 'ref_wer_other': 9.33, 'ref_n_other': 167}
    """
    nan = float("nan")
    return {f"wer_{tag}": metrics["wer"] if on_reference else nan,
            f"subset_wer_{tag}": nan if on_reference else metrics["wer"], f"on_reference_{tag}": on_reference,
            f"ref_wer_{tag}": reference["wer"] if reference else nan,
            f"ref_n_{tag}": reference["utterances"] if reference else nan}


def fidelity_columns(slug: str, split: str, results_dir: Path | str = RESULTS_DIR) -> dict[str, Any]:
    """``kld_<split>``, ``agree_<split>``, ``dnll_<split>`` (each with ``_low``/``_high``, speakers resampled)
    and ``fid_n_<split>`` of one configuration, or {} before its fidelity pass."""
    stats = fidelity_stats(fidelity_rows(slug, results_dir), split, clusters=True)
    if not stats:
        return {}
    tag = split_tag(split)
    return {f"kld_{tag}": stats["kld_mean"], f"kld_{tag}_low": stats["kld_low"], f"kld_{tag}_high": stats["kld_high"],
            f"kld_{tag}_p99": stats["kld_p99"], f"agree_{tag}": stats["agreement"],
            f"agree_{tag}_low": stats["agreement_low"], f"agree_{tag}_high": stats["agreement_high"],
            f"dnll_{tag}": stats["delta_nll"], f"dnll_{tag}_low": stats["delta_nll_low"],
            f"dnll_{tag}_high": stats["delta_nll_high"], f"fid_n_{tag}": stats["utterances"]}


def class_stores(footprint_dir: Path | str = FOOTPRINT_DIR) -> list[ResultStore]:
    """The study's footprint folder and each ``by-cpu/<class>/`` folder beside it."""
    root = Path(footprint_dir)
    return [ResultStore(root)] + [ResultStore(d) for d in sorted((root / "by-cpu").glob("*")) if d.is_dir()]


def latency_by_class(footprint_slug: str, stores: list[ResultStore]) -> dict[str, Any]:
    """``latency_ratio_<class>`` (with ``_low``/``_high`` where the pairs were interleaved) for each CPU class
    the footprint was timed on, e.g. ``{'latency_ratio_amx': 0.69, ...}`` (first store wins per class)."""
    from .ship import class_column

    out: dict[str, Any] = {}
    for store in stores:
        fp = store.get(footprint_slug)
        if not fp or fp.get("status") != "ok":
            continue
        column = class_column(result_cpu(fp))
        if column in out:
            continue
        lat = Latency.from_footprint(fp)
        out[column], out[column + "_low"], out[column + "_high"] = lat.ratio, lat.low, lat.high
        out[column + "_pairs"], out[column + "_foreign"] = lat.pairs, lat.foreign_cpu_share
        out[column + "_quiet"] = lat.quiet  # evidence only when its record shows a quiet CPU
    return out


def chapter_table(grid: str, limit: int | None = None, **filters: Any) -> pd.DataFrame:
    """The table behind a chapter: its grid's results, optionally with a ``limit`` and filters.

    ``filters`` keep rows whose column equals the value, e.g. ``group_size=64`` (rows without groups stay).
    To run what is missing first, call :func:`lib.runner.run_chapter_grid` (the chapters' ``run_missing`` cell).
    """
    df = grid_table(grid, {"limit": limit} if limit else None)
    for column, value in filters.items():
        if value is not None:
            df = df[df[column].isna() | (df[column] == value)] if column == "group_size" else df[df[column] == value]
    return df.reset_index(drop=True)


def study_table(limit: int | None = None) -> pd.DataFrame:
    """Every configuration of every grid once (first grid wins, its name in ``chapter``), for the summary."""
    frames = [grid_table(g, {"limit": limit} if limit else None).assign(chapter=g) for g in GRIDS]
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates("slug").reset_index(drop=True)


def find_row(df: pd.DataFrame, slug_part: str) -> pd.Series | None:
    """The first row whose slug contains ``slug_part``, or None."""
    hits = df[df["slug"].str.contains(slug_part, regex=False)] if "slug" in df else df.iloc[:0]
    return hits.iloc[0] if len(hits) else None


def timing_spread_pct(summary: dict[str, Any]) -> float:
    """The larger max/min spread, in %, of the fp32 and quantized latency samples of one footprint run.

    >>> round(timing_spread_pct({"latency": {"samples": [8.0, 8.1, 8.2]}, "fp32_latency": {"samples": [8.3, 9.5, 9.6]}}), 1)
    15.7
    """
    return max(spread_pct(summary[key]["samples"]) for key in ("latency", "fp32_latency"))


def latency_split(summary: dict[str, Any]) -> dict[str, float]:
    """Median encoder and decoder (32 tokens) seconds, each as a ratio to the paired fp32 run.

    >>> lat = {"samples": [10.0, 11.0, 12.0], "encoder_samples": [4.0, 4.0, 5.0]}
    >>> latency_split({"latency": lat, "fp32_latency": {"samples": [8.0], "encoder_samples": [2.0]}})
    {'encoder_s': 4.0, 'decoder_s': 7.0, 'encoder_ratio': 2.0, 'decoder_ratio': 1.1666666666666667}
    """
    def split(latency):
        enc = latency.get("encoder_samples") or []
        if len(enc) != len(latency.get("samples", [])) or not enc:
            return float("nan"), float("nan")
        return statistics.median(enc), statistics.median(t - e for t, e in zip(latency["samples"], enc))

    enc, dec = split(summary["latency"])
    fp32_enc, fp32_dec = split(summary.get("fp32_latency") or summary["latency"])
    return {"encoder_s": enc, "decoder_s": dec, "encoder_ratio": enc / fp32_enc, "decoder_ratio": dec / fp32_dec}


def all_footprints(footprint_dir: Path | str = FOOTPRINT_DIR) -> pd.DataFrame:
    """Every footprint result (ok and failed) as a table.

    ``cpu`` is the class of CPU each latency was timed on; ``other_cpu`` flags the rows timed on another class
    than most (:func:`lib.results.reference_cpu`), whose latency ratios are not comparable with the rest.
    """
    store = ResultStore(footprint_dir)
    rows = []
    for s in store.summaries():
        q = s["quant"]
        row = {"configuration": quant_label(q), "library": LIBRARY_NAMES[q["library"]], "status": s["status"],
               "scheme": q["scheme"], "bits": weight_bits(q["weights"]), "cpu": result_cpu(s), "error": s.get("error")}
        if s["status"] == "ok":
            row.update(latency_split(s))
            row.update({"small_mb": s["size"]["stored_bytes"] / 1e6, "compression_pct": s["size"]["compression_pct"],
                        "latency_s": s["latency"]["median"], "latency_min_s": s["latency"]["min"],
                        "fp32_latency_s": s["fp32_latency"]["median"], "latency_ratio": s["latency_ratio"],
                        "serialized_mb": (s["size"]["serialized"]["bytes"] or float("nan")) / 1e6,
                        "timing_spread_pct": timing_spread_pct(s),
                        "load_1min_end": (s.get("load_average_end") or [float("nan")])[0]})
            row.update(quiet_columns(s))
        rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else ["configuration", "library", "status", "bits", "cpu", "error"])
    df["other_cpu"] = (df["status"] == "ok") & (df["cpu"] != reference_cpu(store))
    if not df.empty:
        df["_order"] = df["library"].map({name: i for i, name in enumerate(LIBRARY_NAMES.values())})
        df = df.sort_values(["_order", "bits", "configuration"], ascending=[True, False, True]).drop(columns="_order")
    return df


def quiet_columns(footprint: dict[str, Any]) -> dict[str, Any]:
    """What a footprint's record says about its CPU: ``pairs``, ``foreign_pct`` (the CPU time other processes
    used during the timing, % of the machine's) and ``quiet`` (:func:`lib.machine.is_quiet`: evidence or not).

    >>> quiet_columns({"timing": {"pairs": 10, "foreign_cpu_share": 0.012}})
    {'pairs': 10, 'foreign_pct': 1.2, 'quiet': True}
    >>> quiet_columns({"latency": {"samples": [1.0, 1.1, 1.2]}})["quiet"]
    False
    """
    lat = Latency.from_footprint({"status": "ok", "latency_ratio": float("nan"), **footprint})
    share = lat.foreign_cpu_share
    return {"pairs": lat.pairs, "foreign_pct": round(100 * share, 1) if share is not None else float("nan"),
            "quiet": lat.quiet}


def failures(results_dir: Path | str = RESULTS_DIR, footprint_dir: Path | str = FOOTPRINT_DIR) -> pd.DataFrame:
    """Every failed run (WER or footprint) with its stage and error message."""
    rows = []
    for kind, store in (("WER (whisper-base)", ResultStore(results_dir)), ("footprint", ResultStore(footprint_dir))):
        for s in store.summaries():
            if s.get("status") == "failed":
                quant = s.get("quant") or s["config"]["quant"]
                rows.append({"configuration": quant_label(quant), "run": kind, "stage": s.get("failed_stage"),
                             "error": (s.get("error") or "")[:300]})
    return pd.DataFrame(rows, columns=["configuration", "run", "stage", "error"]).set_index("configuration")


def reference_footprint(footprint_dir: Path | str = FOOTPRINT_DIR) -> dict[str, Any]:
    """The fp32 whisper-small footprint: the timing every latency ratio pairs with, on the study's CPU class."""
    return ResultStore(footprint_dir).load(footprint_slug(QuantSpec(), "footprint:whisper-small"))


def baseline_summary(results_dir: Path | str = RESULTS_DIR, slug: str | None = None) -> dict[str, Any]:
    """The fp32 WER run's summary (the default configuration's, unless ``slug`` names another)."""
    return ResultStore(results_dir).load(slug or RunConfig().slug)


def per_utterance(slug: str, results_dir: Path | str = RESULTS_DIR) -> pd.DataFrame:
    """Per-utterance errors of one run, worst first: every stored row scored with today's normalizer
    (:func:`lib.scoring.score_rows`; rows stored without counts are counted too), counts as integers."""
    df = pd.DataFrame(score_rows(ResultStore(results_dir).load_rows(slug)))  # counted now, as every WER is
    if df.empty:
        return df
    counts = ["substitutions", "deletions", "insertions", "ref_words"]
    df = df.astype({c: int for c in counts})  # counts are integers, never ``11.0``
    df["errors"] = df["substitutions"] + df["deletions"] + df["insertions"]
    df["WER"] = 100 * df["errors"] / df["ref_words"]
    return df.sort_values(["errors", "WER"], ascending=False)


def split_breakdown(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per split of one WER run: utterances, minutes, error counts, WER, RTFx, encoder share."""
    rows = []
    for split, m in summary["metrics"].items():
        rows.append({"split": split, "utterances": m["utterances"], "audio min": m["audio_seconds"] / 60,
                     "reference words": m["ref_words"], "substitutions": m["substitutions"],
                     "deletions": m["deletions"], "insertions": m["insertions"], "WER": m["wer"], "RTFx": m["rtfx"],
                     "encoder share of time": m["encoder_seconds"] / m["wall_seconds"]})
    return pd.DataFrame(rows).set_index("split").round(2)


def environment_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Where a result was measured: versions, CPU, threads, commit, model and data hashes."""
    env = summary["environment"]
    rows = [("python", env["python"]), ("platform", env["platform"]), ("CPU", env["cpu"]["model"]),
            ("logical cores", env["cpu"]["logical_cores"]), ("SIMD", ", ".join(env["cpu"]["simd"])),
            ("threads", env["threads"]), ("git commit", (env["git"] or {}).get("commit"))]
    rows += [(f"package {k}", v) for k, v in env["packages"].items()]
    model = summary.get("model") or {}
    rows += [("model source", model.get("kind")), ("weights sha256", model.get("weights_sha256"))]
    data = summary.get("data") or {}
    rows += [("data directory", data.get("path")), ("data MANIFEST.tsv sha256", data.get("manifest_sha256"))]
    return pd.DataFrame(rows, columns=["item", "value"]).set_index("item")


def summary_model(summary: dict[str, Any]) -> str:
    """The model a result's size belongs to: ``'whisper-base'`` for a WER run of the embedded whisper-base,
    ``'whisper-small architecture, random weights'`` for a footprint.

    >>> summary_model({"config": {"model": "embedded:whisper-base"}})
    'whisper-base'
    >>> summary_model({"model": {"kind": "footprint", "architecture": "whisper-small", "weights": "random"}})
    'whisper-small architecture, random weights'
    """
    from .config import model_tag

    model = summary.get("model") if isinstance(summary.get("model"), dict) else {}
    if model.get("kind") == "footprint":
        return f"{model.get('architecture', 'whisper-small')} architecture, random weights"
    return model_tag((summary.get("config") or {}).get("model") or model.get("name") or "model")


def run_summary_table(summary: dict[str, Any] | None) -> pd.DataFrame:
    """A small key/value table for one result (WER run or footprint run); failures show their error. Sizes name
    the model they belong to (``'stored MB (whisper-base)'``), since the chapters' sizes are whisper-small's."""
    if not summary:
        return pd.DataFrame()
    rows: list[tuple[str, Any]] = [("slug", summary["slug"]), ("status", summary.get("status"))]
    outdated = outdated_fields(summary.get("decoding"), lambda: ResultStore(RESULTS_DIR).load_rows(summary["slug"]))
    if summary.get("status") == "ok" and outdated:
        rows.append(("decoding", "older recipe (" + ", ".join(outdated) + "): to be re-run with --refresh-outdated"))
    if summary.get("status") != "ok":
        rows += [("failed at", summary.get("failed_stage")), ("error", summary.get("error"))]
    for split, m in (summary.get("metrics") or {}).items():
        rows += [(f"{split} WER (x100)", round(m["wer"], 2)), (f"{split} utterances", m["utterances"]),
                 (f"{split} RTFx", round(m["rtfx"], 2))]
        resumed = (m.get("timing") or {}).get("resumed_batches")
        if resumed:  # batches transcribed by an earlier, interrupted process and reused as measured
            rows.append((f"{split} batches resumed from checkpoint", resumed))
    size = summary.get("size")
    if size:
        model = summary_model(summary)
        rows += [(f"stored MB ({model})", round(size["stored_bytes"] / 1e6, 1)),
                 (f"compression % vs fp32 ({model})", round(size["compression_pct"], 1))]
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


def coverage_counts(df: pd.DataFrame, splits: tuple[str, ...] = ("test-clean", "test-other"),
                    data: str | None = None) -> dict[str, Any]:
    """How many finished configurations cover today's whole sample, and a table of the ones that do not.

    Facts: ``complete``, ``configurations``; ``table`` lists each partial configuration's utterances per split.
    """
    from .data import list_split, resolve_data_dir

    root = resolve_data_dir(data)
    sizes = {split_tag(s): len(list_split(root, s)) for s in splits}
    ok = finished(df)
    have = ok[[f"n_{t}" for t in sizes]].fillna(0)
    complete = (have >= pd.Series({f"n_{t}": n for t, n in sizes.items()})).all(axis=1)
    partial = ok[~complete]
    counts = partial.groupby([f"n_{t}" for t in sizes]).size().rename("configurations").reset_index()
    counts.columns = [f"utterances decoded, {t}" for t in sizes] + ["configurations"]
    counts.loc[len(counts)] = [*sizes.values(), int(complete.sum())]
    return {"complete": int(complete.sum()), "configurations": len(ok),
            "table": counts.astype(int).set_index("configurations").rename_axis("configurations")}


def budget_check(results_dir: Path | str = RESULTS_DIR) -> dict[str, Any]:
    """What the token budget (:data:`lib.decoding.RECIPE`) does to the stored results.

    Facts: ``fp32_max_tps`` (fp32's highest text tokens per second of audio), ``working_max_tps`` (the highest
    among results with every transcript within its budget), ``within_budget``, ``over_budget``,
    ``budget_results``.
    """
    from .decoding import exceeds_budget

    store = ResultStore(results_dir)
    within, over, fp32_tps, working_tps = 0, 0, 0.0, 0.0
    for summary in store.summaries():
        if summary.get("status") != "ok":
            continue
        rows = store.load_rows(summary["slug"])
        if not rows:
            continue
        tps = max(r.get("text_tokens", 0) / r["audio_seconds"] for r in rows)
        if exceeds_budget(rows):
            over += 1
            continue
        within += 1
        working_tps = max(working_tps, tps)
        if summary["config"]["quant"].get("library", "none") == "none":
            fp32_tps = max(fp32_tps, tps)
    return {"fp32_max_tps": fp32_tps, "working_max_tps": working_tps, "within_budget": within,
            "over_budget": over, "budget_results": within + over}


def interval_widths(df: pd.DataFrame) -> pd.DataFrame:
    """Median width (WER points) of the ΔWER 95% intervals per split: utterances resampled vs speakers resampled."""
    out = {}
    for tag in ("clean", "other"):
        cols = [f"delta_wer_{tag}_{k}" for k in ("low_utt", "high_utt", "low", "high")]
        ok = df.dropna(subset=[c for c in cols if c in df])
        if ok.empty or any(c not in df for c in cols):
            continue
        out[f"test-{tag}"] = {"utterances resampled": float((ok[cols[1]] - ok[cols[0]]).median()),
                              "speakers resampled": float((ok[cols[3]] - ok[cols[2]]).median()),
                              "configurations": len(ok)}
    return pd.DataFrame(out).T.round(2).rename_axis("median ΔWER interval width")


def recipe_table(grid: str = "mixed", limit: int | None = None) -> pd.DataFrame:
    """The mixed-precision grid's rows (:func:`chapter_table`) with ``recipe`` and ``k`` columns; a configuration
    with no result has status ``not run`` (and footprint ``not run``), so it is listed, never dropped."""
    df = chapter_table(grid, limit)
    if df.empty:
        return df
    specs = [job.config.quant for job in expand_grid(grid_path(grid), {"limit": limit} if limit else None)]
    recipes = {q.slug: q.recipe or "uniform" for q in specs}
    df["recipe"] = [recipes.get(slug.split("__")[1], "") for slug in df["slug"]]
    df["status"] = df["status"].replace({"pending": "not run"})
    if "footprint" in df:
        df["footprint"] = df["footprint"].replace({"pending": "not run"})
    return df
