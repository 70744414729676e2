"""AutoRound (auto-round's SignRound): weight-only int4/int3 rounding fitted on calibration audio.

SignRound (Cheng et al., arXiv 2309.05516) tunes, one transformer block at a time, each weight's rounding offset
(in [-0.5, 0.5]) and each group's min/max clip by signed gradient descent, so that the quantized block reproduces
the fp32 block's output on calibration activations. auto-round's own driver feeds decoder-only LLMs with text,
so this module feeds Whisper's blocks itself and leaves the tuning to auto-round's ``WrapperLinear`` (its
per-group integer quantizer with learnable rounding) and ``SignSGD``:

* encoder layers, in order, on the log-mel features of the ``calibration`` unscored utterances (dev-clean,
  then jfk); the loss reads one seeded window of :data:`WINDOW` speech positions per utterance (a CPU budget:
  the block attends within the window, for the fp32 target and the quantized block alike);
* decoder layers, teacher-forced on the fp32 model's own greedy transcripts of the same audio, cross-attending
  to the *quantized* encoder's output.

Each block's target is the fp32 block on fp32 inputs, its input the previous quantized block's output (auto-round's
default). Weights are asymmetric per group with a zero point, as HQQ's rows (``options: {sym: true}`` for
symmetric). The result is fake-quant: each Linear becomes a :class:`RoundedLinear` holding the dequantized
weight (at most ``2**bits`` values per group; ``scale``/``zero_point`` kept beside it). No CPU kernel runs it,
so the metadata says ``emulated: true``: WER and fidelity are the rounded weights', speed is fp32's.

Each tuning step scores every calibration utterance, or, with ``options: {batch: b}``, a seeded random ``b`` of
them (auto-round's own mini-batches): a larger calibration set then costs no more steps, only its forward
passes.

>>> from lib.config import QuantSpec
>>> QuantSpec(library="auto_round", scheme="weight_only", weights="int3", group_size=64, calibration=4,
...           options={"iters": 100}).slug
'autoround-wo-int3-g64-cal4-iters100'
"""
from __future__ import annotations

import time
from typing import Any

from torch import nn

from . import check_allowed
from .common import target_linears

BITS = {"int4": 4, "int3": 3}
SUPPORTED = [{"scheme": "weight_only", "weights": w, "granularity": (None, "per_group"), "group_size": (32, 64, 128)}
             for w in BITS]
OPTIONS = {"iters": (20, 50, 100, 200), "sym": (False, True), "batch": (1, 2, 4, 8)}
DEFAULT_ITERS = 100
WINDOW = 448  # encoder positions (of 1500; 50 per second) per utterance per tuning step
SEED = 0


class RoundedLinear(nn.Linear):
    """An ``nn.Linear`` whose weight holds calibrated, dequantized integer values (fake-quant).

    ``bits``, ``group_size``, ``scale`` and ``zero_point`` (one per output row and group) describe the grid:
    ``weight[r, g*group:(g+1)*group] == scale[r, g] * (q - zero_point[r, g])`` with integer ``q`` in
    ``[0, 2**bits)``. Made from a Linear in place by :func:`apply` (class swap; no copy of the weight).
    """

    IS_QUANTIZED = True  # lib.quantize.common.quantized_kind counts it as quantized, not as a float Linear


def validate(spec) -> None:
    """int4/int3 weight-only, group 32/64/128, ``iters`` and ``sym`` options; ``calibration >= 1`` (QuantSpec)."""
    check_allowed(spec, SUPPORTED, OPTIONS)


