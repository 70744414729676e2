"""Write a transformers Whisper as a whisper.cpp ggml model file (``ggml-model.bin``).

The legacy ggml format that whisper.cpp loads (learned from its
``models/convert-h5-to-ggml.py`` and the loader in ``src/whisper.cpp``), little-endian int32s:

1. magic ``0x67676d6c`` ("ggml");
2. hparams: n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx,
   n_text_state, n_text_head, n_text_layer, n_mels, ftype (0 f32, 1 f16; whisper.cpp's quantizer
   writes ``1000 * 2 + ftype`` for the block formats: ``GGML_QNT_VERSION`` 2);
3. mel filters: n_mels, n_fft bins, then n_mels x 201 float32 (transformers' slaney filters);
4. vocabulary: count, then each byte-level BPE token (ids 0-50256) as length + raw bytes;
   whisper.cpp adds the special and timestamp tokens itself;
5. tensors, each: n_dims, name length, ggml type, dims (innermost first), name, data.

The loader fixes each tensor's type from ``ftype``: every 2-D weight (linear layers and the
token embedding, which is also the output projection) in the file's format, convolution
weights in f16 (f32 for an f32 file), biases, norms and positional embeddings in f32.
Only f32 and f16 are written here: the block formats (Q8_0 ... Q6_K) come from whisper.cpp's own
``whisper-quantize`` run on the f16 file (:mod:`lib.runtimes.whisper_cpp_build`), as deployers make them.
``gguf.quants`` (ggml's reference quantizers, ported) gives the same bytes from the same input, but the
tool quantizes what the file holds: from an f16 file, f16-rounded weights (tests/test_runtimes.py).

>>> ggml_name("model.decoder.layers.3.encoder_attn.k_proj.weight")
'decoder.blocks.3.cross_attn.key.weight'
>>> ggml_name("model.encoder.layers.0.self_attn.k_proj.weight")
'encoder.blocks.0.attn.key.weight'
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

MAGIC = 0x67676D6C
QNT_VERSION_FACTOR, QNT_VERSION = 1000, 2
#: format -> (file ftype, ggml type of the 2-D weights, gguf quantization type name)
FORMATS = {"f32": (0, 0, "F32"), "f16": (1, 1, "F16")}
GGML_F32, GGML_F16 = 0, 1
_LAYER = {"self_attn.k_proj": "attn.key", "self_attn.q_proj": "attn.query", "self_attn.v_proj": "attn.value",
          "self_attn.out_proj": "attn.out", "self_attn_layer_norm": "attn_ln",
          "encoder_attn.k_proj": "cross_attn.key", "encoder_attn.q_proj": "cross_attn.query",
          "encoder_attn.v_proj": "cross_attn.value", "encoder_attn.out_proj": "cross_attn.out",
          "encoder_attn_layer_norm": "cross_attn_ln", "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln"}
_TOP = {"encoder.layer_norm": "encoder.ln_post", "decoder.layer_norm": "decoder.ln",
        "encoder.embed_positions.weight": "encoder.positional_embedding",
        "decoder.embed_positions.weight": "decoder.positional_embedding",
        "decoder.embed_tokens.weight": "decoder.token_embedding.weight"}
FLOAT_ALWAYS = ("encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding",
                "decoder.positional_embedding")


def ggml_name(name: str) -> str:
    """transformers state-dict name -> openai-whisper name (what whisper.cpp looks up)."""
    parts = name.removeprefix("model.").split(".")
    if parts[1] == "layers":
        return ".".join([parts[0], "blocks", parts[2], _LAYER[".".join(parts[3:-1])], parts[-1]])
    joined = ".".join(parts)
    for old, new in _TOP.items():
        if joined == old or joined.startswith(old + "."):
            return new + joined[len(old):]
    return joined


def tensors(model) -> list[tuple[str, np.ndarray]]:
    """``(ggml name, float32 array)`` of every tensor whisper.cpp loads; the tied projection is not stored."""
    out = []
    for name, value in model.state_dict().items():
        if name == "proj_out.weight":
            continue
        array = value.detach().float().numpy()
        target = ggml_name(name)
        if target in ("encoder.conv1.bias", "encoder.conv2.bias"):
            array = array.reshape(-1, 1)
        out.append((target, np.ascontiguousarray(array)))
    return out


def tensor_type(name: str, array: np.ndarray, fmt: str) -> int:
    """The ggml type whisper.cpp's loader expects for this tensor in a ``fmt`` file."""
    if fmt == "f32" or array.ndim < 2 or name in FLOAT_ALWAYS:
        return GGML_F32
    return GGML_F16 if array.ndim == 3 else FORMATS[fmt][1]


