"""Quantization backends behind one signature.

Every backend module (``torch_ao``, ``torchao``, ``quanto``, ``hqq``, ``bnb``, ``auto_round``, ``torch_cast``)
exposes ``SUPPORTED`` (its allow-list, plain data), ``validate(spec)`` and
``apply(model, spec, calibration, processor, calibration_tokens) -> dict`` which quantizes the fp32 Whisper
in place and returns backend metadata.  Heavy libraries are imported inside
``apply``, so importing this package is cheap.
A deployment runtime (:data:`RUNTIMES`, modules in :mod:`lib.runtimes`) is a library
value too; its ``convert`` returns a new model object (the runtime's), not an in-place change.

>>> sorted(BACKENDS)
['auto_round', 'bnb', 'ctranslate2', 'hqq', 'onnxruntime', 'openvino', 'quanto', 'torch_ao', 'torch_cast', 'torchao', 'whisper_cpp']
"""
from __future__ import annotations

import importlib
import time
from types import ModuleType
from typing import Any, Sequence

from ..config import LIBRARY_NAMES, ConfigError

BACKENDS = {"torch_ao": "torch.ao.quantization (eager/PT2E, deprecated upstream)",
            "torchao": "torchao", "quanto": "optimum-quanto", "hqq": "hqq", "bnb": "bitsandbytes",
            "auto_round": "auto-round (SignRound: calibrated rounding, weight-only int4/int3, fake-quant on CPU)",
            "torch_cast": "torch (whole-model bfloat16/float16 cast)"}
RUNTIMES = {"ctranslate2": "CTranslate2", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO + NNCF",
            "whisper_cpp": "whisper.cpp (pywhispercpp)"}
BACKENDS.update(RUNTIMES)
LIBRARY_ORDER = tuple(LIBRARY_NAMES)  # the book's order: fp32, the paper's libraries, torchao, then runtimes


def backend(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise ConfigError(f"unknown library {name!r}; use one of: none, {', '.join(BACKENDS)}")
    package = f"{__package__.rpartition('.')[0]}.runtimes" if name in RUNTIMES else __name__
    return importlib.import_module(f"{package}.{name}")


def validate_spec(spec) -> None:
    """Raise :class:`ConfigError` listing what is supported when the backend does not support ``spec``.

    The spec's own fields were checked when it was built (:class:`lib.config.QuantSpec`).
    """
    if spec.is_baseline:
        return
    module = backend(spec.library)
    if spec.per_layer and not getattr(module, "PER_LAYER", False):
        raise ConfigError(f"per-layer recipes (layers/overrides) are implemented for hqq and whisper_cpp (per-tensor "
                          f"ggml types), not {spec.library}; use one of those or drop layers/overrides")
    module.validate(spec)


def check_allowed(spec, supported: Sequence[dict[str, Any]], options: dict[str, tuple] | None = None) -> None:
    """Match ``spec`` against a backend's allow-list rows.

    A row holds ``scheme``, ``weights``, ``activations``, ``granularity``
    (tuple) and ``group_size`` (tuple; ``None`` = no groups).  ``options``
    maps each allowed option name to its allowed values.
    """
    for row in supported:
        if (spec.scheme == row["scheme"] and spec.weights == row["weights"]
                and spec.activations == row.get("activations", "none")
                and spec.granularity in row["granularity"] and spec.group_size in row["group_size"]):
            break
    else:
        listing = "; ".join(
            f"{r['scheme']} w={r['weights']} a={r.get('activations', 'none')} "
            f"gran={'/'.join(str(g) for g in r['granularity'])} group={'/'.join(str(g) for g in r['group_size'])}"
            for r in supported)
        raise ConfigError(f"{spec.library} does not support scheme={spec.scheme} weights={spec.weights} "
                          f"activations={spec.activations} granularity={spec.granularity} "
                          f"group_size={spec.group_size}; supported: {listing}")
    options = options or {}
    for key, value in spec.options:
        if key not in options:
            raise ConfigError(f"{spec.library} has no option {key!r}; options: {sorted(options) or 'none'}")
        if value not in options[key]:
            raise ConfigError(f"{spec.library} option {key}={value!r} not allowed; use one of {options[key]}")


def quantize(model, spec, calibration: Sequence | None = None, processor=None,
             measure_error: bool = True, calibration_tokens: int = 128) -> tuple[Any, dict[str, Any]]:
    """Quantize a loaded fp32 Whisper in place; return ``(model, metadata)``.

    Metadata: quantized module types and counts, what stayed float, whether
    ``proj_out`` was untied and quantized, the calibration set and the time
    quantization took.
    """
    from .common import describe_modules, float_linears, linear_weights, weight_errors

    if spec.is_baseline:
        return model, {"library": "none", "quantized_modules": {}, "float_linear": len(float_linears(model)),
                       "seconds": 0.0}
    module = backend(spec.library)
    if spec.per_layer:
        validate_spec(spec)  # a per-layer recipe on a library that ignores it would run as uniform: refuse
    if spec.library in RUNTIMES:  # a runtime converts into its own model object
        start = time.perf_counter()
        runtime, extra = module.convert(model, spec, calibration=calibration, processor=processor,
                                        calibration_tokens=calibration_tokens)
        meta = {"library": spec.library, "seconds": time.perf_counter() - start, **runtime.describe(), **extra}
        if calibration is not None and spec.calibration:
            meta["calibration"] = [getattr(u, "id", str(u)) for u in calibration]
        return runtime, meta
    originals = linear_weights(model) if measure_error else {}
    start = time.perf_counter()
    extra = module.apply(model, spec, calibration=calibration, processor=processor,
                         calibration_tokens=calibration_tokens) or {}
    seconds = time.perf_counter() - start
    meta = {"library": spec.library, **describe_modules(model), "seconds": seconds, **extra}
    if calibration is not None and spec.calibration:
        meta["calibration"] = [getattr(u, "id", str(u)) for u in calibration]
        meta["calibration_tokens"] = calibration_tokens
    if measure_error:
        meta["weight_error"] = weight_errors(model, originals, module)
    return model, meta
