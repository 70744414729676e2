"""bitsandbytes on CPU (0.47+): LLM.int8 and 4-bit nf4/fp4.

* ``dynamic int8`` = LLM.int8 (``Linear8bitLt``): int8 row-wise weights,
  activations quantized per token on the fly; columns whose activations
  exceed ``threshold`` (default 6.0) stay in float ("outlier decomposition"),
  ``threshold=0`` is pure int8. float32 inputs are cast to float16 before
  they are quantized (the library logs this on every call; shown once here).
* ``weight_only nf4/fp4`` (``Linear4bit``): blocks of 64 (fixed by the
  library), float32 compute, ``double_quant`` also quantizes the block scales.
"""
from __future__ import annotations

from typing import Any

from . import check_allowed
from ..config import ConfigError
from .common import log_once, set_module, target_linears

SUPPORTED = [
    {"scheme": "dynamic", "weights": "int8", "activations": "int8", "granularity": (None, "per_channel"),
     "group_size": (None,)},
    {"scheme": "weight_only", "weights": "nf4", "granularity": (None,), "group_size": (None,)},
    {"scheme": "weight_only", "weights": "fp4", "granularity": (None,), "group_size": (None,)},
]
OPTIONS = {"threshold": (0, 0.0, 6, 6.0), "double_quant": (True, False)}


def validate(spec) -> None:
    check_allowed(spec, SUPPORTED, OPTIONS)

    keys = set(spec.option_dict)
    if spec.weights == "int8" and "double_quant" in keys or spec.weights != "int8" and "threshold" in keys:
        raise ConfigError("bnb: 'threshold' applies to LLM.int8 (int8), 'double_quant' to nf4/fp4")


def apply(model, spec, calibration=None, processor=None, calibration_tokens: int = 128) -> dict[str, Any]:
    import bitsandbytes as bnb
    import torch

    # LLM.int8 casts float32 inputs to float16 and logs it on every call (42k lines in one run's notebook)
    log_once("bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast")
    opts = spec.option_dict
    for name, linear in target_linears(model, spec):
        has_bias = linear.bias is not None
        if spec.weights == "int8":
            new = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                      has_fp16_weights=False, threshold=float(opts.get("threshold", 6.0)))
            new.weight = bnb.nn.Int8Params(linear.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias,
                                    compute_dtype=torch.float32, quant_type=spec.weights,
                                    compress_statistics=bool(opts.get("double_quant", False)))
            new.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False,
                                           quant_type=spec.weights,
                                           compress_statistics=bool(opts.get("double_quant", False)))
        if has_bias:
            new.bias = torch.nn.Parameter(linear.bias.data.clone(), requires_grad=False)
        new = new.to("cpu")  # bitsandbytes quantizes when the parameter is moved to a device
        set_module(model, name, new)
    return {"method": "Linear8bitLt" if spec.weights == "int8" else "Linear4bit",
            "blocksize": None if spec.weights == "int8" else 64}


def dequantize_weight(module):
    import bitsandbytes as bnb

    weight = module.weight
    if getattr(weight, "quant_state", None) is not None:
        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state)
    scb = getattr(weight, "SCB", None) if getattr(weight, "SCB", None) is not None else getattr(module.state, "SCB", None)
    if scb is not None and weight.dtype == __import__("torch").int8:
        return weight.data.float() * scb.float()[:, None] / 127.0
    return None
