"""PyTorch's built-in ``torch.ao.quantization`` (the paper's "PyTorch" library).

* ``dynamic``: ``quantize_dynamic`` on the chosen Linear layers; int8 weights
  (per-tensor or per-channel observer) with activations quantized on the fly,
  or float16 weights.
* ``static``: int8 weights and activations with calibrated activation ranges.
  ``method=eager`` (default) wraps each Linear in QuantStub/DeQuantStub and
  uses eager prepare/convert; ``method=fx`` tries FX graph mode, and
  ``method=pt2e`` exports the encoder and/or the decoder (cache-free) with
  ``torch.export`` and quantizes them with torchao's X86InductorQuantizer.
  Paths that cannot work on Whisper raise, and the harness records them as
  failed rows.

``torch.ao.quantization`` is deprecated upstream in favour of torchao.
"""
from __future__ import annotations

from typing import Any

from . import check_allowed
from ..config import ConfigError
from ..transcribe import generate
from .common import calibrate, calibration_features, set_module, target_linears

SUPPORTED = [
    {"scheme": "dynamic", "weights": "int8", "activations": "int8", "granularity": ("per_tensor", "per_channel"),
     "group_size": (None,)},
    {"scheme": "dynamic", "weights": "float16", "activations": "none", "granularity": (None,), "group_size": (None,)},
    {"scheme": "static", "weights": "int8", "activations": "int8", "granularity": ("per_tensor", "per_channel"),
     "group_size": (None,)},
]
OPTIONS = {"method": ("eager", "fx", "pt2e")}


def validate(spec) -> None:
    check_allowed(spec, SUPPORTED, OPTIONS)

    method = spec.option_dict.get("method")
    if method and spec.scheme != "static":
        raise ConfigError("torch_ao option 'method' (eager/fx/pt2e) applies to scheme 'static' only")
    if method == "pt2e" and spec.granularity != "per_channel":
        raise ConfigError("torch_ao method=pt2e uses X86InductorQuantizer's per-channel weights: set "
                          "granularity=per_channel")


def apply(model, spec, calibration=None, processor=None, calibration_tokens: int = 128) -> dict[str, Any]:
    import torch

    targets = target_linears(model, spec)
    if spec.scheme == "dynamic":
        from torch.ao.quantization import (default_dynamic_qconfig, float16_dynamic_qconfig,
                                           per_channel_dynamic_qconfig, quantize_dynamic)

        if spec.weights == "float16":
            qconfig, dtype = float16_dynamic_qconfig, torch.float16
        else:
            qconfig = per_channel_dynamic_qconfig if spec.granularity == "per_channel" else default_dynamic_qconfig
            dtype = torch.qint8
        quantize_dynamic(model, {name: qconfig for name, _ in targets}, dtype=dtype, inplace=True)
        return {"method": "quantize_dynamic", "engine": torch.backends.quantized.engine}
    method = spec.option_dict.get("method", "eager")
    return {"eager": _static_eager, "fx": _static_fx, "pt2e": _static_pt2e}[method](
        model, spec, targets, calibration, processor, calibration_tokens)


def _static_qconfig(spec):
    """torch's x86 default for eager/FX static (histogram activations with ``reduce_range``: 7-bit, so that
    AVX2 kernels cannot overflow their int16 sums), with only the weight observer varying by granularity."""
    import torch
    from torch.ao.quantization import QConfig
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver

    weight = (PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
              if spec.granularity == "per_channel"
              else MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric))
    return QConfig(activation=HistogramObserver.with_args(reduce_range=True), weight=weight)


def _static_eager(model, spec, targets, calibration, processor, tokens) -> dict[str, Any]:
    import torch
    from torch.ao.quantization import DeQuantStub, QuantStub, convert, prepare

    torch.backends.quantized.engine = "x86"
    qconfig = _static_qconfig(spec)
    for name, linear in targets:
        wrapper = torch.nn.Sequential(QuantStub(), linear, DeQuantStub())
        wrapper.qconfig = qconfig
        set_module(model, name, wrapper)
    prepare(model, inplace=True)
    calibrate(model, processor, calibration, tokens)
    convert(model, inplace=True)
    return {"method": "eager QuantStub/DeQuantStub around each Linear", "engine": "x86"}


def _static_fx(model, spec, targets, calibration, processor, tokens) -> dict[str, Any]:
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    part = {"encoder": model.model.encoder, "decoder": model.model.decoder}.get(spec.scope, model.model)
    mapping = QConfigMapping().set_global(_static_qconfig(spec))
    try:
        prepared = prepare_fx(part, mapping, example_inputs=(_example_features(model),))
    except Exception as exc:
        raise RuntimeError(f"FX symbolic tracing of Whisper's {spec.scope} failed "
                           f"({type(exc).__name__}: {exc}); use method=eager or pt2e") from exc
    calibrate(model, processor, calibration, tokens)
    convert_fx(prepared)
    return {"method": "fx"}


