"""Deployment runtimes and plain half precision, on a tiny random Whisper, through the harness.

Each row of :data:`ROWS` is converted, then transcribed by :func:`lib.transcribe.transcribe`,
timed by :func:`lib.footprint.time_forced_generate` and sized from its model directory.
A runtime whose package is missing is skipped, never failed.
"""
from __future__ import annotations

import copy
import re
import importlib.util

import numpy as np
import pytest

from lib.config import ConfigError, QuantSpec, RunConfig

ROWS = {  # slug -> spec, every grid row of experiments/runtimes.yml that runs on this CPU
    "torch_cast-bfloat16": dict(library="torch_cast", weights="bfloat16"),
    "torch_cast-float16": dict(library="torch_cast", weights="float16"),
    "ct2-fp32": dict(library="ctranslate2", weights="fp32"),
    "ct2-dyn-int8-aint8": dict(library="ctranslate2", scheme="dynamic", weights="int8", activations="int8"),
    "ct2-dyn-int8-aint8-floatfloat32": dict(library="ctranslate2", scheme="dynamic", weights="int8",
                                            activations="int8", options={"float": "float32"}),
    "ct2-dyn-int16-aint16": dict(library="ctranslate2", scheme="dynamic", weights="int16", activations="int16"),
    "ort-fp32": dict(library="onnxruntime", weights="fp32"),
    "ort-dyn-int8-aint8-pc": dict(library="onnxruntime", scheme="dynamic", weights="int8", activations="int8",
                                  granularity="per_channel"),
    "ort-dyn-int8-aint8-pt": dict(library="onnxruntime", scheme="dynamic", weights="int8", activations="int8",
                                  granularity="per_tensor"),
    "ort-static-int8-auint8-pc-cal4": dict(library="onnxruntime", scheme="static", weights="int8",
                                           activations="uint8", granularity="per_channel", calibration=4),
    "ov-static-int8-aint8-cal2-smooth_quant0": dict(library="openvino", scheme="static", weights="int8",
                                                    activations="int8", calibration=2, options={"smooth_quant": False}),
    "ort-wo-int4-g32": dict(library="onnxruntime", scheme="weight_only", weights="int4", group_size=32),
    "ort-wo-int4-g128": dict(library="onnxruntime", scheme="weight_only", weights="int4", group_size=128),
    "ov-fp32": dict(library="openvino", weights="fp32"),
    "ov-wo-int8-pc-sym1": dict(library="openvino", scheme="weight_only", weights="int8", granularity="per_channel",
                               options={"sym": True}),
    "ov-wo-int8-pc-sym0": dict(library="openvino", scheme="weight_only", weights="int8", granularity="per_channel",
                               options={"sym": False}),
    "ov-wo-int4-g128-sym1": dict(library="openvino", scheme="weight_only", weights="int4", group_size=128,
                                 options={"sym": True}),
    "ov-wo-int4-g128-sym0": dict(library="openvino", scheme="weight_only", weights="int4", group_size=128,
                                 options={"sym": False}),
    "ov-static-int8-aint8-cal4": dict(library="openvino", scheme="static", weights="int8", activations="int8",
                                      calibration=4),
    "ov-fp32-precisionbf16": dict(library="openvino", weights="fp32", options={"precision": "bf16"}),
    "ov-wo-int8-pc-precisionbf16-sym1": dict(library="openvino", scheme="weight_only", weights="int8",
                                             granularity="per_channel", options={"sym": True, "precision": "bf16"}),
    "ggml-float16": dict(library="whisper_cpp", weights="float16"),
    "ggml-dyn-int8-aint8-g32": dict(library="whisper_cpp", scheme="dynamic", weights="int8", activations="int8",
                                    group_size=32),
    "ggml-dyn-int5-aint8-g32": dict(library="whisper_cpp", scheme="dynamic", weights="int5", activations="int8",
                                    group_size=32),
    "ggml-dyn-int4-aint8-g32": dict(library="whisper_cpp", scheme="dynamic", weights="int4", activations="int8",
                                    group_size=32),
    "ggml-float16-buildnative": dict(library="whisper_cpp", weights="float16", options={"build": "native"}),
    **{f"ggml-dyn-{w}-aint8-g{g}-buildnative{'-sym0' if sym is False else ''}": dict(
        library="whisper_cpp", scheme="dynamic", weights=w, activations="int8", group_size=g,
        options={"build": "native", **({} if sym is None else {"sym": sym})})
       for w, g, sym in [("int8", 32, None), ("int5", 32, None), ("int4", 32, None), ("int5", 32, False),
                         ("int4", 32, False), ("int6", 256, None), ("int5", 256, None), ("int4", 256, None),
                         ("int3", 256, None), ("int2", 256, None)]},
}
#: the runtime's fp32 row: its greedy ids must equal transformers' fp32 ids on the tiny model
FP32 = {"ct2-fp32", "ort-fp32", "ov-fp32"}
#: each runtime's reference row for the JFK check (whisper.cpp cannot run f32 here: its f16 is the reference)
REFERENCE = FP32 | {"ggml-float16"}
#: teacher_forced_logits equal transformers' logits to this tolerance on the tiny model
LOGITS = {"ort-fp32": 1e-4, "ov-fp32": 1e-4, "ct2-fp32": 1e-4}
PACKAGE = {"torch_cast": "torch", "ctranslate2": "ctranslate2", "onnxruntime": "onnxruntime",
           "openvino": "openvino", "whisper_cpp": "pywhispercpp"}


