"""Teacher-forced fidelity to fp32: KL divergence, top-1 agreement and ΔNLL on the reference, per utterance.

One encoder pass and two decoder passes per utterance, at batch size 1 (no generation loop), on the same
log-mel features the WER run uses:

- **KLD**: the prompt ``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`` plus fp32's own greedy
  transcript tokens plus ``<|endoftext|>`` is fed to both models; at every predicted position,
  KL(p_fp32 ‖ p_quant) over the full vocabulary (raw model distributions, before any logits processor).
- **Top-1 agreement**: the share of those positions where the quantized model's most likely token is fp32's.
- **ΔNLL**: negative log-likelihood per token of the LibriSpeech reference, quantized minus fp32. The
  reference is upper case without punctuation; it is fed in sentence case with a final full stop
  (:func:`reference_text`), the form Whisper itself writes.

fp32's log-probabilities are computed once per utterance and cached under the user cache directory (never
committed), so the pass costs one model per configuration; fp32 against itself gives KLD exactly 0 and
agreement 1. Per-utterance results go to ``results/fidelity/<slug>.jsonl`` (small: sums and the per-position
KLD rounded to 3 significant digits, no logits); statistics and intervals are computed when loaded
(:func:`fidelity_stats`).

>>> reference_text("HE HOPED THERE WOULD BE STEW FOR DINNER I THINK")
'He hoped there would be stew for dinner I think.'
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
import logging
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .decoding import END_OF_TEXT, PROMPT
from .paths import portable
from .results import RESULTS_DIR, ResultStore, atomic_write_text
from .machine import environment

FIDELITY_SUBDIR = "fidelity"
CACHE_VERSION = 2  # bump when what the cache holds changes
PER_SPEAKER = 1  # utterances per speaker and split in the fidelity subset (see fidelity_subset)
log = logging.getLogger(__name__)


class FidelityUnavailable(RuntimeError):
    """The fp32 reference the pass compares with does not exist yet (run fp32 first)."""


def reference_text(reference: str) -> str:
    """LibriSpeech's upper-case reference in sentence case with a full stop; "I" and its contractions stay
    capital."""
    words = reference.lower().split()
    words = [w.upper() if w == "i" else "I" + w[1:] if w.startswith("i'") else w for w in words]
    text = " ".join(words)
    return (text[:1].upper() + text[1:] + ".") if text else text


def teacher_forced_logprobs(model, input_features, tokens: Sequence[int], encoder_hidden=None):
    """Log-probabilities (float32, ``[len(tokens), vocab]``) at each position that predicts one of ``tokens``,
    given the prompt and the tokens before it. ``encoder_hidden`` reuses an encoder output."""
    import torch

    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    ids = torch.tensor([list(PROMPT) + list(tokens)])
    with torch.no_grad():
        if encoder_hidden is None:
            encoder_hidden = model.get_encoder()(input_features.to(dtype)).last_hidden_state
        decoder = model.model.decoder
        if hasattr(decoder, "all_positions"):  # an exported decoder that returns only its last position
            hidden = decoder.all_positions(ids, encoder_hidden)
        else:
            hidden = decoder(input_ids=ids, encoder_hidden_states=encoder_hidden, use_cache=False).last_hidden_state
        if hidden.shape[1] != ids.shape[1]:  # any other decoder that returns only its last position: step through
            hidden = torch.cat([decoder(input_ids=ids[:, : t + 1], encoder_hidden_states=encoder_hidden,
                                        use_cache=False).last_hidden_state[:, -1:] for t in range(ids.shape[1])], 1)
        logits = model.proj_out(hidden[:, len(PROMPT) - 1:-1])[0].float()
    return torch.log_softmax(logits, dim=-1)


def runtime_logprobs(runtime, input_features, tokens: Sequence[int]):
    """:func:`teacher_forced_logprobs` for a deployment runtime (:class:`lib.runtimes.RuntimeModel`), from its
    ``teacher_forced_logits`` on prompt + tokens; a runtime that exposes no logits raises ``NotImplementedError``
    with the reason, which the fidelity summary records."""
    import torch

    if getattr(runtime, "logits_note", None):
        raise NotImplementedError(f"{runtime.runtime} exposes no teacher-forced logits: {runtime.logits_note}")
    ids = torch.tensor([list(PROMPT) + list(tokens)])
    logits = runtime.teacher_forced_logits(input_features, ids)[0, len(PROMPT) - 1:-1].float()
    return torch.log_softmax(logits, dim=-1)


def nll_sum(logprobs, targets: Sequence[int]) -> float:
    """Σ −log p(target) over positions (``targets`` includes the final end of text)."""
    import torch

    return float(-logprobs[torch.arange(len(targets)), torch.tensor(list(targets))].double().sum())


def reference_tokens(tokenizer, reference: str) -> list[int]:
    return tokenizer.encode(" " + reference_text(reference), add_special_tokens=False)


def hypothesis_tokens(tokenizer, row: dict[str, Any]) -> tuple[list[int], str]:
    """fp32's greedy tokens: as generated where the row kept them, else its stored text encoded again."""
    if row.get("tokens") is not None:
        return list(row["tokens"]), "generated"
    return tokenizer.encode(" " + row["hypothesis"], add_special_tokens=False) if row["hypothesis"] else [], "re-encoded"


