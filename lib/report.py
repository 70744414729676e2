"""Tables for the book, built from result files only (no number is typed by hand)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from .config import QuantSpec, weight_bits
from .footprint import FOOTPRINT_DIR
from .quantize import LIBRARY_ORDER
from .results import RESULTS_DIR, ResultStore, is_outdated, reference_cpu, result_cpu

SPLIT_COLUMNS = {"test-clean": "WER clean", "test-other": "WER other"}
LIBRARY_NAMES = {"none": "fp32", "torch_ao": "torch.ao", "torchao": "torchao", "quanto": "quanto", "hqq": "HQQ",
                 "bnb": "bitsandbytes", "torch_cast": "torch half", "ctranslate2": "CTranslate2",
                 "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "whisper_cpp": "whisper.cpp"}


def run_summary_table(summary: dict[str, Any] | None):
    """A small key/value table for one result (WER run or footprint run); failures show their error."""
    import pandas as pd

    if not summary:
        return pd.DataFrame()
    rows: list[tuple[str, Any]] = [("slug", summary["slug"]), ("status", summary.get("status"))]
    if is_outdated(summary):
        rows.append(("decoding", "older recipe: transformers' seek loop (re-run pending with --refresh-outdated)"))
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


def _options_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items()))


def describe_spec(quant: dict[str, Any]) -> str:
    """A short human label for a stored quantization dict.

    >>> describe_spec({"library": "hqq", "scheme": "weight_only", "weights": "int4", "group_size": 64})
    'HQQ weight-only int4 g64'
    >>> describe_spec({"library": "torch_ao", "scheme": "dynamic", "weights": "int8", "activations": "int8"})
    'torch.ao dynamic w-int8 a-int8'
    """
    if quant["library"] == "none":
        return "fp32"
    parts = [LIBRARY_NAMES[quant["library"]], quant["scheme"].replace("_", "-"), quant["weights"]]
    if quant.get("activations", "none") != "none":
        parts[-1] = f"w-{quant['weights']} a-{quant['activations']}"
    if quant.get("granularity"):
        parts.append(quant["granularity"].replace("_", "-"))
    if quant.get("group_size"):
        parts.append(f"g{quant['group_size']}")
    if quant.get("scope", "all") != "all":
        parts.append(f"{quant['scope']} only")
    if quant.get("proj_out"):
        parts.append("+proj_out")
    if quant.get("calibration"):
        parts.append(f"cal {quant['calibration']}")
    if quant.get("options"):
        parts.append(_options_text(quant["options"]))
    return " ".join(parts)


def baseline_config(config) -> Any:
    """The fp32 run that a quantized run is compared with: same model, splits, limit, recipe."""
    import dataclasses

    from .config import QuantSpec

    return dataclasses.replace(config, quant=QuantSpec())


def grid_table(grid: str | Path, overrides: dict[str, Any] | None = None, results_dir: Path | str = RESULTS_DIR,
               footprint_dir: Path | str = FOOTPRINT_DIR, bootstrap: bool = True):
    """One row per configuration of a grid: WER, ΔWER vs fp32 (95% paired bootstrap CI), size, latency.

    Rows whose run failed keep their error; rows not yet run are ``pending``.
    """
    import pandas as pd

    from .metrics import paired_bootstrap_delta
    from .runner import EXPERIMENTS_DIR, expand_grid

    path = Path(grid) if str(grid).endswith(".yml") else EXPERIMENTS_DIR / f"{grid}.yml"
    store, fstore = ResultStore(results_dir), ResultStore(footprint_dir)
    study_cpu = reference_cpu(fstore)
    rows = []
    for job in expand_grid(path, overrides):
        q = job.config.quant
        row: dict[str, Any] = {"configuration": describe_spec(q.to_dict()), "library": LIBRARY_NAMES[q.library],
                               "scheme": q.scheme, "weights": q.weights, "bits": q.bits,
                               "granularity": q.granularity or "default", "group_size": q.group_size,
                               "scope": q.scope, "proj_out": q.proj_out, "slug": job.slug}
        summary = store.load(job.slug) if store.exists(job.slug) else None
        row["status"] = summary["status"] if summary else "pending"
        row["error"] = (summary or {}).get("error")
        row["older decoding"] = bool(summary and is_outdated(summary))
        if summary and summary["status"] == "ok":
            base_slug = baseline_config(job.config).slug
            base_rows = store.load_rows(base_slug) if store.exists(base_slug) else []
            q_rows = store.load_rows(job.slug)
            for split, m in summary["metrics"].items():
                col = SPLIT_COLUMNS.get(split, f"WER {split}")
                row[col] = m["wer"]
                row[f"RTFx {split.split('-')[1]}"] = m["rtfx"]
                b = [r for r in base_rows if r["split"] == split]
                o = [r for r in q_rows if r["split"] == split]
                if bootstrap and b and [r["id"] for r in b] == [r["id"] for r in o] and not q.is_baseline:
                    d = paired_bootstrap_delta(b, o)
                    row[f"Δ{col}"] = d["delta"]
                    row[f"Δ{col} low"], row[f"Δ{col} high"] = d["ci_low"], d["ci_high"]
                    row[f"Δ{col} CI"] = f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"
            row["base MB"] = summary["size"]["stored_bytes"] / 1e6
            row["encoder cosine"] = summary.get("encoder_cosine_jfk")
            row["weight error"] = (summary.get("quantization", {}).get("weight_error") or {}).get("mean")
        fp = fstore.load(job.footprint_slug) if job.footprint and fstore.exists(job.footprint_slug) else None
        row["footprint"] = fp["status"] if fp else "pending"
        if fp and fp["status"] == "ok":
            row["small MB"] = fp["size"]["stored_bytes"] / 1e6
            row["compression %"] = fp["size"]["compression_pct"]
            row["latency s"] = fp["latency"]["median"]
            row["latency ratio"] = fp["latency_ratio"]
            row["latency CPU"] = result_cpu(fp)
            row["other CPU"] = row["latency CPU"] != study_cpu
        elif fp:
            row["error"] = row["error"] or fp.get("error")
        rows.append(row)
    return pd.DataFrame(rows)


DISPLAY_COLUMNS = ["configuration", "status", "WER clean", "ΔWER clean", "ΔWER clean CI", "WER other", "ΔWER other",
                   "ΔWER other CI", "small MB", "compression %", "latency ratio", "error"]


OLDER_DECODING_MARK = " ‡"
OTHER_CPU_MARK = " §"


def display_table(df, columns: Iterable[str] = DISPLAY_COLUMNS):
    """Rounded, readable view of :func:`grid_table` (missing values blank, long errors cut).

    A row decoded with the older recipe (transformers' seek loop) ends its name in ``‡``; a row whose
    latency was timed on another CPU class than the study's (not comparable) ends it in ``§``.
    """
    cols = [c for c in columns if c in df.columns]
    view = df[cols].copy()
    if "configuration" in view:
        for flag, mark in (("older decoding", OLDER_DECODING_MARK), ("other CPU", OTHER_CPU_MARK)):
            if flag in df:
                view["configuration"] = view["configuration"] + df[flag].map({True: mark}).fillna("")
    for c in view.columns:
        if view[c].dtype.kind == "f":
            view[c] = view[c].round(2)
    if "error" in view:
        view["error"] = view["error"].fillna("").map(lambda e: (e[:140] + "…") if len(e) > 140 else e)
    return view.fillna("").set_index("configuration").rename_axis(None)  # one header row


def cpu_classes(results_dir: Path | str = RESULTS_DIR, footprint_dir: Path | str = FOOTPRINT_DIR):
    """Finished WER runs and footprints per CPU class, and glue-ready facts.

    Facts: ``study_cpu`` (the class most footprints were timed on) and ``rtfx_change``, a sentence on
    how the fp32 WER run's test-other RTFx moved when it was re-run on another class (if it was).
    """
    import pandas as pd
    from collections import Counter

    from .config import RunConfig

    store, fstore = ResultStore(results_dir), ResultStore(footprint_dir)
    counts = {name: Counter(result_cpu(x) for x in st.summaries() if x.get("status") == "ok")
              for name, st in (("WER runs", store), ("footprints (latency)", fstore))}
    table = pd.DataFrame(counts).fillna(0).astype(int).rename_axis("CPU class")
    study = reference_cpu(fstore) or "unknown"
    slug = RunConfig().slug
    before = store.older_decoding().get(slug)
    now = store.load(slug) if store.exists(slug) else None
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
    from statistics import median

    import pandas as pd

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
            ratios.setdefault(describe_spec(x["quant"]), {})[f"latency ratio ({label})"] = x["latency_ratio"]
            fp32_seconds.setdefault(label, []).append(x["fp32_latency"]["median"])
            spreads.setdefault(label, {})[describe_spec(x["quant"])] = timing_spread_pct(x)
    second = {describe_spec(x["quant"]) for st in stores[1:] for x in st.summaries()}
    table = pd.DataFrame.from_dict(ratios, orient="index").loc[sorted(second & set(ratios))]
    study = reference_cpu(stores[0])
    table = table[sorted(table.columns, key=lambda c: c != f"latency ratio ({study})")].round(2)  # study's first
    labels = [c[len("latency ratio ("):-1] for c in table.columns]
    faster = {k: ", ".join(table.index[table[f"latency ratio ({k})"] < 0.95]) or "none" for k in labels}
    facts = {"cpu_classes_compared": " and ".join(labels),
             "cpu_fp32_seconds": ", ".join(f"{median(fp32_seconds[k]):.1f} s on {k}" for k in labels),
             "cpu_faster": "; ".join(f"on {k}: {v}" for k, v in faster.items()),
             "cpu_spread": ", ".join(f"{median([spreads[k][c] for c in table.index]):.0f}% on {k}" for k in labels)}
    return table.rename_axis(None), facts


def reference_footprint(footprint_dir: Path | str = FOOTPRINT_DIR) -> dict[str, Any]:
    """The fp32 whisper-small footprint: the timing every latency ratio pairs with, on the study's CPU class."""
    from .footprint import footprint_slug

    return ResultStore(footprint_dir).load(footprint_slug(QuantSpec(), "footprint:whisper-small"))


def baseline_summary(results_dir: Path | str = RESULTS_DIR, slug: str | None = None) -> dict[str, Any]:
    from .config import RunConfig

    return ResultStore(results_dir).load(slug or RunConfig().slug)


def per_utterance(slug: str, results_dir: Path | str = RESULTS_DIR):
    """Per-utterance errors of one run, worst first."""
    import pandas as pd

    df = pd.DataFrame(ResultStore(results_dir).load_rows(slug))
    if df.empty:
        return df
    df["errors"] = df["substitutions"] + df["deletions"] + df["insertions"]
    df["WER"] = 100 * df["errors"] / df["ref_words"]
    return df.sort_values(["errors", "WER"], ascending=False)


def split_breakdown(summary: dict[str, Any]):
    import pandas as pd

    rows = []
    for split, m in summary["metrics"].items():
        rows.append({"split": split, "utterances": m["utterances"], "audio min": m["audio_seconds"] / 60,
                     "reference words": m["ref_words"], "substitutions": m["substitutions"],
                     "deletions": m["deletions"], "insertions": m["insertions"], "WER": m["wer"], "RTFx": m["rtfx"],
                     "encoder share of time": m["encoder_seconds"] / m["wall_seconds"]})
    return pd.DataFrame(rows).set_index("split").round(2)


def environment_table(summary: dict[str, Any]):
    """Where a result was measured: versions, CPU, threads, commit, model and data hashes."""
    import pandas as pd

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


def all_footprints(footprint_dir: Path | str = FOOTPRINT_DIR):
    """Every footprint result (ok and failed) as a table.

    ``CPU`` is the class of CPU each latency was timed on; ``other CPU`` flags the rows timed on another class
    than most (:func:`lib.results.reference_cpu`), whose latency ratios are not comparable with the rest.
    """
    import pandas as pd

    rows = []
    for s in ResultStore(footprint_dir).summaries():
        q = s["quant"]
        row = {"configuration": describe_spec(q), "library": LIBRARY_NAMES[q["library"]], "status": s["status"],
               "scheme": q["scheme"], "bits": weight_bits(q["weights"]), "CPU": result_cpu(s), "error": s.get("error")}
        if s["status"] == "ok":
            row.update(_latency_split(s))
            row.update({"small MB": s["size"]["stored_bytes"] / 1e6, "compression %": s["size"]["compression_pct"],
                        "latency s": s["latency"]["median"], "latency min s": s["latency"]["min"],
                        "fp32 latency s": s["fp32_latency"]["median"], "latency ratio": s["latency_ratio"],
                        "serialized MB": (s["size"]["serialized"]["bytes"] or float("nan")) / 1e6,
                        "timing spread %": timing_spread_pct(s),
                        "load (1 min) at end": (s.get("load_average_end") or [float("nan")])[0]})
        rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else ["configuration", "library", "status", "bits", "CPU", "error"])
    df["other CPU"] = (df["status"] == "ok") & (df["CPU"] != reference_cpu(ResultStore(footprint_dir)))
    if not df.empty:
        df["_order"] = df["library"].map({LIBRARY_NAMES[k]: i for i, k in enumerate(LIBRARY_ORDER)})
        df = df.sort_values(["_order", "bits", "configuration"], ascending=[True, False, True]).drop(columns="_order")
    return df