def rows(selected=None):
    """Every runtime package is pinned in requirements.txt: a missing or broken install fails these tests."""
    return [pytest.param(slug, spec, id=slug) for slug, spec in ROWS.items() if selected is None or slug in selected]


@pytest.mark.parametrize("package", sorted(set(PACKAGE.values())))
def test_every_pinned_runtime_package_imports(package):
    assert importlib.import_module(package) is not None


@pytest.mark.parametrize("slug,spec", [(s, d) for s, d in ROWS.items()])
def test_slugs(slug, spec):
    assert QuantSpec(**spec).slug == slug


@pytest.mark.parametrize("spec,message", [
    (dict(library="torch_cast", weights="int8"), "supported: none w=bfloat16"),
    (dict(library="torch_cast", weights="bfloat16", scope="encoder"), "whole model"),
    (dict(library="ctranslate2", scheme="dynamic", weights="int4", activations="int8"), "does not support"),
    (dict(library="ctranslate2", weights="fp32", options={"float": "float32"}), "int8 only"),
    (dict(library="ctranslate2", weights="fp32", options={"beam": 5}), "no option 'beam'"),
    (dict(library="onnxruntime", scheme="static", weights="int8", activations="int8", calibration=4), "supported"),
    (dict(library="openvino", scheme="weight_only", weights="int4", group_size=64), "group=128"),
    (dict(library="openvino", scheme="static", weights="int8", activations="int8", calibration=4,
          options={"sym": True}), "weight compression"),
    (dict(library="openvino", scheme="weight_only", weights="int8", granularity="per_channel",
          options={"smooth_quant": False}), "smooth_quant applies to nncf.quantize"),
])
def test_invalid_specs_name_what_is_supported(spec, message):
    from lib.checks import check_quant

    with pytest.raises(ConfigError, match=message):
        check_quant(QuantSpec(**spec))  # backend support is checked where input arrives, not in the config


