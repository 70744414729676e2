"""Peak resident memory of one configuration on the whisper-small architecture: what an edge deployer budgets.

Each measurement runs in a fresh Python process (``python -m lib.memory``), so nothing an earlier
configuration left behind counts. In it: the libraries are imported and the process's resident set is read
(``baseline_mb``: Python, torch and transformers); the configuration is built and quantized the way the
footprint is (:func:`lib.footprint.measure_footprint`), the fp32 source is freed and handed back to the kernel
(``malloc_trim``), and the kernel's high-water mark is reset (``/proc/self/clear_refs`` 5); then one encoder pass over 30 s plus a forced decode
of :data:`lib.footprint.FORCED_TOKENS` tokens runs. ``loaded_mb`` is the resident set with the model in
memory, ``peak_mb`` the high-water mark over the encoder pass and the decode (``VmHWM``), both in MiB.

The quantizing step itself (with its fp32 copy) is not counted: a deployer loads the saved artifact.

>>> _status_mb("VmHWM:\\t  204800 kB\\nVmRSS:\\t  102400 kB\\n", "VmHWM")
200.0
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .config import QuantSpec
from .results import RESULTS_DIR, ResultStore

MEMORY_DIR = RESULTS_DIR / "memory"


def _status_mb(status: str, field: str) -> float:
    """A ``/proc/self/status`` field (kB) in MiB."""
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _read(field: str) -> float:
    return _status_mb(Path("/proc/self/status").read_text(), field)


def _trim() -> None:
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the resident set may still hold freed pages
        pass


def measure_here(spec: QuantSpec, model: str = "footprint:whisper-small", threads: int = 2) -> dict[str, Any]:
    """The measurement itself, in this process (run it in a fresh one: :func:`peak_memory`)."""
    import gc

    import numpy as np
    import torch

    from .footprint import FORCED_TOKENS, time_forced_generate
    from .models import load_model
    from .quantize import quantize
    from .transcribe import features

    import transformers  # noqa: F401  (part of the baseline: every row loads through it)

    torch.set_num_threads(threads)
    baseline = _read("VmRSS")
    loaded = load_model(model, needs_weights=False)
    feats = features(loaded.processor, [np.zeros(16_000 * 30, dtype=np.float32)])
    quantized, _meta = quantize(loaded.model, spec, processor=loaded.processor, measure_error=False,
                                calibration_tokens=8)
    del loaded
    gc.collect()
    _trim()  # hand the freed fp32 weights back to the kernel (glibc keeps freed heap pages resident)
    resident = _read("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from here
    time_forced_generate(quantized, feats, repeats=1, warmup=False)
    return {"baseline_mb": baseline, "loaded_mb": resident, "peak_mb": _read("VmHWM"),
            "forced_tokens": FORCED_TOKENS, "threads": threads}


def peak_memory(spec: QuantSpec, model: str = "footprint:whisper-small", threads: int = 2,
                results_dir: Path | str = MEMORY_DIR, force: bool = False, timeout: float = 1800) -> dict[str, Any]:
    """Measure (or return the stored) peak memory of ``spec`` in a fresh process; a failure is a failed row."""
    from .config import footprint_slug
    from .machine import environment

    store = ResultStore(results_dir)
    slug = footprint_slug(spec, model)
    stored = None if force else store.load_or_none(slug)
    if stored is not None:
        return stored
    summary: dict[str, Any] = {"slug": slug, "kind": "memory", "model_spec": model, "quant": spec.to_dict(),
                               "environment": environment(threads), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    done = subprocess.run([sys.executable, "-m", "lib.memory", json.dumps(spec.to_dict()), model, str(threads)],
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        summary.update(json.loads(lines[-1]), status="ok")
    else:
        from .display import brief_error

        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        summary.update(status="failed", error=brief_error(error), outcome="not offered on this CPU"
                       if "NotOffered" in error else None)
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    store.save(slug, summary)
    return summary


def main(argv: list[str]) -> int:
    spec, model, threads = QuantSpec.from_dict(json.loads(argv[0])), argv[1], int(argv[2])
    print(json.dumps(measure_here(spec, model, threads)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
