"""Latency on a second CPU class: the study's footprint runs for a few headline configurations, repeated on
this machine when it is of another CPU class than the one the report's latencies come from.

Int8 and bf16 kernels follow the instruction set (AVX2 has no int8 dot-product instruction; AVX-512 VNNI
has one), so a latency ratio measured on one class says little about another. The sweep compares latencies
on one class only (the class most footprints were timed on); this script records the same measurement
(``lib.footprint.measure_footprint``: 30 s encoder pass + 32 forced tokens on whisper-small, fp32 and the
configuration interleaved in one process, median of per-pair ratios with a bootstrap interval) on the machine it runs on, into
``results/footprint/by-cpu/<class>/``, cached per configuration like the sweep. The Footprint chapter puts
the two classes side by side. A configuration already timed here is kept only when its record passes the quiet
rule (:func:`lib.machine.is_quiet`: at least 10 pairs, other processes under 5% of the CPU); otherwise it is
timed again. Run it with the sweep paused (``touch logs/sweep.pause``, or stop it), ~2-4 min per configuration:

    .venv/bin/python benchmarks/cpu_class_latency.py                 # the headline configurations
    .venv/bin/python benchmarks/cpu_class_latency.py --only hqq      # a subset
    .venv/bin/python benchmarks/cpu_class_latency.py --list          # what it would run

It measures, it asserts nothing.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lib.footprint import FOOTPRINT_DIR, by_cpu_dir, measure_footprint
from lib.grids import expand_grid, grid_path
from lib.machine import cpu_description, cpu_label, is_quiet, quiet_text, reference_cpu
from lib.results import ResultStore

# One row per library and scheme the report's conclusions lean on (slug substrings, matched in order).
HEADLINE = ["pt-dyn-int8-aint8-pc__", "pt-dyn-float16", "torchao-dyn-int8-aint8", "torchao-wo-int8",
            "bnb-dyn-int8-aint8-threshold6", "bnb-wo-nf4__", "quanto-wo-int8", "hqq-wo-int4-g64__",
            "torchao-wo-int4-g64-computebf16", "pt-static-int8-aint8-pc-enconly-cal4-methodpt2e",
            "quanto-dyn-int8-aint8",
            # deployment runtimes: the plain bf16 cast, each runtime's own reference and its int8 / 4-5-bit rows
            "torch_cast-bfloat16", "ct2-fp32", "ct2-dyn-int8-aint8__", "ct2-dyn-int8-aint8-floatfloat32", "ort-fp32",
            "ort-dyn-int8-aint8-pc", "ort-wo-int4-g32", "ort-wo-int4-g128",
            "ov-fp32__", "ov-wo-int8-pc-sym1", "ov-wo-int4-g128-sym1", "ov-fp32-precisionbf16",
            "ov-wo-int8-pc-precisionbf16-sym1", "ggml-float16__", "ggml-dyn-int8-aint8-g32__",
            "ggml-dyn-int5-aint8-g32__", "ggml-dyn-int4-aint8-g32__",
            # whisper.cpp built for the CPU it runs on (GGML_NATIVE): its f16, Q8_0, Q4_0 and the k-quant Q4_K
            "ggml-float16-buildnative", "ggml-dyn-int8-aint8-g32-buildnative", "ggml-dyn-int4-aint8-g32-buildnative__",
            "ggml-dyn-int4-aint8-g256-buildnative",
            # can calibration rescue 3 bits? the calibration-free rows the calibrated ones are read against (an
            # importance matrix changes a k-quant's values, not its kernel)
            "hqq-wo-int3-g64__", "ggml-dyn-int3-aint8-g256-buildnative__", "ggml-dyn-int2-aint8-g256-buildnative__",
            # static int8 calibrated as users calibrate it (64 utterances, cross-fitted): OpenVINO's works
            "ov-static-int8-aint8-cal64-xspk2__"]
GRIDS = ["scheme", "granularity", "bitwidth", "scope", "runtimes"]


def headline_jobs(only: str | None = None):
    jobs = {j.slug: j for g in GRIDS for j in expand_grid(grid_path(g)) if j.footprint}
    picked = [next(j for slug, j in jobs.items() if key in slug) for key in HEADLINE]
    return [j for j in picked if not only or only in j.slug]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="substring a slug must contain")
    parser.add_argument("--list", action="store_true", help="print the configurations and exit")
    parser.add_argument("--skip", action="append", default=[], metavar="SUBSTR",
                        help="leave out configurations whose slug contains this (repeatable)")
    parser.add_argument("--force", action="store_true", help="re-measure configurations already measured here")
    parser.add_argument("--retries", type=int, default=1,
                        help="measure again when a timing fails the quiet rule (lib.machine.is_quiet)")
    a = parser.parse_args(argv)
    here, study = cpu_label(cpu_description()), reference_cpu(ResultStore(FOOTPRINT_DIR))
    jobs = [j for j in headline_jobs(a.only) if not any(k in j.slug for k in a.skip)]
    if a.list:
        print("\n".join(j.footprint_slug for j in jobs))
        return 0
    if here == study:
        print(f"this machine is {here}, the class the report's latencies already come from: nothing to add")
        return 0
    out = by_cpu_dir(here)
    print(f"timing {len(jobs)} configurations on {here} (the study's latencies are {study}) into {out}", flush=True)
    store = ResultStore(out)
    for job in jobs:
        stored = store.get(job.footprint_slug)
        if stored and not a.force and (stored.get("status") != "ok" or is_quiet(stored.get("timing"))):
            print(f"{job.footprint_slug}: kept ({quiet_text(stored.get('timing'))})", flush=True)
            continue
        for attempt in range(1 + a.retries):  # a timing that fails the quiet rule is measured again
            s = measure_footprint(job.config.quant, model=job.footprint_model, results_dir=out, force=True)
            if s.get("status") != "ok" or is_quiet(s.get("timing")):
                break
        ratio = (f"{s['latency_ratio']:.2f} [{s['latency_ratio_low']:.2f}, {s['latency_ratio_high']:.2f}], "
                 f"{quiet_text(s.get('timing'))}" if s.get("status") == "ok"
                 else f"{s.get('outcome') or 'failed'}: {s.get('error', '')[:80]}")
        print(f"{job.footprint_slug}: latency ratio {ratio}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