NOISY_SPREAD_PCT = 10.0  # max/min of three identical forced-length runs; quiet runs here stay within ~7%


def timing_spread_pct(summary: dict[str, Any]) -> float:
    """The larger max/min spread, in %, of the fp32 and quantized latency samples of one footprint run.

    >>> round(timing_spread_pct({"latency": {"samples": [8.0, 8.1, 8.2]}, "fp32_latency": {"samples": [8.3, 9.5, 9.6]}}), 1)
    15.7
    """
    from .metrics import spread_pct

    return max(spread_pct(summary[key]["samples"]) for key in ("latency", "fp32_latency"))


def _latency_split(summary: dict[str, Any]) -> dict[str, float]:
    """Median encoder and decoder (32 tokens) seconds, each as a ratio to the paired fp32 run.

    >>> lat = {"samples": [10.0, 11.0, 12.0], "encoder_samples": [4.0, 4.0, 5.0]}
    >>> _latency_split({"latency": lat, "fp32_latency": {"samples": [8.0], "encoder_samples": [2.0]}})
    {'encoder s': 4.0, 'decoder s': 7.0, 'encoder ratio': 2.0, 'decoder ratio': 1.1666666666666667}
    """
    import statistics

    def split(latency):
        enc = latency.get("encoder_samples") or []
        if len(enc) != len(latency.get("samples", [])) or not enc:
            return float("nan"), float("nan")
        return statistics.median(enc), statistics.median(t - e for t, e in zip(latency["samples"], enc))

    enc, dec = split(summary["latency"])
    fp32_enc, fp32_dec = split(summary.get("fp32_latency") or summary["latency"])
    return {"encoder s": enc, "decoder s": dec, "encoder ratio": enc / fp32_enc, "decoder ratio": dec / fp32_dec}


