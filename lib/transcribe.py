"""Transcription with the one decoding recipe (:mod:`lib.decoding`), with timing of each batch.

Batched and deterministic; each
batch is timed (wall and process CPU seconds) after a warm-up batch with a
fixed thread count; the encoder's share is timed with forward hooks.  A
batch's time is shared equally among its utterances.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Sequence

from .decoding import END_OF_TEXT, MAX_NEW_TOKENS, PROMPT, RECIPE

# single_generate_call: transformers 5 runs even a 30 s input through its long-form seek loop. When a
# degraded model emits a timestamp pair, that loop decodes the rest of the window again; when the pair
# is <|0.00|><|0.00|> the window never advances and the batch decodes forever (quanto dynamic int8,
# test-other utterance 3005-163389-0001). ``force_unique_generate_call`` keeps the one decode a 30 s
# window gets; for a batch the loop would have decoded once, the text is the same.


def decoding_recipe(batch_size: int, threads: int, max_new_tokens: int = MAX_NEW_TOKENS) -> dict[str, Any]:
    """What a result records of how it was decoded: :data:`lib.decoding.RECIPE` plus the run's own settings."""
    return RECIPE.as_dict(max_new_tokens=max_new_tokens, batch_size=batch_size, threads=threads, warmup_batches=1,
                          timing="per batch after warm-up; batch time shared equally among its utterances")


@contextmanager
def encoder_timer(model):
    """Accumulate wall seconds spent in the encoder's forward (``timer['seconds']``) and count its calls.

    ``generate`` runs the encoder once per batch (``single_generate_call``); results decoded before
    that rule could show more calls, where transformers' seek loop decoded the window again.
    """
    timer = {"seconds": 0.0, "_start": 0.0, "calls": 0}
    encoder = model.get_encoder()

    def pre(_m, _i):
        timer["_start"] = time.perf_counter()

    def post(_m, _i, _o):
        timer["seconds"] += time.perf_counter() - timer["_start"]
        timer["calls"] += 1

    handles = [encoder.register_forward_pre_hook(pre), encoder.register_forward_hook(post)]
    try:
        yield timer
    finally:
        for h in handles:
            h.remove()


def features(processor, audios: Sequence):
    """Log-mel features padded to 30 s, as Whisper expects."""
    from .data import SAMPLE_RATE

    return processor.feature_extractor(list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features


def generate(model, input_features, max_new_tokens: int = MAX_NEW_TOKENS, durations: Sequence[float] | None = None,
             **extra):
    """``model.generate`` with :data:`~lib.decoding.RECIPE`'s settings; ``durations`` apply its token budget."""
    import torch

    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if durations is not None and not isinstance(model, torch.nn.Module):  # a deployment runtime (lib.runtimes)
        return _budgeted_by_truncation(model, input_features.to(dtype), max_new_tokens, durations, **extra)
    with torch.no_grad():  # not inference_mode: quanto's int4 kernels refuse inference tensors
        return model.generate(input_features.to(dtype), **RECIPE.generate_kwargs(max_new_tokens, durations), **extra)


def _budgeted_by_truncation(model, input_features, max_new_tokens: int, durations: Sequence[float], **extra):
    """The token budget for a runtime that takes no stopping criteria: decode to the batch's largest budget,
    then cut each row at its own. Greedy rows decode independently, so this is exactly what a per-row stop
    gives."""
    budgets = [RECIPE.budget(d, max_new_tokens) for d in durations]
    ids = model.generate(input_features, **RECIPE.generate_kwargs(max(budgets)), **extra).clone()
    for row, budget in enumerate(budgets):  # a runtime returns the prompt, then the generated tokens
        ids[row, len(PROMPT) + budget:] = END_OF_TEXT
    return ids


def transcribe(model, processor, utterances: Sequence, batch_size: int = 8, threads: int = 2,
               progress: bool = True, desc: str = "transcribe", max_new_tokens: int = MAX_NEW_TOKENS,
               checkpoint=None) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Transcribe utterances; returns per-utterance rows and whole-run timing.

    Each row holds the raw hypothesis (not normalized), its text token ids, and its share of the
    batch's wall/CPU/encoder seconds.  The timing dict separates
    ``model_seconds`` (time inside ``generate``) from ``total_seconds`` (the
    whole loop) so that harness overhead can be measured.  With a
    :class:`~lib.results.BatchCheckpoint`, each finished batch is saved and a
    rerun skips the batches already there (``resumed_batches`` counts them);
    their rows and seconds are reused as measured.
    """
    import torch
    import transformers
    from tqdm.auto import tqdm

    transformers.logging.set_verbosity_error()  # inputs are padded to 30 s: no attention mask is needed
    torch.set_num_threads(threads)
    model.eval()
    batches = [list(utterances[i:i + batch_size]) for i in range(0, len(utterances), batch_size)]
    finished = checkpoint.load() if checkpoint is not None else {}
    todo = [b for b in range(len(batches)) if b not in finished]
    if todo:  # warm-up: one untimed pass over the first batch still to run
        first = batches[todo[0]]
        generate(model, features(processor, [u.audio for u in first]), max_new_tokens, [u.duration for u in first])
    records = []
    with encoder_timer(model) as enc:
        for b in tqdm(range(len(batches)), desc=desc, disable=not progress, unit="batch"):
            if b in finished:
                records.append(finished[b])
                continue
            batch = batches[b]
            loop0 = time.perf_counter()
            feats = features(processor, [u.audio for u in batch])
            enc_before, calls_before = enc["seconds"], enc["calls"]
            wall0, cpu0 = time.perf_counter(), time.process_time()
            ids = generate(model, feats, max_new_tokens, [u.duration for u in batch])
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            encoder = enc["seconds"] - enc_before
            texts = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
            share = len(batch)
            rows = [{"id": u.id, "split": u.split, "reference": u.reference, "hypothesis": text.strip(),
                     "audio_seconds": round(u.duration, 4), "batch": b, "batch_size": share,
                     "wall_seconds": wall / share, "cpu_seconds": cpu / share, "encoder_seconds": encoder / share,
                     "batch_wall_seconds": wall, "encoder_passes": enc["calls"] - calls_before,
                     "text_tokens": int((ids[i] < END_OF_TEXT).sum()),
                     "tokens": [int(t) for t in ids[i] if t < END_OF_TEXT],
                     "audio_sha256": getattr(u, "sha256", None),
                     **({"noise": u.noise} if getattr(u, "noise", None) else {})}  # noisy audio: its recipe
                    for i, (u, text) in enumerate(zip(batch, texts))]
            record = {"batch": b, "rows": rows,
                      "seconds": {"loop": time.perf_counter() - loop0, "model": wall, "encoder": encoder}}
            if checkpoint is not None:
                checkpoint.append(record)
            records.append(record)
    timing = {"total_seconds": sum(r["seconds"]["loop"] for r in records),
              "model_seconds": sum(r["seconds"]["model"] for r in records),
              "encoder_seconds": sum(r["seconds"]["encoder"] for r in records),
              "resumed_batches": len(batches) - len(todo)}
    return [row for r in records for row in r["rows"]], timing
