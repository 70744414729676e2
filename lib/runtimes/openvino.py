"""OpenVINO, with NNCF for weight compression and calibrated int8.

``optimum-intel`` (the usual exporter; 2.2.0 requires ``transformers>=4.51,<5.6`` and torchvision)
cannot be installed beside this project's transformers 5.24, so
the two graphs of :mod:`lib.runtimes.graphs` are converted directly with
``openvino.convert_model`` of the PyTorch modules and saved as IR (``.xml`` + ``.bin``,
``compress_to_fp16=False``).  They are compiled for the CPU with
``INFERENCE_PRECISION_HINT=f32`` by default, so a row means the same on every CPU; with the option
``precision: bf16`` a row runs as OpenVINO's users get it on a CPU with AMX or AVX-512-BF16, where bf16 is
OpenVINO's default (``INFERENCE_PRECISION_HINT=bf16``). On a CPU without a BF16 unit that row is
:class:`~lib.runtimes.NotOffered` (OpenVINO would silently run f32 there). Decoding is
:func:`lib.runtimes.greedy_loop`, as for ONNX Runtime.

===========================================  ==================================================
spec                                         what runs
===========================================  ==================================================
``weights: fp32``                            the converted IR
``weight_only int8, per_channel, sym: b``    ``nncf.compress_weights`` INT8_SYM / INT8_ASYM
``weight_only int4, group 128, sym: b``      ``nncf.compress_weights`` INT4_SYM / INT4_ASYM, group 128,
                                             ``ratio=1`` (every Linear in int4)
``static int8/int8, cal N``                  ``nncf.quantize`` (``ModelType.TRANSFORMER``), calibrated on
                                             the encoder inputs and decoder steps of N unscored utterances;
                                             SmoothQuant on (NNCF's default for transformers, MatMul alpha
                                             0.95); ``options: {smooth_quant: false}`` turns it off
===========================================  ==================================================

As in the PyTorch rows, the tied embedding / output projection and the convolutions stay
float (an NNCF ``IgnoredScope``).  ``teacher_forced_logits``: one decoder pass on the whole sequence.

>>> mode(type("S", (), {"weights": "int4", "option_dict": {"sym": False}})())
'INT4_ASYM'
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from . import require, runtime_dir, thread_count
from .onnxruntime import GraphWhisper, Sessions
from ..quantize import check_allowed

SUPPORTED = [
    {"scheme": "none", "weights": "fp32", "granularity": (None,), "group_size": (None,)},
    {"scheme": "weight_only", "weights": "int8", "granularity": (None, "per_channel"), "group_size": (None,)},
    {"scheme": "weight_only", "weights": "int4", "granularity": (None, "per_group"), "group_size": (128,)},
    {"scheme": "static", "weights": "int8", "activations": "int8", "granularity": (None,), "group_size": (None,)},
]
OPTIONS = {"sym": (True, False), "precision": ("f32", "bf16"), "smooth_quant": (False,)}
PIP = "openvino nncf"
CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}


def mode(spec) -> str:
    return f"{spec.weights.upper()}_{'SYM' if spec.option_dict.get('sym', True) else 'ASYM'}"


def validate(spec) -> None:
    check_allowed(spec, SUPPORTED, OPTIONS)
    from ..config import ConfigError

    if precision(spec) == "bf16" and spec.scheme == "static":
        raise ConfigError("openvino: precision bf16 applies to fp32 and weight-only rows, not nncf.quantize")
    if spec.scheme != "static" and "smooth_quant" in spec.option_dict:
        raise ConfigError("openvino: smooth_quant applies to nncf.quantize (scheme static), not weight compression")
    if spec.scheme == "static" and "sym" in spec.option_dict:
        raise ConfigError("openvino: 'sym' applies to weight compression (weight_only), not nncf.quantize")
    if spec.scope != "all" or spec.proj_out:
        raise ConfigError("openvino converts the whole model: leave scope 'all' and proj_out false")


def convert_graphs(model) -> dict[str, Any]:
    """``openvino.Model`` of the encoder and decoder graphs (inputs named as in :mod:`lib.runtimes.graphs`)."""
    import warnings

    import torch

    from .graphs import DECODER_INPUTS, DecoderGraph, EncoderGraph, example_inputs

    ov = require("openvino", PIP)
    feats, dec_args = example_inputs(model)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return {"encoder": ov.convert_model(EncoderGraph(model).eval(), example_input={"input_features": feats}),
                "decoder": ov.convert_model(DecoderGraph(model, vocab_by_columns=False).eval(),
                                            example_input=dict(zip(DECODER_INPUTS, dec_args)))}


def float_scope(ov_model):
    """NNCF ``IgnoredScope`` keeping float what the PyTorch rows keep float: the vocabulary matrix's users
    (embedding Gather, output projection MatMul) and the convolutions."""
    import nncf

    names = []
    for op in ov_model.get_ops():
        if op.get_type_name() == "Constant" and 51865 in list(op.get_output_shape(0)):
            names += [t.get_node().get_friendly_name() for t in op.output(0).get_target_inputs()]
    return nncf.IgnoredScope(names=names, types=["Convolution"], validate=False), names


def precision(spec) -> str:
    """The inference precision a spec asks for: ``'f32'`` unless ``options: {precision: bf16}``."""
    return spec.option_dict.get("precision", "f32")


def check_precision(wanted: str) -> None:
    """Raise :class:`~lib.runtimes.NotOffered` when this CPU has no BF16 unit for ``wanted == 'bf16'``."""
    from . import NotOffered

    if wanted == "f32":
        return
    ov = require("openvino", PIP)
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in capabilities:
        raise NotOffered(f"OpenVINO {ov.__version__} offers no bf16 inference on this CPU "
                         f"(OPTIMIZATION_CAPABILITIES = {sorted(capabilities)}); it needs AMX or AVX-512-BF16")


class OvSessions(Sessions):
    def __init__(self, paths: dict[str, Path], threads: int, inference_precision: str = "f32"):
        ov = require("openvino", PIP)
        core = ov.Core()
        config = {**CONFIG, "INFERENCE_PRECISION_HINT": inference_precision, "INFERENCE_NUM_THREADS": threads}
        self.encoder = core.compile_model(str(paths["encoder"]), "CPU", config)
        self.decoder = core.compile_model(str(paths["decoder"]), "CPU", config)

    def encode(self, features):
        out = self.encoder({"input_features": features})
        return [out[i] for i in range(3)]

    def decode(self, ids, cross_k, cross_v, past_k, past_v):
        out = self.decoder({"input_ids": ids, "cross_k": cross_k, "cross_v": cross_v,
                            "past_k": past_k, "past_v": past_v})
        return [out[i] for i in range(3)]


class OvWhisper(GraphWhisper):
    runtime = "openvino"


def save(models: dict[str, Any], target: Path) -> dict[str, Path]:
    ov = require("openvino", PIP)
    target.mkdir(parents=True, exist_ok=True)
    paths = {part: target / f"{part}.xml" for part in models}
    for part, m in models.items():
        ov.save_model(m, str(paths[part]), compress_to_fp16=False)
    return paths


def convert(model, spec, calibration=None, processor=None, calibration_tokens: int = 128) -> tuple[OvWhisper, dict]:
    ov = require("openvino", PIP)
    check_precision(precision(spec))
    keep = runtime_dir("ov")
    root = Path(keep.name)
    gen = model.generation_config
    rules = dict(suppress_tokens=list(gen.suppress_tokens or []), begin_suppress_tokens=list(gen.begin_suppress_tokens or []))
    models = convert_graphs(model)
    threads = thread_count()
    meta: dict[str, Any] = {"method": "openvino.convert_model", "openvino": ov.__version__,
                            "compile_config": {**CONFIG, "INFERENCE_PRECISION_HINT": precision(spec),
                                               "INFERENCE_NUM_THREADS": threads}}
    if spec.scheme != "none":
        nncf = require("nncf", PIP)
        scopes = {part: float_scope(m) for part, m in models.items()}
        meta["float_nodes"] = {part: names for part, (_scope, names) in scopes.items()}
        if spec.scheme == "weight_only":
            kwargs = {"mode": getattr(nncf.CompressWeightsMode, mode(spec))}
            if spec.weights == "int4":
                kwargs.update(group_size=spec.group_size, ratio=1.0)
            models = {part: nncf.compress_weights(m, ignored_scope=scopes[part][0], **kwargs)
                      for part, m in models.items()}
            meta.update(method=f"nncf.compress_weights({mode(spec)})", mode=mode(spec),
                        group_size=spec.group_size if spec.weights == "int4" else None)
        else:
            fp32_paths = save(models, root / "fp32")
            fp32 = OvWhisper(root / "fp32", None, OvSessions(fp32_paths, threads), **rules)
            steps = max(1, int(calibration_tokens))
            quantized, advanced = {}, {}
            if spec.option_dict.get("smooth_quant") is False:  # alpha -1 switches SmoothQuant off (NNCF's doc)
                from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                                   AdvancedSmoothQuantParameters)

                advanced["advanced_parameters"] = AdvancedQuantizationParameters(
                    smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1))
            for part, m in models.items():
                feeds = list(fp32.calibration_inputs(calibration or [], processor, steps, part))
                if not feeds:
                    raise ValueError("nncf.quantize got no calibration inputs")
                quantized[part] = nncf.quantize(m, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                                                subset_size=len(feeds), ignored_scope=scopes[part][0], **advanced)
                meta.setdefault("calibration_samples", {})[part] = len(feeds)
            models = quantized
            import shutil

            del fp32
            shutil.rmtree(root / "fp32")
            meta.update(method="nncf.quantize(model_type=TRANSFORMER)", calibration_decoder_steps=steps,
                        smooth_quant="off (matmul alpha -1)" if advanced else "NNCF default (matmul alpha 0.95)")
    paths = save(models, root / "model")
    sessions = OvSessions(paths, threads, precision(spec))
    resolved = sessions.encoder.get_property("INFERENCE_PRECISION_HINT")  # an openvino Type, e.g. f32
    meta["resolved_precision"] = resolved.get_type_name() if hasattr(resolved, "get_type_name") else str(resolved)
    return OvWhisper(root / "model", keep, sessions, **rules), meta