def _encode(array: np.ndarray, ggml_type: int) -> bytes:
    return array.astype("<f4" if ggml_type == GGML_F32 else "<f2").tobytes()


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map: printable bytes map to themselves, the
    other 68 to ``chr(256 + k)`` in byte order.

    >>> byte_to_unicode()[ord("a")], byte_to_unicode()[ord(" ")]
    ('a', 'Ġ')
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + k) for k, b in enumerate(moved)}}


def token_bytes(tokenizer, count: int = 50257) -> list[bytes]:
    """Raw bytes of the byte-level BPE tokens ``0 .. count-1`` (GPT-2's byte-to-unicode map undone)."""
    decode = {v: k for k, v in byte_to_unicode().items()}
    return [bytes(decode[c] for c in token) for token in tokenizer.convert_ids_to_tokens(list(range(count)))]


def _ints(f: BinaryIO, *values: int) -> None:
    f.write(struct.pack(f"<{len(values)}i", *values))


def write_ggml(model, processor, path: Path | str, fmt: str = "f16") -> dict[str, int]:
    """Write ``model`` as a ggml file in ``fmt`` (f32 or f16); returns tensor counts by type.

    E.g. ``write_ggml(model, processor, "ggml-f16.bin")`` -> ``{'f32': 54, 'f16': 35}`` for a 2+2-layer model;
    quantize that file with whisper.cpp's tool: ``quantize_file(native_build(), "ggml-f16.bin", "q.bin", "q4_k")``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"ggml format {fmt!r} is not written here (f32, f16 only): quantize the f16 file with "
                         "whisper.cpp's whisper-quantize (lib.runtimes.whisper_cpp_build.quantize_file)")
    c = model.config
    ftype = FORMATS[fmt][0]
    filters = np.asarray(processor.feature_extractor.mel_filters, dtype=np.float32).T  # (n_mels, 201)
    counts: dict[str, int] = {}
    with open(path, "wb") as f:
        _ints(f, MAGIC, c.vocab_size, c.max_source_positions, c.d_model, c.encoder_attention_heads,
              c.encoder_layers, c.max_target_positions, c.d_model, c.decoder_attention_heads, c.decoder_layers,
              c.num_mel_bins, ftype)
        _ints(f, *filters.shape)
        f.write(np.ascontiguousarray(filters).astype("<f4").tobytes())
        words = token_bytes(processor.tokenizer)
        _ints(f, len(words))
        for word in words:
            _ints(f, len(word))
            f.write(word)
        for name, array in tensors(model):
            ggml_type = tensor_type(name, array, fmt)
            encoded = name.encode()
            _ints(f, array.ndim, len(encoded), ggml_type, *reversed(array.shape))
            f.write(encoded)
            f.write(_encode(array, ggml_type))
            key = {0: "f32", 1: "f16"}[ggml_type]
            counts[key] = counts.get(key, 0) + 1
    return counts


def read_ggml(path: Path | str) -> tuple[list[int], list[tuple[str, int, tuple[int, ...], int, int]]]:
    """A ggml file's hparams (the 11 ints after the magic, ftype last) and its tensors:
    ``(name, ggml type, dims innermost first, data offset, data bytes)``, in file order (for comparing files).

    E.g. ``read_ggml("ggml-model.bin")[1][0][:3]`` is ``('encoder.positional_embedding', 0, (512, 1500))``.
    """
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    data = Path(path).read_bytes()
    magic, *hparams = struct.unpack_from("<12i", data, 0)
    if magic != MAGIC:
        raise ValueError(f"{path} is not a ggml file (magic {magic:#x})")
    pos = 48
    n_mels, n_fft = struct.unpack_from("<2i", data, pos)
    pos += 8 + 4 * n_mels * n_fft
    (n_words,) = struct.unpack_from("<i", data, pos)
    pos += 4
    for _ in range(n_words):
        pos += 4 + struct.unpack_from("<i", data, pos)[0]
    out = []
    while pos < len(data):
        n_dims, length, ggml_type = struct.unpack_from("<3i", data, pos)
        dims = struct.unpack_from(f"<{n_dims}i", data, pos + 12)
        pos += 12 + 4 * n_dims
        name = data[pos:pos + length].decode()
        pos += length
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        nbytes = int(np.prod(dims)) // block * size
        out.append((name, ggml_type, tuple(dims), pos, nbytes))
        pos += nbytes
    return hparams, out


def type_counts(path: Path | str) -> dict[str, int]:
    """Tensor counts by ggml type name in a ggml file, e.g. ``{'f32': 62, 'f16': 2, 'q4_k': 49}``."""
    from gguf.constants import GGMLQuantizationType

    counts: dict[str, int] = {}
    for _name, ggml_type, *_ in read_ggml(path)[1]:
        key = GGMLQuantizationType(ggml_type).name.lower()
        counts[key] = counts.get(key, 0) + 1
    return counts
