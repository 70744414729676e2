"""What the paper's full setting would cost: CPU-hours projected from this machine's measured decoding cost.

Each finished WER result records, per split, the CPU seconds its decoding took and the audio it decoded
(``metrics[split]["cpu_seconds"]``, ``["audio_seconds"]``, summed from its rows). Per configuration family
(``config.quant.library``), CPU-seconds per audio-second is their ratio over every measured configuration of
the family. The projection multiplies it by the family's number of configurations in the study's grids, the
audio of the full test sets and whisper-small's parameter count over the measured model's (decoding cost
grows about linearly with the weights it multiplies; an approximation, stated with the number).

>>> round(cpu_hours(cpu_per_audio=0.5, configurations=10, audio_seconds=3600, model_scale=2.0), 2)
10.0
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

#: Audio of the full LibriSpeech test sets, in seconds (LibriSpeech paper, Table 1: 5.4 h and 5.1 h).
FULL_TEST_AUDIO_SECONDS = {"test-clean": 5.4 * 3600, "test-other": 5.1 * 3600}


def cpu_hours(cpu_per_audio: float, configurations: int, audio_seconds: float, model_scale: float) -> float:
    """CPU-hours of ``configurations`` runs over ``audio_seconds`` of audio at ``cpu_per_audio`` x ``model_scale``."""
    return cpu_per_audio * model_scale * audio_seconds * configurations / 3600


def parameter_count(architecture: str) -> int:
    """Parameters of a Whisper architecture of :data:`lib.models.ARCHITECTURES` (built on the meta device)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from .models import whisper_config

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(whisper_config(architecture))
    return sum(p.numel() for p in model.parameters())  # the tied output projection counts once


def measured_cost(summaries: Iterable[dict[str, Any]], slugs: set[str] | None = None
                  ) -> dict[str, dict[str, float]]:
    """Per library: CPU seconds, audio seconds and configurations measured, over finished results (of ``slugs``).

    >>> s = {"slug": "a", "status": "ok", "config": {"quant": {"library": "hqq"}},
    ...      "metrics": {"test-clean": {"cpu_seconds": 3.0, "audio_seconds": 6.0}}}
    >>> measured_cost([s, {**s, "slug": "b"}], {"a"})
    {'hqq': {'cpu_seconds': 3.0, 'audio_seconds': 6.0, 'configurations': 1}}
    """
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"cpu_seconds": 0.0, "audio_seconds": 0.0,
                                                            "configurations": 0})
    for s in summaries:
        config = s.get("config") or {}
        if s.get("status") != "ok" or (slugs is not None and s.get("slug") not in slugs):
            continue
        family = out[(config.get("quant") or {}).get("library", "none")]
        family["configurations"] += 1
        for m in (s.get("metrics") or {}).values():
            family["cpu_seconds"] += m.get("cpu_seconds") or 0.0
            family["audio_seconds"] += m.get("audio_seconds") or 0.0
    return dict(out)


def projected_full_setting(results_dir: Path | str | None = None, grids: Iterable[str] | None = None,
                           model: str = "embedded:whisper-base", target: str = "whisper-small",
                           audio_seconds: dict[str, float] = FULL_TEST_AUDIO_SECONDS) -> dict[str, Any]:
    """The projected CPU-hours of every grid's configurations on ``target`` and the full test sets.

    Returns ``{"families": [{"library", "configurations", "measured", "cpu_per_audio_second", "cpu_hours"}, ...],
    "total_cpu_hours", "model_scale", "audio_seconds"}``; a family with no measured result takes the study-wide
    ratio (its ``measured`` is 0).
    """
    from .grids import GRIDS, expand_grid, grid_path
    from .results import RESULTS_DIR, ResultStore

    counts: dict[str, set[str]] = defaultdict(set)  # library -> slugs of the study (the grids' union)
    for grid in grids or GRIDS:
        for job in expand_grid(grid_path(grid), {"model": model}):
            counts[job.config.quant.library].add(job.slug)
    measured = measured_cost(ResultStore(results_dir or RESULTS_DIR).summaries(), set().union(*counts.values()))
    cpu = sum(f["cpu_seconds"] for f in measured.values())
    audio = sum(f["audio_seconds"] for f in measured.values())
    overall = cpu / audio if audio else float("nan")
    from .models import parse_model_spec

    scale = parameter_count(target) / parameter_count(parse_model_spec(model)[1])  # e.g. "whisper-base"
    total_audio = sum(audio_seconds.values())
    families = []
    for library in sorted(counts):
        f = measured.get(library)
        ratio = f["cpu_seconds"] / f["audio_seconds"] if f and f["audio_seconds"] else overall
        families.append({"library": library, "configurations": len(counts[library]),
                         "measured": int(f["configurations"]) if f else 0, "cpu_per_audio_second": ratio,
                         "cpu_hours": cpu_hours(ratio, len(counts[library]), total_audio, scale)})
    return {"families": families, "total_cpu_hours": sum(f["cpu_hours"] for f in families), "model_scale": scale,
            "audio_seconds": total_audio, "measured_model": model, "target": target}


def cost_text(projection: dict[str, Any]) -> str:
    """A Markdown table of :func:`projected_full_setting` and its total, as ``python -m lib cost`` prints it."""
    lines = ["| library | configurations | measured | CPU-s per audio-s (measured) | projected CPU-hours |",
             "|---|---:|---:|---:|---:|"]
    for f in projection["families"]:
        lines.append(f"| {f['library']} | {f['configurations']} | {f['measured']} | "
                     f"{f['cpu_per_audio_second']:.3f} | {f['cpu_hours']:,.0f} |")
    lines.append(f"\nTotal: {projection['total_cpu_hours']:,.0f} CPU-hours for {projection['target']} on "
                 f"{projection['audio_seconds'] / 3600:.1f} h of audio (test-clean + test-other), measured on "
                 f"{projection['measured_model']} and scaled by the parameter ratio {projection['model_scale']:.2f}.")
    return "\n".join(lines)
