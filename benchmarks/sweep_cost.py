"""What the sweep costs: CPU-minutes per configuration per 100 utterances, per library family, and the whole
sweep's projected cost on the sample before and after the per-utterance token budget (``lib.decoding``).

It reads the stored results (no model runs): each row records the process CPU seconds of its share of a batch
and how many text tokens it produced. "Before" is what the rows cost as decoded. "After" scales each batch's
decoder time (CPU time less the encoder's share) by how much shorter its longest transcript would have been
under the budget (a batch decodes until its longest row stops); a batch within its budgets costs the same. The projection multiplies each configuration's mean cost per
utterance by the sample's size today (``MANIFEST.tsv``), per CPU class the rows were decoded on.

    .venv/bin/python benchmarks/sweep_cost.py            # table to stdout
    .venv/bin/python benchmarks/sweep_cost.py --out results/benchmarks/sweep_cost.json

It measures, it asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from lib.data import default_data_dir, read_manifest
from lib.decoding import RECIPE
from lib.results import RESULTS_DIR, ResultStore, atomic_write_text
from lib.machine import result_cpu

FAMILIES = {"none": "fp32", "torch_ao": "torch.ao", "torchao": "torchao", "quanto": "quanto", "hqq": "HQQ",
            "bnb": "bitsandbytes"}


def batch_costs(rows: list[dict], bounded: bool) -> float:
    """CPU seconds of a configuration's rows, optionally as if the token budget had applied.

    A batch decodes until its longest row stops, so its decoder time scales with the batch's longest
    transcript: with the budget, with the longest of each row's tokens cut to its budget. The encoder's share
    (timed per batch) does not change.
    """
    from collections import defaultdict

    batches = defaultdict(list)
    for r in rows:
        batches[(r.get("session"), r["split"], r["batch"])].append(r)
    total = 0.0
    for members in batches.values():
        cpu = sum(r["cpu_seconds"] for r in members)
        wall = sum(r.get("wall_seconds", 0.0) for r in members) or cpu
        encoder = min(cpu, sum(r.get("encoder_seconds", 0.0) for r in members) * cpu / wall)
        longest = max(r.get("text_tokens", 0) + 1 for r in members)
        cut = max(min(r.get("text_tokens", 0) + 1, RECIPE.budget(r["audio_seconds"])) for r in members)
        total += encoder + (cpu - encoder) * (cut / longest if bounded else 1.0)
    return total


def sweep_cost(results_dir: Path = RESULTS_DIR) -> dict:
    store = ResultStore(results_dir)
    manifest = read_manifest(default_data_dir()) if default_data_dir() else {}
    sample = sum(1 for e in manifest.values() if e["split"] in ("test-clean", "test-other"))
    per_config, by_family = [], defaultdict(list)
    for summary in store.summaries():
        if summary.get("status") != "ok" or summary.get("config", {}).get("limit"):
            continue
        rows = store.load_rows(summary["slug"])
        if not rows:
            continue
        before = batch_costs(rows, False) / len(rows)
        after = batch_costs(rows, True) / len(rows)
        family = FAMILIES.get(summary["config"]["quant"]["library"], summary["config"]["quant"]["library"])
        entry = {"slug": summary["slug"], "family": family, "cpu": result_cpu(summary), "utterances": len(rows),
                 "cpu_min_per_100_before": before * 100 / 60, "cpu_min_per_100_after": after * 100 / 60}
        per_config.append(entry)
        by_family[family].append(entry)
    families = {f: {"configurations": len(es),
                    "median_cpu_min_per_100_before": statistics.median(e["cpu_min_per_100_before"] for e in es),
                    "median_cpu_min_per_100_after": statistics.median(e["cpu_min_per_100_after"] for e in es),
                    "max_cpu_min_per_100_before": max(e["cpu_min_per_100_before"] for e in es)}
                for f, es in sorted(by_family.items())}
    projection = {"sample_utterances": sample,
                  "cpu_hours_before": sum(e["cpu_min_per_100_before"] for e in per_config) * sample / 100 / 60,
                  "cpu_hours_after": sum(e["cpu_min_per_100_after"] for e in per_config) * sample / 100 / 60,
                  "configurations": len(per_config), "cpu_classes": sorted({e["cpu"] for e in per_config})}
    return {"families": families, "projection": projection, "configurations": per_config}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    a = parser.parse_args(argv)
    result = sweep_cost()
    for family, f in result["families"].items():
        print(f"{family:14s} {f['configurations']:3d} configurations: median {f['median_cpu_min_per_100_before']:6.1f} "
              f"CPU-min / 100 utterances ({f['median_cpu_min_per_100_after']:6.1f} with the token budget), "
              f"max {f['max_cpu_min_per_100_before']:6.1f}")
    p = result["projection"]
    print(f"whole sweep on {p['sample_utterances']} utterances, {p['configurations']} configurations: "
          f"{p['cpu_hours_before']:.1f} CPU-hours before the budget, {p['cpu_hours_after']:.1f} after "
          f"(rows decoded on {', '.join(p['cpu_classes'])})")
    if a.out:
        atomic_write_text(Path(a.out), json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
