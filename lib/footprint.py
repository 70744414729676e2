"""Size and forced-length latency on the exact whisper-small architecture.

Size and speed do not depend on weight values, so the paper's model is built
from its config with seeded random weights.  Latency is one encoder pass on a
30 s input plus exactly 32 greedy decoder tokens (``min_new_tokens =
max_new_tokens = 32``), threads fixed.  The fp32 model and the configuration
are timed interleaved (fp32, configuration, fp32, ...) in one process after a
warm-up of each, at least five pairs; the latency ratio is the median of the
per-pair ratios with a bootstrap interval (:func:`time_interleaved`), so a
load that comes and goes on a shared machine hits both sides of a pair.  WER
is never computed here.
"""
from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any

from .checks import check_quant
from .machine import MIN_PAIRS, QUIET_SHARE, CpuMeter, is_quiet
from .config import ConfigError, QuantSpec, footprint_slug
from .data import DataError, calibration_set
from .metrics import serialized_bytes, stored_bytes, summarize_samples
from .models import FIRST_TIMESTAMP, check_model_spec, load_model
from .quantize import quantize
from .results import RESULTS_DIR, ResultStore
from .machine import cpu_label, environment, reference_cpu, result_cpu
from .transcribe import encoder_timer, features, generate

FORCED_TOKENS = 32
PAIRS = MIN_PAIRS  # interleaved fp32/configuration pairs per latency ratio, at least (lib.machine)
MAX_RELATIVE_WIDTH = 0.15  # re-measure while the ratio's 95% interval is wider than 15% of it
FOOTPRINT_DIR = RESULTS_DIR / "footprint"


def _mask_timestamps():
    """A logits processor that forbids timestamp tokens (ids >= 50364).

    Random weights otherwise emit timestamps and generate() starts new
    segments; masking is far cheaper than listing 1501 suppress_tokens.
    """
    import torch
    from transformers import LogitsProcessor

    class MaskTimestamps(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:, FIRST_TIMESTAMP:] = -torch.inf
            return scores

    return MaskTimestamps()


def time_forced_generate(model, input_features, repeats: int, warmup: bool = True) -> dict[str, Any]:
    """Raw wall seconds of encoder + 32 forced tokens, after one warm-up run."""
    import transformers
    from transformers import LogitsProcessorList

    kwargs = dict(max_new_tokens=FORCED_TOKENS, min_new_tokens=FORCED_TOKENS,
                  logits_processor=LogitsProcessorList([_mask_timestamps()]))
    transformers.logging.set_verbosity_error()  # else every call says max_new_tokens overrides Whisper's max_length
    generated = int(generate(model, input_features, **kwargs).shape[-1]) if warmup else None
    samples, encoder = [], []
    with encoder_timer(model) as enc:
        for _ in range(repeats):
            before = enc["seconds"]
            start = time.perf_counter()
            generate(model, input_features, **kwargs)
            samples.append(time.perf_counter() - start)
            encoder.append(enc["seconds"] - before)
    return {"samples": samples, "encoder_samples": encoder, "sequence_length": generated,
            **summarize_samples(samples)}


def time_interleaved(reference, candidate, input_features, pairs: int = PAIRS, max_pairs: int = 3 * PAIRS,
                     max_relative_width: float = MAX_RELATIVE_WIDTH) -> dict[str, Any]:
    """Paired latency on a shared machine: fp32, configuration, fp32, configuration, ... (after a warm-up of
    each), ``pairs`` pairs at least; the ratio is the median of per-pair ratios with a 95% bootstrap interval.

    While the interval is wider than ``max_relative_width`` x the median, ``pairs`` more pairs are added, up
    to ``max_pairs`` (``remeasured`` counts the extra rounds). Process CPU seconds are kept beside wall seconds.
    """
    from .metrics import median_interval

    def one(model):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        timed = time_forced_generate(model, input_features, repeats=1, warmup=False)
        return time.perf_counter() - wall0, time.process_time() - cpu0, timed["encoder_samples"][0]

    time_forced_generate(reference, input_features, repeats=1)  # warm-ups
    generated = time_forced_generate(candidate, input_features, repeats=1)["sequence_length"]
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    runs: dict[str, list] = {"reference": [], "candidate": []}
    pair_shares: list[float | None] = []  # the CPU time other processes used during each pair, as a share
    window, pair_meter = CpuMeter(), CpuMeter()
    rounds = 0
    while True:
        for _ in range(pairs):
            pair_meter.start()
            runs["reference"].append(one(reference))
            runs["candidate"].append(one(candidate))
            pair_shares.append(pair_meter.read()["foreign_cpu_share"])
        ratios = [c[0] / r[0] for r, c in zip(runs["reference"], runs["candidate"])]
        interval = median_interval(ratios)
        width = (interval["high"] - interval["low"]) / interval["median"]
        if width <= max_relative_width or len(ratios) + pairs > max_pairs:
            break
        rounds += 1
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    foreign = window.read()

    def summary(samples):
        wall = [x[0] for x in samples]
        return {"samples": wall, "cpu_samples": [x[1] for x in samples], "encoder_samples": [x[2] for x in samples],
                "sequence_length": generated, **summarize_samples(wall)}

    return {"method": "interleaved pairs", "pairs": len(ratios), "ratios": ratios, "ratio": interval["median"],
            "ratio_low": interval["low"], "ratio_high": interval["high"], "relative_width": width,
            "max_relative_width": max_relative_width, "remeasured": rounds, "load_average_before": load_before,
            "load_average_after": load_after, "foreign_cpu_share": foreign["foreign_cpu_share"],
            "foreign_cpu_seconds": foreign["foreign_cpu_seconds"], "window_seconds": foreign["wall_seconds"],
            "pair_foreign_cpu_shares": pair_shares, "quiet_share_limit": QUIET_SHARE,
            "quiet": is_quiet({"pairs": len(ratios), "foreign_cpu_share": foreign["foreign_cpu_share"]}),
            "fp32": summary(runs["reference"]),
            "configuration": summary(runs["candidate"])}