def test_importing_lib_needs_no_runtime():
    import subprocess
    import sys

    code = ("import sys, lib, lib.quantize, lib.runtimes; from lib.config import QuantSpec; "
            "QuantSpec(library='ctranslate2', weights='fp32'); "
            "bad = [m for m in ('ctranslate2', 'onnxruntime', 'openvino', 'pywhispercpp', 'gguf', 'nncf') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def clips(tiny):
    from lib.transcribe import features

    audio = [np.random.RandomState(0).randn(32_000).astype(np.float32) * 0.1, np.zeros(16_000, np.float32)]
    return features(tiny.processor, audio)


@pytest.fixture(scope="module")
def tiny4(tiny):
    """test:tiny with ffn = 4 x d_model, the shape whisper.cpp assumes (test:tiny has 2 x)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    config = copy.deepcopy(tiny.model.config)
    config.encoder_ffn_dim = config.decoder_ffn_dim = 4 * config.d_model
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = tiny.model.generation_config
    return type(tiny)(model, tiny.processor, "test:tiny4")


@pytest.fixture(scope="module")
def tiny256(tiny):
    """tiny4 at d_model 256 (ffn 1024): the narrowest Whisper whose rows fill ggml's k-quant super-blocks of 256."""
    import torch
    from transformers import WhisperForConditionalGeneration

    config = copy.deepcopy(tiny.model.config)
    config.d_model, config.encoder_ffn_dim, config.decoder_ffn_dim = 256, 1024, 1024
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = tiny.model.generation_config
    return type(tiny)(model, tiny.processor, "test:tiny256")


@pytest.fixture(scope="session")
def native():
    """whisper.cpp built for this CPU (lib.runtimes.whisper_cpp_build): minutes the first time, then cached."""
    from lib.runtimes.whisper_cpp_build import BuildUnavailable, native_build

    try:
        return native_build()
    except BuildUnavailable as exc:
        pytest.skip(f"whisper.cpp cannot be built here: {exc}")


def needs_native(spec) -> bool:
    """whisper.cpp rows that run on the native build, or whose file its whisper-quantize writes."""
    return spec["library"] == "whisper_cpp" and (spec.get("options", {}).get("build") == "native"
                                                 or spec.get("weights") not in ("fp32", "float16"))


def offered_here(spec: QuantSpec) -> bool:
    """Whether this CPU offers the kernel ``spec`` needs (CTranslate2's compute types, OpenVINO's bf16)."""
    if spec.library == "openvino":
        from lib.runtimes import NotOffered
        from lib.runtimes.openvino import check_precision, precision

        try:
            check_precision(precision(spec))
        except NotOffered:
            return False
        return True
    if spec.library != "ctranslate2":
        return True
    import ctranslate2

    from lib.runtimes.ctranslate2 import compute_type

    return compute_type(spec) in ctranslate2.get_supported_compute_types("cpu")


@pytest.mark.parametrize("slug,spec", rows())
def test_convert_generate_time_and_size(slug, spec, tiny, tiny4, clips, request):
    from lib.data import calibration_set
    from lib.footprint import time_forced_generate
    from lib.metrics import serialized_bytes, stored_bytes
    from lib.quantize import quantize
    from lib.transcribe import encoder_timer, generate

    if needs_native(spec):
        request.getfixturevalue("native")
    if spec["library"] == "whisper_cpp":  # ffn = 4 x d_model; the k-quants also need rows of 256
        tiny = request.getfixturevalue("tiny256") if spec.get("group_size") == 256 else tiny4
    reference = generate(tiny.model, clips, max_new_tokens=12)
    spec = QuantSpec(**{**spec, "calibration": min(spec.get("calibration", 0), 2)})
    calibration = calibration_set(spec.calibration) if spec.calibration else None
    if not offered_here(spec):  # e.g. CTranslate2 int16 on AMD: a row outcome on this CPU, not a failure
        from lib.runtimes import NotOffered

        with pytest.raises(NotOffered, match="compute type|no bf16"):
            quantize(copy.deepcopy(tiny.model), spec, processor=tiny.processor, measure_error=False)
        return
    model, meta = quantize(copy.deepcopy(tiny.model), spec, processor=tiny.processor, calibration=calibration,
                           measure_error=False, calibration_tokens=4)
    with encoder_timer(model) as enc:
        ids = generate(model, clips, max_new_tokens=12)
    assert enc["calls"] == (2 if spec.library == "whisper_cpp" else 1) and enc["seconds"] > 0
    assert ids.shape[0] == 2 and ids[:, :4].tolist() == [reference[0, :4].tolist()] * 2
    assert ids.shape[1] <= 4 + 12 + 1
    if slug in FP32:
        assert ids.tolist() == reference.tolist()
    latency = time_forced_generate(model, clips[:1], repeats=3)
    assert latency["sequence_length"] == 4 + 32 and latency["n"] == 3
    size = stored_bytes(model)
    assert size > 0 and serialized_bytes(model)["bytes"] >= size  # torch.save adds pickle framing
    if spec.library != "torch_cast":
        assert meta["disk_bytes"] == size and meta["runtime"] == spec.library
    if spec.library not in ("torch_cast", "whisper_cpp"):  # whisper.cpp's encoder output is not reachable
        assert model.get_encoder()(clips).last_hidden_state.shape == (2, 1500, 128)


@pytest.mark.parametrize("slug,spec", rows(set(LOGITS)))
def test_teacher_forced_logits_match_transformers(slug, spec, tiny, clips):
    import torch

    from lib.quantize import quantize

    model, meta = quantize(copy.deepcopy(tiny.model), QuantSpec(**spec), processor=tiny.processor, measure_error=False)
    ids = torch.tensor([[50258, 50259, 50359, 50363, 264, 1000, 2000, 13]])
    logits = model.teacher_forced_logits(clips[:1], ids)
    with torch.no_grad():
        expected = tiny.model(input_features=clips[:1], decoder_input_ids=ids).logits
    assert meta["teacher_forced_logits"] and logits.shape == expected.shape
    read = slice(3, None)  # the harness reads from the prompt's last token on (lib.fidelity.runtime_logprobs)
    assert float((logits[:, read] - expected[:, read]).abs().max()) < LOGITS[slug]


@pytest.mark.parametrize("slug,spec", rows({"ggml-float16", "ggml-float16-buildnative"}))
def test_whisper_cpp_teacher_forced_logits(slug, spec, tiny4, clips, request):
    """whisper.cpp f16 (ctypes on libwhisper) against transformers fp32 on tiny4, and against its own greedy path.

    Measured: at most 0.015 apart (logits up to 1.1); 6.5e-4 with flash attention off, so the f16 flash
    attention whisper.cpp runs by default, not the f16 weights, is most of it.  The same logits a position
    late are 0.9 apart: an off-by-one fails both checks.
    """
    import torch

    from lib.quantize import quantize
    from lib.transcribe import generate

    if needs_native(spec):
        request.getfixturevalue("native")
    model, meta = quantize(copy.deepcopy(tiny4.model), QuantSpec(**spec), processor=tiny4.processor,
                           measure_error=False)
    assert meta["teacher_forced_logits"] and meta["logits_note"] is None
    ids = torch.tensor([[50258, 50259, 50359, 50363, 264, 1000, 2000, 13, 50257]])
    read = slice(3, None)  # the harness reads from the prompt's last token on (lib.fidelity.runtime_logprobs)
    for clip in clips.split(1):
        logits = model.teacher_forced_logits(clip, ids)
        with torch.no_grad():
            expected = tiny4.model(input_features=clip, decoder_input_ids=ids).logits
        assert logits.shape == expected.shape and not logits[:, :3].any()
        assert float((logits[:, read] - expected[:, read]).abs().max()) < 0.03
        assert logits[0, read].argmax(-1).tolist() == expected[0, read].argmax(-1).tolist()
    # greedy tokens = the argmax of the teacher-forced logits along their own path, under whisper.cpp's filters:
    # specials and suppress_nst (transformers' suppress_tokens) always, blank and end of text at the first step
    allowed = torch.zeros(logits.shape[-1], dtype=torch.bool)
    allowed[:50258] = True
    allowed[list(tiny4.model.generation_config.suppress_tokens)] = False
    for clip, row in zip(clips.split(1), generate(model, clips, max_new_tokens=16).tolist()):
        path = row[:row.index(50257, 4) + 1] if 50257 in row[4:] else row
        logits = model.teacher_forced_logits(clip, torch.tensor([path]))[0]
        picked = []
        for pos in range(3, len(path) - 1):
            mask = allowed.clone()
            mask[[220, 50257]] &= pos > 3
            picked.append(int(logits[pos].masked_fill(~mask, float("-inf")).argmax()))
        assert picked == path[4:]


@pytest.mark.parametrize("slug,spec", rows({"torch_cast-bfloat16", "ct2-dyn-int8-aint8", "ort-static-int8-auint8-pc-cal4",
                                            "ov-wo-int4-g128-sym0"}))
def test_evaluate_and_footprint_through_the_harness(slug, spec, fake_librispeech, tmp_path):
    from lib.evaluate import evaluate
    from lib.footprint import measure_footprint

    spec = {**spec, "calibration": min(spec.get("calibration", 0), 1)}
    config = RunConfig(model="test:tiny", split=("test-clean",), limit=2, batch_size=2, threads=1,
                       max_new_tokens=8, quant=QuantSpec(**spec))
    summary = evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False)
    assert summary["status"] == "ok", summary.get("error")
    assert summary["metrics"]["test-clean"]["utterances"] == 2 and summary["size"]["stored_bytes"] > 0
    # the encoder output on the JFK clip stays close to fp32's (a broken conversion gives ~0 or NaN)
    assert summary["encoder_cosine_jfk"] >= (0.999 if spec["library"] == "torch_cast" else 0.9)
    assert summary["environment"]["packages"].get(PACKAGE[spec["library"]])
    fp = measure_footprint(QuantSpec(**spec), model="test:tiny", results_dir=tmp_path / "fp", repeats=3,
                           threads=1, data=str(fake_librispeech))
    assert fp["status"] == "ok", fp.get("error")
    assert fp["latency"]["sequence_length"] == 36 and fp["latency_ratio"] > 0
    assert fp["size"]["stored_bytes"] < fp["size"]["fp32_stored_bytes"] * (1.2 if "fp32" in slug else 1.0)


