"""ONNX Runtime: our own export of encoder and decoder-with-KV-cache, then ``onnxruntime.quantization``.

``optimum-onnx`` (the usual exporter; 0.1.0 requires ``transformers>=4.36,<4.58``) cannot be installed
beside this project's transformers 5.x, so the two graphs of :mod:`lib.runtimes.graphs`
are exported with ``torch.onnx.export`` (TorchScript exporter, opset 17, dynamic batch and
sequence axes): ``encoder.onnx`` (log-mel features -> hidden states and every layer's
cross-attention keys/values) and ``decoder.onnx`` (new tokens + KV cache -> logits + the
grown cache).  The tied output projection is stored once.  Decoding is
:func:`lib.runtimes.greedy_loop` with transformers' suppress rules, so the fp32 row decodes
as PyTorch fp32 does.

==========================================  ======================================================
spec                                        what runs
==========================================  ======================================================
``weights: fp32``                           the export, float32
``dynamic int8/int8, per_channel|tensor``   ``quantize_dynamic`` (QInt8 weights; uint8 activations
                                            quantized on the fly, MatMulInteger)
``static int8/uint8, per_channel, cal N``   ``quantize_static`` QDQ, MinMax ranges from N unscored
                                            utterances (encoder inputs and decoder steps of the fp32 export)
``weight_only int4, group 32|128``          ``MatMulNBitsQuantizer`` (4-bit blocks, symmetric,
                                            ``accuracy_level=4``: int8 activations in the kernel, ONNX
                                            Runtime's CPU recipe), one ``MatMulNBits`` per Linear
==========================================  ======================================================

Only the Linear layers' MatMuls are quantized (``nodes_to_quantize``: MatMuls with a weight
initializer, the output projection excluded), as in the PyTorch rows: convolutions, embeddings and attention
products stay float.  ``teacher_forced_logits`` runs the decoder once on the whole sequence.

>>> SUPPORTED[1]["granularity"]
('per_channel', 'per_tensor')
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import HookedEncoder, RuntimeModel, greedy_loop, require, runtime_dir, thread_count
from ..quantize import check_allowed

SUPPORTED = [
    {"scheme": "none", "weights": "fp32", "granularity": (None,), "group_size": (None,)},
    {"scheme": "dynamic", "weights": "int8", "activations": "int8", "granularity": ("per_channel", "per_tensor"),
     "group_size": (None,)},
    {"scheme": "static", "weights": "int8", "activations": "uint8", "granularity": ("per_channel", "per_tensor"),
     "group_size": (None,)},
    {"scheme": "weight_only", "weights": "int4", "granularity": (None, "per_group"), "group_size": (32, 128)},
]
ACCURACY_LEVEL = 4  # MatMulNBits computes with int8 activations: ONNX Runtime's fast CPU path for 4-bit weights
OPSET = 17
PIP = "onnxruntime onnx"


def validate(spec) -> None:
    check_allowed(spec, SUPPORTED)
    if spec.scope != "all" or spec.proj_out:
        from ..config import ConfigError

        raise ConfigError("onnxruntime quantizes every Linear of the export: leave scope 'all' and proj_out false")


def export(model, target: Path) -> dict[str, Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` of an fp32 transformers Whisper into ``target``."""
    import warnings

    import torch

    from .graphs import (DECODER_INPUTS, DECODER_OUTPUTS, DYNAMIC_AXES, ENCODER_INPUTS, ENCODER_OUTPUTS,
                         DecoderGraph, EncoderGraph, example_inputs)

    target.mkdir(parents=True, exist_ok=True)
    feats, dec_args = example_inputs(model)
    paths = {"encoder": target / "encoder.onnx", "decoder": target / "decoder.onnx"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic: the axes are declared dynamic
        torch.onnx.export(EncoderGraph(model).eval(), (feats,), str(paths["encoder"]), input_names=ENCODER_INPUTS,
                          output_names=ENCODER_OUTPUTS, dynamic_axes=DYNAMIC_AXES, opset_version=OPSET, dynamo=False)
        torch.onnx.export(DecoderGraph(model).eval(), dec_args, str(paths["decoder"]), input_names=DECODER_INPUTS,
                          output_names=DECODER_OUTPUTS, dynamic_axes=DYNAMIC_AXES, opset_version=OPSET, dynamo=False)
    return paths


class Sessions:
    """An encoder and a decoder callable on numpy arrays, and the greedy step over them."""

    def encode(self, features):  # -> (hidden, cross_k, cross_v)
        raise NotImplementedError

    def decode(self, ids, cross_k, cross_v, past_k, past_v):  # -> (logits, present_k, present_v)
        raise NotImplementedError

    def stepper(self, cross_k, cross_v):
        """A greedy ``step(new_ids) -> last logits`` that keeps the KV cache between calls."""
        import numpy as np

        layers, batch, heads, _s, dh = cross_k.shape
        cache = [np.zeros((layers, batch, heads, 0, dh), np.float32)] * 2

        def step(ids):
            logits, cache[0], cache[1] = self.decode(ids, cross_k, cross_v, cache[0], cache[1])
            return logits[:, -1]

        return step


class GraphWhisper(RuntimeModel):
    """A Whisper run as the two graphs of :mod:`lib.runtimes.graphs` by some :class:`Sessions`."""

    def __init__(self, model_dir, keep, sessions: Sessions, suppress_tokens=(), begin_suppress_tokens=()):
        super().__init__(model_dir, keep, suppress_tokens, begin_suppress_tokens)
        self.sessions = sessions
        self.encoder = HookedEncoder(self._encode, lambda out: out[0])

    def _encode(self, input_features):
        import numpy as np

        array = input_features.detach().float().numpy() if hasattr(input_features, "detach") else input_features
        return self.sessions.encode(np.ascontiguousarray(array, dtype=np.float32))

    def decode(self, state, input_features, max_new_tokens: int, forced: bool) -> list[list[int]]:
        _hidden, cross_k, cross_v = state
        return greedy_loop(self.sessions.stepper(cross_k, cross_v), int(cross_k.shape[1]), max_new_tokens, forced,
                           self.suppress_tokens, self.begin_suppress_tokens)

    def teacher_forced_logits(self, input_features, decoder_input_ids):
        """Logits ``[1, T, vocab]`` of the decoder on the whole sequence (position t predicts token t+1)."""
        import numpy as np
        import torch

        _hidden, cross_k, cross_v = self._encode(input_features[:1])
        layers, _b, heads, _s, dh = cross_k.shape
        empty = np.zeros((layers, 1, heads, 0, dh), np.float32)
        ids = np.ascontiguousarray(np.asarray(decoder_input_ids[:1], dtype=np.int64))
        logits, _k, _v = self.sessions.decode(ids, cross_k, cross_v, empty, empty)
        return torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))

    def calibration_inputs(self, utterances, processor, max_steps: int, part: str):
        """Yield the ``part`` (``"encoder"`` or ``"decoder"``) inputs met while greedy-decoding each utterance."""
        import numpy as np

        from ..transcribe import features

        for u in utterances:
            feats = np.ascontiguousarray(features(processor, [u.audio]).numpy(), dtype=np.float32)
            if part == "encoder":
                yield {"input_features": feats}
                continue
            _h, ck, cv = self.sessions.encode(feats)
            layers, _b, heads, _s, dh = ck.shape
            past = [np.zeros((layers, 1, heads, 0, dh), np.float32)] * 2
            seen = []

            def step(ids):
                yield_feed = {"input_ids": np.ascontiguousarray(ids, dtype=np.int64), "cross_k": ck, "cross_v": cv,
                              "past_k": past[0], "past_v": past[1]}
                seen.append(yield_feed)
                logits, past[0], past[1] = self.sessions.decode(yield_feed["input_ids"], ck, cv, past[0], past[1])
                return logits[:, -1]

            greedy_loop(step, 1, max_steps, False, self.suppress_tokens, self.begin_suppress_tokens)
            yield from seen


