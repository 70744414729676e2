"""The deployment-runtimes chapter's comparisons: each runtime against PyTorch fp32 *and* against its own fp32.

A runtime's own fp32 row comes first: before any of its quantized rows is read, its fp32 must agree with
PyTorch fp32 (same WER on both splits, and how many normalized transcripts are identical). Each quantized row
then gets two ΔWERs, with 95% paired intervals resampling speakers: against PyTorch fp32 (what a deployer
compares with) and against the runtime's own fp32 (what the quantization alone costs inside that runtime).

The runtime's reference is its ``weights: fp32`` row; whisper.cpp's f32 cannot run in pywhispercpp (a failed
row, :mod:`lib.runtimes.whisper_cpp`), so its f16 row is its reference, and the PyTorch casts compare with
PyTorch fp32 itself.

>>> own_reference_spec(QuantSpec(library="ctranslate2", scheme="dynamic", weights="int8", activations="int8")).slug
'ct2-fp32'
>>> own_reference_spec(QuantSpec(library="whisper_cpp", weights="float16")).slug
'ggml-float16'
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from .config import QuantSpec
from .display import readable
from .grids import expand_grid, grid_path
from .metrics import normalize
from .results import RESULTS_DIR, ResultStore
from .scoring import common_rows, compare_wer
from .tables import finished, split_tag

GRID = "runtimes"
#: The row each runtime's quantized rows are compared with inside the runtime (see the module docstring).
OWN_REFERENCE = {"ctranslate2": {"weights": "fp32"}, "onnxruntime": {"weights": "fp32"},
                 "openvino": {"weights": "fp32"}, "whisper_cpp": {"weights": "float16"}, "torch_cast": None}


def own_reference_spec(spec: QuantSpec) -> QuantSpec:
    """The runtime's own reference configuration (PyTorch fp32 for the plain casts)."""
    fields = OWN_REFERENCE.get(spec.library)
    return QuantSpec(library=spec.library, **fields) if fields else QuantSpec()


def identical_transcripts(base_rows, other_rows, split: str) -> tuple[int, int]:
    """``(identical, common)``: utterances of ``split`` whose normalized transcripts are the same in both."""
    b, o = common_rows(base_rows, other_rows, split)
    return sum(normalize(x["hypothesis"]) == normalize(y["hypothesis"]) for x, y in zip(b, o)), len(b)


def runtime_comparisons(grid: str = GRID, results_dir: Path | str = RESULTS_DIR) -> pd.DataFrame:
    """One row per configuration of ``grid``: ``reference`` (its own reference's label), ``identical_<t>``
    and ``common_pt_<t>`` (identical normalized transcripts vs PyTorch fp32), ``delta_own_<t>`` with
    ``_low``/``_high`` (against the runtime's own reference, speakers resampled), keyed by ``slug``."""
    store = ResultStore(results_dir)
    out = []
    for job in expand_grid(grid_path(grid)):
        spec = job.config.quant
        ref = dataclasses.replace(job.config, quant=own_reference_spec(spec))
        row: dict[str, Any] = {"slug": job.slug, "reference": readable(ref.quant.label), "reference_slug": ref.slug}
        summary = store.get(job.slug)
        if summary and summary.get("status") == "ok":
            rows = store.load_rows(job.slug)
            pt = store.load_rows(dataclasses.replace(job.config, quant=QuantSpec()).slug)
            own = store.load_rows(ref.slug) if ref.slug != job.slug else []
            for split in job.config.split:
                tag = split_tag(split)
                row[f"identical_{tag}"], row[f"common_pt_{tag}"] = identical_transcripts(pt, rows, split)
                d = compare_wer(own, rows, split) if own else None
                if d:
                    row.update({f"delta_own_{tag}": d["delta"], f"delta_own_{tag}_low": d["low_spk"],
                                f"delta_own_{tag}_high": d["high_spk"]})
        out.append(row)
    return pd.DataFrame(out)


def runtime_table(limit: int | None = None, results_dir: Path | str = RESULTS_DIR) -> pd.DataFrame:
    """The chapter's table: :func:`lib.tables.chapter_table` of the runtimes grid joined with
    :func:`runtime_comparisons`."""
    from .tables import chapter_table

    df = chapter_table(GRID, limit=limit)
    return df.merge(runtime_comparisons(results_dir=results_dir), on="slug", how="left")