def chapter_table(grid: str, limit: int | None = None, run_missing: bool = False, footprint: bool = True,
                  **filters: Any):
    """The table behind a chapter: its grid's results, optionally with a ``limit`` and filters.

    ``run_missing`` runs configurations that have no result yet (through the
    papermill runner), so a reader can re-execute a chapter with new
    parameters; ``footprint=False`` makes those runs WER-only.  ``filters`` keep rows whose column equals the value, e.g.
    ``group_size=64``.
    """
    overrides = {"limit": limit} if limit else None
    if run_missing:
        from .runner import EXPERIMENTS_DIR, run_grids

        # the fp32 run with the same overrides is what ΔWER compares against
        report = run_grids([EXPERIMENTS_DIR / "baseline.yml", EXPERIMENTS_DIR / f"{grid}.yml"], overrides=overrides,
                           footprint=footprint)
        print(report.text())
    df = grid_table(grid, overrides)
    for column, value in filters.items():
        if value is not None:
            df = df[df[column].isna() | (df[column] == value)] if column == "group_size" else df[df[column] == value]
    return df.reset_index(drop=True)


def status_counts(df) -> str:
    """``'12 ok, 2 failed, 3 pending'`` for a chapter table, or ``'12 ok (5 ‡ …), 2 failed, 3 pending'``.

    ``‡`` counts the ok rows still decoded with the older recipe (see :data:`lib.transcribe.DECODING`).
    """
    counts = df["status"].value_counts()
    older = int(df["older decoding"].sum()) if "older decoding" in df else 0
    text = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("ok", "failed", "pending"))
    note = f" ok ({older} marked{OLDER_DECODING_MARK}: decoded with the older seek loop, see Setup)"
    return text.replace(" ok", note, 1) if older else text


