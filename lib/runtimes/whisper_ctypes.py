"""ctypes bindings of libwhisper (whisper.cpp v1.8.5's ``include/whisper.h``): any build, the wheel's or ours.

pywhispercpp's extension is linked to the wheel's libwhisper; a natively built libwhisper is driven from here
instead, in the same process (its libraries have other sonames, so the two ggml copies never mix).
:func:`bind` declares the functions used, :class:`FullParams` / :class:`ContextParams` mirror the structs
(their sizes are checked against the C compiler's when the native build is made, ``build.json``), and
:class:`Full` is ``whisper_full`` on harness log-mel, as ``lib.runtimes.whisper_cpp`` runs it through pywhispercpp.

>>> import ctypes; ctypes.sizeof(FullParams) > ctypes.sizeof(ContextParams)
True

E.g. ``Full(bind(native_build().library), "ggml-model.bin", {"language": "en"}, 4)(mel_80x3000, 32)`` -> token ids.
"""
from __future__ import annotations

import ctypes
import weakref
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

_p, _i, _b, _f = ctypes.c_void_p, ctypes.c_int, ctypes.c_bool, ctypes.c_float
_s = ctypes.c_char_p
ENCODER_BEGIN = ctypes.CFUNCTYPE(_b, _p, _p, _p)
LOGITS_FILTER = ctypes.CFUNCTYPE(None, _p, _p, _p, _i, ctypes.POINTER(_f), _p)


class ContextParams(ctypes.Structure):  # struct whisper_context_params
    _fields_ = [("use_gpu", _b), ("flash_attn", _b), ("gpu_device", _i), ("dtw_token_timestamps", _b),
                ("dtw_aheads_preset", _i), ("dtw_n_top", _i), ("dtw_aheads_n_heads", ctypes.c_size_t),
                ("dtw_aheads_heads", _p), ("dtw_mem_size", ctypes.c_size_t)]


class _Greedy(ctypes.Structure):
    _fields_ = [("best_of", _i)]


class _Beam(ctypes.Structure):
    _fields_ = [("beam_size", _i), ("patience", _f)]


class _Vad(ctypes.Structure):  # whisper_vad_params
    _fields_ = [("threshold", _f), ("min_speech_duration_ms", _i), ("min_silence_duration_ms", _i),
                ("max_speech_duration_s", _f), ("speech_pad_ms", _i), ("samples_overlap", _f)]


class FullParams(ctypes.Structure):  # struct whisper_full_params, field for field
    _fields_ = [("strategy", _i), ("n_threads", _i), ("n_max_text_ctx", _i), ("offset_ms", _i), ("duration_ms", _i),
                ("translate", _b), ("no_context", _b), ("no_timestamps", _b), ("single_segment", _b),
                ("print_special", _b), ("print_progress", _b), ("print_realtime", _b), ("print_timestamps", _b),
                ("token_timestamps", _b), ("thold_pt", _f), ("thold_ptsum", _f), ("max_len", _i),
                ("split_on_word", _b), ("max_tokens", _i), ("debug_mode", _b), ("audio_ctx", _i),
                ("tdrz_enable", _b), ("suppress_regex", _s), ("initial_prompt", _s), ("carry_initial_prompt", _b),
                ("prompt_tokens", _p), ("prompt_n_tokens", _i), ("language", _s), ("detect_language", _b),
                ("suppress_blank", _b), ("suppress_nst", _b), ("temperature", _f), ("max_initial_ts", _f),
                ("length_penalty", _f), ("temperature_inc", _f), ("entropy_thold", _f), ("logprob_thold", _f),
                ("no_speech_thold", _f), ("greedy", _Greedy), ("beam_search", _Beam),
                ("new_segment_callback", _p), ("new_segment_callback_user_data", _p),
                ("progress_callback", _p), ("progress_callback_user_data", _p),
                ("encoder_begin_callback", ENCODER_BEGIN), ("encoder_begin_callback_user_data", _p),
                ("abort_callback", _p), ("abort_callback_user_data", _p),
                ("logits_filter_callback", LOGITS_FILTER), ("logits_filter_callback_user_data", _p),
                ("grammar_rules", _p), ("n_grammar_rules", ctypes.c_size_t), ("i_start_rule", ctypes.c_size_t),
                ("grammar_penalty", _f), ("vad", _b), ("vad_model_path", _s), ("vad_params", _Vad)]


#: C source printing the two structs' sizes (compiled against the native build's headers; see whisper_cpp_build)
SIZES_C = ('#include <stdio.h>\n#include "whisper.h"\nint main(void) { printf("%zu %zu\\n", '
           "sizeof(struct whisper_context_params), sizeof(struct whisper_full_params)); return 0; }\n")