def winners(df: pd.DataFrame, cpu_class: str) -> dict[str, Any]:
    """Per goal, the runtime row that wins on ``cpu_class``, by the Summary's own rules (:mod:`lib.ship`):
    ``speed`` (fastest within the accuracy budget, faster than fp32), ``no_loss`` (smallest with no measurable
    loss), ``size`` (smallest that still works), and ``accuracy`` (lowest WER on test-other among the quantized
    rows, with its ΔWER interval)."""
    from .ship import ship_box

    box = ship_box(df, cpu_class)
    ok = finished(df)[lambda d: d["slug"] != d["reference_slug"]]
    ok = ok[ok["delta_wer_other"].notna()] if "delta_wer_other" in ok else ok.iloc[0:0]
    best = ok.sort_values(["delta_wer_other", "configuration"]).iloc[0] if len(ok) else None
    accuracy = ({"configuration": best["configuration"], "slug": best["slug"], "row": best,
                 "reason": "smallest ΔWER against PyTorch fp32 on test-other (matched utterances) among the "
                           "quantized runtime rows"} if best is not None
                else {"configuration": None, "reason": "no quantized runtime row has a result"})
    return {"speed": box["fastest"], "no_loss": box["smallest_no_loss"], "size": box["max_compression"],
            "accuracy": accuracy}


def _interval(d, lo, hi) -> str:
    return f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]" if d == d and lo == lo else ""


def fp32_agreement(df: pd.DataFrame) -> pd.DataFrame:
    """Each runtime's own reference row against PyTorch fp32: WER on both splits beside fp32's, identical
    normalized transcripts, ΔWER with its interval, and teacher-forced agreement where the runtime exposes
    logits."""
    refs = df[df["slug"] == df["reference_slug"]]
    rows = []
    for _, r in refs.iterrows():
        out = {"runtime reference": r["configuration"],
               "status": {"pending": "not run"}.get(r["status"], r["status"])}
        for tag, name in (("clean", "test-clean"), ("other", "test-other")):
            out[f"WER {name}"] = r.get(f"wer_{tag}")
            out[f"PyTorch fp32 WER {name}"] = r.get(f"fp32_wer_{tag}")
            ident, common = r.get(f"identical_{tag}"), r.get(f"common_pt_{tag}")
            out[f"identical transcripts {name}"] = f"{int(ident)} of {int(common)}" if common == common and common else ""
        agree = r.get("agree_other")
        out["top-1 agreement other %"] = (f"{agree:.2f}" if agree == agree and agree is not None else
                                          "no logits" if r["status"] == "ok" else "")
        rows.append(out)
    view = pd.DataFrame(rows).set_index("runtime reference").rename_axis(None)
    return view.round(2).fillna("")


def runtime_view(df: pd.DataFrame, classes: list[str], part: str = "accuracy") -> pd.DataFrame:
    """The chapter's main table in two parts that each fit the page: ``accuracy`` (WER, both ΔWERs with
    intervals, differing transcripts, agreement) and ``cost`` (size on disk, peak resident memory of an encoder
    pass and decode, latency ratio per CPU class, RTFx of the WER run, the failure reason of failed rows)."""
    from .ship import class_column

    rows = []
    for _, r in df.iterrows():
        out = {"configuration": r["configuration"], "MB on disk (whisper-small)": r.get("small_mb"),
               "peak MiB resident (whisper-small)": r.get("peak_mb")}
        for c in classes:
            col = class_column(c)
            v = r.get(col)
            out[f"latency ratio {c}"] = (f"{v:.2f} [{r.get(col + '_low'):.2f}, {r.get(col + '_high'):.2f}]"
                                         + ("" if r.get(col + "_quiet") is True else " ¶")
                                         if v == v and v is not None else "")
        out["WER clean"], out["WER other"] = r.get("wer_clean"), r.get("wer_other")
        out["ΔWER other vs PyTorch fp32"] = _interval(r.get("delta_wer_other", float("nan")),
                                                      r.get("delta_wer_other_low", float("nan")),
                                                      r.get("delta_wer_other_high", float("nan")))
        out["ΔWER other vs own reference"] = _interval(r.get("delta_own_other", float("nan")),
                                                       r.get("delta_own_other_low", float("nan")),
                                                       r.get("delta_own_other_high", float("nan")))
        ident, common = r.get("identical_other"), r.get("common_pt_other")
        out["transcripts unlike PyTorch fp32 (other)"] = (f"{int(common - ident)} of {int(common)}"
                                                          if common == common and common else "")
        agree = r.get("agree_other")
        out["top-1 agree other %"] = f"{agree:.2f}" if agree == agree and agree is not None else ""
        out["RTFx other"] = r.get("rtfx_other")
        out["why it failed"] = _reason(r.get("error")) if r.get("status") == "failed" else ""
        rows.append(out)
    view = pd.DataFrame(rows).set_index("configuration").rename_axis(None)
    cost = (["MB on disk (whisper-small)", "peak MiB resident (whisper-small)"] + [f"latency ratio {c}" for c in classes]
            + ["RTFx other", "why it failed"])
    view = view[[c for c in view.columns if (c in cost) == (part == "cost")]]
    view = view.drop(columns=[c for c in view.columns if (view[c].fillna("") == "").all()])
    return view.round(2).fillna("")