def measure_footprint(spec: QuantSpec, model: str = "footprint:whisper-small", repeats: int = 3, threads: int = 2,
                      results_dir=None, force: bool = False, data: str | None = None,
                      retry_failed: bool = False, refresh_outdated: bool = False) -> dict[str, Any]:
    """Quantize the random-weight architecture; record stored bytes and paired latency (cached like ``evaluate``).

    ``refresh_outdated`` also re-measures a result whose latency came from another CPU class than the
    study's (:func:`measured_elsewhere`).
    """
    check_quant(spec)
    kind, _name = check_model_spec(model)
    if kind not in ("footprint", "test"):
        raise ConfigError(f"footprint runs on footprint:whisper-small (random weights), not {model!r}")
    if repeats < 3:
        raise ConfigError(f"repeats must be >= 3 for a median, got {repeats}")
    store = ResultStore(results_dir or FOOTPRINT_DIR)
    slug = footprint_slug(spec, model)
    stored = store.reusable(slug, force, retry_failed)
    if stored is not None and not (refresh_outdated and measured_elsewhere(stored, store)):
        return stored
    if stored is not None:  # re-timed on the study's class: the other class's timing stays in its own folder
        keep_by_class(slug, stored, store)

    calibration = calibration_set(spec.calibration, data) if spec.calibration else None
    summary: dict[str, Any] = {"slug": slug, "kind": "footprint", "model_spec": model, "quant": spec.to_dict(),
                               "forced_tokens": FORCED_TOKENS, "repeats": repeats,
                               "environment": environment(threads), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    stage = "load"
    try:
        import numpy as np
        import torch

        torch.set_num_threads(threads)
        loaded = load_model(model, needs_weights=False)
        summary["model"] = loaded.source
        feats = features(loaded.processor, [np.zeros(16_000 * 30, dtype=np.float32)])
        fp32_bytes = stored_bytes(loaded.model)
        import copy

        reference = None if spec.is_baseline else copy.deepcopy(loaded.model)
        stage = "quantize"
        # random weights: reconstruction error would say nothing about accuracy, so it is not measured
        # and random weights never emit end-of-text, so calibration decodes only a few tokens
        quantized, meta = quantize(loaded.model, spec, calibration=calibration, processor=loaded.processor,
                                   measure_error=False, calibration_tokens=8)
        summary["quantization"] = meta
        size = stored_bytes(quantized)
        summary["size"] = {"stored_bytes": size, "fp32_stored_bytes": fp32_bytes,
                           "compression_pct": 100.0 * (1 - size / fp32_bytes),
                           "serialized": serialized_bytes(quantized)}
        stage = "latency"
        if spec.is_baseline:  # fp32 against itself: ratio 1 by definition
            latency = time_forced_generate(quantized, feats, repeats)
            summary.update(latency=latency, fp32_latency=latency, latency_ratio=1.0)
        else:
            paired = time_interleaved(reference, quantized, feats, pairs=max(repeats, PAIRS))
            summary.update(latency=paired["configuration"], fp32_latency=paired["fp32"], latency_ratio=paired["ratio"],
                           latency_ratio_low=paired["ratio_low"], latency_ratio_high=paired["ratio_high"],
                           timing={k: v for k, v in paired.items() if k not in ("fp32", "configuration")})
        summary["status"] = "ok"
    except (ConfigError, DataError):
        raise
    except Exception as exc:
        summary.update(status="failed", failed_stage=stage, error=f"{type(exc).__name__}: {exc}"[:2000],
                       traceback=traceback.format_exc()[-4000:])
        if getattr(exc, "outcome", None):  # lib.runtimes.NotOffered: what this CPU offers
            summary["outcome"] = exc.outcome
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    summary["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    store.save(slug, summary)
    return summary


def by_cpu_dir(cpu_class: str, root: Path | str = FOOTPRINT_DIR) -> Path:
    """Where footprints timed on ``cpu_class`` are kept beside the study's, e.g. ``'AVX-512 VNNI'`` ->
    ``<root>/by-cpu/avx-512-vnni``."""
    return Path(root) / "by-cpu" / cpu_class.lower().replace(" ", "-")


def keep_by_class(slug: str, summary: dict[str, Any], store: ResultStore) -> None:
    """Copy a finished footprint into its CPU class's folder (:func:`by_cpu_dir`) unless one is there, so that
    re-timing it on another class never loses a class's measurement."""
    target = ResultStore(by_cpu_dir(result_cpu(summary), store.root))
    if summary.get("status") == "ok" and target.get(slug) is None:
        target.save(slug, summary)


def measured_elsewhere(summary: dict[str, Any], store: ResultStore) -> bool:
    """True for a finished footprint timed on another CPU class than most of ``store`` while this machine is of
    that class: its latency ratio is not comparable with the others, and re-measuring it here makes it so."""
    from .machine import cpu_description  # looked up at call time: tests fake this machine's CPU

    if summary.get("status") != "ok":
        return False
    reference = reference_cpu(store)
    return reference is not None and result_cpu(summary) != reference and cpu_label(cpu_description()) == reference