def test_compute_type_the_cpu_lacks_is_a_failed_row(fake_librispeech, tmp_path, monkeypatch):
    import ctranslate2

    from lib.evaluate import evaluate

    monkeypatch.setattr(ctranslate2, "get_supported_compute_types", lambda device: {"float32", "int8"})
    config = RunConfig(model="test:tiny", split=("test-clean",), limit=1, threads=1, max_new_tokens=4,
                       quant=QuantSpec(library="ctranslate2", scheme="dynamic", weights="int16", activations="int16"))
    summary = evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False)
    assert summary["status"] == "failed" and summary["failed_stage"] == "quantize"
    assert summary["outcome"] == "not offered on this CPU" and "no int16 compute type" in summary["error"]


@pytest.mark.real_weights
@pytest.mark.parametrize("slug,spec", rows(REFERENCE))
def test_runtime_fp32_transcribes_jfk_as_pytorch_fp32(slug, spec):
    from lib.data import jfk_path, load_audio
    from lib.models import load_model
    from lib.quantize import quantize
    from lib.transcribe import features, generate

    base = load_model("embedded:whisper-base")
    feats = features(base.processor, [load_audio(jfk_path())])
    decode = base.processor.tokenizer.batch_decode
    expected = decode(generate(base.model, feats), skip_special_tokens=True)
    model, _ = quantize(base.model, QuantSpec(**spec), processor=base.processor, measure_error=False)
    assert decode(generate(model, feats), skip_special_tokens=True) == expected