def chapter_facts(df: pd.DataFrame, classes: list[str]) -> dict[str, Any]:
    """Glue values of the chapter: counts, the fp32 agreement headline and, per CPU class, the winners."""
    refs = finished(df)[lambda d: d["slug"] == d["reference_slug"]]
    facts: dict[str, Any] = {
        "rt_rows": len(df), "rt_ok": len(finished(df)),
        "rt_failed": int((df["status"] == "failed").sum()),
        "rt_not_run": int((~df["status"].isin(["ok", "failed"])).sum()),
        "rt_failed_list": "; ".join(f"{r['configuration']}: {_reason(r['error'])}"
                                    for _, r in df[df["status"] == "failed"].iterrows()) or "none",
    }
    floors = [f"{r['configuration']} {r['kld_other']:.2g} nats/token (agreement {r['agree_other']:.1f}%)"
              for _, r in refs.iterrows() if r.get("kld_other") == r.get("kld_other") and r.get("kld_other") is not None]
    facts["rt_fidelity_floor"] = "; ".join(floors) or "no runtime reference has a fidelity pass yet"
    worst = None
    for _, r in refs.iterrows():
        for tag in ("clean", "other"):
            ident, common = r.get(f"identical_{tag}"), r.get(f"common_pt_{tag}")
            if common == common and common:
                share = ident / common
                if worst is None or share < worst[0]:
                    worst = (share, r["configuration"], tag, int(ident), int(common))
    if worst is None:
        facts["rt_fp32_worst"] = "no runtime reference has a result"
    elif worst[0] == 1.0:
        facts["rt_fp32_worst"] = (f"none differs: each of the {len(refs)} runtime references with a result "
                                  f"decodes every utterance to the same normalized transcript as PyTorch fp32")
    else:
        facts["rt_fp32_worst"] = (f"{worst[1]} ({worst[3]} of {worst[4]} test-{worst[2]} transcripts identical to "
                                  f"PyTorch fp32)")
    lines = []
    for c in classes:
        w = winners(df, c)
        parts = []
        for goal, name in (("speed", "speed"), ("size", "size"), ("accuracy", "accuracy")):
            pick = w[goal]
            parts.append(f"{name}: {pick['configuration']}" + _pick_numbers(pick, c) if pick["configuration"]
                         else f"{name}: none ({pick['reason']})")
        lines.append(f"On {c}, " + "; ".join(parts) + ".")
    facts["rt_winners"] = " ".join(lines) or "No runtime row has a latency measurement yet."
    facts["rt_static"] = static_note(df)
    facts["runtime_quiet"] = runtime_quiet(df, classes)
    return facts


