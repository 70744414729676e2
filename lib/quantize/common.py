"""Helpers shared by the backends: choosing layers, untying ``proj_out``, describing the result."""
from __future__ import annotations

import fnmatch
import logging
from collections import Counter
from typing import Any, Callable

import torch
from torch import nn

from ..transcribe import features, generate

_QUANT_MODULE_PACKAGES = ("torch.ao.nn.quantized", "torch.nn.quantized", "torch.ao.nn.intrinsic",
                          "optimum.quanto", "hqq", "bitsandbytes", "torchao")


class _PassOnce(logging.Filter):
    """Let a log record whose message starts with ``prefix`` through once, then drop repeats."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix, self.seen = prefix, False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        passed, self.seen = not self.seen, True
        return passed


def log_once(logger_name: str, prefix: str) -> None:
    """Show a library's per-call log message once per process instead of on every call.

    Example: ``log_once("bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast")`` turns
    42,624 identical warnings from one bitsandbytes LLM.int8 run into one. Idempotent.
    """
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _PassOnce) and f.prefix == prefix for f in logger.filters):
        logger.addFilter(_PassOnce(prefix))


def target_linears(model, spec) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` layers a spec touches, by scope; ``proj_out`` only when ``spec.proj_out``.

    >>> # scope 'encoder' -> model.encoder.layers.*.{q,k,v,out}_proj, fc1, fc2
    """
    prefixes = {"all": ("model.encoder.", "model.decoder."), "encoder": ("model.encoder.",),
                "decoder": ("model.decoder.",)}[spec.scope]
    chosen = [(n, m) for n, m in model.named_modules()
              if type(m) is nn.Linear and n.startswith(prefixes)]
    if spec.proj_out:
        untie_proj_out(model)
        chosen.append(("proj_out", model.proj_out))
    return chosen


def recipe_linears(model, spec) -> list[tuple[str, nn.Linear, dict[str, Any]]]:
    """``(name, linear, {weights, group_size})`` of each layer a spec quantizes, honouring a per-layer recipe.

    Without ``layers``/``overrides`` this is :func:`target_linears` at the spec's own setting. With them,
    names are read at the recipe's ``depth`` (:func:`lib.config.layer_at_depth`), so a whisper-base recipe
    applies to the deeper whisper-small architecture by relative depth. A pattern that matches no layer is
    a :class:`~lib.config.ConfigError` naming it; ``proj_out`` is untied only when the recipe selects it.

    >>> # layers=["model.encoder.layers.0.fc2"], depth=2 on a 4-layer encoder -> layers 0 and 1's fc2
    """
    import dataclasses

    from ..config import ConfigError, layer_at_depth

    if not spec.per_layer:
        return [(n, m, {"weights": spec.weights, "group_size": spec.group_size}) for n, m in target_linears(model, spec)]
    plain = dataclasses.replace(spec, proj_out=False, layers=(), overrides=(), depth=None, recipe=None)
    candidates = list(target_linears(model, plain))
    if spec.proj_out:
        candidates.append(("proj_out", model.proj_out))
    depths = {"encoder": model.config.encoder_layers, "decoder": model.config.decoder_layers}

    def at_depth(name: str) -> str:
        side = name.split(".")[1] if name.startswith("model.") else None
        return layer_at_depth(name, depths[side], spec.depth) if side in depths and spec.depth else name

    chosen = []
    for name, module in candidates:
        setting = spec.setting_for(at_depth(name))
        if setting is not None:
            chosen.append((name, module, setting))
    names = [at_depth(n) for n, _m in candidates]
    if spec.depth and min(depths.values()) < spec.depth:  # a shallower model has no counterpart of some layers
        patterns_checked = ()
    else:
        patterns_checked = (("layers", spec.layers), ("overrides", [p for p, _ in spec.overrides]))
    for kind, patterns in patterns_checked:
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise ConfigError(f"{kind} pattern {pattern!r} matches no Linear layer of this model (scope "
                                  f"{spec.scope!r}); module names look like model.encoder.layers.0.fc1, "
                                  "model.decoder.layers.0.encoder_attn.q_proj, proj_out: fix the pattern")
    if any(name == "proj_out" for name, _m, _s in chosen):
        untie_proj_out(model)
        chosen = [(n, model.proj_out if n == "proj_out" else m, s) for n, m, s in chosen]
    return chosen


def untie_proj_out(model) -> None:
    """Give ``proj_out`` its own copy of the embedding so it can be quantized alone (+vocab x d_model floats)."""
    if model.proj_out.weight is model.model.decoder.embed_tokens.weight:
        model.proj_out.weight = nn.Parameter(model.proj_out.weight.detach().clone(), requires_grad=False)
    model.config.tie_word_embeddings = False
    if hasattr(model, "_tied_weights_keys"):
        model._tied_weights_keys = {} if isinstance(model._tied_weights_keys, dict) else []