class ReferenceCache:
    """fp32 log-probabilities per utterance under ``<cache>/fidelity/<model>/``, computed on first use."""

    def __init__(self, model_source: dict[str, Any], loader):
        from .models import cache_dir

        key = hashlib.sha256(json.dumps({**model_source, "cache_version": CACHE_VERSION}, sort_keys=True,
                                        default=str).encode()).hexdigest()[:16]
        self.root = cache_dir() / "fidelity" / key
        self.loader, self._loaded = loader, None

    def get(self, utterance, tokens: list[int], ref_tokens: list[int], features) -> dict[str, Any]:
        digest = hashlib.sha256(json.dumps([utterance.id, utterance.sha256, tokens, ref_tokens]).encode()).hexdigest()
        path = self.root / f"{utterance.id}-{digest[:16]}.npz"
        if path.exists():
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        if self._loaded is None:
            self._loaded = self.loader()
        model = self._loaded.model
        import torch

        with torch.no_grad():
            hidden = model.get_encoder()(features).last_hidden_state
        hyp = teacher_forced_logprobs(model, None, tokens + [END_OF_TEXT], hidden)
        ref = teacher_forced_logprobs(model, None, ref_tokens + [END_OF_TEXT], hidden)
        out = {"logprobs": hyp.numpy(), "ref_nll": np.array(nll_sum(ref, ref_tokens + [END_OF_TEXT]))}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **out)
        tmp.replace(path)
        return out


def compare_logprobs(logq, logp):
    """Per-position KL(p_fp32 ‖ p_quant) (float64 tensor) and the count of positions whose most likely token
    agrees; ``logp`` is fp32's (a tensor or the cached array)."""
    import torch

    logp = torch.as_tensor(logp)
    kld = torch.nn.functional.kl_div(logq, logp, log_target=True, reduction="none").double().sum(-1).clamp_min(0)
    return kld, int((logq.argmax(-1) == logp.argmax(-1)).sum())


def reference_cache(model: str, threads: int, loader) -> ReferenceCache:
    """The fp32 cache the fidelity pass of ``model`` at ``threads`` uses (keyed by this machine's CPU too)."""
    return ReferenceCache({"model": model, "threads": threads, "cpu": environment(threads)["cpu"]}, loader)


def utterance_fidelity(model, processor, utterance, fp32_row: dict[str, Any], cache: ReferenceCache
                       ) -> dict[str, Any]:
    """One utterance's fidelity row (see the module docstring)."""
    import torch

    from .transcribe import features

    tokenizer = processor.tokenizer
    tokens, source = hypothesis_tokens(tokenizer, fp32_row)
    ref_tokens = reference_tokens(tokenizer, utterance.reference)
    feats = features(processor, [utterance.audio])
    reference = cache.get(utterance, tokens, ref_tokens, feats)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if hasattr(model, "teacher_forced_logits"):  # a deployment runtime (lib.runtimes): its own decoder graph
        logq = runtime_logprobs(model, feats, tokens + [END_OF_TEXT])
        logr = runtime_logprobs(model, feats, ref_tokens + [END_OF_TEXT])
    else:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        with torch.no_grad():
            hidden = model.get_encoder()(feats.to(dtype)).last_hidden_state
        logq = teacher_forced_logprobs(model, None, tokens + [END_OF_TEXT], hidden)
        logr = teacher_forced_logprobs(model, None, ref_tokens + [END_OF_TEXT], hidden)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    kld, agree = compare_logprobs(logq, reference["logprobs"])
    return {"id": utterance.id, "split": utterance.split, "audio_sha256": utterance.sha256,
            "positions": len(tokens) + 1, "tokens_from": source, "kld_sum": float(kld.sum()),
            "kld_max": float(kld.max()), "agree": agree, "kld": [float(f"{x:.3g}") for x in kld.tolist()],
            "ref_tokens": len(ref_tokens) + 1, "nll_ref": nll_sum(logr, ref_tokens + [END_OF_TEXT]),
            "nll_ref_fp32": float(reference["ref_nll"]), "wall_seconds": wall, "cpu_seconds": cpu}