def runtime_quiet(df: pd.DataFrame, classes: list[str]) -> str:
    """Per CPU class, how many runtime latencies pass the quiet rule (:func:`lib.machine.is_quiet`), e.g.
    ``'AVX-512 VNNI: 14 of 14 rows; AMX: 0 of 13 rows'``; cells that fail it are marked ¶ and are not evidence."""
    from .machine import MIN_PAIRS, QUIET_SHARE
    from .ship import class_column

    parts = []
    for c in classes:
        col = class_column(c)
        timed = df[df[col].notna()] if col in df else df.iloc[0:0]
        quiet = int((timed.get(col + "_quiet", pd.Series(dtype=bool)) == True).sum())  # noqa: E712
        parts.append(f"{c}: {quiet} of {len(timed)} rows")
    rule = (f"at least {MIN_PAIRS} pairs with other processes at most {100 * QUIET_SHARE:.0f}% of the CPU; "
            "the rest are marked ¶")
    return f"{'; '.join(parts) or 'no row timed yet'} ({rule})"


def static_note(df: pd.DataFrame) -> str:
    """One sentence on the runtimes' static int8 rows next to the same runtime's best dynamic or weight-only
    int8 row (ΔWER on test-other against PyTorch fp32, with intervals).

    >>> df = pd.DataFrame({"library": ["ONNX Runtime"] * 2, "scheme": ["static", "dynamic"],
    ...     "weights": "int8", "status": "ok", "configuration": ["ORT static", "ORT dyn"],
    ...     "delta_wer_other": [15.1, 1.2], "delta_wer_other_low": [12.6, 0.2], "delta_wer_other_high": [18.2, 1.9]})
    >>> static_note(df)
    'ORT static: ΔWER other +15.10 [+12.60, +18.20], where ORT dyn, without calibration, has +1.20 [+0.20, +1.90].'
    """
    ok = finished(df).dropna(subset=["delta_wer_other"])
    static = ok[ok["scheme"] == "static"]
    if static.empty:
        return "No static int8 runtime row has a result yet."
    parts = []
    for _, r in static.iterrows():
        text = f"{r['configuration']}: ΔWER other {_delta(r)}"
        peers = ok[(ok["library"] == r["library"]) & (ok["scheme"].isin(["dynamic", "weight_only"]))
                   & (ok["weights"] == "int8")]
        if len(peers):
            best = peers.loc[peers["delta_wer_other"].idxmin()]
            text += f", where {best['configuration']}, without calibration, has {_delta(best)}"
        parts.append(text)
    return "; ".join(parts) + "."


def _delta(r) -> str:
    return (f"{r['delta_wer_other']:+.2f} [{r['delta_wer_other_low']:+.2f}, {r['delta_wer_other_high']:+.2f}]")


def _reason(error) -> str:
    """A failed row's reason in one line: the last line of its error, cut only at a clause (:func:`brief_error`)."""
    from .display import brief_error

    last = (str(error or "").strip().splitlines() or [""])[-1]
    return brief_error(last.split("; get_supported")[0])


def _pick_numbers(pick: dict[str, Any], cpu_class: str) -> str:
    from .ship import class_column

    r = pick["row"]
    col = class_column(cpu_class)
    bits = []
    if r.get(col) == r.get(col):
        bits.append(f"×{r[col]:.2f} [{r[col + '_low']:.2f}, {r[col + '_high']:.2f}] fp32 latency")
    if r.get("small_mb") == r.get("small_mb"):
        bits.append(f"{r['small_mb']:.0f} MB")
    if r.get("delta_wer_other") == r.get("delta_wer_other"):
        bits.append(f"ΔWER other {r['delta_wer_other']:+.2f} [{r['delta_wer_other_low']:+.2f}, "
                    f"{r['delta_wer_other_high']:+.2f}]")
    return f" ({', '.join(bits)})" if bits else ""


