"""Evaluate one configuration end to end: load, quantize, transcribe, score, save.

Bad input (unknown model, missing split, bad data dir) raises at once.  A
failure inside quantization or decoding is recorded as a ``failed`` result
with its error, so a sweep goes on.
"""
from __future__ import annotations

import resource
import time
import traceback
from typing import Any

from .config import ConfigError, RunConfig
from .data import DataError, calibration_set, describe_data, jfk_path, load_audio, load_split
from .metrics import corpus_wer, rtfx, serialized_bytes, stored_bytes, summarize_samples, utterance_errors
from .results import RESULTS_DIR, ResultStore, environment
from .transcribe import decoding_recipe, transcribe


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def encoder_output(model, processor, audio):
    import torch

    from .transcribe import features

    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)  # a runtime: none
    with torch.no_grad():
        return model.get_encoder()(features(processor, [audio]).to(dtype)).last_hidden_state.float()


def cosine(a, b) -> float:
    import torch

    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def score_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add normalized-text error counts to raw transcript rows (score later, from raw)."""
    return [{**r, **utterance_errors(r["reference"], r["hypothesis"])} for r in rows]


def split_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    audio = sum(r["audio_seconds"] for r in rows)
    wall = sum(r["wall_seconds"] for r in rows)
    cpu = sum(r["cpu_seconds"] for r in rows)
    return {"utterances": len(rows), "wer": corpus_wer(rows), "ref_words": sum(r["ref_words"] for r in rows),
            "substitutions": sum(r["substitutions"] for r in rows), "deletions": sum(r["deletions"] for r in rows),
            "insertions": sum(r["insertions"] for r in rows), "audio_seconds": audio, "wall_seconds": wall,
            "cpu_seconds": cpu, "encoder_seconds": sum(r["encoder_seconds"] for r in rows), "rtfx": rtfx(audio, wall),
            "batch_wall_seconds": summarize_samples(list({r["batch"]: r["batch_wall_seconds"] for r in rows}.values()))}


def checkpoint_key(config: RunConfig, split: str, utterances, summary: dict[str, Any]) -> dict[str, Any]:
    """What saved batches of ``split`` are valid for: the same run, utterances, model, library versions and decoding."""
    return {"slug": config.slug, "config": config.to_dict(), "split": split, "ids": [u.id for u in utterances],
            "model": summary.get("model"), "packages": summary["environment"]["packages"],
            "decoding": summary["decoding"]}


def evaluate(config: RunConfig, *, data: str | None = None, results_dir=RESULTS_DIR, force: bool = False,
             progress: bool = True, store: ResultStore | None = None, retry_failed: bool = False,
             refresh_outdated: bool = False) -> dict[str, Any]:
    """Run ``config`` unless its result exists; return the summary.

    It runs again with ``force``, with ``retry_failed`` if it failed, and with
    ``refresh_outdated`` if it was decoded with an older recipe.
    """
    store = store or ResultStore(results_dir)
    stored = store.reusable(config.slug, force, retry_failed, refresh_outdated)
    if stored is not None:
        return stored
    if force:
        store.discard_checkpoints(config.slug)
    refreshing = refresh_outdated and store.archive_outdated(config.slug) is not None
    data_info = describe_data(data)  # a bad data path fails here, before any model work
    utterances = {s: load_split(s, config.limit, data) for s in config.split}
    summary: dict[str, Any] = {"slug": config.slug, "config": config.to_dict(),
                               "decoding": decoding_recipe(config.batch_size, config.threads, config.max_new_tokens),
                               "data": data_info, "environment": environment(config.threads),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    stage = "load"
    try:
        import torch

        from .models import load_model
        from .quantize import quantize

        torch.set_num_threads(config.threads)
        loaded = load_model(config.model)
        summary["model"] = loaded.source
        fp32_bytes = stored_bytes(loaded.model)
        jfk = jfk_path()
        jfk_audio = load_audio(jfk) if jfk else None
        reference_encoding = encoder_output(loaded.model, loaded.processor, jfk_audio) if jfk else None
        stage = "quantize"
        calibration = calibration_set(config.quant.calibration, data) if config.quant.scheme == "static" else None
        model, meta = quantize(loaded.model, config.quant, calibration=calibration, processor=loaded.processor)
        summary["quantization"] = meta
        size = stored_bytes(model)
        summary["size"] = {"stored_bytes": size, "fp32_stored_bytes": fp32_bytes,
                           "compression_pct": 100.0 * (1 - size / fp32_bytes), "serialized": serialized_bytes(model)}
        if reference_encoding is not None and getattr(model.get_encoder(), "exposes_output", True):
            summary["encoder_cosine_jfk"] = cosine(reference_encoding,
                                                   encoder_output(model, loaded.processor, jfk_audio))
        stage = "transcribe"
        all_rows = []
        harness = {"total_seconds": 0.0, "model_seconds": 0.0}
        for split, utts in utterances.items():
            checkpoint = store.checkpoint(config.slug, split, checkpoint_key(config, split, utts, summary))
            rows, timing = transcribe(model, loaded.processor, utts, config.batch_size, config.threads,
                                      progress=progress, desc=f"{config.quant.slug} {split}",
                                      max_new_tokens=config.max_new_tokens, checkpoint=checkpoint)
            rows = score_rows(rows)
            all_rows += rows
            summary.setdefault("metrics", {})[split] = {**split_metrics(rows), "timing": timing}
            for k in harness:
                harness[k] += timing[k]
        summary["harness"] = {**harness, "overhead_share": 1 - harness["model_seconds"] / harness["total_seconds"]
                              if harness["total_seconds"] else None}
        summary["peak_rss_mb"] = peak_rss_mb()
        summary["status"] = "ok"
    except (ConfigError, DataError):
        raise  # bad input: fail fast with its one-line fix, record nothing
    except Exception as exc:
        summary.update(status="failed", failed_stage=stage, error=f"{type(exc).__name__}: {exc}"[:2000],
                       traceback=traceback.format_exc()[-4000:])
        all_rows = None
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if refreshing and summary["status"] == "failed":  # a failed refresh never replaces a finished result
        return summary
    store.save(config.slug, summary, all_rows)
    if summary["status"] == "ok":
        store.discard_checkpoints(config.slug)
    return summary