#: grid rows that fail on this CPU by design, with the reason their failed row records
EXPECTED_FAILURES = {"ct2-bfloat16": "no bfloat16 compute type", "ct2-dyn-int8-aint8-floatbfloat16": "no int8_bfloat16",
                     "ggml-fp32": "cannot run an f32 ggml file"}


@pytest.mark.parametrize("spec,message", [
    (dict(library="whisper_cpp", weights="fp32"), "cannot run an f32 ggml file"),
    (dict(library="whisper_cpp", weights="float16"), "ffn_dim = 4 x d_model"),  # test:tiny has 2 x d_model
])
def test_whisper_cpp_failures_are_failed_rows(spec, message, fake_librispeech, tmp_path):
    from lib.evaluate import evaluate

    config = RunConfig(model="test:tiny", split=("test-clean",), limit=1, threads=1, max_new_tokens=4,
                       quant=QuantSpec(**spec))
    summary = evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False)
    assert summary["status"] == "failed" and summary["failed_stage"] == "quantize" and message in summary["error"]


def test_grid_rows_are_all_tested():
    from conftest import REPO
    from lib.runner import expand_grid

    grid = {j.config.quant.slug for j in expand_grid(REPO / "experiments" / "runtimes.yml")}
    # the cross-fitted static rows are the tested cal4 rows calibrated on more utterances (cross-speaker folds:
    # tests/test_evaluate.py), which the tiny synthetic sample cannot hold
    calibrated = {re.sub(r"-cal(16|64)(-smooth_quant0)?-xspk2$", "-cal4", slug) for slug in grid}
    assert calibrated == set(ROWS) - {"ov-static-int8-aint8-cal2-smooth_quant0"} | set(EXPECTED_FAILURES)
    assert all(j.footprint for j in expand_grid(REPO / "experiments" / "runtimes.yml"))


def test_openvino_runs_the_precision_a_row_asks_for(tiny):
    """f32 rows stay f32 on every CPU; a bf16 row runs bf16 where the CPU offers it, and is NotOffered elsewhere."""
    from lib.quantize import quantize
    from lib.runtimes import NotOffered

    _, meta = quantize(copy.deepcopy(tiny.model), QuantSpec(library="openvino", weights="fp32"),
                       processor=tiny.processor, measure_error=False)
    assert meta["resolved_precision"] == "f32"
    bf16 = QuantSpec(library="openvino", weights="fp32", options={"precision": "bf16"})
    if offered_here(bf16):
        _, meta = quantize(copy.deepcopy(tiny.model), bf16, processor=tiny.processor, measure_error=False)
        assert meta["resolved_precision"] == "bf16" and meta["compile_config"]["INFERENCE_PRECISION_HINT"] == "bf16"
    else:
        with pytest.raises(NotOffered, match="no bf16"):
            quantize(copy.deepcopy(tiny.model), bf16, processor=tiny.processor, measure_error=False)