def ctypes_sizes() -> list[int]:
    return [ctypes.sizeof(ContextParams), ctypes.sizeof(FullParams)]


@lru_cache(maxsize=None)
def bind(path: str | Path) -> ctypes.CDLL:
    """Load a libwhisper once and declare the functions used here."""
    lib = ctypes.CDLL(str(path))
    f32, i32 = ctypes.POINTER(_f), ctypes.POINTER(ctypes.c_int32)
    for name, res, args in [
            ("whisper_context_default_params", ContextParams, []),
            ("whisper_init_from_file_with_params", _p, [_s, ContextParams]),
            ("whisper_init_from_file_with_params_no_state", _p, [_s, ContextParams]),
            ("whisper_init_state", _p, [_p]), ("whisper_free_state", None, [_p]), ("whisper_free", None, [_p]),
            ("whisper_n_vocab", _i, [_p]), ("whisper_set_mel", _i, [_p, f32, _i, _i]),
            ("whisper_set_mel_with_state", _i, [_p, _p, f32, _i, _i]),
            ("whisper_encode_with_state", _i, [_p, _p, _i, _i]),
            ("whisper_decode_with_state", _i, [_p, _p, i32, _i, _i, _i]),
            ("whisper_get_logits_from_state", f32, [_p]),
            ("whisper_full_default_params", FullParams, [_i]), ("whisper_full", _i, [_p, FullParams, f32, _i]),
            ("whisper_full_n_segments", _i, [_p]), ("whisper_full_n_tokens", _i, [_p, _i]),
            ("whisper_full_get_token_id", ctypes.c_int32, [_p, _i, _i]),
            ("whisper_print_system_info", _s, [])]:
        getattr(lib, name).restype, getattr(lib, name).argtypes = res, args
    return lib


def system_info(lib: ctypes.CDLL) -> str:
    """``whisper_print_system_info()``: the ggml CPU features this libwhisper was built with."""
    return lib.whisper_print_system_info().decode().strip()


def context_params(lib: ctypes.CDLL, flash_attn: bool | None = None) -> ContextParams:
    params = lib.whisper_context_default_params()
    params.use_gpu = False
    if flash_attn is not None:
        params.flash_attn = flash_attn
    return params


class Full:
    """``whisper_full`` (greedy) through ctypes: one context on ``path``, ``settings`` as pywhispercpp's attributes.

    ``on_encoder_begin()`` / ``on_logits()`` are called from whisper.cpp's callbacks (for the harness's encoder
    timer); ``full(mel [80, frames], max_tokens)`` -> generated token ids of the window, special tokens included.
    """

    def __init__(self, lib: ctypes.CDLL, path: Path | str, settings: dict[str, Any], n_threads: int,
                 on_encoder_begin: Callable[[], None] | None = None, on_logits: Callable[[], None] | None = None):
        self.lib = lib
        self.context = context_params(lib)
        self.ctx = lib.whisper_init_from_file_with_params(str(path).encode(), self.context)
        if not self.ctx:
            raise ValueError(f"whisper.cpp could not load {Path(path).name} (see its log)")
        weakref.finalize(self, lib.whisper_free, self.ctx)
        params = lib.whisper_full_default_params(0)  # WHISPER_SAMPLING_GREEDY
        for key, value in {**settings, "n_threads": n_threads}.items():
            setattr(params, key, value.encode() if isinstance(value, str) else value)
        params.greedy.best_of = 1
        def encoder_begin(*_args) -> bool:
            if on_encoder_begin:
                on_encoder_begin()
            return True  # False would abort the encoder

        def logits(*_args) -> None:
            if on_logits:
                on_logits()

        self._callbacks = (ENCODER_BEGIN(encoder_begin), LOGITS_FILTER(logits))  # alive as long as the params
        params.encoder_begin_callback, params.logits_filter_callback = self._callbacks
        self.params = params

    def __call__(self, mel, max_tokens: int) -> list[int]:
        import numpy as np

        lib, ctx = self.lib, self.ctx
        mel = np.ascontiguousarray(mel, dtype=np.float32)
        if lib.whisper_set_mel(ctx, mel.ctypes.data_as(ctypes.POINTER(_f)), mel.shape[1], mel.shape[0]) != 0:
            raise ValueError("whisper_set_mel failed")
        self.params.max_tokens = int(max_tokens)
        empty = np.zeros(1, np.float32)
        if lib.whisper_full(ctx, self.params, empty.ctypes.data_as(ctypes.POINTER(_f)), 0) != 0:
            raise ValueError("whisper_full failed")
        return [int(lib.whisper_full_get_token_id(ctx, s, i)) for s in range(lib.whisper_full_n_segments(ctx))
                for i in range(lib.whisper_full_n_tokens(ctx, s))]
