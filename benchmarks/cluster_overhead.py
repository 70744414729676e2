"""Cluster overhead: wall time of a 2-task local Ray cluster over the in-process sweep, same configuration.

On one 2-core machine a cluster cannot be faster: this measures what Ray costs (start-up, a worker process per
task that imports torch and loads and quantizes the model, one extra task for the model's facts), not a
speed-up. The in-process run decodes with 2 threads; the cluster runs 2 shard tasks of 1 thread each (Ray
reserves one CPU per task), so both use the 2 cores. Results go to temporary folders; nothing is kept.

    .venv/bin/python benchmarks/cluster_overhead.py --limit 4          # ~1-2 min on 2 cores
    .venv/bin/python benchmarks/cluster_overhead.py --model test:tiny  # seconds: the overhead alone
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from lib.cluster import connect, decode_on_cluster
from lib.config import RunConfig
from lib.evaluate import evaluate
from lib.grids import Job


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded:whisper-base")
    parser.add_argument("--split", default="test-clean")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--data", default=None, help="LibriSpeech dir (default $LIBRISPEECH_DIR or ../shared)")
    parser.add_argument("--out", default=None, help="also write the report as JSON here")
    a = parser.parse_args()
    config = RunConfig(model=a.model, split=(a.split,), limit=a.limit, batch_size=a.batch_size, threads=2)
    per_task = dataclasses.replace(config, threads=1)
    batches = -(-a.limit // a.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        local = evaluate(config, data=a.data, results_dir=Path(tmp) / "in-process", progress=False, fidelity=False)
        in_process = time.perf_counter() - t0
        t0 = time.perf_counter()
        connect("auto", num_cpus=2)
        started = time.perf_counter() - t0
        t1 = time.perf_counter()
        failed = decode_on_cluster([Job("benchmark", per_task, footprint=False)], results_dir=Path(tmp) / "cluster",
                                   data=a.data, batches_per_shard=max(1, -(-batches // 2)))
        decoding = time.perf_counter() - t1
        cluster = json.loads((Path(tmp) / "cluster" / f"{config.slug}.json").read_text())
    same = (local.get("status") == cluster.get("status") == "ok" and not failed and
            {s: m["wer"] for s, m in local["metrics"].items()} == {s: m["wer"] for s, m in cluster["metrics"].items()})
    report = {"slug": config.slug, "utterances": a.limit, "in_process_seconds": round(in_process, 2),
              "ray_start_seconds": round(started, 2), "cluster_decode_seconds": round(decoding, 2),
              "tasks": cluster["sessions"][-1]["executor"]["tasks"] if not failed else None,
              "ratio_with_start": round((started + decoding) / in_process, 2),
              "ratio_without_start": round(decoding / in_process, 2), "same_wer": same}
    print(json.dumps(report, indent=1))
    print(f"cluster / in-process wall time: {report['ratio_with_start']:.2f}x with Ray start-up, "
          f"{report['ratio_without_start']:.2f}x without (2 tasks of 1 thread vs 2 threads in-process)")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