def apply(model, spec, calibration=None, processor=None, calibration_tokens: int = 128) -> dict[str, Any]:
    import torch
    from tqdm.auto import tqdm

    if not calibration or processor is None:
        raise ValueError("auto_round needs calibration utterances and the processor (calibration >= 1)")
    scored = [u.id for u in calibration if getattr(u, "split", "") in ("test-clean", "test-other")]
    if scored and not spec.calibration_folds:  # cross-fitted: the harness keeps its speakers out of the scoring
        raise ValueError(f"calibration must be unscored audio; got scored utterances {scored[:3]}")
    opts = spec.option_dict
    iters, sym = int(opts.get("iters", DEFAULT_ITERS)), bool(opts.get("sym", False))
    batch = int(opts["batch"]) if opts.get("batch") else None
    setting = {"bits": BITS[spec.weights], "group_size": spec.group_size or 128, "sym": sym}
    chosen = {name for name, _m in target_linears(model, spec)}
    generator = torch.Generator().manual_seed(SEED)
    was_training = model.training
    model.eval()
    requires = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    start = time.perf_counter()
    try:
        samples = _capture(model, processor, calibration, calibration_tokens)
        captured = time.perf_counter()
        losses = {}
        enc_layers, dec_layers = model.model.encoder.layers, model.model.decoder.layers
        fp, q = [s["encoder_args"] for s in samples], [s["encoder_args"] for s in samples]
        kwargs = [s["encoder_kwargs"] for s in samples]
        windows = [s["speech_positions"] for s in samples]
        progress = tqdm(total=len(enc_layers) + len(dec_layers), desc=f"auto_round {iters} iters/block",
                        disable=None)
        for i, block in enumerate(enc_layers):
            progress.update()
            prefix = f"model.encoder.layers.{i}."
            fp, q, losses[prefix[:-1]] = _tune_block(block, prefix, chosen, fp, q, kwargs, kwargs, windows,
                                                     setting, iters, generator, batch)
        encoder_out = time.perf_counter()
        with torch.no_grad():  # the quantized encoder's output is what the decoder cross-attends to at inference
            q_encoded = [model.model.encoder(s["features"]).last_hidden_state for s in samples]
        fp, q = [s["decoder_args"] for s in samples], [s["decoder_args"] for s in samples]
        fp_kwargs = [s["decoder_kwargs"] for s in samples]
        q_kwargs = [_swap_tensor(s["decoder_kwargs"], s["encoded"], e) for s, e in zip(samples, q_encoded)]
        q = [_swap_tensor(a, s["encoded"], e) for a, s, e in zip(q, samples, q_encoded)]
        fp = [_swap_tensor(a, None, None) for a in fp]
        for i, block in enumerate(dec_layers):
            progress.update()
            prefix = f"model.decoder.layers.{i}."
            fp, q, losses[prefix[:-1]] = _tune_block(block, prefix, chosen, fp, q, fp_kwargs, q_kwargs,
                                                     [None] * len(samples), setting, iters, generator, batch)
        progress.close()
    finally:
        for p, flag in requires.items():
            p.requires_grad_(flag)
        model.train(was_training)
    leftover = [n for n in chosen if type(model.get_submodule(n)) is nn.Linear]
    if leftover:
        raise RuntimeError(f"auto_round left {len(leftover)} chosen Linear layers unrounded, e.g. {leftover[:3]}")
    return {"method": f"SignRound (auto-round WrapperLinear + SignSGD), int{setting['bits']} "
                      f"{'sym' if sym else 'asym'} group {setting['group_size']}, {iters} iters per block",
            "kernel": "fake-quant (dequantized fp32 weights, RoundedLinear)", "emulated": True,
            "iters": iters, "sym": sym, "encoder_window": WINDOW, "batch": batch or len(calibration),
            "decoder_targets": "fp32 greedy transcripts of the calibration audio (teacher-forced)",
            "calibration_seconds": {"capture": captured - start, "encoder": encoder_out - captured,
                                    "total": time.perf_counter() - start},
            "block_loss": losses}


def _capture(model, processor, calibration, max_new_tokens: int) -> list[dict[str, Any]]:
    """Per utterance: its features, the first encoder and decoder layers' fp32 inputs (args, kwargs) on a
    teacher-forced pass over the fp32 model's own transcript, the encoder output and its speech length."""
    import torch

    from ..transcribe import features, generate

    samples = []
    for utt in calibration:
        feats = features(processor, [utt.audio])
        ids = generate(model, feats, max_new_tokens=max_new_tokens)
        seen: dict[str, Any] = {}

        def grab(key):
            def hook(_module, args, kwargs):
                seen.setdefault(key, (args, dict(kwargs)))
            return hook

        handles = [model.model.encoder.layers[0].register_forward_pre_hook(grab("encoder"), with_kwargs=True),
                   model.model.decoder.layers[0].register_forward_pre_hook(grab("decoder"), with_kwargs=True)]
        try:
            with torch.no_grad():
                out = model.model(input_features=feats, decoder_input_ids=ids[:, :-1] if ids.shape[1] > 1 else ids,
                                  use_cache=False)
        finally:
            for h in handles:
                h.remove()
        positions = seen["encoder"][0][0].shape[1]  # 1500 for 30 s of audio
        speech = min(positions, max(WINDOW, int(round(utt.duration * positions / 30.0))))
        samples.append({"features": feats, "encoder_args": seen["encoder"][0], "encoder_kwargs": seen["encoder"][1],
                        "decoder_args": seen["decoder"][0], "decoder_kwargs": seen["decoder"][1],
                        "encoded": out.encoder_last_hidden_state, "speech_positions": speech})
    return samples