def pareto_set(df, minimize: Iterable[str] = ("small MB", "latency ratio")):
    """The finished rows that no other finished row beats on every objective at once, smallest first.

    A row is dominated when another is at least as good on all of ``minimize`` and better on one.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"configuration": ["a", "b", "c", "d"], "status": "ok", "small MB": [300, 400, 500, 400],
    ...                    "latency ratio": [1.5, 0.9, 0.9, 1.2]})
    >>> list(pareto_set(df)["configuration"])  # c: b is as fast and smaller; d: b is as small and faster
    ['a', 'b']
    """
    minimize = list(minimize)
    ok = df[(df["status"] == "ok")].dropna(subset=minimize)
    values = ok[minimize].to_numpy(dtype=float)
    keep = [not any((other <= row).all() and (other < row).any() for other in values) for row in values]
    return ok[keep].sort_values(minimize).reset_index(drop=True)


def ship_candidates(df, max_wer_increase: float = 1.0):
    """Configurations within ``max_wer_increase`` WER points of fp32 on test-other (point estimate) that
    no other such configuration beats on both stored size and latency ratio.

    Only latencies timed on the study's CPU class compete (rows marked ``§`` are left out).
    """
    same_cpu = ~df["other CPU"].fillna(False).astype(bool) if "other CPU" in df else True
    return pareto_set(df[(df["ΔWER other"] <= max_wer_increase) & same_cpu])


PROXIES = {"encoder distance": "1 − encoder cosine (JFK clip)", "weight error": "mean relative weight error"}


def proxy_frame(df):
    """Finished quantized rows with the two cheap proxies next to their WER.

    ``encoder distance`` is 1 − the encoder-output cosine against fp32 on the 11 s JFK clip;
    ``weight error`` is the mean relative reconstruction error per layer. A proxy that is exactly zero
    (encoder untouched, or float16 weights, lossless for a model released in float16) is NaN: it ranks
    nothing and has no place on a log axis.
    """
    ok = df[(df["status"] == "ok") & (df["library"] != LIBRARY_NAMES["none"])].copy()
    distance = 1.0 - ok["encoder cosine"].astype(float)
    ok["encoder distance"] = distance.where(distance > 1e-7)
    ok["weight error"] = ok["weight error"].astype(float).where(lambda e: e > 0)
    return ok


def proxy_correlations(df, target: str = "WER other") -> dict[str, Any]:
    """Spearman rank correlation of each proxy with ``target`` over the rows where both exist.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"configuration": list("abcd"), "library": "HQQ", "status": "ok",
    ...                    "encoder cosine": [0.99, 0.98, 0.9, 1.0], "weight error": [0.1, 0.3, 0.2, 0.05],
    ...                    "WER other": [11.0, 12.0, 50.0, 10.5]})
    >>> facts = proxy_correlations(df)
    >>> facts["encoder distance_rho"], facts["encoder distance_n"], facts["weight error_rho"]
    (1.0, 3, 0.8)
    """
    frame = proxy_frame(df)
    facts: dict[str, Any] = {}
    for proxy in PROXIES:
        pair = frame[[proxy, target]].dropna()
        facts[f"{proxy}_rho"] = round(float(pair[proxy].corr(pair[target], method="spearman")), 2) if len(pair) > 2 \
            else float("nan")
        facts[f"{proxy}_n"] = len(pair)
    facts["encoder_blind"] = ", ".join(frame[frame["encoder distance"].isna() & frame["encoder cosine"].notna()]
                                       ["configuration"]) or "none"
    return facts


def failure_mode(substitutions: int, deletions: int, insertions: int) -> str:
    """How a model fails, named after the error type that makes up most of its WER.

    >>> failure_mode(substitutions=40, deletions=5, insertions=900)
    'loops (insertions)'
    >>> failure_mode(substitutions=12, deletions=310, insertions=4)
    'falls silent (deletions)'
    """
    kind = max((substitutions, "substitutions"), (deletions, "deletions"), (insertions, "insertions"))[1]
    return {"substitutions": "wrong words (substitutions)", "deletions": "falls silent (deletions)",
            "insertions": "loops (insertions)"}[kind]


def error_profile(df, min_wer: float = 20.0, results_dir: Path | str = RESULTS_DIR):
    """How the configurations whose WER reaches ``min_wer`` on either split go wrong, both splits pooled.

    From the saved per-utterance rows: substitutions, deletions and insertions as % of reference words
    (they add up to the pooled WER), the output's length against the reference's (normalized words), the
    share of utterances transcribed as nothing, the share that decoded up to the ``max_new_tokens`` cap
    (a repetition loop), and the failure mode that dominates.
    """
    import pandas as pd

    store = ResultStore(results_dir)
    columns = ["configuration", "WER", "substitutions %", "deletions %", "insertions %", "output length %",
               "empty output %", "at token cap %", "failure mode"]
    wer_columns = [c for c in SPLIT_COLUMNS.values() if c in df]
    if df.empty or not wer_columns:
        return pd.DataFrame(columns=columns)
    bad = df[(df["status"] == "ok") & (df[wer_columns].max(axis=1) >= min_wer)]
    records = []
    for _, row in bad.iterrows():
        utterances = store.load_rows(row["slug"])
        if not utterances:
            continue
        cap = store.load(row["slug"])["decoding"]["max_new_tokens"]
        words = sum(u["ref_words"] for u in utterances)
        counts = {k: sum(u[k] for u in utterances) for k in ("substitutions", "deletions", "insertions")}
        empty = 100.0 * sum(not u["hypothesis"].strip() for u in utterances) / len(utterances)
        capped = 100.0 * sum(u.get("text_tokens", 0) >= cap for u in utterances) / len(utterances)
        length = 100.0 * sum(u["hits"] + u["substitutions"] + u["insertions"] for u in utterances) / words
        records.append({"configuration": row["configuration"], "WER": 100.0 * sum(counts.values()) / words,
                        **{f"{k} %": 100.0 * v / words for k, v in counts.items()}, "output length %": length,
                        "empty output %": empty, "at token cap %": capped, "failure mode": failure_mode(**counts)})
    return pd.DataFrame(records, columns=columns).sort_values("WER").reset_index(drop=True)