def _example_features(model):
    import torch

    return torch.zeros(1, model.config.num_mel_bins, 2 * model.config.max_source_positions)


def _static_pt2e(model, spec, targets, calibration, processor, tokens) -> dict[str, Any]:
    """Export encoder and/or decoder with ``torch.export``, quantize with X86InductorQuantizer, swap back in.

    The decoder graph is exported without a KV cache (a dynamic token axis
    instead), so generation recomputes the whole prefix at every step:
    correct, but slower than the cached float decoder.
    """
    if spec.proj_out:
        raise NotImplementedError("torch_ao method=pt2e quantizes the exported encoder/decoder graphs and keeps "
                                  "the tied proj_out in float: drop proj_out")
    calibration = list(calibration or [])
    ops: dict[str, dict[str, int]] = {}
    if spec.scope in ("all", "encoder"):
        ops["encoder"] = _pt2e_encoder(model, processor, calibration)
    if spec.scope in ("all", "decoder"):
        ops["decoder"] = _pt2e_decoder(model, processor, calibration, tokens)
    modules = {f"pt2e {half} {op}": n for half, counts in ops.items() for op, n in counts.items()}
    return {"method": "pt2e X86InductorQuantizer, per-channel weights (reference q/dq graph, not compiled)",
            "quantized_modules": modules, "quantized_count": sum(modules.values()), "pt2e_quantized_ops": ops,
            "decoder_kv_cache": "decoder" not in ops}


def _pt2e_quantize(module, example_inputs, dynamic_shapes, calibrate_graph):
    """export -> prepare_pt2e -> calibrate -> convert_pt2e; returns the converted graph and its quantized ops."""
    import torch
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)

    exported = torch.export.export(module, example_inputs, dynamic_shapes=dynamic_shapes).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        calibrate_graph(prepared)
    converted = convert_pt2e(prepared)
    allow_exported_model_train_eval(converted)  # the harness calls model.eval(), which exported graphs refuse
    _drop_unused_tensors(converted)
    return converted, _quantized_ops(converted)


def _quantized_ops(graph_module) -> dict[str, int]:
    """Count graph ops whose weight comes out of a dequantize node, e.g. ``{"linear": 12, "conv1d": 2}``."""
    counts: dict[str, int] = {}
    for node, _weight in _ops_on_dequantized_weights(graph_module):
        op = str(node.target).split(".")[-2] if "." in str(node.target) else str(node.target)
        counts[op] = counts.get(op, 0) + 1
    return counts


def _ops_on_dequantized_weights(graph_module):
    """``(op node, its dequantize node)`` for every graph op whose weight argument is dequantized int8."""
    for node in graph_module.graph.nodes:
        weight = node.args[1] if node.op == "call_function" and len(node.args) > 1 else None
        if getattr(weight, "op", None) == "call_function" and "dequantize" in str(weight.target):
            yield node, weight


def _drop_unused_tensors(graph_module) -> None:
    """Delete parameters/buffers no node reads: convert_pt2e folds int8 weights in but leaves the fp32 originals."""
    used = {node.target for node in graph_module.graph.nodes if node.op == "get_attr"}
    for name, _ in [*graph_module.named_parameters(), *graph_module.named_buffers()]:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(graph_module.get_submodule(owner) if owner else graph_module, attr)


def pt2e_quantize_encoder(encoder, example_features, calibrate_graph, dynamic_batch: bool = True):
    """Export a ``WhisperEncoder`` as features -> hidden states and quantize it with PT2E (X86InductorQuantizer).

    Returns the converted reference graph and its quantized ops; ``calibrate_graph(prepared)`` feeds it
    calibration features. ``dynamic_batch=False`` exports the example's shape only (what Inductor compiles best).
    """
    import torch

    class EncoderCore(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_features):
            return self.encoder(input_features).last_hidden_state

    batch = {"input_features": {0: torch.export.Dim("batch", min=1, max=64)}} if dynamic_batch else None
    return _pt2e_quantize(EncoderCore(encoder), (example_features,), batch, calibrate_graph)


def _pt2e_encoder(model, processor, calibration) -> dict[str, int]:
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    class ExportedEncoder(torch.nn.Module):
        """Stands in for ``WhisperEncoder`` inside generate(), returning a ModelOutput."""

        def __init__(self, graph_module, original):
            super().__init__()
            self.graph, self.config, self.main_input_name = graph_module, original.config, "input_features"
            self.conv1, self.conv2 = original.conv1, original.conv2  # generate() reads their strides

        def forward(self, input_features, **_ignored):
            return BaseModelOutput(last_hidden_state=self.graph(input_features))

    def run_calibration(prepared):
        for feats in calibration_features(processor, calibration):
            prepared(feats)

    encoder = model.model.encoder
    converted, ops = pt2e_quantize_encoder(encoder, _example_features(model).repeat(2, 1, 1), run_calibration)
    model.model.encoder = ExportedEncoder(converted, encoder)
    return ops