def test_whisper_quantize_is_gguf_quants_on_the_file_it_is_given(native, tiny4, tmp_path):
    """whisper.cpp's whisper-quantize against ggml's reference quantizers (gguf.quants), byte for byte, on tiny4.

    Found: from our f32 file every quantized tensor (all 33 2-D weights) is byte-identical to gguf.quants on the
    fp32 weights, and header, vocabulary, tensor order and the f32 tensors are copied unchanged; but the tool
    passes non-2-D tensors through, so the convolution weights stay f32, which whisper.cpp's CPU convolution
    refuses (our quantized files used to hold them in f16).  From the f16 file, as deployers quantize, the
    blocks are gguf.quants of the f16-rounded weights: on tiny4 44% (Q8_0), 3.8% (Q5_0), 1.9% (Q4_0) of the
    blocks differ from quantizing fp32.  So the rows quantize with the tool, from f16 (one path).
    """
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    from lib.runtimes.ggml import read_ggml, tensors, write_ggml
    from lib.runtimes.whisper_cpp_build import quantize_file

    arrays = dict(tensors(tiny4.model))
    for source in ("f32", "f16"):
        write_ggml(tiny4.model, tiny4.processor, tmp_path / f"{source}.bin", source)
        given = (tmp_path / f"{source}.bin").read_bytes()
        hp_in, t_in = read_ggml(tmp_path / f"{source}.bin")
        for fmt in ("q8_0", "q5_0", "q4_0"):
            quantize_file(native, tmp_path / f"{source}.bin", tmp_path / "q.bin", fmt)
            made = (tmp_path / "q.bin").read_bytes()
            hp, t_out = read_ggml(tmp_path / "q.bin")
            qtype = GGMLQuantizationType[fmt.upper()]
            assert hp[:-1] == hp_in[:-1] and hp[-1] == 2000 + {"q8_0": 7, "q5_0": 8, "q4_0": 2}[fmt]
            first = t_in[0][3] - 12 - 4 * len(t_in[0][2]) - len(t_in[0][0])  # the first tensor's header
            assert made[48:first] == given[48:first]  # mel filters and vocabulary
            assert [t[0] for t in t_out] == [t[0] for t in t_in] and [t[2] for t in t_out] == [t[2] for t in t_in]
            quantized = 0
            for (name, kind, dims, start, size), (_, kind_in, _, start_in, size_in) in zip(t_out, t_in):
                data = made[start:start + size]
                if kind == qtype:
                    quantized += 1
                    weights = arrays[name] if source == "f32" else arrays[name].astype(np.float16).astype(np.float32)
                    assert data == np.ascontiguousarray(quantize(weights, qtype)).tobytes(), name
                else:  # conv weights (3-D), biases, norms, positions: passed through as given
                    assert kind == kind_in and data == given[start_in:start_in + size_in], name
                    assert len(dims) != 2 or name in ("encoder.conv1.bias", "encoder.conv2.bias",
                                                      "encoder.positional_embedding", "decoder.positional_embedding")
            assert quantized == 33
            conv = {name: kind for name, kind, *_ in t_out if name.endswith("conv1.weight")}
            assert conv == {"encoder.conv1.weight": 0 if source == "f32" else 1}
            if source == "f16":  # f16-rounded input: not the blocks of the fp32 weights
                name, _, _, start, size = next(t for t in t_out if t[1] == qtype)
                assert made[start:start + size] != np.ascontiguousarray(quantize(arrays[name], qtype)).tobytes()


@pytest.mark.parametrize("spec,model", [
    (dict(scheme="dynamic", weights="int4", activations="int8", group_size=256, options={"build": "native"}), "tiny256"),
    (dict(scheme="dynamic", weights="int5", activations="int8", group_size=32, options={"sym": False}), "tiny4"),
], ids=["q4_k-native", "q5_1-wheel"])
def test_whisper_cpp_new_formats_decode_jfk(spec, model, native, request):
    """A k-quant on the native build and Q5_1 on the wheel load and decode the JFK clip (random weights: ids only)."""
    from lib.data import jfk_path, load_audio
    from lib.quantize import quantize
    from lib.runtimes import PROMPT
    from lib.transcribe import features, generate

    loaded = request.getfixturevalue(model)
    spec = QuantSpec(library="whisper_cpp", **spec)
    runtime, meta = quantize(copy.deepcopy(loaded.model), spec, processor=loaded.processor, measure_error=False)
    fmt = meta["ggml_format"]
    assert meta["tensor_types"][fmt] == 2 * 6 + 2 * 10 + 1  # every 2-D weight, the token embedding too
    assert meta["tensor_types"]["f16"] == 2 and "whisper-quantize" in meta["method"]
    native_run = spec.option_dict.get("build") == "native"
    assert meta["build"] == ("native" if native_run else "wheel")
    assert ("AVX512 = 1" in meta["system_info"]) == (native_run and "AVX512 = 1" in native.system_info)
    ids = generate(runtime, features(loaded.processor, [load_audio(jfk_path())]), max_new_tokens=8)
    assert ids.dtype.is_floating_point is False and ids[0, :4].tolist() == PROMPT and ids.shape[1] > 4