def set_module(model, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def quantized_kind(module: nn.Module) -> str | None:
    """Name of the quantized form of a module, or None if it is float.

    >>> quantized_kind(nn.Linear(2, 2)) is None
    True
    """
    if type(module) is nn.Linear:
        w = module.weight
        return None if type(w) in (nn.Parameter, torch.Tensor) else f"Linear[{type(w).__name__}]"
    if getattr(type(module), "IS_QUANTIZED", False):  # a Linear subclass holding rounded weights (auto_round)
        return type(module).__name__
    if type(module).__module__.startswith(_QUANT_MODULE_PACKAGES):
        return type(module).__name__
    return None


def float_linears(model) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) is nn.Linear and quantized_kind(m) is None]


def linear_weights(model) -> dict[str, torch.Tensor]:
    """fp32 copies of every Linear weight (kept to measure reconstruction error)."""
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if type(m) is nn.Linear}


def outer_quantized_modules(model) -> list[tuple[str, str]]:
    """``(name, kind)`` of quantized modules, not counting their quantized children."""
    found: list[tuple[str, str]] = []
    for name, module in model.named_modules():
        if any(name.startswith(parent + ".") for parent, _ in found[-3:]):
            continue
        if kind := quantized_kind(module):
            found.append((name, kind))
    return found


def describe_modules(model) -> dict[str, Any]:
    kinds = Counter(kind for _name, kind in outer_quantized_modules(model))
    floats = float_linears(model)
    proj = model.proj_out
    return {"quantized_modules": dict(kinds), "quantized_count": sum(kinds.values()),
            "float_linear": len(floats), "float_linear_names": floats[:50],
            "proj_out_tied": proj.weight is model.model.decoder.embed_tokens.weight
            if hasattr(proj, "weight") and isinstance(getattr(proj, "weight", None), torch.Tensor) else False,
            "proj_out_quantized": quantized_kind(proj) is not None}


def weight_through_forward(module, in_features: int) -> torch.Tensor | None:
    """Recover the effective weight of a linear-like module: ``W = (f(I) - f(0))^T``.

    For weight-only schemes this is exactly the dequantized weight; one-hot
    rows quantize exactly, so dynamic activation schemes add no error either.
    """
    try:
        with torch.no_grad():
            eye = torch.eye(in_features).unsqueeze(0)
            return (module(eye) - module(torch.zeros_like(eye)))[0].T.float()
    except Exception:
        return None


def weight_errors(model, originals: dict[str, torch.Tensor], backend) -> dict[str, Any]:
    """Mean relative reconstruction error ||W - deq(Q(W))|| / ||W|| over the quantized layers."""
    dequantize: Callable | None = getattr(backend, "dequantize_weight", None)
    graph_weights = getattr(backend, "dequantized_graph_weights", lambda _: {})(model)  # exported graphs
    per_layer = {}
    if dequantize is None and not graph_weights:
        return {"mean": None, "max": None, "layers": 0, "note": "backend cannot dequantize weights"}
    for name, w in originals.items():
        deq = graph_weights.get(name)
        if deq is None and dequantize is not None:
            deq = _dequantize_module(model, name, w, dequantize)
        if deq is None:
            continue
        deq = deq.detach().float().reshape(w.shape)
        per_layer[name] = float((w - deq).norm() / w.norm().clamp_min(1e-12))
    if not per_layer:
        return {"mean": None, "max": None, "layers": 0}
    values = list(per_layer.values())
    return {"mean": sum(values) / len(values), "max": max(values), "layers": len(values), "per_layer": per_layer}


def _dequantize_module(model, name: str, weight: torch.Tensor, dequantize: Callable) -> torch.Tensor | None:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return None
    if quantized_kind(module) is None and not any(quantized_kind(c) for c in module.children()):
        return None
    try:
        deq = dequantize(module)
    except Exception:  # a layer type the backend cannot unpack
        deq = None
    return deq if deq is not None else weight_through_forward(module, weight.shape[1])


def calibration_features(processor, utterances, batch_size: int = 4):
    """Log-mel feature batches of the calibration utterances."""
    utterances = list(utterances or [])
    for i in range(0, len(utterances), batch_size):
        yield features(processor, [u.audio for u in utterances[i:i + batch_size]])


def calibrate(model, processor, utterances, max_new_tokens: int = 128) -> int:
    """Run the full decoding recipe over calibration utterances so observers see real activations."""
    count = 0
    for feats in calibration_features(processor, utterances):
        generate(model, feats, max_new_tokens=max_new_tokens)
        count += feats.shape[0]
    if not count:
        raise ValueError("static quantization got no calibration utterances")
    return count
