"""Whole-model half precision: ``model.to(torch.bfloat16)`` or ``model.to(torch.float16)``.

No quantization library: every weight, and so every matmul, layer norm and
softmax, runs in the cast dtype (the harness casts the log-mel features to it).
This is what a deployer tries first on a CPU with AMX or AVX-512-BF16, and the
reference an int8 or int4 row must beat there.

>>> from lib.config import QuantSpec
>>> QuantSpec(library="torch_cast", weights="bfloat16").slug
'torch_cast-bfloat16'
"""
from __future__ import annotations

from typing import Any

from . import check_allowed

DTYPES = ("bfloat16", "float16")
SUPPORTED = [{"scheme": "none", "weights": w, "granularity": (None,), "group_size": (None,)} for w in DTYPES]


def validate(spec) -> None:
    check_allowed(spec, SUPPORTED)
    if spec.scope != "all" or spec.proj_out:
        from ..config import ConfigError

        raise ConfigError("torch_cast casts the whole model: leave scope 'all' and proj_out false")


def apply(model, spec, calibration=None, processor=None, calibration_tokens: int = 128) -> dict[str, Any]:
    import torch

    model.to(getattr(torch, spec.weights))
    return {"method": f"model.to(torch.{spec.weights})", "compute_dtype": spec.weights}


def dequantized_graph_weights(model) -> dict[str, Any]:
    """Every Linear weight as float32, to measure the cast's rounding error against the fp32 copy."""
    from torch import nn

    return {n: m.weight.detach().float() for n, m in model.named_modules() if type(m) is nn.Linear}