def fidelity_subset(utterances: Sequence, per_speaker: int = PER_SPEAKER) -> list:
    """The utterances the fidelity pass scores: the first ``per_speaker`` (by id) of every speaker in each split.

    A fixed, stated subset that gives every speaker the same weight: each fidelity pass costs an encoder
    pass per utterance (about as much as decoding it), so the whole sample for every configuration would
    cost hours here. ``per_speaker=None`` keeps every utterance.

    >>> from types import SimpleNamespace as U
    >>> [u.id for u in fidelity_subset([U(id=i, split="s") for i in ("1-1-0", "1-1-1", "2-1-0")])]
    ['1-1-0', '2-1-0']
    """
    from .metrics import speaker

    if per_speaker is None:
        return list(utterances)
    seen: dict[tuple[str, str], int] = {}
    kept = []
    for u in sorted(utterances, key=lambda u: (u.split, u.id)):
        key = (u.split, speaker(u.id))
        if seen.get(key, 0) < per_speaker:
            seen[key] = seen.get(key, 0) + 1
            kept.append(u)
    order = {(u.split, u.id): i for i, u in enumerate(utterances)}
    return sorted(kept, key=lambda u: order[(u.split, u.id)])


@contextmanager
def job_lock(results_dir: Path | str, slug: str):
    """Claim ``slug``'s fidelity pass for this process (yields False when another process holds it), so that
    two fidelity sweeps started in different orders split the configurations between them."""
    import os

    path = Path(results_dir) / FIDELITY_SUBDIR / f".{slug}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        yield False
        return
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield True
    finally:
        path.unlink(missing_ok=True)


def fidelity_store(results_dir: Path | str = RESULTS_DIR) -> ResultStore:
    return ResultStore(Path(results_dir) / FIDELITY_SUBDIR)