def _pt2e_decoder(model, processor, calibration, tokens: int) -> dict[str, int]:
    """Quantize the decoder as one cache-free graph ``(input_ids, encoder_hidden_states) -> hidden states``.

    Calibration feeds each calibration utterance's own greedy transcript
    (prompt included, cut at end-of-text) through the graph in one pass.
    """
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

    class DecoderCore(torch.nn.Module):
        def __init__(self, decoder):
            super().__init__()
            self.decoder = decoder

        def forward(self, input_ids, encoder_hidden_states):
            return self.decoder(input_ids=input_ids, encoder_hidden_states=encoder_hidden_states,
                                use_cache=False).last_hidden_state

    class ExportedDecoder(torch.nn.Module):
        """Stands in for ``WhisperDecoder``; generate() must run with use_cache=False (full prefix each step).

        Only the last position's hidden state is returned: greedy decoding reads the logits of that position
        alone, so ``proj_out`` (51865 x d_model) is applied once per step, not once per prefix token.
        """

        def __init__(self, graph_module, original):
            super().__init__()
            self.graph, self.config = graph_module, original.config
            self.embed_tokens = original.embed_tokens  # keeps get_input_embeddings() and the proj_out tie

        def forward(self, input_ids=None, encoder_hidden_states=None, **_ignored):
            return BaseModelOutputWithPastAndCrossAttentions(
                last_hidden_state=self.graph(input_ids, encoder_hidden_states)[:, -1:])

        def all_positions(self, input_ids, encoder_hidden_states):
            """Hidden states at every position (the teacher-forced fidelity pass needs them all)."""
            return self.graph(input_ids, encoder_hidden_states)

    decoder, config = model.model.decoder, model.config
    start = torch.tensor([[config.decoder_start_token_id]])
    transcripts = []  # (token ids, encoder output) per calibration utterance, from the current model
    for feats in calibration_features(processor, calibration):
        with torch.no_grad():
            encoded = model.model.encoder(feats).last_hidden_state
        for row, enc in zip(generate(model, feats, max_new_tokens=tokens), encoded):
            ids = row[None]
            if ids[0, 0] != config.decoder_start_token_id:
                ids = torch.cat([start, ids], dim=1)
            ends = (ids[0] == config.eos_token_id).nonzero()
            ids = ids[:, : int(ends[0]) + 1] if len(ends) else ids
            transcripts.append((ids, enc[None]))
    if not transcripts:
        raise ValueError("static quantization got no calibration utterances")

    def run_calibration(prepared):
        for ids, enc in transcripts:
            prepared(ids, enc)

    batch = torch.export.Dim("batch", min=1, max=64)
    length = torch.export.Dim("tokens", min=2, max=config.max_target_positions)
    dims = {"input_ids": {0: batch, 1: length}, "encoder_hidden_states": {0: batch}}
    ids, enc = transcripts[0]
    example = (ids[:, :4].repeat(2, 1), enc.repeat(2, 1, 1))
    converted, ops = _pt2e_quantize(DecoderCore(decoder), example, dims, run_calibration)
    model.model.decoder = ExportedDecoder(converted, decoder)
    model.generation_config.use_cache = False
    return ops


def dequantized_graph_weights(model) -> dict[str, Any]:
    """Weights of the Linear ops inside PT2E graphs, dequantized, keyed by the original module name.

    A graph exported from ``model.model.encoder`` reports its first query
    projection as ``model.encoder.layers.0.self_attn.q_proj``.
    """
    import functools

    import torch

    weights = {}
    for name, module in model.named_modules():
        graph = getattr(module, "graph", None)
        if not isinstance(graph, torch.fx.GraphModule):
            continue
        prefix = name.rpartition(".")[0]
        for node, weight in _ops_on_dequantized_weights(graph):
            if "linear" not in str(node.target):
                continue
            args = [functools.reduce(getattr, a.target.split("."), graph) if isinstance(a, torch.fx.Node) else a
                    for a in weight.args]
            path = list(node.meta.get("nn_module_stack", {}).values())[-1][0]
            weights[f"{prefix}.{path}" if prefix else path] = weight.target(*args)
    return weights


def dequantize_weight(module):
    import torch

    if isinstance(module, torch.nn.Sequential):  # eager static wrapper
        module = module[1]
    weight = module.weight() if callable(getattr(module, "weight", None)) else None
    if weight is None and hasattr(module, "_weight_bias"):
        weight = module._weight_bias()[0]
    if weight is None:
        return None
    return weight.dequantize() if weight.is_quantized else weight.float()
