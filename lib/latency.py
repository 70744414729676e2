"""A latency ratio as a typed record: the raw per-pair ratios, their interval, and how quiet the CPU was.

A footprint stores it as plain JSON (``summary["timing"]`` plus ``latency_ratio``/``_low``/``_high``); the
report reads it back through :meth:`Latency.from_footprint`, so no table or verdict digs in nested keys.

>>> lat = Latency(ratio=0.5, low=0.49, high=0.55, ratios=(0.5,) * 10, pairs=10, foreign_cpu_share=0.03,
...               cpu_class="AVX-512 VNNI")
>>> lat.quiet, lat.text()
(True, '×0.50 [0.49, 0.55]')
>>> Latency.from_footprint({"status": "ok", "latency_ratio": 1.3, "environment": {"cpu": {"simd": ["avx2"]}},
...                         "latency": {"samples": [1.0, 1.1, 1.2]}}).text()
'×1.30 (median of 3, no interval; not evidence)'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .machine import is_quiet, quiet_text, result_cpu


@dataclass(frozen=True)
class Latency:
    """One configuration's latency against fp32 on one CPU class (median of per-pair ratios, 95% interval)."""

    ratio: float
    low: float
    high: float
    ratios: tuple[float, ...] = ()
    pairs: int = 0
    foreign_cpu_share: float | None = None
    cpu_class: str = "unknown"

    @property
    def has_interval(self) -> bool:
        """Interleaved pairs with an interval (an older footprint stores its ratio as its own bounds)."""
        return bool(self.ratios) and not (self.low == self.high == self.ratio)

    @property
    def quiet(self) -> bool:
        """Evidence: enough pairs on a CPU that other processes left quiet (:func:`lib.machine.is_quiet`)."""
        return is_quiet({"pairs": self.pairs, "foreign_cpu_share": self.foreign_cpu_share})

    def text(self) -> str:
        """``'×0.50 [0.49, 0.55]'``, with a note where the record is not evidence."""
        if not self.has_interval:
            return f"×{self.ratio:.2f} (median of {self.pairs or 3}, no interval; not evidence)"
        note = "" if self.quiet else f" ({quiet_text({'pairs': self.pairs, 'foreign_cpu_share': self.foreign_cpu_share})}; not evidence)"
        return f"×{self.ratio:.2f} [{self.low:.2f}, {self.high:.2f}]{note}"

    @classmethod
    def from_footprint(cls, summary: dict[str, Any]) -> "Latency | None":
        """The latency a footprint result recorded, or None for a failed or unfinished one."""
        if not summary or summary.get("status") != "ok" or summary.get("latency_ratio") is None:
            return None
        timing = summary.get("timing") or {}
        ratio = summary["latency_ratio"]
        ratios = tuple(timing.get("ratios") or ())
        return cls(ratio=ratio, low=summary.get("latency_ratio_low", ratio), high=summary.get("latency_ratio_high", ratio),
                   ratios=ratios, pairs=timing.get("pairs") or len((summary.get("latency") or {}).get("samples") or []),
                   foreign_cpu_share=timing.get("foreign_cpu_share"), cpu_class=result_cpu(summary))