def ensure_fidelity(config, results_dir: Path | str = RESULTS_DIR, data: str | None = None, model=None,
                    processor=None, progress: bool = True, force: bool = False,
                    retry_failed: bool = False, fold_models: dict[int, Any] | None = None) -> dict[str, Any]:
    """Compute fidelity rows for the utterances of ``config`` that lack them; return the fidelity summary.

    It scores the fixed :func:`fidelity_subset` of the data, wherever the fp32 result has a transcript.

    Needs the fp32 result of the same model and splits (its transcripts are the forced tokens); raises
    :class:`FidelityUnavailable` without it. ``model``/``processor`` reuse an already quantized model
    (``fold_models``: one per speaker fold, for cross-speaker calibration, each scoring its fold's utterances);
    otherwise the configuration is loaded and quantized here, once per fold. A failure is saved as a failed summary, which
    later calls return as it is unless ``retry_failed`` (``sweep --fidelity-only --retry-failed``).
    """
    import dataclasses

    from .config import QuantSpec
    from .data import calibration_for, load_split, speaker_fold

    if getattr(config, "noise", None) is not None:
        raise FidelityUnavailable(f"{config.slug} mixes noise into the audio; the fidelity reference is fp32 on "
                                  "clean audio, so a noisy run has no fidelity pass")
    store, fstore = ResultStore(results_dir), fidelity_store(results_dir)
    base_slug = dataclasses.replace(config, quant=QuantSpec()).slug
    base = {(r["split"], r["id"]): r for r in store.load_rows(base_slug)}
    if not base:
        raise FidelityUnavailable(f"no fp32 result {base_slug} to compare with; run fp32 first")
    utterances = fidelity_subset([u for s in config.split for u in load_split(s, config.limit, data)])
    stored = None if force else fstore.load_or_none(config.slug)
    audio = {(u.split, u.id): u.sha256 for u in utterances}
    stored_lines = fstore.load_lines(config.slug) if stored is not None and stored.get("status") == "ok" else []
    valid = {}  # (split, id) -> stored line, for the utterances whose audio is today's
    for line in stored_lines:
        row = json.loads(line)
        if audio.get((row["split"], row["id"])) == row.get("audio_sha256"):
            valid[(row["split"], row["id"])] = line
    todo = [u for u in utterances if (u.split, u.id) not in valid and (u.split, u.id) in base]
    if stored is not None and stored.get("status") == "failed" and not (force or retry_failed):
        return stored
    if not todo and stored is not None:
        return stored
    summary: dict[str, Any] = {"slug": config.slug, "config": config.to_dict(), "kind": "fidelity",
                               "reference": base_slug, "environment": environment(config.threads),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        import torch
        from tqdm.auto import tqdm

        from .models import load_model
        from .quantize import quantize

        torch.set_num_threads(config.threads)
        folds = config.quant.calibration_folds
        groups: dict[int | None, list] = {}
        for u in todo:
            groups.setdefault(speaker_fold(u.id, folds) if folds else None, []).append(u)
        cache = reference_cache(config.model, config.threads, lambda: load_model(config.model))
        new = {}
        for fold, utts in groups.items():
            quantized = (fold_models or {}).get(fold) if folds else model
            if quantized is None:
                loaded = load_model(config.model)
                calibration = calibration_for(config.quant, data, fold)
                quantized, _ = quantize(loaded.model, config.quant, calibration=calibration,
                                        processor=loaded.processor, measure_error=False)
                processor = loaded.processor
            quantized.eval()
            desc = f"fidelity {config.quant.slug}" + ("" if fold is None else f" fold {fold}")
            for u in tqdm(utts, desc=desc, disable=not progress, unit="utt"):
                new[(u.split, u.id)] = json.dumps(utterance_fidelity(quantized, processor, u, base[(u.split, u.id)],
                                                                     cache))
        merged = [valid.get((u.split, u.id)) or new.get((u.split, u.id)) for u in utterances]
        summary["utterances"] = sum(1 for m in merged if m)
        summary["status"] = "ok"
    except Exception as exc:
        summary.update(status="failed", error=portable(f"{type(exc).__name__}: {exc}")[:2000],
                       traceback=portable(traceback.format_exc())[-4000:])
        merged = None
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if summary["status"] == "failed" and valid:
        return summary
    fstore.save_lines(config.slug, summary, [m for m in merged if m] if merged is not None else None)
    return summary


def fidelity_rows(slug: str, results_dir: Path | str = RESULTS_DIR) -> list[dict[str, Any]]:
    return fidelity_store(results_dir).load_rows(slug)


def fidelity_stats(rows: Sequence[dict[str, Any]], split: str | None = None, clusters: bool = False) -> dict[str, Any]:
    """Pooled fidelity statistics with 95% BCa intervals over utterances (``clusters``: over speakers).

    ``kld_mean`` = Σ KLD / Σ positions; ``agreement`` = Σ agreeing positions / Σ positions; ``delta_nll`` =
    (Σ NLL_quant − Σ NLL_fp32) / Σ reference tokens; percentiles are over all positions pooled.
    """
    from .metrics import ratio_interval, speaker

    rows = [r for r in rows if split is None or r["split"] == split]
    if not rows:
        return {}
    spk = [speaker(r["id"]) for r in rows] if clusters else None
    positions = [r["positions"] for r in rows]
    kld = ratio_interval([r["kld_sum"] for r in rows], positions, clusters=spk)
    agree = ratio_interval([r["agree"] for r in rows], positions, clusters=spk, scale=100.0)
    dnll = ratio_interval([r["nll_ref"] for r in rows], [r["ref_tokens"] for r in rows],
                          baseline=[r["nll_ref_fp32"] for r in rows], clusters=spk)
    pooled = np.array([x for r in rows for x in r["kld"]])
    return {"utterances": len(rows), "positions": int(sum(positions)),
            "kld_mean": kld["delta"], "kld_low": kld["low"], "kld_high": kld["high"],
            "kld_median": float(np.median(pooled)), "kld_p90": float(np.percentile(pooled, 90)),
            "kld_p99": float(np.percentile(pooled, 99)), "kld_max": float(max(r["kld_max"] for r in rows)),
            "agreement": agree["delta"], "agreement_low": agree["low"], "agreement_high": agree["high"],
            "delta_nll": dnll["delta"], "delta_nll_low": dnll["low"], "delta_nll_high": dnll["high"],
            "resampled": kld["resampled"],
            "cpu_seconds_per_utterance": float(np.mean([r["cpu_seconds"] for r in rows]))}
