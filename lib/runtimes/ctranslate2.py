"""CTranslate2 (the engine under faster-whisper): ``ctranslate2.models.Whisper``.

The fp32 transformers Whisper is saved and converted with ctranslate2's own
``TransformersConverter`` at the row's compute type, so the model directory on
disk holds the weights in that type (the embedded whisper-base ships as a
CTranslate2 float16 file, but it was rebuilt into the fp32 transformers model
bit for bit, and converting that again gives every compute type the same
starting values).  ``encode`` gets the harness's log-mel features; ``generate``
gets the encoder output with the recipe's prompt, greedy (``beam_size=1``), the
model's ``suppress_tokens`` and ``suppress_blank`` (transformers'
``begin_suppress_tokens``), no temperature fallback, VAD or previous text.

========================  ==================================  ==============
spec                      compute type                        slug
========================  ==================================  ==============
``weights: fp32``         float32                             ``ct2-fp32``
``weights: bfloat16``     bfloat16 (where the CPU has it)     ``ct2-bfloat16``
``dynamic int8/int8``     int8 (= int8_float32 on CPU)        ``ct2-dyn-int8-aint8``
``... float: float32``    int8_float32                        ``ct2-dyn-int8-aint8-floatfloat32``
``... float: bfloat16``   int8_bfloat16 (where the CPU has)   ``ct2-dyn-int8-aint8-floatbfloat16``
``dynamic int16/int16``   int16                               ``ct2-dyn-int16-aint16``
========================  ==================================  ==============

A compute type missing from ``ctranslate2.get_supported_compute_types("cpu")``
is not offered on this CPU (this build: no bfloat16; no int16 on AMD).

Teacher-forced logits (the fidelity pass): CTranslate2's Whisper has no scoring call, but
``generate`` takes the tokens after ``<|notimestamps|>`` as a forced prefix and, with
``return_logits_vocab=True``, returns the raw logits of every forced position before the first
free one (no suppression, ``max_length`` at least twice the sequence: the Whisper decoder stops
at ``max_length // 2`` steps).  One call per sequence gives the logits transformers' forward
gives, to a floating-point floor that the fp32 row measures (|diff| below 1e-4 on whisper-base).

>>> compute_type(type("S", (), {"weights": "int8", "option_dict": {"float": "bfloat16"}})())
'int8_bfloat16'
"""
from __future__ import annotations

from typing import Any

from . import (EOT, NotOffered, FIRST_TIMESTAMP, HookedEncoder, PROMPT, RuntimeModel, require, runtime_dir,
               save_transformers, thread_count)
from ..quantize import check_allowed

_ANY = {"granularity": (None,), "group_size": (None,)}
SUPPORTED = [{"scheme": "none", "weights": "fp32", **_ANY}, {"scheme": "none", "weights": "bfloat16", **_ANY},
             {"scheme": "dynamic", "weights": "int8", "activations": "int8", **_ANY},
             {"scheme": "dynamic", "weights": "int16", "activations": "int16", **_ANY}]
OPTIONS = {"float": ("float32", "bfloat16")}


def compute_type(spec) -> str:
    base = {"fp32": "float32", "bfloat16": "bfloat16", "int8": "int8", "int16": "int16"}[spec.weights]
    flt = spec.option_dict.get("float")
    return f"{base}_{flt}" if flt else base


def validate(spec) -> None:
    check_allowed(spec, SUPPORTED, OPTIONS)
    from ..config import ConfigError

    if spec.option_dict.get("float") and spec.weights != "int8":
        raise ConfigError("ctranslate2: option 'float' (int8_float32 / int8_bfloat16) applies to int8 only")
    if spec.scope != "all" or spec.proj_out:
        raise ConfigError("ctranslate2 converts the whole model: leave scope 'all' and proj_out false")