class OrtSessions(Sessions):
    def __init__(self, paths: dict[str, Path], threads: int):
        ort = require("onnxruntime", PIP)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":  # as the harness asks of torch's OpenMP
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.encoder = ort.InferenceSession(str(paths["encoder"]), options, providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(str(paths["decoder"]), options, providers=["CPUExecutionProvider"])

    def encode(self, features):
        return self.encoder.run(None, {"input_features": features})

    def decode(self, ids, cross_k, cross_v, past_k, past_v):
        return self.decoder.run(None, {"input_ids": ids, "cross_k": cross_k, "cross_v": cross_v,
                                       "past_k": past_k, "past_v": past_v})


class OrtWhisper(GraphWhisper):
    runtime = "onnxruntime"


def linear_matmuls(path: Path) -> tuple[list[str], list[str]]:
    """``(Linear MatMuls, output projection MatMuls)``: MatMul nodes whose weight is a 2-D initializer.

    Attention products (activation x activation) are neither, and stay float as in the PyTorch rows.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name: tuple(i.dims) for i in graph.initializer if len(i.dims) == 2}
    linear, projection = [], []
    for node in graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in weights:
            (projection if weights[node.input[1]][1] == 51865 else linear).append(node.name)
    return linear, projection


class _Feeds:
    """``onnxruntime.quantization.CalibrationDataReader`` over an iterator of input dicts."""

    def __init__(self, feeds):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


def convert(model, spec, calibration=None, processor=None, calibration_tokens: int = 128) -> tuple[OrtWhisper, dict]:
    require("onnxruntime", PIP)
    require("onnx", PIP)
    keep = runtime_dir("ort")
    root = Path(keep.name)
    gen = model.generation_config
    rules = dict(suppress_tokens=list(gen.suppress_tokens or []), begin_suppress_tokens=list(gen.begin_suppress_tokens or []))
    fp32_dir = root / ("model" if spec.scheme == "none" else "fp32")
    paths = export(model, fp32_dir)
    meta: dict[str, Any] = {"method": f"torch.onnx.export (TorchScript, opset {OPSET})", "exporter": "torch.onnx.export"}
    threads = thread_count()
    if spec.scheme == "none":
        return OrtWhisper(fp32_dir, keep, OrtSessions(paths, threads), **rules), meta
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    out_dir = root / "model"
    out_dir.mkdir()
    per_channel = spec.granularity == "per_channel"
    quantized = {k: out_dir / p.name for k, p in paths.items()}
    nodes = {part: linear_matmuls(path) for part, path in paths.items()}
    if spec.scheme == "dynamic":
        for part in paths:
            quantize_dynamic(str(paths[part]), str(quantized[part]), op_types_to_quantize=["MatMul"],
                             per_channel=per_channel, reduce_range=False, weight_type=QuantType.QInt8,
                             nodes_to_quantize=nodes[part][0])
        meta.update(method="onnxruntime.quantization.quantize_dynamic", weight_type="QInt8", per_channel=per_channel)
    elif spec.scheme == "weight_only":
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        for part in paths:
            quantizer = MatMulNBitsQuantizer(onnx.load(str(paths[part])), bits=4, block_size=spec.group_size,
                                             is_symmetric=True, accuracy_level=ACCURACY_LEVEL,
                                             nodes_to_include=nodes[part][0])
            quantizer.process()
            quantizer.model.save_model_to_file(str(quantized[part]), use_external_data_format=False)
        meta.update(method="onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer", bits=4,
                    block_size=spec.group_size, is_symmetric=True, accuracy_level=ACCURACY_LEVEL)
    else:
        fp32 = OrtWhisper(fp32_dir, None, OrtSessions(paths, threads), **rules)
        steps = max(1, int(calibration_tokens))
        for part in paths:
            feeds = fp32.calibration_inputs(calibration or [], processor, steps, part)
            quantize_static(str(paths[part]), str(quantized[part]), _Feeds(feeds), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["MatMul"], per_channel=per_channel, reduce_range=False,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_quantize=nodes[part][0])
        meta.update(method="onnxruntime.quantization.quantize_static (QDQ, MinMax)", weight_type="QInt8",
                    activation_type="QUInt8", per_channel=per_channel, calibration_decoder_steps=steps)
    import shutil

    shutil.rmtree(fp32_dir)
    meta["quantized_matmuls"] = {part: len(n[0]) for part, n in nodes.items()}
    meta["float_projection"] = nodes["decoder"][1]
    return OrtWhisper(out_dir, keep, OrtSessions(quantized, threads), **rules), meta
