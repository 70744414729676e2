"""An importance matrix for ggml (llama.cpp's ``imatrix``, for Whisper), and ggml files quantized with it.

whisper.cpp's ``whisper-quantize`` calls ``ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, NULL)``: no
importance weights.  ggml's quantizers take them (``quant_weights``, one float per input channel, used for every
row): the k-quants then pick each block's scale and minimum to minimise the error weighted by them instead of a
weight-magnitude heuristic.  Here, as llama.cpp's ``llama-imatrix`` does it:

- :func:`collect`: forward hooks on every ``nn.Linear`` of the transformers Whisper (encoder, decoder,
  ``proj_out``) record, per input channel, the mean of x² over every position the layer sees, on unscored
  calibration utterances (dev-clean + jfk, :func:`lib.data.calibration_set`; never a scored split); the decoder
  is teacher-forced with the utterance's reference (prompt + :func:`lib.fidelity.reference_text` tokens).  The
  matrix is keyed by ggml tensor name (:func:`lib.runtimes.ggml.ggml_name`); ``proj_out``'s input (the
  decoder's final hidden state) weights ``decoder.token_embedding.weight``, which whisper.cpp also uses as the
  output projection.
- :func:`quantize_file`: whisper-quantize's loop (``examples/common-ggml.cpp``, ``ggml_common_quantize_0``)
  re-done in Python on an f16 ggml file: header copied with ``ftype = 2000 + ggml ftype``, every 2-D tensor
  except the four whisper-quantize skips quantized by the native libggml-base's ``ggml_quantize_chunk``
  through ctypes, with the tensor's importance row (or ``NULL``), everything else copied.  With no matrix
  the file is whisper-quantize's, byte for byte (tests/test_runtimes.py).

>>> FTYPE["q4_k"], GGML_TYPE["q4_k"]
(12, 12)

E.g. ``quantize_file(native_build(), "ggml-f16.bin", "q.bin", "q3_k", collect(model, processor, utts)[0])``.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: whisper-quantize's format names -> ggml_ftype (ggml.h), written as 2000 + ftype in the header
FTYPE = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k": 11, "q4_k": 12, "q5_k": 13,
         "q6_k": 14}
#: the same names -> ggml_type (the tensor type ggml_quantize_chunk writes)
GGML_TYPE = {"q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q2_k": 10, "q3_k": 11, "q4_k": 12, "q5_k": 13,
             "q6_k": 14}
#: tensors whisper-quantize never quantizes (its ``to_skip``), besides every tensor that is not 2-D
SKIP = ("encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding", "decoder.positional_embedding")


class _InitParams(ctypes.Structure):  # struct ggml_init_params
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


def ggml_base(info) -> Path:
    """The native build's libggml-base (where ``ggml_quantize_chunk`` lives), beside its libwhisper's build."""
    build = Path(info.library).parents[1]
    found = sorted(build.rglob("libggml-base.so*")) + sorted(build.rglob("libggml-base*.dylib"))
    if not found:
        raise ValueError(f"no libggml-base under {build}: rebuild whisper.cpp (lib.runtimes.whisper_cpp_build)")
    return found[0]


@lru_cache(maxsize=None)
def _bind(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    f32 = ctypes.POINTER(ctypes.c_float)
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, f32, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_int64, f32]
    lib.ggml_quantize_init.restype, lib.ggml_quantize_init.argtypes = None, [ctypes.c_int]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_init.restype, lib.ggml_init.argtypes = ctypes.c_void_p, [_InitParams]
    lib.ggml_free.restype, lib.ggml_free.argtypes = None, [ctypes.c_void_p]
    lib.ggml_free(lib.ggml_init(_InitParams(0, None, False)))  # as whisper-quantize does (f16 tables)
    return lib


def quantize_chunk(lib: ctypes.CDLL, ggml_type: int, weights: np.ndarray, importance: np.ndarray | None) -> bytes:
    """``ggml_quantize_chunk`` on a float32 ``[rows, n_per_row]`` array; ``importance``: ``n_per_row`` floats or None."""
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    rows, n_per_row = weights.shape
    f32 = ctypes.POINTER(ctypes.c_float)
    out = np.zeros(weights.nbytes + 1024, np.uint8)  # every block format is smaller than f32
    qw = None
    if importance is not None:
        importance = np.ascontiguousarray(importance, dtype=np.float32)
        if importance.shape != (n_per_row,):
            raise ValueError(f"importance has shape {importance.shape}, the rows have {n_per_row} weights")
        qw = importance.ctypes.data_as(f32)
    lib.ggml_quantize_init(ggml_type)
    size = lib.ggml_quantize_chunk(ggml_type, weights.ctypes.data_as(f32), out.ctypes.data_as(ctypes.c_void_p), 0,
                                   rows, n_per_row, qw)
    return out[:size].tobytes()


def quantize_file(info, source: Path | str, target: Path | str, fmt: str,
                  imatrix: dict[str, np.ndarray] | None = None, types: dict[str, str] | None = None) -> dict[str, Any]:
    """whisper-quantize ``source`` (an f16/f32 ggml file) into ``target`` as ``fmt``, through ctypes on the native
    libggml-base, each 2-D tensor with its row of ``imatrix`` (ggml name -> per-input-channel importance) if given;
    ``types`` gives some tensors another format (ggml name -> format, e.g. ``{'decoder.token_embedding.weight':
    'q8_0'}``: per-tensor mixed types, as whisper.cpp's loader reads each tensor's own type).

    Returns tensor counts by type and which tensors had importance weights, e.g.
    ``{'tensor_types': {'f32': 62, 'f16': 2, 'q3_k': 49}, 'weighted': 49}``.
    """
    from .ggml import read_ggml, type_counts

    types = dict(types or {})
    for wanted in {fmt, *types.values()}:
        if wanted not in GGML_TYPE:
            raise ValueError(f"ggml format {wanted!r} is not one whisper-quantize writes ({', '.join(GGML_TYPE)})")
    lib = _bind(str(ggml_base(info)))
    for wanted in {fmt, *types.values()}:
        if imatrix is None and lib.ggml_quantize_requires_imatrix(GGML_TYPE[wanted]):
            raise ValueError(f"{wanted} cannot be quantized without an importance matrix")
    data = Path(source).read_bytes()
    _, records = read_ggml(source)
    ftype = struct.unpack_from("<i", data, 44)[0]
    if ftype not in (0, 1):
        raise ValueError(f"{source} is already quantized (ftype {ftype}); quantize an f16 or f32 file")
    first = records[0][3] - 12 - 4 * len(records[0][2]) - len(records[0][0].encode())
    weighted = 0
    with open(target, "wb") as out:
        out.write(data[:44] + struct.pack("<i", 2000 + FTYPE[fmt]) + data[48:first])
        for name, kind, dims, start, size in records:
            head = start - 12 - 4 * len(dims) - len(name.encode())
            if len(dims) != 2 or name in SKIP:
                out.write(data[head:start + size])
                continue
            if kind not in (0, 1):
                raise ValueError(f"{name} has ggml type {kind}: only f32/f16 tensors are quantized")
            array = np.frombuffer(data, "<f4" if kind == 0 else "<f2", int(np.prod(dims)), start)
            array = array.astype(np.float32).reshape(dims[1], dims[0])
            row = None if imatrix is None else imatrix.get(name)
            if imatrix is not None and row is None:
                raise ValueError(f"the importance matrix has no row for {name}")
            weighted += row is not None
            qtype = GGML_TYPE[types.pop(name, fmt)]
            out.write(struct.pack("<3i", 2, len(name.encode()), qtype) + struct.pack("<2i", *dims) + name.encode())
            out.write(quantize_chunk(lib, qtype, array, row))
    if types:
        raise ValueError(f"no quantizable tensor named {sorted(types)[:3]} in {source}")
    return {"tensor_types": type_counts(target), "weighted": weighted}


def collect(model, processor, utterances: Sequence, batch_tokens: int | None = None
            ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per input channel of every ``nn.Linear``, the mean of x² over the positions it sees, keyed by ggml name;
    and the positions counted per tensor.  One utterance at a time, fp32, the decoder teacher-forced on
    the prompt + the reference's tokens (:func:`lib.fidelity.reference_text`).

    E.g. on whisper-base and 4 utterances: 49 rows (``encoder.blocks.0.attn.query.weight``: 512 floats, 6000
    positions: 4 x 1500 encoder frames), ``decoder.token_embedding.weight`` from ``proj_out``'s input.
    """
    import torch

    from ..decoding import PROMPT
    from ..fidelity import reference_text
    from ..transcribe import features
    from .ggml import ggml_name

    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []
    for module_name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        target = ("decoder.token_embedding.weight" if module_name == "proj_out"
                  else ggml_name(module_name + ".weight"))

        def hook(_module, inputs, _output, target=target):
            x = inputs[0].detach().double().reshape(-1, inputs[0].shape[-1])
            sums[target] = sums.get(target, 0) + (x * x).sum(0)
            counts[target] = counts.get(target, 0) + x.shape[0]

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for u in utterances:
                feats = features(processor, [u.audio])
                text = processor.tokenizer(" " + reference_text(u.reference), add_special_tokens=False).input_ids
                ids = torch.tensor([list(PROMPT) + list(text)])
                model(input_features=feats.to(next(model.parameters()).dtype), decoder_input_ids=ids,
                      use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {k: (sums[k] / counts[k]).float().numpy() for k in sorted(sums)}, counts


def describe(matrix: dict[str, np.ndarray], counts: dict[str, int], utterances: Sequence) -> dict[str, Any]:
    """What a row records about its matrix: the calibration utterances (id, audio sha256), positions, a digest."""
    digest = hashlib.sha256()
    for key in sorted(matrix):
        digest.update(key.encode() + np.ascontiguousarray(matrix[key], "<f4").tobytes())
    return {"utterances": [{"id": u.id, "split": u.split, "audio_sha256": u.sha256} for u in utterances],
            "tensors": len(matrix), "positions": {"min": min(counts.values()), "max": max(counts.values())},
            "sha256": digest.hexdigest(),
            "method": "mean x^2 per input channel of every nn.Linear (forward hooks, fp32), decoder teacher-forced "
                      "on the reference"}


def save(path: Path | str, matrix: dict[str, np.ndarray], counts: dict[str, int], utterances: Sequence) -> None:
    """``matrix`` as npz (keyed by ggml name) with ``__meta__``: :func:`describe` and the positions per tensor."""
    meta = {**describe(matrix, counts, utterances), "positions_per_tensor": counts}
    np.savez_compressed(path, **matrix, __meta__=np.array(json.dumps(meta)))


def load(path: Path | str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(matrix, meta)`` of a :func:`save` file."""
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files if k != "__meta__"}, json.loads(str(npz["__meta__"]))
