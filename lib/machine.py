"""The machine a number was measured on: its environment record, its CPU class, and how quiet its CPU was.

One module for what used to be spread over the result store, the footprint and the report:

* :func:`environment` is recorded in every result (Python, packages, CPU, threads, load, git commit);
* :func:`cpu_label` names the CPU class (AVX2, AVX-512 VNNI, AMX, ...) that decides which kernels run;
* :class:`CpuMeter` measures the CPU time other processes used while a timing ran (``/proc/stat`` busy time
  minus this process's own), so a latency is evidence only when its record shows the CPU was quiet
  (:func:`is_quiet`).

>>> cpu_label({"simd": ["avx2", "fma"]})
'AVX2'
"""
from __future__ import annotations

import os
import platform
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from .git import git_commit

TRACKED_PACKAGES = ("torch", "transformers", "optimum-quanto", "hqq", "bitsandbytes", "torchao", "jiwer",
                    "whisper-normalizer", "numpy", "datasets", "soundfile", "scipy",
                    "ctranslate2", "onnxruntime", "onnx", "onnxscript", "openvino", "nncf", "pywhispercpp", "gguf")


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_description() -> dict[str, Any]:
    """CPU model, logical cores and the SIMD flags that decide int8 speed (AVX2/AVX-512/VNNI/AMX)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "", platform.processor()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = sorted(flags & SIMD_FLAGS)
    return {"model": model, "logical_cores": os.cpu_count(), "simd": simd, "machine": platform.machine()}


SIMD_FLAGS = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni",
              "amx_int8", "amx_bf16"}


def cpu_label(cpu: dict[str, Any] | None) -> str:
    """The instruction-set class that decides which int8/bf16 kernels a CPU gets, from a recorded description.

    >>> cpu_label({"simd": ["avx2", "fma"]})
    'AVX2'
    >>> cpu_label({"simd": ["avx2", "avx512_vnni", "avx512f", "fma"]})
    'AVX-512 VNNI'

    Latencies measured on CPUs with different labels are not comparable.
    """
    simd = set((cpu or {}).get("simd") or [])
    if "amx_int8" in simd:
        return "AMX"
    if "avx512f" in simd:
        return "AVX-512 VNNI" if "avx512_vnni" in simd else "AVX-512"
    if "avx2" in simd:
        return "AVX2 VNNI" if "avx_vnni" in simd else "AVX2"
    return "no AVX2" if cpu else "unknown"


def result_cpu(summary: dict[str, Any]) -> str:
    """:func:`cpu_label` of the machine a result was measured on."""
    return cpu_label((summary.get("environment") or {}).get("cpu"))


def reference_cpu(store) -> str | None:
    """The CPU label most finished results in ``store`` were measured on (ties: the first in name order).

    The report compares latencies on this CPU only; a footprint measured elsewhere is re-measured when the
    sweep next runs on it (``--refresh-outdated``).
    """
    counts = Counter(result_cpu(s) for s in store.summaries() if s.get("status") == "ok")
    return counts.most_common(1)[0][0] if counts else None


def environment(threads: int) -> dict[str, Any]:
    """Everything a reader needs to know about where a number was measured."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_description(),
            "threads": threads, "load_average_1_5_15": load,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "packages": package_versions(), "git": git_commit()}


#: A timing whose window saw other processes use more than this share of the machine's CPU time is not
#: evidence: on 2 cores, 5% is a tenth of a core for the window (a shell, a git commit), while a second sweep
#: or a test run takes 30-50%. Chosen from the records: quiet windows here read 0-2%, shared ones 20% and up.
QUIET_SHARE = 0.05
#: interleaved fp32/configuration pairs a latency ratio needs, at least
MIN_PAIRS = 10


def cpu_busy_seconds() -> float | None:
    """CPU seconds all processes on this machine have been busy since boot (``/proc/stat``: user, nice, system,
    irq, softirq and steal; not idle or iowait), or None where there is no ``/proc/stat``."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """The CPU time other processes used during a window, as a share of the machine's CPU time.

    >>> meter = CpuMeter()
    >>> reading = meter.read()
    >>> sorted(reading)
    ['foreign_cpu_seconds', 'foreign_cpu_share', 'own_cpu_seconds', 'wall_seconds']
    """

    def __init__(self):
        self.cores = os.cpu_count() or 1
        self.start()

    def start(self) -> None:
        self.wall, self.busy, self.own = time.perf_counter(), cpu_busy_seconds(), time.process_time()

    def read(self) -> dict[str, float | None]:
        """``foreign_cpu_seconds`` (busy time of everything but this process), ``foreign_cpu_share`` (of
        ``wall_seconds`` x cores), ``own_cpu_seconds`` and ``wall_seconds`` since :meth:`start`."""
        wall, busy, own = time.perf_counter() - self.wall, cpu_busy_seconds(), time.process_time() - self.own
        if busy is None or self.busy is None:
            return {"foreign_cpu_seconds": None, "foreign_cpu_share": None, "own_cpu_seconds": own,
                    "wall_seconds": wall}
        foreign = max(0.0, (busy - self.busy) - own)
        return {"foreign_cpu_seconds": foreign, "foreign_cpu_share": foreign / (wall * self.cores) if wall else None,
                "own_cpu_seconds": own, "wall_seconds": wall}


def is_quiet(timing: dict[str, Any] | None) -> bool:
    """Whether a recorded timing is evidence: it has at least :data:`MIN_PAIRS` pairs and a recorded foreign CPU
    share at most :data:`QUIET_SHARE`. A record from before the share was kept is not evidence.

    >>> is_quiet({"pairs": 10, "foreign_cpu_share": 0.01}), is_quiet({"pairs": 10, "foreign_cpu_share": 0.2})
    (True, False)
    >>> is_quiet({"pairs": 5, "load_average_before": [4.8, 3.0, 2.0]})
    False
    """
    timing = timing or {}
    share = timing.get("foreign_cpu_share")
    return share is not None and share <= QUIET_SHARE and (timing.get("pairs") or 0) >= MIN_PAIRS


def quiet_text(timing: dict[str, Any] | None) -> str:
    """How quiet a timing's CPU was, in words made from its record, e.g.
    ``'other processes used 1.2% of the CPU during its 10 pairs'`` or ``'foreign CPU time not recorded'``.

    >>> quiet_text({"pairs": 10, "foreign_cpu_share": 0.012})
    'other processes used 1.2% of the CPU during its 10 pairs'
    """
    timing = timing or {}
    share = timing.get("foreign_cpu_share")
    if share is None:
        return f"foreign CPU time not recorded ({timing.get('pairs') or '?'} pairs)"
    return f"other processes used {100 * share:.1f}% of the CPU during its {timing.get('pairs')} pairs"
