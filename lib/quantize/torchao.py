"""torchao, PyTorch's current PTQ library (``quantize_`` with a config per scheme).

* ``weight_only int8``: ``Int8WeightOnlyConfig`` (per-row scales).
* ``dynamic int8``: ``Int8DynamicActivationInt8WeightConfig`` (per-row weights,
  per-token activations quantized on the fly).
* ``weight_only int4`` with a group size: ``layout=opaque`` (default) uses
  ``PrototypeInt4WeightOnlyConfig`` (Int4OpaqueTensor, CPU tinygemm kernel);
  ``layout=intx`` uses ``IntxWeightOnlyConfig`` (int4 values stored unpacked
  in int8).  The plain, tile-packed, int32 and preshuffled int4 layouts need
  bf16, CUDA or extra kernels and fail on this CPU.
* ``compute=bf16`` casts the whole model to bfloat16 before quantizing, torchao's
  CPU int4 recipe: the opaque kernel (``_weight_int4pack_mm_for_cpu``) is fast
  only on bf16 activations.  On this AVX2 CPU (2 threads) one 1500x512 @ 512x2048
  product took 4.7 s with fp32 activations, 0.11 s with bf16 and 0.06 s as a plain
  fp32 Linear (``benchmarks/int4_kernel.py``).
  Everything left in float (convolutions, norms, embeddings) is then bf16 too.
"""
from __future__ import annotations

from typing import Any

from . import check_allowed
from .common import target_linears

SUPPORTED = [
    {"scheme": "weight_only", "weights": "int8", "granularity": (None, "per_channel"), "group_size": (None,)},
    {"scheme": "dynamic", "weights": "int8", "activations": "int8", "granularity": (None, "per_channel"),
     "group_size": (None,)},
    {"scheme": "weight_only", "weights": "int4", "granularity": (None, "per_group"), "group_size": (32, 64, 128)},
]
OPTIONS = {"layout": ("opaque", "intx"), "compute": ("fp32", "bf16")}


def validate(spec) -> None:
    check_allowed(spec, SUPPORTED, OPTIONS)


def config_for(spec):
    """The torchao config object for a spec, e.g. weight_only int4 g64 -> ``PrototypeInt4WeightOnlyConfig(group_size=64)``."""
    import torchao.quantization as tq

    if spec.weights == "int8":
        return tq.Int8WeightOnlyConfig() if spec.scheme == "weight_only" else tq.Int8DynamicActivationInt8WeightConfig()
    if spec.option_dict.get("layout", "opaque") == "intx":
        import torch
        from torchao.quantization.granularity import PerGroup

        return tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(spec.group_size))
    from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

    return PrototypeInt4WeightOnlyConfig(group_size=spec.group_size)


def apply(model, spec, calibration=None, processor=None, calibration_tokens: int = 128) -> dict[str, Any]:
    import torch
    from torchao.quantization import quantize_

    names = {name for name, _ in target_linears(model, spec)}
    config = config_for(spec)
    compute = spec.option_dict.get("compute", "fp32")
    if compute == "bf16":
        model.to(torch.bfloat16)
    quantize_(model, config, filter_fn=lambda module, fqn: fqn in names)
    return {"method": f"quantize_({type(config).__name__})", "compute_dtype": compute}


def dequantize_weight(module):
    """The weight as the kernel sees it; Int4OpaqueTensor has no ``dequantize`` and is read back instead."""
    try:
        return module.weight.dequantize()
    except NotImplementedError:
        return read_back_weight(module)


def read_back_weight(module):
    """A Linear's effective weight read through its own kernel: ``linear(I) - bias = W^T``.

    E.g. a 2048x512 weight comes back from one 512x512 @ 512x2048 product, in the module's dtype.
    """
    import torch

    with torch.no_grad():
        product = module(torch.eye(module.in_features, dtype=module.weight.dtype))
        if module.bias is not None:
            product = product - module.bias
    return product.t()
