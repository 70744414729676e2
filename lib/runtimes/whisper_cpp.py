"""whisper.cpp through ``pywhispercpp`` (which ships libwhisper/libggml), or built natively, on a ggml file we write.

:mod:`lib.runtimes.ggml` writes the transformers weights as an f16 ggml file; the block formats are
then made from it by whisper.cpp's own ``whisper-quantize``, as deployers make them (the tool comes
from the native build, :mod:`lib.runtimes.whisper_cpp_build`, made on first use).  ``options:
{build: native}`` runs the row on that build's libwhisper (``GGML_NATIVE``: AVX-512 where the CPU has
it; the wheel's is AVX2 only) through ctypes (:mod:`lib.runtimes.whisper_ctypes`), with the same
``whisper_full`` settings; each row records ``whisper_print_system_info()`` of the library it ran on
(``system_info``).  Each utterance's log-mel comes
from the harness (``whisper_set_mel``, then ``whisper_full`` with no samples), so whisper.cpp
sees the same features as every other row (its own ``whisper_pcm_to_mel`` is bypassed);
``whisper_full`` then decodes greedily (``best_of 1``), English, no timestamps, one segment,
``no_context`` (no previous text), ``temperature_inc 0`` (no fallback), no VAD, with
whisper.cpp's non-speech-token suppression (``suppress_nst``, the list transformers suppresses)
and ``suppress_blank``; ``logprob_thold`` is disabled so no window is dropped as silence.

================================  ==========  ===============================================
spec                              ggml file   note
================================  ==========  ===============================================
``weights: fp32``                 f32         fails: whisper.cpp 1.8.5's CPU convolution
                                              asserts f16 kernels (checked before loading)
``weights: float16``              f16         whisper.cpp's reference format: its fp32 row
``dynamic int8/int8, group 32``   Q8_0        blocks of 32 weights, one f16 scale each;
``dynamic int5/int8, group 32``   Q5_0        ggml quantizes activations to Q8_0 blocks for
``dynamic int4/int8, group 32``   Q4_0        every matmul, hence ``dynamic`` with int8 activations
``... int5/int4, options sym 0``  Q5_1 Q4_1   a scale and a minimum per block of 32
``dynamic int6 ... int2, g 256``  Q6_K - Q2_K k-quants: super-blocks of 256 (rows must be a multiple)
``... options imatrix n``         the same    quantized with an importance matrix of n unscored
                                              utterances (:mod:`lib.runtimes.imatrix`; native)
================================  ==========  ===============================================

Every 2-D weight is quantized, as whisper.cpp's loader requires, including the token embedding
(which is also the output projection): unlike the PyTorch rows, ``proj_out`` is not float.
Limits: whisper.cpp decodes at most ``n_text_ctx / 2 - 4`` (220) tokens a window, not 440; its
Python binding hands the logits-filter callback a single float, so end-of-text cannot be
masked (the footprint's 32 tokens rely on ``max_tokens=32`` and random weights not ending
early; the measured length is recorded); the encoder is timed from its ``encoder_begin``
callback to the first logits callback (which includes the decoder's pass over the 4 prompt
tokens).  whisper.cpp assumes ``ffn_dim = 4 x d_model``.

Teacher-forced logits (:class:`Logits`) bypass the binding: ctypes on the libwhisper that
pywhispercpp loads, a second context on the same file and flags, the same harness log-mel, the
prompt in one decoder call then one token a call, as ``whisper_full`` decodes.  On the 4x-ffn
test model (``tests/test_runtimes.py``) the f16 logits are within 0.015 of transformers fp32
(logits up to 1.1; 6.5e-4 with flash attention off: ggml's f16 flash attention, whisper.cpp's
default, is most of it), with the same argmax everywhere.  whisper-base f16 on two test-clean
utterances (1089-134686-0000, 1221-135766-0001): KL(fp32 || f16) 3.2e-4 and 1.4e-4 nats a
position on average (max 4.7e-3), top-1 agreement 39/39 and 56/56.

>>> FORMAT["int4"], FORMAT["float16"], K_QUANTS["int4"]
('q4_0', 'f16', 'q4_k')
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import EOT, PROMPT, HookedEncoder, RuntimeModel, require, runtime_dir, thread_count
from ..quantize import check_allowed

FORMAT = {"fp32": "f32", "float16": "f16", "int8": "q8_0", "int5": "q5_0", "int4": "q4_0"}
#: ``sym: false``, blocks of 32 with a scale and a minimum each
ASYMMETRIC = {"int5": "q5_1", "int4": "q4_1"}
#: group 256: ggml's k-quants (super-blocks of 256 weights, sub-block scales; rows must be a multiple of 256)
K_QUANTS = {"int2": "q2_k", "int3": "q3_k", "int4": "q4_k", "int5": "q5_k", "int6": "q6_k"}
SUPPORTED = [{"scheme": "none", "weights": w, "granularity": (None,), "group_size": (None,)} for w in ("fp32", "float16")] + [
    {"scheme": "dynamic", "weights": w, "activations": "int8", "granularity": (None, "per_group"), "group_size": (32,)}
    for w in ("int8", "int5", "int4")] + [
    {"scheme": "dynamic", "weights": w, "activations": "int8", "granularity": (None, "per_group"), "group_size": (256,)}
    for w in K_QUANTS]
#: ``imatrix: n``: quantize with an importance matrix collected on the first n unscored utterances
#: (:mod:`lib.runtimes.imatrix`), through ctypes on the native libggml instead of whisper-quantize
IMATRIX_SIZES = (1, 2, 4, 8, 16, 32, 64)
OPTIONS = {"build": ("native",), "sym": (False,), "imatrix": IMATRIX_SIZES}
PER_LAYER = True  # overrides give tensors their own ggml format (tensor_types), through the native libggml
PIP = "pywhispercpp gguf"
F32_FAILURE = ("whisper.cpp (libwhisper 1.8.5 in pywhispercpp 1.5.1) cannot run an f32 ggml file on the CPU: "
               "its convolution asserts GGML_ASSERT(src0->type == GGML_TYPE_F16) (ggml-cpu/ops.cpp) and aborts "
               "the process; f16 is whisper.cpp's reference row")
MIXED_FAILURE = ("whisper.cpp (libwhisper 1.8.5) cannot load per-tensor mixed ggml types: its loader allocates "
                 "every 2-D weight at the file's one type and refuses a tensor stored in another ('tensor ... has wrong "
                 "size in model file'), which is what whisper.cpp issue #3571 asks to change; the file itself is "
                 "written (lib.runtimes.imatrix.quantize_file)")
DECODING = dict(no_context=True, no_timestamps=True, single_segment=True, print_progress=False, print_realtime=False,
                print_timestamps=False, print_special=False, language="en", translate=False, detect_language=False,
                temperature=0.0, temperature_inc=0.0, suppress_blank=True, suppress_nst=True, token_timestamps=False,
                logprob_thold=-1e9, entropy_thold=1e9, no_speech_thold=1.0)


def validate(spec) -> None:
    check_allowed(spec, SUPPORTED, OPTIONS)
    from ..config import ConfigError

    if spec.scope != "all" or (spec.proj_out and not spec.per_layer):
        raise ConfigError("whisper_cpp quantizes every 2-D weight, as its loader requires: leave scope 'all', "
                          "proj_out false (proj_out: true only names the tied token embedding in a per-tensor recipe)")
    if spec.per_layer:
        if spec.option_dict.get("build") != "native" or spec.group_size is None or spec.layers:
            raise ConfigError("whisper_cpp per-tensor types need build: native, a quantized format and overrides "
                              "only (every tensor is quantized; overrides give some another ggml format)")
        for pattern, setting in spec.overrides:
            setting = {"weights": spec.weights, "group_size": spec.group_size, **dict(setting)}
            if tensor_format(setting) is None:
                raise ConfigError(f"override {pattern!r}: {setting} is no ggml format; use int8/int5/int4 with "
                                  f"group_size 32, or {'/'.join(K_QUANTS)} with group_size 256")
    if "sym" in spec.option_dict and (spec.group_size != 32 or spec.weights not in ASYMMETRIC):
        raise ConfigError(f"whisper_cpp sym: false is {'/'.join(ASYMMETRIC.values())} (int5/int4, group 32); "
                          "k-quants (group 256) take no sym option")
    if "imatrix" in spec.option_dict and (spec.option_dict.get("build") != "native" or spec.group_size is None):
        raise ConfigError("whisper_cpp imatrix: n quantizes with the native build's libggml: it needs build: native "
                          "and a quantized format (group_size 32 or 256)")


def tensor_format(setting: dict) -> str | None:
    """The ggml format of a per-tensor setting ``{weights, group_size}``, or None.

    >>> tensor_format({"weights": "int8", "group_size": 32}), tensor_format({"weights": "int3", "group_size": 256})
    ('q8_0', 'q3_k')
    """
    if setting.get("group_size") == 256:
        return K_QUANTS.get(setting["weights"])
    return FORMAT.get(setting["weights"]) if setting.get("group_size") == 32 and setting["weights"] not in (
        "fp32", "float16") else None


def tensor_types(model, spec) -> dict[str, str]:
    """ggml name -> format of each tensor a per-tensor recipe gives another format than the spec's own
    (:func:`lib.quantize.common.recipe_linears`; ``proj_out`` names the tied ``decoder.token_embedding``)."""
    import copy

    from ..quantize.common import recipe_linears
    from .ggml import ggml_name

    own = ggml_format(spec)
    out = {}
    for name, _module, setting in recipe_linears(copy.deepcopy(model), spec):
        target = "decoder.token_embedding.weight" if name == "proj_out" else ggml_name(name + ".weight")
        if tensor_format(setting) != own:
            out[target] = tensor_format(setting)
    return out


def ggml_format(spec) -> str:
    """The ggml format a spec asks for.

    >>> from lib.config import QuantSpec
    >>> ggml_format(QuantSpec(library="whisper_cpp", scheme="dynamic", weights="int4", activations="int8",
    ...                       group_size=256, options={"build": "native"}))
    'q4_k'
    """
    if spec.group_size == 256:
        return K_QUANTS[spec.weights]
    if spec.option_dict.get("sym", True) is False:
        return ASYMMETRIC[spec.weights]
    return FORMAT[spec.weights]


def library_path() -> Path:
    """The libwhisper pywhispercpp's extension loads (its wheel's ``pywhispercpp.libs``), else the one beside it."""
    pw = require("_pywhispercpp", PIP)
    here = Path(pw.__file__).parent
    for pattern in ("pywhispercpp.libs/libwhisper*", "libwhisper.so.*", "libwhisper*.dylib", "libwhisper.so"):
        found = sorted(here.glob(pattern))
        if found:
            return found[0]
    raise ImportError(f"no libwhisper shared library beside {pw.__file__}; pip install {PIP}")


class Logits:
    """whisper.cpp's decoder logits through ctypes on libwhisper (v1.8.5's ``include/whisper.h``).

    A context of its own (``whisper_init_from_file_with_params_no_state`` + ``whisper_init_state``, CPU, flash
    attention as in the decoding context) loaded on first use.  Per call: ``whisper_set_mel_with_state``,
    ``whisper_encode_with_state``, then ``whisper_decode_with_state`` on the prompt (n_past 0) and on each
    further token (n_past grows), as ``whisper_full`` does: libwhisper keeps the logits of a call's last
    token only (``whisper_batch_prep_legacy``), so one token per call gives every later position.
    E.g. ``Logits(d / "ggml-model.bin", 4, True)(mel_80x3000, PROMPT + [264, EOT])`` is ``[6, 51865]``, rows 3-5 set.
    """

    def __init__(self, path: Path, n_threads: int, flash_attn: bool, library: Path | str | None = None):
        import weakref

        from .whisper_ctypes import bind, context_params

        self.lib = lib = bind(library or library_path())
        self.ctx = lib.whisper_init_from_file_with_params_no_state(str(path).encode(), context_params(lib, flash_attn))
        self.state = lib.whisper_init_state(self.ctx) if self.ctx else None
        if not self.state:
            lib.whisper_free(self.ctx)
            raise ValueError(f"whisper.cpp could not load {path} for logits (see its log)")
        self.n_vocab, self.n_threads = lib.whisper_n_vocab(self.ctx), n_threads
        weakref.finalize(self, _free, lib, self.ctx, self.state)

    def __call__(self, mel, ids):
        """``mel`` float32 ``[80, frames]``, ``ids`` (prompt first) -> float32 ``[len(ids), vocab]`` numpy; the rows
        before the prompt's last token are zero."""
        import ctypes

        import numpy as np

        lib, ctx, state, n = self.lib, self.ctx, self.state, self.n_threads
        mel = np.ascontiguousarray(mel, dtype=np.float32)
        if lib.whisper_set_mel_with_state(ctx, state, mel.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                          mel.shape[1], mel.shape[0]) != 0:
            raise ValueError("whisper_set_mel_with_state failed")
        if lib.whisper_encode_with_state(ctx, state, 0, n) != 0:
            raise ValueError("whisper_encode_with_state failed")
        tokens = np.ascontiguousarray(ids, dtype=np.int32)
        out = np.zeros((len(tokens), self.n_vocab), np.float32)
        first = len(PROMPT)
        for end in range(first, len(tokens) + 1):  # the prompt in one call, then one token a call
            start = 0 if end == first else end - 1
            chunk = tokens[start:end].ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
            if lib.whisper_decode_with_state(ctx, state, chunk, end - start, start, n) != 0:
                raise ValueError("whisper_decode_with_state failed")
            last = lib.whisper_get_logits_from_state(state)  # rows: the call's tokens; only the last one is set
            out[end - 1] = np.ctypeslib.as_array(last, shape=((end - start) * self.n_vocab,))[-self.n_vocab:]
        return out