def whisper_cpp_builds(df: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """whisper.cpp's generic wheel (ggml for AVX2 only) against the native build of the same sources, format by
    format: each one's latency ratio to PyTorch fp32 per CPU class (quiet timings only, 95% interval) and the
    native build's time as a share of the wheel's. How much of whisper.cpp's gap is our setup, and how much is
    the runtime.

    >>> from lib.ship import class_column
    >>> df = pd.DataFrame({"configuration": ["whisper.cpp Q4_0", "whisper.cpp Q4_0 (native build)"],
    ...     "slug": ["whisper-base__ggml-dyn-int4-aint8-g32__x", "whisper-base__ggml-dyn-int4-aint8-g32-buildnative__x"],
    ...     class_column("AMX"): [1.2, 0.9], class_column("AMX", "_low"): [1.1, 0.85],
    ...     class_column("AMX", "_high"): [1.3, 0.95], class_column("AMX", "_quiet"): [True, True]})
    >>> whisper_cpp_builds(df, ["AMX"]).iloc[0].tolist()
    ['×1.20 [1.10, 1.30]', '×0.90 [0.85, 0.95]', '75%']
    """
    from .ship import class_column, quiet_timing

    out = {}
    for _, native in df[df["slug"].str.contains("-buildnative", regex=False)].iterrows():
        wheel = df[df["slug"] == native["slug"].replace("-buildnative", "")]
        if wheel.empty:
            continue
        wheel = wheel.iloc[0]
        row = {}
        for c in classes:
            def text(r):
                if not quiet_timing(r, c):
                    return "not timed quietly"
                return (f"×{r[class_column(c)]:.2f} [{r[class_column(c, '_low')]:.2f}, "
                        f"{r[class_column(c, '_high')]:.2f}]")
            row[f"wheel, {c}"], row[f"native, {c}"] = text(wheel), text(native)
            both = quiet_timing(wheel, c) and quiet_timing(native, c)
            row[f"native / wheel, {c}"] = f"{100 * native[class_column(c)] / wheel[class_column(c)]:.0f}%" if both else "–"
        out[wheel["configuration"]] = row
    return pd.DataFrame.from_dict(out, orient="index")


def calibration_source(r) -> str:
    """Where a static row's calibration comes from, in words.

    >>> calibration_source({"slug": "whisper-base__ov-static-int8-aint8-cal64-xspk2__test-clean+test-other"})
    "64, the sample's speakers cross-fitted (2 folds)"
    >>> calibration_source({"slug": "whisper-base__ort-static-int8-auint8-pc-cal4__test-clean+test-other"})
    '4, unscored (dev-clean + jfk)'
    """
    import re

    slug = r["slug"]
    n = re.search(r"-cal(\d+)", slug)
    folds = re.search(r"-xspk(\d+)", slug)
    text = f"{n.group(1) if n else '?'}, " + (f"the sample's speakers cross-fitted ({folds.group(1)} folds)" if folds
                                               else "unscored (dev-clean + jfk)")
    return text + (", SmoothQuant off" if "smooth_quant0" in slug else "")


def calibration_sizes(df: pd.DataFrame) -> pd.DataFrame:
    """Static int8 by calibration size and source, per library (whole-model rows): ΔWER on both splits against
    PyTorch fp32 (95% interval, speakers resampled), KLD and top-1 agreement on test-other; pending rows say so.
    ``df``: the study rows (the Runtimes grid plus the Scheme grid's PT2E rows)."""
    static = df[(df["scheme"] == "static") & (df["scope"] == "all")
                & (df["library"].isin(["ONNX Runtime", "OpenVINO"]) | df["slug"].str.contains("methodpt2e"))]
    size = static["slug"].str.extract(r"-cal(\d+)")[0].astype(float)
    rows = []
    for _, r in static.assign(_size=size).sort_values(["library", "_size", "slug"]).iterrows():
        ok = r.get("status") == "ok"
        out = {"library": "PyTorch PT2E" if "methodpt2e" in r["slug"] else r["library"],
               "calibration utterances": calibration_source(r)}
        for split in ("clean", "other"):
            d = r.get(f"delta_wer_{split}")
            out[f"ΔWER {split} [95% CI]"] = (_interval(d, r[f"delta_wer_{split}_low"], r[f"delta_wer_{split}_high"])
                                             if ok and d == d else r.get("status"))
        kld, agree = r.get("kld_other"), r.get("agree_other")
        out["KLD other"] = f"{kld:.3g}" if ok and kld == kld and kld is not None else ""
        out["top-1 agree other %"] = f"{agree:.1f}" if ok and agree == agree and agree is not None else ""
        rows.append(out)
    return pd.DataFrame(rows).set_index(["library", "calibration utterances"]) if rows else pd.DataFrame()
