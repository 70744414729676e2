"""Why torch.ao static int8 collapses on Whisper: which activations, quantized how.

torch.ao's eager static recipe quantizes every Linear's input *and* requantizes its output to uint8 with a
range calibrated ahead of time; on x86 the default observer also keeps activations to 7 bits
(``reduce_range``) so that AVX2 kernels cannot overflow.  This ablation emulates that recipe with exact
integer arithmetic in float (fake quantization: per-channel symmetric int8 weights, histogram-calibrated
uint8 activations) and switches the input and output quantization on and off, per layer family and half.
One calibration pass feeds both 7- and 8-bit observers; each variant is then scored by its encoder-output
cosine against fp32 on the JFK clip and by greedy WER on the calibration utterances themselves (in-sample:
this locates the damage, it is not a test-set result).  The real torch.ao kernel runs once beside the
emulation as a check that the emulation reproduces it.

    python -m lib diagnose static-activations
"""
from __future__ import annotations

import time
import traceback
from typing import Any

from .config import QuantSpec, model_tag
from .data import calibration_set, describe_data, jfk_path, load_audio, resolve_data_dir
from .evaluate import cosine, encoder_output
from .metrics import word_error_rate
from .models import load_model
from .quantize import quantize
from .results import RESULTS_DIR, ResultStore
from .machine import environment
from .transcribe import features, generate

DIAGNOSTICS_DIR = RESULTS_DIR / "diagnostics"


def static_slug(model: str = "embedded:whisper-base", calibration: int = 4) -> str:
    """Result name of one ablation run.

    >>> static_slug()
    'whisper-base__static-activations__cal4'
    """
    return f"{model_tag(model)}__static-activations__cal{calibration}"

FAMILIES = {"q/k/v projections": ("q_proj", "k_proj", "v_proj"), "attention output": ("out_proj",),
            "fc1 (into GELU)": ("fc1",), "fc2 (into the residual)": ("fc2",)}
HALVES = {"encoder": "model.encoder.", "decoder": "model.decoder."}


def family(name: str) -> str:
    """Layer family of a Linear's module name.

    >>> family("model.decoder.layers.3.encoder_attn.k_proj")
    'q/k/v projections'
    """
    suffix = name.rsplit(".", 1)[-1]
    return next(f for f, suffixes in FAMILIES.items() if suffix in suffixes)


def static_variants() -> list[dict[str, Any]]:
    """The ablation's rows: activation bits and a predicate on (layer name) for inputs and for outputs.

    >>> [v["variant"] for v in static_variants()][:3]
    ['inputs + outputs (torch.ao eager recipe), 7-bit', 'inputs + outputs, 8-bit', 'inputs only, 7-bit']
    """
    every, none = (lambda name: True), (lambda name: False)
    rows = [("inputs + outputs (torch.ao eager recipe)", 7, every, every), ("inputs + outputs", 8, every, every),
            ("inputs only", 7, every, none), ("inputs only", 8, every, none), ("outputs only", 7, none, every)]
    rows += [(f"inputs + outputs of {fam} only", 7, every, lambda name, fam=fam: family(name) == fam)
             for fam in FAMILIES]
    rows += [(f"inputs + outputs in the {half} only", 7, every, lambda name, p=prefix: name.startswith(p))
             for half, prefix in HALVES.items()]
    return [{"variant": f"{label}, {bits}-bit", "bits": bits, "inputs": inputs, "outputs": outputs}
            for label, bits, inputs, outputs in rows]


def fake_quant_linear(linear):
    """A Linear with int8 per-channel weights whose input/output can be fake-quantized (``*_qparams``)."""
    import torch
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    class FakeQuantLinear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            observer = PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
            observer(linear.weight.detach())
            scale, zero = observer.calculate_qparams()
            self.weight = torch.fake_quantize_per_channel_affine(linear.weight.detach(), scale, zero.int(), 0,
                                                                 observer.quant_min, observer.quant_max)
            self.bias = linear.bias
            self.input_qparams = self.output_qparams = None

        def forward(self, x):
            x = _fake_quant(x, self.input_qparams)
            return _fake_quant(torch.nn.functional.linear(x, self.weight, self.bias), self.output_qparams)

    return FakeQuantLinear()


