"""Peak resident memory of the headline configurations (those of ``benchmarks/cpu_class_latency.py``), each in a
fresh process (:mod:`lib.memory`), into ``results/memory/``. Finished rows are skipped.

    .venv/bin/python benchmarks/peak_memory.py            # every headline configuration
    .venv/bin/python benchmarks/peak_memory.py --only ct2 # those whose slug contains "ct2" (repeatable), and fp32
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_class_latency import headline_jobs  # noqa: E402

from lib.config import QuantSpec  # noqa: E402
from lib.memory import peak_memory  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="substring a slug must contain (repeatable)")
    parser.add_argument("--force", action="store_true", help="measure again rows already measured")
    a = parser.parse_args(argv)
    jobs = [job for job in headline_jobs() if not a.only or any(part in job.slug for part in a.only)]
    for spec in [QuantSpec()] + [job.config.quant for job in jobs]:  # fp32 first: every row is read against it
        row = peak_memory(spec, force=a.force)
        numbers = (f"loaded {row['loaded_mb']:.0f} MiB, peak {row['peak_mb']:.0f} MiB (baseline {row['baseline_mb']:.0f})"
                   if row["status"] == "ok" else row.get("error"))
        print(f"{row['slug']}: {numbers}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
