"""Whisper as two exportable graphs with plain-tensor inputs (for ONNX Runtime and OpenVINO).

transformers keeps the decoder's KV cache in ``Cache`` objects, which exporters
do not take; these modules compute the same thing from the same weights with
tensors only:

* :class:`EncoderGraph` ``input_features [B,80,3000] -> hidden [B,1500,D], cross_k, cross_v [L,B,H,1500,dh]``
  (the cross-attention keys/values are computed once per utterance, as transformers does);
* :class:`DecoderGraph` ``input_ids [B,T], cross_k, cross_v, past_k, past_v [L,B,H,P,dh]
  -> logits [B,T,vocab], present_k, present_v [L,B,H,P+T,dh]``; ``P = 0`` on the first call
  (the prompt), then one token a call.  With the whole sequence and ``P = 0`` it gives the
  teacher-forced logits.

>>> import torch
>>> from lib.models import load_model
>>> tiny = load_model("test:tiny").model
>>> feats = torch.zeros(1, 80, 3000)
>>> hidden, ck, cv = EncoderGraph(tiny)(feats)
>>> ids = torch.tensor([[50258, 50259, 50359, 50363]])
>>> logits, pk, pv = DecoderGraph(tiny)(ids, ck, cv, *empty_past(tiny, 1))
>>> ref = tiny(input_features=feats, decoder_input_ids=ids).logits
>>> bool(torch.allclose(logits, ref, atol=1e-4)), tuple(pk.shape)
(True, (2, 1, 4, 4, 32))
"""
from __future__ import annotations

import torch
from torch import nn


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, T, D] -> [B, H, T, D/H]``."""
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


def _attend(q, k, v, mask=None):
    scores = q @ k.transpose(-1, -2)
    if mask is not None:
        scores = scores + mask
    return torch.softmax(scores, dim=-1) @ v


def empty_past(model, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = model.config
    shape = (c.decoder_layers, batch, c.decoder_attention_heads, 0, c.d_model // c.decoder_attention_heads)
    return torch.zeros(shape), torch.zeros(shape)


class EncoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.encoder = model.model.encoder
        self.layers = model.model.decoder.layers
        self.heads = model.config.decoder_attention_heads

    def forward(self, input_features):
        hidden = self.encoder(input_features).last_hidden_state
        ks = [_heads(layer.encoder_attn.k_proj(hidden), self.heads) for layer in self.layers]
        vs = [_heads(layer.encoder_attn.v_proj(hidden), self.heads) for layer in self.layers]
        return hidden, torch.stack(ks), torch.stack(vs)


class DecoderGraph(nn.Module):
    def __init__(self, model, vocab_by_columns: bool = True):
        super().__init__()
        self.decoder = model.model.decoder
        self.proj_out = model.proj_out
        self.tied = model.proj_out.weight is model.model.decoder.embed_tokens.weight
        # The tied weight must reach the file once, as transformers stores it.  The ONNX exporter folds
        # the transpose of ``x @ W.T`` into a second initializer, so for ONNX one [D, vocab] matrix serves
        # the output MatMul and, by columns, the embedding; OpenVINO keeps [vocab, D] with a transposed
        # MatMul and would fold a [D, vocab] copy instead, so it gets transformers' own layout.
        self.by_columns = vocab_by_columns and self.tied
        if self.by_columns:
            self.vocab_t = nn.Parameter(model.proj_out.weight.detach().t().contiguous(), requires_grad=False)
        self.heads = model.config.decoder_attention_heads
        self.scaling = (model.config.d_model // self.heads) ** -0.5

    def forward(self, input_ids, cross_k, cross_v, past_k, past_v):
        dec = self.decoder
        past = past_k.shape[3]
        steps = input_ids.shape[1]
        positions = torch.arange(steps, device=input_ids.device) + past
        if self.by_columns:
            tokens = self.vocab_t.index_select(1, input_ids.reshape(-1)).t().reshape(*input_ids.shape, -1)
        else:
            tokens = dec.embed_tokens(input_ids)
        x = tokens + dec.embed_positions.weight[positions].unsqueeze(0)  # no embed_scale, as transformers
        keys = torch.arange(past + steps, device=input_ids.device)
        mask = torch.zeros(steps, past + steps).masked_fill(keys[None, :] > positions[:, None], float("-inf"))
        present_k, present_v = [], []
        for i, layer in enumerate(dec.layers):
            h = layer.self_attn_layer_norm(x)
            attn = layer.self_attn
            q = _heads(attn.q_proj(h) * self.scaling, self.heads)
            k = torch.cat([past_k[i], _heads(attn.k_proj(h), self.heads)], dim=2)
            v = torch.cat([past_v[i], _heads(attn.v_proj(h), self.heads)], dim=2)
            present_k.append(k)
            present_v.append(v)
            x = x + attn.out_proj(_merge(_attend(q, k, v, mask)))
            h = layer.encoder_attn_layer_norm(x)
            cross = layer.encoder_attn
            q = _heads(cross.q_proj(h) * self.scaling, self.heads)
            x = x + cross.out_proj(_merge(_attend(q, cross_k[i], cross_v[i])))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        hidden = dec.layer_norm(x)
        logits = hidden @ self.vocab_t if self.by_columns else self.proj_out(hidden)
        return logits, torch.stack(present_k), torch.stack(present_v)


ENCODER_INPUTS = ["input_features"]
ENCODER_OUTPUTS = ["hidden", "cross_k", "cross_v"]
DECODER_INPUTS = ["input_ids", "cross_k", "cross_v", "past_k", "past_v"]
DECODER_OUTPUTS = ["logits", "present_k", "present_v"]


def example_inputs(model, batch: int = 2, steps: int = 3, past: int = 5):
    """Inputs to trace with: sizes above 1 so that no exporter specializes a dynamic axis."""
    c = model.config
    feats = torch.zeros(batch, c.num_mel_bins, 3000)
    with torch.no_grad():
        _h, ck, cv = EncoderGraph(model)(feats)
    shape = (c.decoder_layers, batch, c.decoder_attention_heads, past, c.d_model // c.decoder_attention_heads)
    ids = torch.full((batch, steps), 50258, dtype=torch.long)
    return feats, (ids, ck, cv, torch.zeros(shape), torch.zeros(shape))


DYNAMIC_AXES = {"input_features": {0: "batch"}, "hidden": {0: "batch"},
                "cross_k": {1: "batch"}, "cross_v": {1: "batch"},
                "input_ids": {0: "batch", 1: "steps"}, "past_k": {1: "batch", 3: "past"},
                "past_v": {1: "batch", 3: "past"}, "logits": {0: "batch", 1: "steps"},
                "present_k": {1: "batch", 3: "total"}, "present_v": {1: "batch", 3: "total"}}