def _fake_quant(x, qparams):
    """Round ``x`` through uint8 (or 7-bit) with ``(scale, zero_point, qmin, qmax)``; None = leave float."""
    import torch

    if qparams is None:
        return x
    scale, zero, qmin, qmax = qparams
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, qmin, qmax)


def _qparams(observer) -> tuple[float, int, int, int]:
    scale, zero = observer.calculate_qparams()
    return float(scale), int(zero), int(observer.quant_min), int(observer.quant_max)


def _score(model, processor, calibration, jfk_audio, reference_encoder, max_new_tokens: int) -> dict[str, Any]:
    out = generate(model, features(processor, [u.audio for u in calibration]), max_new_tokens=max_new_tokens)
    hypotheses = processor.batch_decode(out, skip_special_tokens=True)
    return {"encoder_cosine_jfk": cosine(reference_encoder, encoder_output(model, processor, jfk_audio)),
            "wer_calibration": word_error_rate([u.reference for u in calibration], hypotheses)["wer"],
            "hypotheses": [h.strip() for h in hypotheses]}


def static_activation_ablation(model: str = "embedded:whisper-base", calibration: int = 4, threads: int = 2,
                               data: str | None = None, max_new_tokens: int = 128, results_dir=None,
                               force: bool = False) -> dict[str, Any]:
    """Run (or load) the ablation; the summary's ``rows`` hold one scored variant each."""
    store, slug = ResultStore(results_dir or DIAGNOSTICS_DIR), static_slug(model, calibration)
    if store.exists(slug) and not force:
        return store.load(slug)
    import torch
    from torch.ao.quantization.observer import HistogramObserver

    from .quantize.common import calibrate, set_module, target_linears

    torch.set_num_threads(threads)
    spec = QuantSpec(library="torch_ao", scheme="static", weights="int8", activations="int8",
                     granularity="per_channel", calibration=calibration)
    utterances = calibration_set(calibration, data)
    jfk = jfk_path(resolve_data_dir(data) if data != "hub" else None)
    if jfk is None:
        raise FileNotFoundError("the ablation scores the encoder on ../shared/data/extra/jfk.flac, which is missing")
    jfk_audio = load_audio(jfk)
    summary: dict[str, Any] = {"slug": slug, "kind": "diagnostic", "model_spec": model,
                               "reference_recipe": spec.to_dict(), "calibration": [u.id for u in utterances],
                               "environment": environment(threads), "data": describe_data(data),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        loaded = load_model(model)
        summary["model"] = loaded.source
        net = loaded.model.eval()
        reference = encoder_output(net, loaded.processor, jfk_audio)

        def score(m):
            return _score(m, loaded.processor, utterances, jfk_audio, reference, max_new_tokens)

        rows = [{"variant": "fp32", "bits": None, **score(net)}]

        targets = target_linears(net, spec)
        observers = {(name, bits, side): HistogramObserver(reduce_range=bits == 7)
                     for name, _ in targets for bits in (7, 8) for side in ("in", "out")}

        def observe(name):
            def hook(module, args, output):
                for bits in (7, 8):
                    observers[name, bits, "in"](args[0].detach())
                    observers[name, bits, "out"](output.detach())
            return hook

        handles = [linear.register_forward_hook(observe(name)) for name, linear in targets]
        calibrate(net, loaded.processor, utterances, max_new_tokens)
        for h in handles:
            h.remove()
        qparams = {key: _qparams(obs) for key, obs in observers.items()}

        emulated = {name: fake_quant_linear(linear) for name, linear in targets}
        for name, module in emulated.items():
            set_module(net, name, module)
        for variant in static_variants():
            bits = variant["bits"]
            for name, module in emulated.items():
                module.input_qparams = qparams[name, bits, "in"] if variant["inputs"](name) else None
                module.output_qparams = qparams[name, bits, "out"] if variant["outputs"](name) else None
            rows.append({"variant": variant["variant"], "bits": bits, "emulated": True, **score(net)})

        real = load_model(model).model.eval()  # the library's own kernel, same recipe and calibration set
        quantize(real, spec, calibration=utterances, processor=loaded.processor, measure_error=False)
        rows.append({"variant": "torch.ao eager static, x86 kernel (check of the emulation), 7-bit", "bits": 7,
                     "emulated": False, **score(real)})
        summary.update(rows=rows, status="ok")
    except Exception as exc:
        summary.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000],
                       traceback=traceback.format_exc()[-4000:])
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    store.save(slug, summary)
    return summary
