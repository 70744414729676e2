"""Is torchao's CPU int4 kernel fast on this machine? Time one Linear in fp32 and in each int4 layout.

The sweep's torchao int4 rows (default ``opaque`` layout, ``_weight_int4pack_mm_for_cpu``) can take hours
per row where that kernel is slow, e.g. on an AVX2-only CPU. Run this first (quiet machine, ~20 s):

    .venv/bin/python benchmarks/int4_kernel.py            # whisper-base fc1: 512 -> 2048
    .venv/bin/python benchmarks/int4_kernel.py --in-features 768 --out-features 3072   # whisper-small

Rows: 1500 = one 30 s encoder pass (per utterance), 1 = one decoder step. Prints the median time per
layout and its ratio to fp32; it measures, it asserts nothing.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch

from lib import QuantSpec
from lib.quantize.torchao import config_for


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
    a = parser.parse_args()
    from torchao.quantization import quantize_

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    fp32 = torch.nn.Sequential(torch.nn.Linear(a.in_features, a.out_features)).eval()
    models = {"fp32": fp32}
    for layout in ("opaque", "intx"):
        spec = QuantSpec(library="torchao", scheme="weight_only", weights="int4", group_size=a.group_size,
                         options={"layout": layout})
        quantize_(module := copy.deepcopy(fp32), config_for(spec))
        models[f"int4 {layout}"] = module
    print(f"Linear {a.in_features} -> {a.out_features}, group {a.group_size}, {a.threads} threads, "
          f"median of {a.repeats}")
    for rows in (1500, 1):
        x = torch.randn(rows, a.in_features)
        base = median_seconds(fp32, x, a.repeats)
        for name, module in models.items():
            t = median_seconds(module, x, a.repeats)
            print(f"rows {rows:5d}  {name:12s} {t * 1e3:10.2f} ms  {t / base:6.1f}x fp32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
