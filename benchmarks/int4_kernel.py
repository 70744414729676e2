"""Is torchao's CPU int4 kernel fast on this machine? Time one Linear in fp32 and in each int4 layout,
with float32 and with bfloat16 activations.

torchao's opaque int4 layout (``_weight_int4pack_mm_for_cpu``) is its CPU recipe, written for bf16 models.
On an AVX2-only CPU it is fast on bf16 activations and very slow on fp32 ones, which is why the sweep's
torchao int4 rows use ``compute=bf16`` (the whole model cast to bf16 before quantizing). Run it on a quiet
machine (pause the sweep: ``touch logs/sweep.pause``), about a minute:

    .venv/bin/python benchmarks/int4_kernel.py            # whisper-base fc1: 512 -> 2048
    .venv/bin/python benchmarks/int4_kernel.py --in-features 768 --out-features 3072   # whisper-small

Rows: 1500 = one 30 s encoder pass (per utterance), 1 = one decoder step. Prints the median time per
layout and its ratio to the fp32 Linear on fp32 activations, and writes results/benchmarks/int4_kernel.json
(read by the Granularity chapter). It measures, it asserts nothing.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from lib import QuantSpec
from lib.quantize.torchao import config_for
from lib.results import RESULTS_DIR, atomic_write_text
from lib.machine import environment


def median_seconds(module, x, repeats: int) -> float:
    with torch.no_grad():
        module(x)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in-features", type=int, default=512)
    parser.add_argument("--out-features", type=int, default=2048)
    parser.add_argument("--group-size", type=int, default=64, choices=(32, 64, 128))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS_DIR / "benchmarks" / "int4_kernel.json"))
    a = parser.parse_args()
    from torchao.quantization import quantize_

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    fp32 = torch.nn.Sequential(torch.nn.Linear(a.in_features, a.out_features)).eval()
    print(f"Linear {a.in_features} -> {a.out_features}, group {a.group_size}, {a.threads} threads, "
          f"median of {a.repeats}")
    rows = []
    for tokens in (1500, 1):
        x = torch.randn(tokens, a.in_features)
        for dtype in (torch.float32, torch.bfloat16):
            for layout in (None, "opaque", "intx"):
                module = copy.deepcopy(fp32).to(dtype)
                if layout is not None:
                    spec = QuantSpec(library="torchao", scheme="weight_only", weights="int4",
                                     group_size=a.group_size, options={"layout": layout})
                    quantize_(module, config_for(spec))
                t = median_seconds(module, x.to(dtype), a.repeats)
                if dtype == torch.float32 and layout is None:
                    base = t  # the first variant: the plain fp32 Linear
                row = {"tokens": tokens, "activations": str(dtype).removeprefix("torch."),
                       "weights": f"int4 {layout}" if layout else "float", "median_ms": 1e3 * t,
                       "ratio_to_fp32": t / base}
                rows.append(row)
                print(f"tokens {tokens:5d}  {row['activations']:9s} {row['weights']:12s} {1e3 * t:10.2f} ms  "
                      f"{t / base:6.1f}x fp32", flush=True)
    out = {"benchmark": "int4_kernel", "linear": [a.in_features, a.out_features], "group_size": a.group_size,
           "repeats": a.repeats, "timing": "median of repeats after one warm-up call, each variant alone",
           "environment": environment(a.threads), "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(a.out), json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
