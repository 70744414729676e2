"""Readers for the benchmark and diagnostic files: tables plus preformatted facts for the prose.

``results/benchmarks/<name>.json`` come from ``benchmarks/*.py`` (one per kernel question),
``results/diagnostics/`` from ``python -m lib diagnose``. Each reader returns ``(table, facts)``; until its
file exists the table is None and every fact says how to make it.

>>> int4_kernel("no/such/file.json")[1]["int4_kernel_linear"]
'pending (benchmarks/int4_kernel.py)'
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .diagnostics import DIAGNOSTICS_DIR, FAMILIES, HALVES, static_slug
from .display import shorten
from .metrics import spread_pct
from .results import RESULTS_DIR, ResultStore
from .machine import result_cpu


STATIC_ABLATION_FACTS = ("kernel", "recipe", "inputs", "outputs", "worst_family", "worst_family_cosine",
                         "encoder_wer", "decoder_wer", "calibration", "provenance")


def static_ablation(results_dir: Path | str | None = None, model: str = "embedded:whisper-base",
                    calibration: int = 4) -> tuple[Any, dict[str, str]]:
    """The static-activation ablation as a table plus preformatted facts for the prose.

    Facts (``static_ablation_*``): the encoder cosine of torch.ao's own kernel, of the emulated recipe, of
    inputs only and of outputs only (all 7-bit), the layer family whose requantized output hurts the
    encoder most, and the calibration WER with outputs requantized in the encoder only / decoder only.  Until the
    ablation has run (``python -m lib diagnose static-activations``, ~5 min; a chapter runs it with
    ``run_missing``) the table is None and every fact says so.
    """
    store, slug = ResultStore(results_dir or DIAGNOSTICS_DIR), static_slug(model, calibration)
    if store.status(slug) != "ok":
        missing = "pending (python -m lib diagnose static-activations)"
        return None, {f"static_ablation_{k}": missing for k in STATIC_ABLATION_FACTS}
    summary = store.load(slug)
    rows = summary["rows"]
    table = pd.DataFrame({"encoder cosine (JFK)": [round(r["encoder_cosine_jfk"], 4) for r in rows],
                          "WER on the calibration utterances": [round(r["wer_calibration"], 1) for r in rows],
                          "JFK transcript": [shorten(r["hypotheses"][-1], 110) for r in rows]},
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