def highlights(df) -> dict[str, Any]:
    """Headline facts of a chapter table, for glue: counts and the best configuration per split."""
    out: dict[str, Any] = {"counts": status_counts(df) if len(df) else "no configurations"}
    ok = df[df["status"] == "ok"] if len(df) else df
    for col, key in (("WER clean", "clean"), ("WER other", "other")):
        if len(ok) and col in ok and ok[col].notna().any():
            best = ok.loc[ok[col].idxmin()]
            out[f"best_{key}"] = best["configuration"]
            out[f"best_{key}_wer"] = float(best[col])
        else:
            out[f"best_{key}"], out[f"best_{key}_wer"] = "none yet", float("nan")
    return out


def glue_highlights(prefix: str, df) -> dict[str, Any]:
    from myst_nb import glue

    facts = highlights(df)
    for key, value in facts.items():
        glue(f"{prefix}_{key}", value, display=False)
    return facts


GRIDS = ("baseline", "scheme", "granularity", "bitwidth", "scope")


def decoding_changes(results_dir: Path | str = RESULTS_DIR):
    """WER of each refreshed row with the older decoding (archived) and with one ``generate`` call per batch.

    Empty until the sweep has re-run an outdated row with ``--refresh-outdated``.
    """
    import pandas as pd

    store = ResultStore(results_dir)
    rows = []
    for slug, old in store.older_decoding().items():
        new = store.load(slug) if store.exists(slug) else {}
        if new.get("status") != "ok" or is_outdated(new):
            continue
        row = {"configuration": describe_spec(new["config"]["quant"])}
        for split, m in new["metrics"].items():
            if split not in old.get("metrics", {}):
                continue
            col = SPLIT_COLUMNS.get(split, f"WER {split}")
            before, after = old["metrics"][split]["wer"], m["wer"]
            row[f"{col} older"], row[f"{col} one call"], row[f"Δ{col}"] = before, after, after - before
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index("configuration").rename_axis(None).round(2)


def decoding_counts(results_dir: Path | str = RESULTS_DIR) -> dict[str, int]:
    """Finished WER rows of the study by decoding recipe, e.g. ``{'current': 12, 'older': 30}``."""
    from .runner import EXPERIMENTS_DIR, expand_grid

    store = ResultStore(results_dir)
    slugs = {j.slug for g in GRIDS for j in expand_grid(EXPERIMENTS_DIR / f"{g}.yml")}
    states = [store.state(s) for s in slugs]
    return {"current": states.count("ok"), "older": states.count("outdated")}


def study_table(limit: int | None = None):
    """Every configuration of every grid once (first grid wins), for the summary chapter."""
    import pandas as pd

    frames = [grid_table(g, {"limit": limit} if limit else None).assign(chapter=g) for g in GRIDS]
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates("slug").reset_index(drop=True)


COMPACT_COLUMNS = ["configuration", "status", "small MB", "compression %", "WER clean", "WER other", "latency ratio"]


def compact_table(df):
    """The study in one small table (for a terminal or a note): size and latency on whisper-small, WER on base.

    Failed rows keep the last line of their error; pending rows stay blank. Names carry the marks of
    :func:`display_table` (``‡`` older decoding, ``§`` latency timed on another CPU class).
    """
    view = df[[c for c in COMPACT_COLUMNS if c in df.columns]].copy()
    if "configuration" in view:
        view["configuration"] = display_table(df, ["configuration", "status"]).index
    if "error" in df:
        view["reason"] = df["error"].fillna("").map(lambda e: _shorten(e.strip().splitlines()[-1]) if e.strip() else "")
    return view.round(2)


def _shorten(text: str, width: int = 160) -> str:
    """Cut at a word boundary: ``_shorten("a bc def", 5)`` -> ``'a bc…'``."""
    return text if len(text) <= width else text[:width].rsplit(" ", 1)[0] + "…"


def _row(df, slug_part: str):
    hits = df[df["slug"].str.contains(slug_part, regex=False)]
    return hits.iloc[0] if len(hits) else None


def row_facts(df, slug_part: str, prefix: str) -> dict[str, str]:
    """Glue-ready text for one row of a chapter table: WER per split, encoder cosine, latency ratio.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"slug": ["m__quanto-dyn-int8-aint8__t"], "status": ["ok"], "WER clean": [106.951],
    ...                    "WER other": [106.34], "encoder cosine": [0.52247], "latency ratio": [9.375]})
    >>> row_facts(df, "__quanto-dyn-int8-aint8__", "qd")["qd_wer_clean"]
    '106.95'
    >>> row_facts(df, "__absent__", "x")["x_wer_clean"]
    'pending'
    """
    row = _row(df, slug_part)
    ok = row is not None and row["status"] == "ok"
    fields = {"wer_clean": ("WER clean", "{:.2f}"), "wer_other": ("WER other", "{:.2f}"),
              "cosine": ("encoder cosine", "{:.3f}"), "latency_ratio": ("latency ratio", "{:.2f}")}
    return {f"{prefix}_{key}": (fmt.format(row[col]) if ok and col in row and row[col] == row[col] else
                                 row["status"] if row is not None and not ok else "pending")
            for key, (col, fmt) in fields.items()}


