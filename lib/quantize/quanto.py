"""optimum-quanto: ``quantize`` + ``freeze`` on the loaded model.

Weight formats qint8 / qint4 / qint2 / qfloat8 (``int8``, ``int4``, ``int2``,
``float8``); qint4 and qint2 are grouped by the library (group size 128).

Activations (int8) are where the paper's "Quanto dynamic int8" needs a reading:
quanto has no on-the-fly activation scaling.  Its activation scales start at
1.0 and are only set inside ``Calibration()``.  So:

* ``scheme=dynamic, activations=int8``: quantize activations with no
  calibration, which is what calling quanto with ``activations=qint8`` and
  no calibration gives;
* ``scheme=static, activations=int8, calibration=N``: scales calibrated on N
  unscored utterances (quanto's documented recipe);
* ``scheme=weight_only``: int8 weights, float activations (the other reading).
"""
from __future__ import annotations

from typing import Any

from . import check_allowed
from .common import calibrate, target_linears

_W = {"int8": "qint8", "int4": "qint4", "int2": "qint2", "float8": "qfloat8"}
SUPPORTED = [
    {"scheme": "weight_only", "weights": "int8", "granularity": (None, "per_channel"), "group_size": (None,)},
    {"scheme": "weight_only", "weights": "float8", "granularity": (None, "per_channel"), "group_size": (None,)},
    {"scheme": "weight_only", "weights": "int4", "granularity": (None, "per_group"), "group_size": (None, 128)},
    {"scheme": "weight_only", "weights": "int2", "granularity": (None, "per_group"), "group_size": (None, 128)},
    {"scheme": "dynamic", "weights": "int8", "activations": "int8", "granularity": (None, "per_channel"),
     "group_size": (None,)},
    {"scheme": "static", "weights": "int8", "activations": "int8", "granularity": (None, "per_channel"),
     "group_size": (None,)},
]


def validate(spec) -> None:
    check_allowed(spec, SUPPORTED)


def apply(model, spec, calibration=None, processor=None, calibration_tokens: int = 128) -> dict[str, Any]:
    import optimum.quanto as oq

    names = [name for name, _ in target_linears(model, spec)]
    weights = getattr(oq, _W[spec.weights])
    activations = oq.qint8 if spec.activations == "int8" else None
    oq.quantize(model, weights=weights, activations=activations, include=names)
    extra: dict[str, Any] = {"method": f"quantize(weights={_W[spec.weights]}, activations="
                                       f"{'qint8' if activations else None})"}
    if spec.scheme == "static":
        with oq.Calibration():
            extra["calibrated_utterances"] = calibrate(model, processor, calibration, calibration_tokens)
    oq.freeze(model)
    return extra


def dequantize_weight(module):
    qweight = getattr(module, "qweight", None)
    return qweight.dequantize() if qweight is not None and hasattr(qweight, "dequantize") else None
