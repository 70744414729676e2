"""What the teacher-forced fidelity pass costs next to a WER run of the same configuration, on this machine.

For a few configurations it loads and quantizes whisper-base once, decodes the first ``--limit`` utterances of
each split with the study's recipe (``lib.transcribe.transcribe``) and then runs the fidelity pass
(``lib.fidelity.utterance_fidelity``) on the same utterances, and reports process CPU seconds per utterance
of each and their ratio. The fp32 reference log-probabilities come from the user cache (built on first use and
not counted: a sweep pays for them once, not per configuration). Run it with the sweep paused:

    .venv/bin/python benchmarks/fidelity_cost.py --limit 8 --out results/benchmarks/by-cpu/amx/fidelity_cost.json

It measures, it asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lib.config import QuantSpec
from lib.data import load_split
from lib.results import atomic_write_text
from lib.machine import cpu_description, cpu_label, environment

CONFIGS = [QuantSpec(), QuantSpec(library="hqq", scheme="weight_only", weights="int4", group_size=64),
           QuantSpec(library="torch_ao", scheme="dynamic", weights="int8", activations="int8",
                     granularity="per_channel")]


def measure(spec: QuantSpec, utterances, threads: int = 2) -> dict:
    import torch

    from lib.fidelity import ReferenceCache, utterance_fidelity
    from lib.models import load_model
    from lib.quantize import quantize
    from lib.transcribe import transcribe

    torch.set_num_threads(threads)
    reference = load_model("embedded:whisper-base")
    fp32_rows, _ = transcribe(reference.model, reference.processor, utterances, 8, threads, progress=False)
    cache = ReferenceCache({"model": "embedded:whisper-base", "threads": threads, "cpu": cpu_description()},
                           lambda: reference)
    loaded = load_model("embedded:whisper-base")
    model, _ = quantize(loaded.model, spec, measure_error=False)
    rows, _ = transcribe(model, loaded.processor, utterances, 8, threads, progress=False)
    wer_cpu = sum(r["cpu_seconds"] for r in rows)
    for u, r in zip(utterances, fp32_rows):  # warm the cache (fp32 side) outside the timed part
        utterance_fidelity(reference.model, reference.processor, u, r, cache)
    start = time.process_time()
    fid = [utterance_fidelity(model, loaded.processor, u, r, cache) for u, r in zip(utterances, fp32_rows)]
    fidelity_cpu = time.process_time() - start
    return {"slug": spec.slug,
            "utterances": len(utterances), "wer_cpu_seconds_per_utterance": wer_cpu / len(utterances),
            "fidelity_cpu_seconds_per_utterance": fidelity_cpu / len(utterances),
            "fidelity_model_cpu_seconds_per_utterance": sum(r["cpu_seconds"] for r in fid) / len(fid),
            "ratio": fidelity_cpu / wer_cpu}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=8, help="utterances per split")
    parser.add_argument("--out", default=None)
    a = parser.parse_args(argv)
    utterances = [u for s in ("test-clean", "test-other") for u in load_split(s, a.limit)]
    result = {"cpu_class": cpu_label(cpu_description()), "environment": environment(2),
              "rows": [measure(spec, utterances) for spec in CONFIGS]}
    for r in result["rows"]:
        print(f"{r['slug']}: WER run {r['wer_cpu_seconds_per_utterance']:.2f} CPU-s/utt, fidelity "
              f"{r['fidelity_cpu_seconds_per_utterance']:.2f} CPU-s/utt, ratio {r['ratio']:.2f}", flush=True)
    if a.out:
        atomic_write_text(Path(a.out), json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