def test_whisper_cpp_k_quant_needs_rows_of_256(fake_librispeech, tmp_path):
    from lib.evaluate import evaluate

    config = RunConfig(model="test:tiny", split=("test-clean",), limit=1, threads=1, max_new_tokens=4,
                       quant=QuantSpec(library="whisper_cpp", scheme="dynamic", weights="int4", activations="int8",
                                       group_size=256, options={"build": "native"}))
    summary = evaluate(config, data=str(fake_librispeech), results_dir=tmp_path, progress=False)
    assert summary["status"] == "failed" and summary["failed_stage"] == "quantize"
    assert "multiple of 256" in summary["error"]


@pytest.mark.parametrize("model,formats", [("tiny4", ("q8_0", "q5_0", "q4_0", "q5_1", "q4_1")),
                                           ("tiny256", ("q6_k", "q5_k", "q4_k", "q3_k", "q2_k"))])
def test_ctypes_quantizer_is_whisper_quantize_byte_for_byte(model, formats, native, request, tmp_path):
    """lib.runtimes.imatrix.quantize_file with no importance matrix writes whisper-quantize's file exactly (every
    format, from our f16 file); with one, the header and every record's layout stay, and the k-quant blocks change."""
    from lib.runtimes.ggml import read_ggml, write_ggml
    from lib.runtimes.imatrix import collect, quantize_file
    from lib.runtimes.whisper_cpp_build import quantize_file as whisper_quantize

    loaded = request.getfixturevalue(model)
    write_ggml(loaded.model, loaded.processor, tmp_path / "f16.bin", "f16")
    for fmt in formats:
        whisper_quantize(native, tmp_path / "f16.bin", tmp_path / "tool.bin", fmt)
        made = quantize_file(native, tmp_path / "f16.bin", tmp_path / "ours.bin", fmt)
        assert (tmp_path / "ours.bin").read_bytes() == (tmp_path / "tool.bin").read_bytes(), fmt
        assert made["tensor_types"][fmt] == 33 and made["weighted"] == 0
    audio = np.random.RandomState(1).randn(16_000).astype(np.float32) * 0.1
    utterance = type("U", (), {"audio": audio, "reference": "HELLO WORLD", "id": "x", "split": "extra",
                               "sha256": "0"})()
    matrix, counts = collect(loaded.model, loaded.processor, [utterance])
    assert len(matrix) == 33 and counts["encoder.blocks.0.attn.query.weight"] == 1500
    made = quantize_file(native, tmp_path / "f16.bin", tmp_path / "ours.bin", formats[-1], matrix)
    assert made["weighted"] == 33
    ours, tool = read_ggml(tmp_path / "ours.bin"), read_ggml(tmp_path / "tool.bin")
    assert ours[0] == tool[0] and [t[:3] + t[4:] for t in ours[1]] == [t[:3] + t[4:] for t in tool[1]]
    assert (tmp_path / "ours.bin").read_bytes() != (tmp_path / "tool.bin").read_bytes()


def test_calibrated_grid_rows_and_imatrix_option():
    """experiments/calibrated.yml: Q4_K/Q3_K/Q2_K with and without an importance matrix; imatrix is validated."""
    from conftest import REPO
    from lib.checks import check_quant
    from lib.runner import expand_grid

    grid = {j.config.quant.slug for j in expand_grid(REPO / "experiments" / "calibrated.yml")}
    assert grid == {f"ggml-dyn-int{b}-aint8-g256-buildnative{m}" for b in (4, 3, 2) for m in ("", "-imatrix64-xspk2")} | {
        "ggml-dyn-int3-aint8-g256-sens-q8-projout-buildnative-imatrix64-xspk2"}
    spec = dict(library="whisper_cpp", scheme="dynamic", weights="int3", activations="int8", group_size=256)
    assert QuantSpec(**spec, options={"build": "native", "imatrix": 4}).label == (
        "whisper.cpp Q3_K (native build) + importance matrix (4 utterances)")
    for options, message in [({"imatrix": 4}, "needs build: native"), ({"build": "native", "imatrix": 5}, "not allowed")]:
        with pytest.raises(ConfigError, match=message):
            check_quant(QuantSpec(**spec, options=options))
    with pytest.raises(ConfigError, match="quantized format"):
        check_quant(QuantSpec(library="whisper_cpp", weights="float16", options={"build": "native", "imatrix": 4}))


