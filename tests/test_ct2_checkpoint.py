import struct

import numpy as np
import pytest

from lib.ct2_checkpoint import CT2FormatError, ct2_state_dict, ct2_to_hf_name, read_ct2


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path, variables: dict, aliases: dict | None = None, version: int = 6) -> None:
    """A minimal CTranslate2 v6 writer (float16 = dtype 4), the inverse of read_ct2."""
    out = struct.pack("<I", version) + _string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, arr in variables.items():
        arr = np.asarray(arr, dtype=np.float16)
        out += _string(name) + struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
        out += struct.pack("<B", 4) + struct.pack("<I", arr.nbytes) + arr.tobytes()
    aliases = aliases or {}
    out += struct.pack("<I", len(aliases)) + b"".join(_string(a) + _string(t) for a, t in aliases.items())
    path.write_bytes(out)


@pytest.mark.parametrize("ct2, hf", [
    ("encoder/conv1/weight", ["model.encoder.conv1.weight"]),
    ("encoder/layer_3/self_attention/linear_1/bias", ["model.encoder.layers.3.self_attn.out_proj.bias"]),
    ("encoder/layer_0/self_attention/linear_0/weight",
     [f"model.encoder.layers.0.self_attn.{p}_proj.weight" for p in "qkv"]),
    ("decoder/layer_1/attention/linear_0/weight", ["model.decoder.layers.1.encoder_attn.q_proj.weight"]),
    ("decoder/layer_1/attention/linear_1/bias",
     ["model.decoder.layers.1.encoder_attn.k_proj.bias", "model.decoder.layers.1.encoder_attn.v_proj.bias"]),
    ("decoder/layer_1/attention/linear_2/weight", ["model.decoder.layers.1.encoder_attn.out_proj.weight"]),
    ("decoder/layer_2/ffn/layer_norm/gamma", ["model.decoder.layers.2.final_layer_norm.weight"]),
    ("decoder/layer_2/self_attention/layer_norm/beta", ["model.decoder.layers.2.self_attn_layer_norm.bias"]),
    ("decoder/layer_2/attention/layer_norm/beta", ["model.decoder.layers.2.encoder_attn_layer_norm.bias"]),
    ("encoder/layer_norm/gamma", ["model.encoder.layer_norm.weight"]),
    ("decoder/embeddings/weight", ["model.decoder.embed_tokens.weight"]),
    ("decoder/projection/weight", ["proj_out.weight"]),
    ("decoder/alignment_heads", []),
])
def test_name_mapping(ct2, hf):
    assert ct2_to_hf_name(ct2) == hf


def test_read_and_unfuse(tmp_path):
    qkv_w = np.arange(6 * 2).reshape(6, 2)
    qkv_b = np.array([1, 2, 0, 0, 5, 6])  # k third is zeros, as in Whisper
    write_ct2(tmp_path / "model.bin", {"encoder/layer_0/self_attention/linear_0/weight": qkv_w,
                                        "encoder/layer_0/self_attention/linear_0/bias": qkv_b},
              {"decoder/projection/weight": "decoder/embeddings/weight"})
    variables, aliases, spec = read_ct2(tmp_path / "model.bin")
    assert spec == "WhisperSpec" and aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    sd = ct2_state_dict(variables)
    assert np.array_equal(sd["model.encoder.layers.0.self_attn.k_proj.weight"], [[4, 5], [6, 7]])
    assert np.array_equal(sd["model.encoder.layers.0.self_attn.v_proj.bias"], [5, 6])
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in sd
    assert sd["model.encoder.layers.0.self_attn.q_proj.weight"].dtype == np.float32


def test_nonzero_k_bias_is_refused(tmp_path):
    write_ct2(tmp_path / "m.bin", {"encoder/layer_0/self_attention/linear_0/bias": np.ones(6)})
    with pytest.raises(CT2FormatError, match="k bias"):
        ct2_state_dict(read_ct2(tmp_path / "m.bin")[0])


def test_wrong_version_is_refused(tmp_path):
    write_ct2(tmp_path / "m.bin", {}, version=5)
    with pytest.raises(CT2FormatError, match="version 5"):
        read_ct2(tmp_path / "m.bin")
