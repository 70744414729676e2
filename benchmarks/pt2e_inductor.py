"""What does PT2E static int8 cost once Inductor compiles it? Time whisper-small's encoder on a 30 s input.

The sweep's PT2E rows run the reference graph that ``convert_pt2e`` returns: int8 weights, but every
Linear dequantizes its weight and runs in float32, so their latency says nothing about the compiled path
that ``X86InductorQuantizer`` targets (``torch.compile`` with freezing, which fuses quantize/dequantize
patterns into oneDNN int8 kernels). This compares, on the whisper-small architecture (random weights,
size and speed only):

- fp32 eager, fp32 compiled,
- PT2E int8 reference graph (what the sweep times), PT2E int8 compiled (freezing on).

Run it on a quiet machine (pause the sweep: ``touch logs/sweep.pause``); compiling takes minutes here:

    .venv/bin/python benchmarks/pt2e_inductor.py                 # prints a table, writes results/benchmarks/
    .venv/bin/python benchmarks/pt2e_inductor.py --repeats 9      # more interleaved rounds

It measures, it asserts nothing. A variant that fails (no C++ compiler, an op Inductor cannot lower) is
recorded with its error and the others still run.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
import traceback
from pathlib import Path

# a cold compile every run: Inductor's on-disk cache would otherwise make "first call" depend on earlier runs
COLD_CACHE = "TORCHINDUCTOR_CACHE_DIR" not in os.environ
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-cache-"))

import torch

from lib.models import load_model
from lib.quantize.torch_ao import pt2e_quantize_encoder
from lib.results import RESULTS_DIR, atomic_write_text
from lib.machine import environment


def build_and_warm(build, x) -> tuple[torch.nn.Module, dict]:
    """Build one variant, then call it twice: the first call compiles (where compiled), the second warms up."""
    start = time.perf_counter()
    module = build()
    built = time.perf_counter()
    with torch.no_grad():
        module(x)
        first = time.perf_counter() - built
        module(x)
    return module, {"build_s": built - start, "first_call_s": first}


def time_interleaved(modules: dict, x, repeats: int) -> dict[str, list[float]]:
    """``repeats`` rounds that call every variant once each, so slow drift of the machine's speed (seen here
    as 15% between runs minutes apart) falls on all variants alike instead of on whichever ran last."""
    samples = {name: [] for name in modules}
    with torch.no_grad():
        for _ in range(repeats):
            for name, module in modules.items():
                start = time.perf_counter()
                module(x)
                samples[name].append(time.perf_counter() - start)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (each times every variant)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS_DIR / "benchmarks" / "pt2e_inductor.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    encoder = load_model("footprint:whisper-small", needs_weights=False).model.eval().model.encoder
    features = torch.randn(1, 80, 3000)
    def pt2e_reference():
        converted, _ops = pt2e_quantize_encoder(copy.deepcopy(encoder), features, lambda prepared: prepared(features),
                                                dynamic_batch=False)
        return converted

    def pt2e_compiled():
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # constant-fold and prepack the int8 weights: the documented PT2E path
        return torch.compile(pt2e_reference())

    variants = {"fp32 eager": lambda: encoder, "fp32 compiled": lambda: torch.compile(copy.deepcopy(encoder)),
                "pt2e int8 reference graph": pt2e_reference, "pt2e int8 compiled (freezing)": pt2e_compiled}
    rows, modules = {}, {}
    for name, build in variants.items():
        try:
            modules[name], rows[name] = build_and_warm(build, features)
        except Exception as exc:  # one variant failing never hides the others
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"[:500], "traceback": traceback.format_exc()[-2000:]}
            print(f"{name:32s} FAILED {rows[name]['error']}", flush=True)
    for name, samples in time_interleaved(modules, features, args.repeats).items():
        rows[name].update(median_s=statistics.median(samples), samples=samples)
        print(f"{name:32s} median {rows[name]['median_s']:.3f} s (first call {rows[name]['first_call_s']:.1f} s)",
              flush=True)
    base = rows["fp32 eager"].get("median_s")
    for row in rows.values():
        if base and "median_s" in row:
            row["ratio_to_fp32_eager"] = row["median_s"] / base
    out = {"benchmark": "pt2e_inductor", "model": "footprint:whisper-small (random weights)",
           "input": "encoder, one 30 s input (1 x 80 x 3000 features)", "repeats": args.repeats,
           "timing": "after a compile call and a warm-up call each, rounds that time every variant once",
           "environment": environment(args.threads), "torch_inductor_freezing_for": "pt2e int8 compiled",
           "inductor_cache": "fresh, empty (cold compile)" if COLD_CACHE else os.environ["TORCHINDUCTOR_CACHE_DIR"],
           "variants": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