def _ci_verdict(lo: float, hi: float, better_if_negative: bool = True) -> str:
    if hi < 0:
        return "supported" if better_if_negative else "contradicted"
    if lo > 0:
        return "contradicted" if better_if_negative else "supported"
    return "not resolvable at this sample size"


def _merge_verdicts(verdicts: list[str], disagree: str = "mixed", name_each: bool = True) -> str:
    """One verdict when all agree, else ``disagree`` (naming each verdict unless ``name_each`` is False).

    ``_merge_verdicts(["supported", "supported"])`` -> ``'supported'``;
    ``_merge_verdicts(["supported", "contradicted"])`` -> ``'mixed: supported / contradicted'``.
    """
    if len(set(verdicts)) == 1:
        return verdicts[0]
    return f"{disagree}: " + " / ".join(verdicts) if name_each else disagree


def claims_table(df, results_dir: Path | str = RESULTS_DIR):
    """The paper's claims with a verdict and the evidence from this study's result files."""
    import pandas as pd

    from .metrics import paired_bootstrap_delta

    store = ResultStore(results_dir)
    rows = []
    # The paper's headline: Quanto dynamic int8 improves on fp32. Quanto has two readings of "dynamic"
    # (scheme chapter); torch.ao's dynamic int8 is the other library's answer to the same question.
    readings = [r for s in ("__quanto-dyn-int8-aint8__test", "__quanto-wo-int8__test", "__pt-dyn-int8-aint8-pc__test")
                if (r := _row(df, s)) is not None and r["status"] == "ok" and "ΔWER other low" in df]
    if readings:
        verdicts, parts = [], []
        for r in readings:
            verdicts.append(_merge_verdicts([_ci_verdict(r[f"ΔWER {s} low"], r[f"ΔWER {s} high"])
                                             for s in ("clean", "other")], name_each=False))
            parts.append(f"{r['configuration']}: ΔWER clean {r['ΔWER clean']:+.2f} {r['ΔWER clean CI']}, "
                         f"other {r['ΔWER other']:+.2f} {r['ΔWER other CI']} ({verdicts[-1]})")
        verdict = _merge_verdicts(verdicts)
        evidence = "; ".join(parts) + " (negative = better than fp32)"
    else:
        verdict, evidence = "pending", "no quanto or torch.ao dynamic int8 WER result yet"
    rows.append(("Dynamic int8 (Quanto) improves on the fp32 WER", verdict, evidence))

    dyn = _row(df, "__pt-dyn-int8-aint8-pc__test")
    # static against dynamic int8 (per-channel) for each static recipe: eager requantizes every Linear output,
    # PT2E quantizes Linear inputs only (scheme chapter, "Why torch.ao static collapses")
    statics = [(recipe, r) for recipe, s in (("eager", "__pt-static-int8-aint8-pc-cal4__test"),
                                             ("PT2E", "__pt-static-int8-aint8-pc-cal4-methodpt2e__test"))
               if (r := _row(df, s)) is not None and r["status"] == "ok"]
    if dyn is not None and dyn["status"] == "ok" and statics:
        parts, verdicts = [], []
        for recipe, static in statics:
            split_verdicts, split_parts = [], []
            for split in ("test-clean", "test-other"):
                a = [r for r in store.load_rows(dyn["slug"]) if r["split"] == split]
                b = [r for r in store.load_rows(static["slug"]) if r["split"] == split]
                d = paired_bootstrap_delta(a, b)
                split_verdicts.append(_ci_verdict(d["ci_low"], d["ci_high"], better_if_negative=False))
                split_parts.append(f"{split} {d['delta']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]")
            verdicts.append(_merge_verdicts(split_verdicts, name_each=False))
            parts.append(f"torch.ao {recipe} static − dynamic int8: " + ", ".join(split_parts) + f" ({verdicts[-1]})")
        verdict = _merge_verdicts(verdicts, disagree="depends on the recipe")
        evidence = "per-channel weights; " + "; ".join(parts)
    else:
        verdict, evidence = "pending", "torch.ao static or dynamic int8 has no WER result yet"
    rows.append(("Static quantization is worse than dynamic", verdict, evidence))

    low = [r for r in (_row(df, "__bnb-wo-nf4-double_quant1__"), _row(df, "__hqq-wo-int3-g64__test"))
           if r is not None and r["status"] == "ok"]
    if low:
        parts, verdicts = [], []
        for r in low:
            other_loss = r["ΔWER other low"] > 0
            mainly_other = r["ΔWER other"] > r["ΔWER clean"]
            verdicts.append("supported" if other_loss and mainly_other else
                            "contradicted" if (r["ΔWER clean high"] < 0 and r["ΔWER other high"] < 0)
                            else "not resolvable at this sample size")
            parts.append(f"{r['configuration']}: ΔWER clean {r['ΔWER clean']:+.2f} {r['ΔWER clean CI']}, "
                         f"other {r['ΔWER other']:+.2f} {r['ΔWER other CI']}")
        verdict = _merge_verdicts(verdicts)
        rows.append(("nf4 / int3 lose accuracy mainly on test-other", verdict, "; ".join(parts)))
    else:
        rows.append(("nf4 / int3 lose accuracy mainly on test-other", "pending", "no nf4/int3 WER result yet"))

    # The paper quantizes every nn.Linear (quantize_dynamic), which unties and quantizes proj_out too.
    for claim, target, primary, context in (
            ("Dynamic int8 shrinks the model by 57%", 57.0, ["__pt-dyn-int8-aint8-pc-projout__"],
             ["__pt-dyn-int8-aint8-pc__test"]),
            ("nf4 / int3 shrink the model by up to 71%", 71.0,
             ["__bnb-wo-nf4-double_quant1__", "__hqq-wo-int3-g64__test"], ["__bnb-wo-nf4__test"])):
        found = [r for s in primary if (r := _row(df, s)) is not None and pd.notna(r.get("compression %"))]
        extra = [r for s in context if (r := _row(df, s)) is not None and pd.notna(r.get("compression %"))]
        if found:
            best = max(found, key=lambda r: r["compression %"])
            verdict = "supported" if abs(best["compression %"] - target) <= 2.0 else "contradicted"
        else:
            verdict = "pending"
        evidence = "; ".join(f"{r['configuration']}: {r['compression %']:.1f}% ({r['small MB']:.1f} MB)"
                             for r in found + extra) or "no footprint result yet"
        rows.append((claim, verdict, evidence + (" on the whisper-small architecture" if found + extra else "")))
    return pd.DataFrame(rows, columns=["claim", "verdict", "evidence"]).set_index("claim").rename_axis(None)