def test_imatrix_row_records_its_calibration(tiny256, native):
    """An imatrix row quantizes through ctypes with every 2-D weight weighted, and records the utterances."""
    from lib.quantize import quantize

    audio = np.random.RandomState(2).randn(16_000).astype(np.float32) * 0.1
    utts = [type("U", (), {"audio": audio, "reference": "HELLO", "id": f"u{i}", "split": "dev-clean",
                           "sha256": f"{i}"})() for i in range(2)]
    spec = QuantSpec(library="whisper_cpp", scheme="dynamic", weights="int2", activations="int8", group_size=256,
                     options={"build": "native", "imatrix": 2})
    _, meta = quantize(copy.deepcopy(tiny256.model), spec, calibration=utts, processor=tiny256.processor,
                       measure_error=False)
    assert meta["tensor_types"]["q2_k"] == 33 and meta["imatrix"]["weighted_tensors"] == 33
    assert [u["id"] for u in meta["imatrix"]["utterances"]] == ["u0", "u1"] and "ggml_quantize_chunk" in meta["method"]
    with pytest.raises(ValueError, match="needs 2 calibration utterances"):
        quantize(copy.deepcopy(tiny256.model), spec, calibration=utts[:1], processor=tiny256.processor,
                 measure_error=False)


def test_whisper_cpp_per_tensor_types_are_written_but_whisper_cpp_cannot_load_them(native, tiny4, tmp_path):
    """A per-tensor recipe (whisper.cpp #3571): Q4_0 everywhere, Q8_0 for encoder layer 0's self-attention and the
    tied token embedding (``proj_out``). The file holds exactly those tensors in Q8_0, but libwhisper 1.8.5
    allocates every weight at the file's one type, so loading it fails: a failed row with that reason."""
    from lib.checks import check_quant
    from lib.quantize import quantize
    from lib.runtimes.ggml import read_ggml, write_ggml
    from lib.runtimes.imatrix import GGML_TYPE, SKIP, quantize_file
    from lib.runtimes.whisper_cpp import MIXED_FAILURE, tensor_types

    q8 = {"weights": "int8", "group_size": 32}
    spec = QuantSpec(library="whisper_cpp", scheme="dynamic", weights="int4", activations="int8", group_size=32,
                     proj_out=True, depth=2, recipe="enc0-attn-emb-q8", options={"build": "native"},
                     overrides={"model.encoder.layers.0.self_attn.*": q8, "proj_out": q8})
    check_quant(spec)
    assert spec.slug == "ggml-dyn-int4-aint8-g32-enc0-attn-emb-q8-projout-buildnative"
    wanted = {"encoder.blocks.0.attn.query.weight", "encoder.blocks.0.attn.key.weight",
              "encoder.blocks.0.attn.value.weight", "encoder.blocks.0.attn.out.weight", "decoder.token_embedding.weight"}
    types = tensor_types(tiny4.model, spec)
    assert types == {name: "q8_0" for name in wanted}
    write_ggml(tiny4.model, tiny4.processor, tmp_path / "f16.bin", "f16")
    quantize_file(native, tmp_path / "f16.bin", tmp_path / "mixed.bin", "q4_0", None, types)
    _, records = read_ggml(tmp_path / "mixed.bin")
    assert {name for name, kind, *_ in records if kind == GGML_TYPE["q8_0"]} == wanted
    assert {kind for name, kind, dims, *_ in records if len(dims) == 2 and name not in wanted | set(SKIP)} == {
        GGML_TYPE["q4_0"]}
    with pytest.raises(ValueError, match="cannot load per-tensor mixed ggml types") as failure:
        quantize(copy.deepcopy(tiny4.model), spec, processor=tiny4.processor, measure_error=False)
    assert str(failure.value) == MIXED_FAILURE


def test_whisper_cpp_per_tensor_recipe_needs_the_native_build():
    from lib.checks import check_quant

    q8 = {"weights": "int8", "group_size": 32}
    with pytest.raises(ConfigError, match="per-tensor types need build: native"):
        check_quant(QuantSpec(library="whisper_cpp", scheme="dynamic", weights="int4", activations="int8",
                              group_size=32, recipe="enc-q8", overrides={"model.encoder.*": q8}))
    with pytest.raises(ConfigError, match="no ggml format"):
        check_quant(QuantSpec(library="whisper_cpp", scheme="dynamic", weights="int4", activations="int8",
                              group_size=32, recipe="enc-q3", options={"build": "native"},
                              overrides={"model.encoder.*": {"weights": "int3"}}))
