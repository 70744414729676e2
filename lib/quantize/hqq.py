"""HQQ (half-quadratic quantization): calibration-free weight-only, 8 to 1 bits.

Each chosen Linear becomes ``HQQLinear(nbits, group_size, axis)`` with float32
compute on CPU, using the PYTORCH backend (the only one that runs on CPU
without HQQ's extension).  ``axis`` defaults to 1, as HQQ recommends.
"""
from __future__ import annotations

from typing import Any

from . import check_allowed
from .common import set_module, target_linears

BITS = {"int8": 8, "int4": 4, "int3": 3, "int2": 2, "int1": 1}
SUPPORTED = [{"scheme": "weight_only", "weights": w, "granularity": (None, "per_group"), "group_size": (32, 64, 128)}
             for w in BITS]
OPTIONS = {"axis": (0, 1)}


def validate(spec) -> None:
    check_allowed(spec, SUPPORTED, OPTIONS)


def apply(model, spec, calibration=None, processor=None, calibration_tokens: int = 128) -> dict[str, Any]:
    import torch
    from hqq.core.quantize import BaseQuantizeConfig, HQQBackend, HQQLinear

    HQQLinear.set_backend(HQQBackend.PYTORCH)
    axis = spec.option_dict.get("axis", 1)
    config = BaseQuantizeConfig(nbits=BITS[spec.weights], group_size=spec.group_size, axis=axis)
    for name, linear in target_linears(model, spec):
        set_module(model, name, HQQLinear(linear, quant_config=config, compute_dtype=torch.float32,
                                          device="cpu", del_orig=True))
    return {"method": f"HQQLinear(nbits={BITS[spec.weights]}, group_size={spec.group_size}, axis={axis})",
            "backend": "PYTORCH"}


def dequantize_weight(module):
    return module.dequantize() if hasattr(module, "dequantize") else None