def failures(results_dir: Path | str = RESULTS_DIR, footprint_dir: Path | str = FOOTPRINT_DIR):
    """Every failed run (WER or footprint) with its stage and error message."""
    import pandas as pd

    rows = []
    for kind, store in (("WER (whisper-base)", ResultStore(results_dir)), ("footprint", ResultStore(footprint_dir))):
        for s in store.summaries():
            if s.get("status") == "failed":
                quant = s.get("quant") or s["config"]["quant"]
                rows.append({"configuration": describe_spec(quant), "run": kind, "stage": s.get("failed_stage"),
                             "error": (s.get("error") or "")[:300]})
    return pd.DataFrame(rows, columns=["configuration", "run", "stage", "error"]).set_index("configuration")


STATIC_ABLATION_FACTS = ("kernel", "recipe", "inputs", "outputs", "worst_family", "worst_family_cosine",
                         "encoder_wer", "decoder_wer", "calibration", "provenance")


def static_ablation(run_missing: bool = False, results_dir: Path | str | None = None,
                    model: str = "embedded:whisper-base", calibration: int = 4) -> tuple[Any, dict[str, str]]:
    """The static-activation ablation as a table plus preformatted facts for the prose.

    Facts (``static_ablation_*``): the encoder cosine of torch.ao's own kernel, of the emulated recipe, of
    inputs only and of outputs only (all 7-bit), the layer family whose requantized output hurts the
    encoder most, and the calibration WER with outputs requantized in the encoder only / decoder only.  Until the ablation has run (``run_missing`` runs it, ~5 min) the table is None and
    every fact says so.
    """
    import pandas as pd

    from .diagnostics import DIAGNOSTICS_DIR, FAMILIES, HALVES, static_activation_ablation, static_slug

    store, slug = ResultStore(results_dir or DIAGNOSTICS_DIR), static_slug(model, calibration)
    if run_missing and not store.exists(slug):
        static_activation_ablation(model, calibration, results_dir=results_dir)
    if not store.exists(slug) or store.status(slug) != "ok":
        missing = "pending (python -m lib diagnose static-activations)"
        return None, {f"static_ablation_{k}": missing for k in STATIC_ABLATION_FACTS}
    summary = store.load(slug)
    rows = summary["rows"]
    table = pd.DataFrame({"encoder cosine (JFK)": [round(r["encoder_cosine_jfk"], 4) for r in rows],
                          "WER on the calibration utterances": [round(r["wer_calibration"], 1) for r in rows],
                          "JFK transcript": [_shorten(r["hypotheses"][-1], 110) for r in rows]},
                         index=[r["variant"] for r in rows])
    cos = {r["variant"]: r["encoder_cosine_jfk"] for r in rows}
    wer = {r["variant"]: r["wer_calibration"] for r in rows}
    families = {fam: cos[f"inputs + outputs of {fam} only, 7-bit"] for fam in FAMILIES}
    worst = min(families, key=families.get)
    facts = {"kernel": next(v for k, v in cos.items() if "kernel" in k),
             "recipe": cos["inputs + outputs (torch.ao eager recipe), 7-bit"],
             "inputs": cos["inputs only, 7-bit"], "outputs": cos["outputs only, 7-bit"],
             "worst_family": worst, "worst_family_cosine": families[worst],
             **{f"{half}_wer": f"{wer[f'inputs + outputs in the {half} only, 7-bit']:.1f}" for half in HALVES},
             "calibration": ", ".join(summary["calibration"]),
             "provenance": (f"{summary['model_spec']}, torch "
                            f"{summary['environment']['packages'].get('torch')}, data MANIFEST sha256 "
                            f"{str((summary.get('data') or {}).get('manifest_sha256'))[:12]}")}
    facts = {f"static_ablation_{k}": f"{v:.4f}" if isinstance(v, float) else v for k, v in facts.items()}
    return table.rename_axis(None), facts


BENCHMARKS_DIR = RESULTS_DIR / "benchmarks"


