"""Size and forced-length latency on the exact whisper-small architecture.

Size and speed do not depend on weight values, so the paper's model is built
from its config with seeded random weights.  Latency is one encoder pass on a
30 s input plus exactly 32 greedy decoder tokens (``min_new_tokens =
max_new_tokens = 32``), median of ``repeats`` runs after a warm-up, threads
fixed.  The fp32 model is timed in the same process just before it is
quantized, so the latency ratio is paired and robust to slow drifts in
machine load.  WER is never computed here.
"""
from __future__ import annotations

import os
import time
import traceback
from typing import Any

from .checks import check_quant
from .config import ConfigError, QuantSpec, footprint_slug
from .data import DataError, calibration_set
from .metrics import serialized_bytes, stored_bytes, summarize_samples
from .models import FIRST_TIMESTAMP, check_model_spec, load_model
from .quantize import quantize
from .results import RESULTS_DIR, ResultStore, cpu_label, environment, reference_cpu, result_cpu
from .transcribe import encoder_timer, features, generate

FORCED_TOKENS = 32
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


def time_forced_generate(model, input_features, repeats: int) -> dict[str, Any]:
    """Raw wall seconds of encoder + 32 forced tokens, after one warm-up run."""
    import transformers
    from transformers import LogitsProcessorList

    kwargs = dict(max_new_tokens=FORCED_TOKENS, min_new_tokens=FORCED_TOKENS,
                  logits_processor=LogitsProcessorList([_mask_timestamps()]))
    transformers.logging.set_verbosity_error()  # else every call says max_new_tokens overrides Whisper's max_length
    out = generate(model, input_features, **kwargs)  # warm-up
    generated = int(out.shape[-1])
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

    calibration = calibration_set(spec.calibration, data) if spec.scheme == "static" else None
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
        stage = "fp32 latency"
        fp32_latency = time_forced_generate(loaded.model, feats, repeats)
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
        # fp32 against itself: one measurement, ratio 1 by definition
        latency = fp32_latency if spec.is_baseline else time_forced_generate(quantized, feats, repeats)
        summary["latency"] = latency
        summary["fp32_latency"] = fp32_latency
        summary["latency_ratio"] = latency["median"] / fp32_latency["median"]
        summary["status"] = "ok"
    except (ConfigError, DataError):
        raise
    except Exception as exc:
        summary.update(status="failed", failed_stage=stage, error=f"{type(exc).__name__}: {exc}"[:2000],
                       traceback=traceback.format_exc()[-4000:])
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    summary["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    store.save(slug, summary)
    return summary


def measured_elsewhere(summary: dict[str, Any], store: ResultStore) -> bool:
    """True for a finished footprint timed on another CPU class than most of ``store`` while this machine is of
    that class: its latency ratio is not comparable with the others, and re-measuring it here makes it so."""
    from .results import cpu_description  # looked up at call time: tests fake this machine's CPU

    if summary.get("status") != "ok":
        return False
    reference = reference_cpu(store)
    return reference is not None and result_cpu(summary) != reference and cpu_label(cpu_description()) == reference