class CT2Whisper(RuntimeModel):
    runtime = "ctranslate2"

    def __init__(self, model_dir, keep, compute: str, threads: int, suppress_tokens=(), begin_suppress_tokens=()):
        super().__init__(model_dir, keep, suppress_tokens, begin_suppress_tokens)
        ct2 = require("ctranslate2", "ctranslate2")
        self._ct2 = ct2
        self.model = ct2.models.Whisper(str(model_dir), device="cpu", compute_type=compute,
                                        intra_threads=threads, inter_threads=1)
        self.encoder = HookedEncoder(self._encode, lambda sv: __import__("numpy").asarray(sv))

    def _features(self, input_features):
        import numpy as np

        array = input_features.detach().float().numpy() if hasattr(input_features, "detach") else input_features
        return self._ct2.StorageView.from_array(np.ascontiguousarray(array, dtype=np.float32))

    def _encode(self, input_features):
        return self.model.encode(self._features(input_features), to_cpu=True)

    def decode(self, state, input_features, max_new_tokens: int, forced: bool) -> list[list[int]]:
        suppress = [-1] + ([EOT] + list(range(FIRST_TIMESTAMP, 51865)) if forced else [])
        batch = int(input_features.shape[0])
        # CTranslate2's Whisper decodes max_length // 2 new tokens (checked in tests/test_runtimes.py)
        results = self.model.generate(state, [PROMPT] * batch, beam_size=1, max_length=2 * max_new_tokens,
                                      suppress_blank=True, suppress_tokens=suppress, sampling_topk=1)
        return [list(r.sequences_ids[0])[:max_new_tokens] for r in results]


    def teacher_forced_logits(self, input_features, decoder_input_ids):
        """Logits ``[B, T, vocab]`` for ``decoder_input_ids`` (prompt + tokens), as transformers' forward gives
        them; the positions inside the prompt before its last token are zero (the harness reads from there on)."""
        import numpy as np
        import torch

        ids = [list(map(int, row)) for row in decoder_input_ids.tolist()]
        if any(row[:len(PROMPT)] != PROMPT for row in ids):
            raise ValueError(f"teacher-forced ids must start with the prompt {PROMPT}")
        width = max(map(len, ids))
        results = self.model.generate(self._encode(input_features), ids, beam_size=1, max_length=2 * width + 2,
                                      return_logits_vocab=True, suppress_blank=False, suppress_tokens=[],
                                      sampling_topk=1)
        first = len(PROMPT) - 1
        out = None
        for b, (row, result) in enumerate(zip(ids, results)):
            steps = result.logits[0]
            if len(steps) < len(row) - first:
                raise RuntimeError(f"CTranslate2 returned {len(steps)} logits for {len(row) - first} forced positions")
            block = np.stack([np.asarray(steps[j], dtype=np.float32) for j in range(len(row) - first)])
            if out is None:
                out = torch.zeros(len(ids), width, block.shape[-1])
            out[b, first:len(row)] = torch.from_numpy(block)
        return out


def convert(model, spec, calibration=None, processor=None, calibration_tokens: int = 128) -> tuple[CT2Whisper, dict]:
    ct2 = require("ctranslate2", "ctranslate2")
    wanted = compute_type(spec)
    supported = sorted(ct2.get_supported_compute_types("cpu"))
    if wanted not in supported:
        raise NotOffered(f"CTranslate2 {ct2.__version__} on this CPU has no {wanted} compute type; "
                         f"get_supported_compute_types('cpu') = {supported}")
    from ctranslate2.converters import TransformersConverter

    keep = runtime_dir("ct2")
    from pathlib import Path

    root = Path(keep.name)
    save_transformers(model, processor, root / "transformers")
    TransformersConverter(str(root / "transformers")).convert(str(root / "model"), quantization=wanted)
    import shutil

    shutil.rmtree(root / "transformers")
    runtime = CT2Whisper(root / "model", keep, wanted, thread_count())
    return runtime, {"method": f"ctranslate2.models.Whisper(compute_type={wanted!r})", "compute_type": wanted,
                     "resolved_compute_type": runtime.model.compute_type, "supported_compute_types": supported,
                     "converter": "ctranslate2.converters.TransformersConverter"}