def _swap_tensor(value, old, new):
    """``value`` (a tuple/dict of layer inputs) with the tensor ``old`` (by identity) replaced by ``new``."""
    if isinstance(value, tuple):
        return tuple(new if v is old and old is not None else v for v in value)
    return {k: (new if v is old and old is not None else v) for k, v in value.items()}


def _run(block, args, kwargs, window=None):
    out = block(*((args[0] if window is None else args[0][:, window]),) + tuple(args[1:]), **kwargs)
    return out[0] if isinstance(out, tuple) else out


def _tune_block(block, prefix, chosen, fp_args, q_args, fp_kwargs, q_kwargs, speech, setting, iters, generator,
                batch=None):
    """SignRound one block; returns the next block's fp32 and quantized-path input args and the first/best
    loss. Only Linears whose full name is in ``chosen`` are rounded (the spec's scope). ``batch``: each step
    scores that many utterances drawn at random (seeded), else all of them."""
    import torch
    from auto_round.algorithms.quantization.sign_round.sign_sgd import SignSGD
    from auto_round.wrapper import WrapperLinear

    with torch.no_grad():
        fp_out = [_run(block, a, k) for a, k in zip(fp_args, fp_kwargs)]
    fp_next = [(o,) + tuple(a[1:]) for o, a in zip(fp_out, fp_args)]
    windows = [None if n is None else _window(n, generator) for n in speech]
    with torch.no_grad():  # fixed windows: every step scores the same positions, so losses compare across steps
        targets = [t if w is None else _run(block, a, k, w) for t, a, k, w in zip(fp_out, fp_args, fp_kwargs, windows)]
    start = time.perf_counter()
    names = [n for n, m in block.named_modules() if type(m) is nn.Linear and prefix + n in chosen]
    if not names:
        with torch.no_grad():
            return fp_next, [(_run(block, a, k),) + tuple(a[1:]) for a, k in zip(q_args, q_kwargs)], None
    wrappers = {}
    for n in names:
        linear = block.get_submodule(n)
        linear.bits, linear.group_size, linear.sym = setting["bits"], setting["group_size"], setting["sym"]
        linear.data_type, linear.act_bits, linear.scale_dtype = "int", 16, torch.float32
        wrappers[n] = WrapperLinear(linear, enable_minmax_tuning=True, enable_torch_compile=False, device="cpu",
                                    iters=iters)
        _set(block, n, wrappers[n])
    params = [p for w in wrappers.values() for p in w.params.values()]
    optimizer = SignSGD(params, lr=1.0 / iters, momentum=0)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=iters)
    best, first, best_params = float("inf"), None, None
    for _step in range(iters):
        loss = 0.0
        chosen_now = (range(len(q_args)) if not batch or batch >= len(q_args)
                      else torch.randperm(len(q_args), generator=generator)[:batch].tolist())
        for i in chosen_now:
            loss = loss + torch.nn.functional.mse_loss(_run(block, q_args[i], q_kwargs[i], windows[i]), targets[i])
        if batch:  # mean over the drawn utterances, so that steps with different draws compare
            loss = loss / len(chosen_now)
        value = float(loss.detach())
        first = value if first is None else first
        if value < best:
            best = value
            best_params = {n: {k: p.detach().clone() for k, p in w.params.items()} for n, w in wrappers.items()}
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        for n, w in wrappers.items():
            linear = w.unwrapper(best_params[n])
            linear.__class__ = RoundedLinear
            linear.zero_point = linear.zp
            for attr in ("data_type", "act_bits", "scale_dtype", "iters", "zp", "q_scale_thresh"):
                if attr in linear.__dict__:
                    delattr(linear, attr)
            _set(block, n, linear)
        q_next = [(_run(block, a, k),) + tuple(a[1:]) for a, k in zip(q_args, q_kwargs)]
    return fp_next, q_next, {"first": first, "best": best, "seconds": round(time.perf_counter() - start, 2)}


def _window(speech_positions: int, generator) -> slice:
    """:data:`WINDOW` consecutive encoder positions inside the first ``speech_positions`` (seeded)."""
    import torch

    first = int(torch.randint(0, max(1, speech_positions - WINDOW + 1), (1,), generator=generator))
    return slice(first, first + WINDOW)


def _set(block, name: str, module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(block.get_submodule(parent) if parent else block, child, module)


def dequantize_weight(module):
    """The rounded weight itself (fake-quant stores it dequantized)."""
    return module.weight.detach() if isinstance(module, RoundedLinear) else None