def _free(lib, ctx, state) -> None:
    lib.whisper_free_state(state)
    lib.whisper_free(ctx)


class WhisperCpp(RuntimeModel):
    """whisper.cpp on ``model_dir/ggml-model.bin``: through pywhispercpp (the wheel's libwhisper), or with ``native``
    (a :class:`lib.runtimes.whisper_cpp_build.BuildInfo`) through ctypes on that build's libwhisper; the same
    ``whisper_full`` settings (:data:`DECODING`) either way."""

    runtime = "whisper_cpp"

    def __init__(self, model_dir: Path, keep, threads: int, native=None):
        super().__init__(model_dir, keep)
        self.native = native
        self.encoder = HookedEncoder(encode=None, hidden=None)
        self._logits_ctx = None  # a Logits, on the first teacher_forced_logits
        self._current = None  # (features, encoder still running) of the utterance being decoded
        self.threads = threads
        path = self.model_dir / "ggml-model.bin"
        if native is not None:
            from .whisper_ctypes import Full, bind, ctypes_sizes, system_info

            if native.struct_sizes != ctypes_sizes():
                raise ValueError(f"lib.runtimes.whisper_ctypes' structs ({ctypes_sizes()} bytes) do not match this "
                                 f"whisper.cpp's whisper.h ({native.struct_sizes}); update FullParams/ContextParams")
            lib = bind(native.library)
            self._full = Full(lib, path, DECODING, threads, self._encoder_begins, self._logits)
            self.context_params = {"flash_attn": bool(self._full.context.flash_attn), "use_gpu": False}
            self.system_info = system_info(lib)
            return
        pw = require("_pywhispercpp", PIP)
        self._pw = pw
        context = pw.whisper_context_default_params()
        context.use_gpu = False
        self.context_params = {"flash_attn": bool(context.flash_attn), "use_gpu": False}
        self.system_info = pw.whisper_print_system_info().strip()
        self.ctx = pw.whisper_init_from_file_with_params(str(path), context)
        if self.ctx is None:
            raise ValueError(f"whisper.cpp could not load {self.model_dir.name}/ggml-model.bin (see its log)")
        self.params = pw.whisper_full_default_params(pw.whisper_sampling_strategy.WHISPER_SAMPLING_GREEDY)
        for key, value in {**DECODING, "n_threads": threads}.items():
            setattr(self.params, key, value)
        greedy = self.params.greedy
        greedy["best_of"] = 1
        self.params.greedy = greedy
        pw.assign_encoder_begin_callback(self.params, self._encoder_begins)
        pw.assign_logits_filter_callback(self.params, self._logits)

    def _encoder_begins(self, *_args) -> bool:
        self.encoder.begin(self._current[0])
        self._current[1] = True
        return True  # False would abort the encoder

    def _logits(self, *_args) -> None:
        if self._current[1]:  # first logits of the window: the encoder (and the prompt pass) is done
            self._current[1] = False
            self.encoder.end(self._current[0], None)

    def _full_wheel(self, mel, max_new_tokens: int) -> list[int]:
        import numpy as np

        pw = self._pw
        self.params.max_tokens = int(max_new_tokens)
        if pw.whisper_set_mel(self.ctx, mel.reshape(-1), mel.shape[1], mel.shape[0]) != 0:
            raise ValueError("whisper_set_mel failed")
        if pw.whisper_full(self.ctx, self.params, np.zeros(0, np.float32), 0) != 0:
            raise ValueError("whisper_full failed")
        return [pw.whisper_full_get_token_id(self.ctx, s, i) for s in range(pw.whisper_full_n_segments(self.ctx))
                for i in range(pw.whisper_full_n_tokens(self.ctx, s))]

    def decode_batch(self, input_features, max_new_tokens: int, forced: bool) -> list[list[int]]:
        import numpy as np

        out = []
        array = input_features.detach().float().numpy() if hasattr(input_features, "detach") else input_features
        for mel in array:  # whisper.cpp's context decodes one utterance at a time
            mel = np.ascontiguousarray(mel, dtype=np.float32)
            self._current = [mel[None], False]
            run = self._full if self.native is not None else self._full_wheel
            ids = run(mel, max_new_tokens)
            out.append([int(t) for t in ids if t < EOT][:max_new_tokens])
        return out

    def teacher_forced_logits(self, input_features, decoder_input_ids):
        """Logits ``[B, T, vocab]`` of whisper.cpp's decoder on prompt + tokens (see :class:`Logits`), from the same
        harness log-mel as decoding; the positions before the prompt's last token are zero."""
        import numpy as np
        import torch

        if self._logits_ctx is None:
            self._logits_ctx = Logits(self.model_dir / "ggml-model.bin", self.threads,
                                      self.context_params["flash_attn"],
                                      self.native.library if self.native is not None else None)
        mels = input_features.detach().float().numpy() if hasattr(input_features, "detach") else input_features
        ids = [list(map(int, row)) for row in np.asarray(decoder_input_ids).tolist()]
        if any(row[:len(PROMPT)] != PROMPT for row in ids):
            raise ValueError(f"teacher-forced ids must start with the prompt {PROMPT}")
        return torch.from_numpy(np.stack([self._logits_ctx(mel, row) for mel, row in zip(mels, ids)]))

    def describe(self) -> dict[str, Any]:
        build = "native" if self.native is not None else "wheel"
        return {**super().describe(), "context_params": self.context_params, "build": build,
                "system_info": self.system_info,
                "input": "harness log-mel features (whisper_set_mel), whisper.cpp's own mel bypassed"}


