"""HQQ (half-quadratic quantization): calibration-free weight-only, 8 to 1 bits.

Each chosen Linear becomes ``HQQLinear(nbits, group_size, axis)`` with float32
compute on CPU, using the PYTORCH backend (the only one that runs on CPU
without HQQ's extension).  ``axis`` defaults to 1, as HQQ recommends.
A per-layer recipe (``layers``/``overrides``, :class:`lib.config.QuantSpec`) quantizes only the layers it
selects, each at its own bit-width and group size (:func:`lib.quantize.common.recipe_linears`).
"""
from __future__ import annotations

from typing import Any

import dataclasses

from ..config import ConfigError
from . import check_allowed
from .common import recipe_linears, set_module

BITS = {"int8": 8, "int4": 4, "int3": 3, "int2": 2, "int1": 1}
SUPPORTED = [{"scheme": "weight_only", "weights": w, "granularity": (None, "per_group"), "group_size": (32, 64, 128)}
             for w in BITS]
OPTIONS = {"axis": (0, 1)}
PER_LAYER = True  # honours layers/overrides recipes


def validate(spec) -> None:
    """The spec and every override's bit-width/group size must be in :data:`SUPPORTED`."""
    plain = dataclasses.replace(spec, layers=(), overrides=(), depth=None, recipe=None)
    check_allowed(plain, SUPPORTED, OPTIONS)
    for pattern, setting in spec.overrides:
        try:
            check_allowed(dataclasses.replace(plain, **dict(setting)), SUPPORTED, OPTIONS)
        except ConfigError as exc:
            raise ConfigError(f"override {pattern!r}: {exc}") from None


def apply(model, spec, calibration=None, processor=None, calibration_tokens: int = 128) -> dict[str, Any]:
    import torch
    from hqq.core.quantize import BaseQuantizeConfig, HQQBackend, HQQLinear

    HQQLinear.set_backend(HQQBackend.PYTORCH)
    axis = spec.option_dict.get("axis", 1)
    counts: dict[str, int] = {}
    for name, linear, setting in recipe_linears(model, spec):
        nbits, group = BITS[setting["weights"]], setting["group_size"]
        config = BaseQuantizeConfig(nbits=nbits, group_size=group, axis=axis)
        set_module(model, name, HQQLinear(linear, quant_config=config, compute_dtype=torch.float32,
                                          device="cpu", del_orig=True))
        key = f"nbits={nbits}, group_size={group}"
        counts[key] = counts.get(key, 0) + 1
    meta = {"method": f"HQQLinear(nbits={BITS[spec.weights]}, group_size={spec.group_size}, axis={axis})",
            "backend": "PYTORCH"}
    if spec.per_layer:
        meta["recipe"] = {"name": spec.recipe, "layers_by_setting": counts}
    return meta


def dequantize_weight(module):
    return module.dequantize() if hasattr(module, "dequantize") else None