def int4_kernel(path: Path | str = BENCHMARKS_DIR / "int4_kernel.json") -> tuple[Any, dict[str, str]]:
    """``benchmarks/int4_kernel.py``'s result as a table plus preformatted facts (``int4_kernel_*``).

    Rows: activation dtype and weight layout; columns: ms and ratio to the fp32 Linear, for a 30 s encoder
    pass (1500 tokens) and one decoder step (1 token). Until the benchmark has run, the table is None and
    every fact says how to run it.
    """
    import pandas as pd

    keys = ("fp32_opaque", "bf16_opaque", "bf16_float", "linear", "provenance")
    path = Path(path)
    if not path.exists():
        return None, {f"int4_kernel_{k}": "pending (benchmarks/int4_kernel.py)" for k in keys}
    result = json.loads(path.read_text())
    rows = pd.DataFrame(result["rows"])
    rows["activations, weights"] = rows["activations"] + " · " + rows["weights"]
    step = {1500: "encoder pass (1500 tokens)", 1: "decoder step (1 token)"}
    table = pd.concat({f"{step[t]} {unit}": rows[rows["tokens"] == t].set_index("activations, weights")[column]
                       for t in step for unit, column in (("ms", "median_ms"), ("× fp32", "ratio_to_fp32"))},
                      axis=1).round(2)

    def ratio(activations: str, weights: str) -> str:
        return f"{table.loc[f'{activations} · {weights}', 'encoder pass (1500 tokens) × fp32']:.1f}"

    env = result["environment"]
    facts = {"fp32_opaque": ratio("float32", "int4 opaque"), "bf16_opaque": ratio("bfloat16", "int4 opaque"),
             "bf16_float": ratio("bfloat16", "float"),
             "linear": f"{result['linear'][0]} → {result['linear'][1]}, group {result['group_size']}",
             "provenance": (f"median of {result['repeats']} after a warm-up, {env['threads']} threads, torch "
                            f"{env['packages'].get('torch')}, torchao {env['packages'].get('torchao')}, "
                            f"commit {str(env.get('git', {}).get('commit'))[:7]}")}
    return table.rename_axis(None), {f"int4_kernel_{k}": v for k, v in facts.items()}


def pt2e_compiled(path: Path | str = BENCHMARKS_DIR / "pt2e_inductor.json") -> tuple[Any, dict[str, str]]:
    """``benchmarks/pt2e_inductor.py``'s result as a table plus preformatted facts (``pt2e_compiled_*``).

    Until the benchmark has run, the table is None and every fact says how to run it.
    """
    import pandas as pd

    from .metrics import spread_pct

    keys = ("int8_vs_fp32", "int8_vs_fp32_compiled", "reference_vs_fp32", "compile_s", "provenance")
    path = Path(path)
    if not path.exists():
        return None, {f"pt2e_compiled_{k}": "pending (benchmarks/pt2e_inductor.py)" for k in keys}
    result = json.loads(path.read_text())
    rows = result["variants"]
    table = pd.DataFrame({"median s": [r.get("median_s") for r in rows.values()],
                          "ratio to fp32 eager": [r.get("ratio_to_fp32_eager") for r in rows.values()],
                          "first call s": [r.get("first_call_s") for r in rows.values()],
                          "error": [r.get("error") for r in rows.values()]}, index=list(rows)).round(2)

    def median(name: str) -> float:
        return rows.get(name, {}).get("median_s", float("nan"))

    int8, env = median("pt2e int8 compiled (freezing)"), result["environment"]
    spread = max((spread_pct(r["samples"]) for r in rows.values() if r.get("samples")), default=float("nan"))
    facts = {"int8_vs_fp32": f"{int8 / median('fp32 eager'):.2f}",
             "int8_vs_fp32_compiled": f"{int8 / median('fp32 compiled'):.2f}",
             "reference_vs_fp32": f"{median('pt2e int8 reference graph') / median('fp32 eager'):.2f}",
             "compile_s": f"{rows.get('pt2e int8 compiled (freezing)', {}).get('first_call_s', float('nan')):.0f}",
             "provenance": (f"{result['model']}, {result['repeats']} interleaved rounds timing each variant once, "
                            f"{env['threads']} threads, torch {env['packages'].get('torch')}, torchao "
                            f"{env['packages'].get('torchao')}, commit {str(env.get('git', {}).get('commit'))[:7]}; "
                            f"the timed runs of each variant lie within {spread:.0f}% of each other")}
    return table.dropna(axis=1, how="all"), {f"pt2e_compiled_{k}": v for k, v in facts.items()}


def _int4_ratios(result: dict[str, Any]) -> dict[str, float]:
    step = {1500: "encoder pass", 1: "decoder step"}
    return {f"{r['activations']} · {r['weights']}, {step[r['tokens']]}": r["ratio_to_fp32"] for r in result["rows"]}


def _pt2e_ratios(result: dict[str, Any]) -> dict[str, float]:
    return {name: r.get("ratio_to_fp32_eager") for name, r in result["variants"].items()}


BENCHMARK_RATIOS = {"int4_kernel": _int4_ratios, "pt2e_inductor": _pt2e_ratios}


def benchmark_by_cpu(name: str, root: Path | str = BENCHMARKS_DIR):
    """A benchmark's time ratios per CPU class, one column each: ``results/benchmarks/<name>.json`` (the study's
    machine) and every ``by-cpu/<class>/<name>.json`` (``--out`` on a machine of another class); None unless
    there are two.

    ``int4_kernel``: each layout's time over the fp32 Linear's; ``pt2e_inductor``: each variant's over fp32 eager.
    """
    import pandas as pd

    root = Path(root)
    paths = [root / f"{name}.json"] + sorted((root / "by-cpu").glob(f"*/{name}.json"))
    columns = {}
    for path in (p for p in paths if p.exists()):
        result = json.loads(path.read_text())
        columns[f"× fp32 ({result_cpu(result)})"] = BENCHMARK_RATIOS[name](result)
    return pd.DataFrame(columns).round(2) if len(columns) > 1 else None


def per_class_text(table, row: str) -> str:
    """One row of :func:`benchmark_by_cpu` as text, e.g. ``'0.92× on AVX2, 0.41× on AVX-512 VNNI'``."""
    return ", ".join(f"{value:.2f}× on {column[len('× fp32 ('):-1]}" for column, value in table.loc[row].items())