def convert(model, spec, calibration=None, processor=None, calibration_tokens: int = 128) -> tuple[WhisperCpp, dict]:
    fmt = ggml_format(spec)
    native_wanted = spec.option_dict.get("build") == "native"
    if not native_wanted:
        require("_pywhispercpp", PIP)
    require("gguf", PIP)
    from .ggml import write_ggml

    if fmt == "f32":
        raise ValueError(F32_FAILURE)
    c = model.config
    if fmt in K_QUANTS.values() and c.d_model % 256:
        raise ValueError(f"{fmt} quantizes rows in super-blocks of 256 weights; d_model {c.d_model} is not a "
                         "multiple of 256")
    if c.encoder_ffn_dim != 4 * c.d_model or c.decoder_ffn_dim != 4 * c.d_model:
        raise ValueError(f"whisper.cpp assumes ffn_dim = 4 x d_model; this model has ffn {c.encoder_ffn_dim}/"
                         f"{c.decoder_ffn_dim} for d_model {c.d_model}")
    native = None
    if native_wanted or fmt != "f16":
        from .whisper_cpp_build import native_build

        native = native_build()
    keep = runtime_dir("ggml")
    root = Path(keep.name) / "model"
    root.mkdir()
    start = time.perf_counter()
    imatrix = None
    if spec.option_dict.get("imatrix"):  # ggml_quantize_chunk with importance weights, through ctypes
        from . import imatrix as im

        wanted = spec.option_dict["imatrix"]
        if calibration is None or len(calibration) != wanted:
            raise ValueError(f"imatrix: {wanted} needs {wanted} calibration utterances, got "
                             f"{0 if calibration is None else len(calibration)}")
        matrix, positions = im.collect(model, processor, calibration)
        im.save(Path(keep.name) / "imatrix.npz", matrix, positions, calibration)  # beside the model dir, not in it
        imatrix = im.describe(matrix, positions, calibration)
    types = tensor_types(model, spec) if spec.per_layer else {}
    if fmt != "f16" and (imatrix is not None or types):
        from . import imatrix as im

        write_ggml(model, processor, root / "ggml-f16.bin", "f16")
        made = im.quantize_file(native, root / "ggml-f16.bin", root / "ggml-model.bin", fmt,
                                matrix if imatrix is not None else None, types)
        counts = made["tensor_types"]
        if imatrix is not None:
            imatrix["weighted_tensors"] = made["weighted"]
        (root / "ggml-f16.bin").unlink()
        weights = (f" with an importance matrix of {len(calibration)} utterances" if imatrix is not None else "")
        mixed = f", {len(types)} tensors in another format ({', '.join(sorted(set(types.values())))})" if types else ""
        method = (f"ggml f16 written by lib.runtimes.ggml, {fmt} by the native libggml's ggml_quantize_chunk{weights}"
                  f"{mixed} (lib.runtimes.imatrix; whisper-quantize's file layout)")
    elif fmt != "f16":  # the block formats: whisper.cpp's own quantizer on our f16 file, as deployers make them
        from .whisper_cpp_build import quantize_file

        write_ggml(model, processor, root / "ggml-f16.bin", "f16")
        counts = quantize_file(native, root / "ggml-f16.bin", root / "ggml-model.bin", fmt)
        (root / "ggml-f16.bin").unlink()
        method = f"ggml f16 written by lib.runtimes.ggml, {fmt} by whisper.cpp's whisper-quantize (native build)"
    else:
        counts = write_ggml(model, processor, root / "ggml-model.bin", fmt)
        method = "ggml f16 written by lib.runtimes.ggml"
    written = time.perf_counter() - start
    try:
        runtime = WhisperCpp(root, keep, thread_count(), native if native_wanted else None)
    except ValueError as exc:
        if types and "could not load" in str(exc):
            raise ValueError(MIXED_FAILURE) from exc
        raise
    engine = ("ctypes on the native libwhisper (GGML_NATIVE build)" if native_wanted
              else "pywhispercpp (the wheel's libwhisper)")
    extra = {"method": f"{method}, whisper_full via {engine}", "ggml_format": fmt, "tensor_types": counts,
             "write_seconds": written, "max_tokens_per_window": 220}
    if imatrix is not None:
        extra["imatrix"] = imatrix
    if types:
        extra["tensor_overrides"] = types
    if native is not None:
        extra["native_build"] = {"cmake_flags": native.cmake_flags, "system_info": native.system_info,
                                 "sdist_sha256": native.sdist_sha256, "compiler": native.compiler}
    return runtime, extra
