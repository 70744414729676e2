"""Sensitivity map: quantize one group of layers at a time, everything else fp32, and score it against fp32.

A **group** is one component of one layer: per encoder layer its self-attention (q/k/v/out), fc1 and fc2;
per decoder layer its self-attention, cross-attention (``encoder_attn``), fc1 and fc2; the conv stem
(conv1 + conv2); and ``proj_out`` (untied from the token embedding, as the study's proj_out option) —
44 groups on whisper-base. Each is quantized alone with HQQ (int3 g64 by default) and scored with the
teacher-forced fidelity machinery of :mod:`lib.fidelity` (mean KLD to fp32 over every predicted position,
top-1 agreement) on a fixed subset: the first :data:`PER_SPLIT` utterances of each split's
:func:`lib.fidelity.fidelity_subset`, so fp32's cached log-probabilities are reused.

HQQ quantizes Linear layers only: the conv stem's weights are *fake-quantized* with HQQ's own quantizer
(quantize, then dequantize back to float32), which measures the accuracy cost but stores nothing smaller.
A decoder-side group leaves the encoder untouched, so fp32's encoder output is computed once per utterance
and reused (in memory): a decoder group costs only decoder passes. Likewise a group in encoder layer i starts
from fp32's hidden state at that layer's input (kept in memory too) and runs only layers i and above.

Groups whose int3 KLD is below the int3 map's median ("int3 barely moves them") are also run at int2
(:func:`int2_groups`). Results: ``results/sensitivity/<slug>.json`` (environment, spec, subset ids, data
manifest hash) and ``.jsonl`` (one row per group), written after every group, so a killed pass resumes.

>>> [g.name for g in groups(2, 1)][:4], len(groups(6, 6))
(['conv', 'encoder.0.self_attn', 'encoder.0.fc1', 'encoder.0.fc2'], 44)
"""
from __future__ import annotations

import copy
import json
import statistics
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import ConfigError, QuantSpec, model_tag
from .paths import portable
from .results import RESULTS_DIR, ResultStore
from .machine import environment

SENSITIVITY_SUBDIR = "sensitivity"
PER_SPLIT = 16  # utterances per split: the first 16 of each split's fidelity subset
SPLITS = ("test-clean", "test-other")
MODEL = "embedded:whisper-base"
ENCODER_COMPONENTS = ("self_attn", "fc1", "fc2")
DECODER_COMPONENTS = ("self_attn", "encoder_attn", "fc1", "fc2")
COMPONENT_NAMES = {"self_attn": "self-attention", "encoder_attn": "cross-attention", "fc1": "fc1", "fc2": "fc2",
                   "conv": "conv stem", "proj_out": "proj_out"}
_SHORT = {"self_attn": "sattn", "encoder_attn": "xattn", "fc1": "fc1", "fc2": "fc2"}


@dataclass(frozen=True)
class Group:
    """One group of layers: ``Group("encoder", 3, "fc2")`` is ``model.encoder.layers.3.fc2``."""

    side: str
    layer: int | None
    component: str

    @property
    def name(self) -> str:
        """``'encoder.3.fc2'``, ``'conv'``, ``'proj_out'``."""
        return self.component if self.layer is None else f"{self.side}.{self.layer}.{self.component}"

    @property
    def tag(self) -> str:
        """Slug-safe short name: ``'enc3-fc2'``, ``'dec0-xattn'``, ``'conv'``, ``'projout'``."""
        if self.layer is None:
            return self.component.replace("_", "")
        return f"{self.side[:3]}{self.layer}-{_SHORT[self.component]}"

    @property
    def label(self) -> str:
        """Readable: ``'encoder layer 3 fc2'``, ``'decoder layer 0 cross-attention'``, ``'conv stem'``."""
        what = COMPONENT_NAMES[self.component]
        return what if self.layer is None else f"{self.side} layer {self.layer} {what}"

    @property
    def patterns(self) -> tuple[str, ...]:
        """Module-name patterns (fnmatch) of the group's layers."""
        if self.component == "conv":
            return ("model.encoder.conv1", "model.encoder.conv2")
        if self.component == "proj_out":
            return ("proj_out",)
        suffix = ".*" if self.component.endswith("attn") else ""
        return (f"model.{self.side}.layers.{self.layer}.{self.component}{suffix}",)

    def spec(self, weights: str = "int3", group_size: int = 64, depth: int = 6) -> QuantSpec | None:
        """The HQQ spec quantizing this group alone (None for the conv stem: HQQ quantizes Linear only).

        >>> Group("encoder", 3, "fc2").spec().slug
        'hqq-wo-int3-g64-only-enc3-fc2'
        """
        if self.component == "conv":
            return None
        return QuantSpec(library="hqq", scheme="weight_only", weights=weights, group_size=group_size,
                         proj_out=self.component == "proj_out", layers=self.patterns,
                         depth=None if self.layer is None else depth,
                         recipe="only" if self.component == "proj_out" else f"only-{self.tag}")  # slug: ...-only-projout


def groups(encoder_layers: int, decoder_layers: int) -> list[Group]:
    """Every group of a Whisper with these depths: conv stem, encoder layers, decoder layers, proj_out."""
    found = [Group("encoder", None, "conv")]
    found += [Group("encoder", i, c) for i in range(encoder_layers) for c in ENCODER_COMPONENTS]
    found += [Group("decoder", i, c) for i in range(decoder_layers) for c in DECODER_COMPONENTS]
    return found + [Group("decoder", None, "proj_out")]


def model_groups(model) -> list[Group]:
    return groups(model.config.encoder_layers, model.config.decoder_layers)


def fake_quantize_conv(model, weights: str = "int3", group_size: int = 64, axis: int = 1) -> dict[str, Any]:
    """Replace conv1/conv2 weights by HQQ's quantize → dequantize of them (``[out, in, k]`` viewed as
    ``[out, in*k]``), with HQQLinear's own settings; the weights stay float32 (nothing is stored smaller)."""
    import torch
    from hqq.core.quantize import BaseQuantizeConfig, Quantizer

    from .quantize.hqq import BITS

    params = BaseQuantizeConfig(nbits=BITS[weights], group_size=group_size, axis=axis)["weight_quant_params"]
    for conv in (model.model.encoder.conv1, model.model.encoder.conv2):
        w = conv.weight.data
        w_q, meta = Quantizer.quantize(w.reshape(w.shape[0], -1).float(), device="cpu",
                                       compute_dtype=torch.float32, **params)
        conv.weight.data = Quantizer.dequantize(w_q, meta).reshape(w.shape).to(w.dtype)
    return {"method": f"hqq Quantizer quantize -> dequantize (nbits={BITS[weights]}, group_size={group_size}, "
                      f"axis={axis}); fake-quantized, stored as float32"}


def quantize_group(model, group: Group, weights: str, group_size: int) -> dict[str, Any]:
    """Quantize ``group`` of ``model`` in place (everything else stays fp32); returns how."""
    from .quantize import quantize

    if group.component == "conv":
        return fake_quantize_conv(model, weights, group_size)
    spec = group.spec(weights, group_size, model.config.encoder_layers)
    _, meta = quantize(model, spec, measure_error=False)
    return {"method": meta.get("method"), "spec": spec.to_dict(), "quantized_count": meta.get("quantized_count")}


@dataclass
class Item:
    """One scored utterance: fp32's forced tokens, its features, cached log-probabilities and encoder output."""

    utterance: Any
    tokens: list[int]
    features: Any
    logprobs: Any
    hidden: Any
    layer_inputs: list = None  # fp32 hidden state entering each encoder layer


def encoder_layer_inputs(model, feats) -> tuple[Any, list]:
    """fp32 encoder output and the hidden state entering each encoder layer (forward pre-hooks)."""
    import torch

    inputs: list = []
    hooks = [layer.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
             for layer in model.model.encoder.layers]
    try:
        with torch.no_grad():
            hidden = model.get_encoder()(feats).last_hidden_state
    finally:
        for h in hooks:
            h.remove()
    return hidden, inputs


def encoder_from(model, layer: int, hidden):
    """The encoder output from the hidden state entering ``layer`` (layers ``layer`` and above, final norm)."""
    import torch

    encoder = model.model.encoder
    with torch.no_grad():
        for block in encoder.layers[layer:]:
            out = block(hidden, None)
            hidden = out[0] if isinstance(out, tuple) else out
        return encoder.layer_norm(hidden)


def score(model, items: Sequence[Item], reuse_encoder: bool, from_layer: int | None = None) -> dict[str, Any]:
    """Pooled KLD and top-1 agreement of ``model`` against fp32 over ``items``, with per-utterance sums.

    ``reuse_encoder``: feed fp32's encoder output (exact for a group that leaves the encoder fp32);
    ``from_layer``: run the encoder from fp32's input to that layer (exact for a group at or above it)."""
    import torch

    from .decoding import END_OF_TEXT
    from .fidelity import compare_logprobs, teacher_forced_logprobs

    rows = []
    for item in items:
        with torch.no_grad():
            if reuse_encoder:
                hidden = item.hidden
            elif from_layer is not None and item.layer_inputs:
                hidden = encoder_from(model, from_layer, item.layer_inputs[from_layer])
            else:
                hidden = model.get_encoder()(item.features).last_hidden_state
        logq = teacher_forced_logprobs(model, None, item.tokens + [END_OF_TEXT], hidden)
        kld, agree = compare_logprobs(logq, item.logprobs)
        rows.append({"id": item.utterance.id, "split": item.utterance.split, "positions": len(item.tokens) + 1,
                     "kld_sum": float(kld.sum()), "kld_max": float(kld.max()), "agree": agree})
    positions = sum(r["positions"] for r in rows)
    return {"kld_mean": sum(r["kld_sum"] for r in rows) / positions,
            "agreement": 100.0 * sum(r["agree"] for r in rows) / positions, "positions": positions,
            "utterances": rows}


def sensitivity_slug(weights: str = "int3", group_size: int = 64, model: str = MODEL,
                     per_split: int = PER_SPLIT) -> str:
    """``'whisper-base__hqq-wo-int3-g64__test-clean+test-other__sens16'``"""
    spec = QuantSpec(library="hqq", scheme="weight_only", weights=weights, group_size=group_size)
    return f"{model_tag(model)}__{spec.slug}__{'+'.join(SPLITS)}__sens{per_split}"


def sensitivity_store(results_dir: Path | str = RESULTS_DIR) -> ResultStore:
    return ResultStore(Path(results_dir) / SENSITIVITY_SUBDIR)


def subset(per_split: int = PER_SPLIT, data: str | None = None) -> list:
    """The scored utterances: the first ``per_split`` of each split's fidelity subset."""
    from .data import load_split
    from .fidelity import fidelity_subset

    return [u for s in SPLITS for u in fidelity_subset(load_split(s, None, data))[:per_split]]


def int2_groups(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Groups that int3 "barely moves": int3 KLD below the median of the int3 map (ties excluded).

    >>> int2_groups([{"group": "a", "kld_mean": 0.1}, {"group": "b", "kld_mean": 0.3}, {"group": "c", "kld_mean": 0.2}])
    ['a']
    """
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    if not ok:
        return []
    median = statistics.median(r["kld_mean"] for r in ok)
    return [r["group"] for r in ok if r["kld_mean"] < median]


def prepare(per_split: int, data: str | None, results_dir: Path | str, threads: int):
    """Load fp32 whisper-base and each scored utterance's forced tokens, features, fp32 log-probabilities
    (the fidelity pass's cache) and fp32 encoder output."""
    import torch

    from .config import RunConfig
    from .fidelity import FidelityUnavailable, hypothesis_tokens, reference_cache, reference_tokens
    from .models import load_model
    from .transcribe import features

    torch.set_num_threads(threads)
    loaded = load_model(MODEL)
    base_slug = RunConfig(model=MODEL, split=SPLITS).slug
    base = {(r["split"], r["id"]): r for r in ResultStore(results_dir).load_rows(base_slug)}
    if not base:
        raise FidelityUnavailable(f"no fp32 result {base_slug} to compare with; run fp32 first")
    cache = reference_cache(MODEL, threads, lambda: loaded)
    model, tokenizer = loaded.model.eval(), loaded.processor.tokenizer
    items = []
    for u in subset(per_split, data):
        if (u.split, u.id) not in base:
            continue
        tokens, _source = hypothesis_tokens(tokenizer, base[(u.split, u.id)])
        feats = features(loaded.processor, [u.audio])
        reference = cache.get(u, tokens, reference_tokens(tokenizer, u.reference), feats)
        hidden, inputs = encoder_layer_inputs(model, feats)
        items.append(Item(u, tokens, feats, torch.from_numpy(reference["logprobs"]), hidden, inputs))
    return loaded, items, base_slug


def run_sensitivity(bits: int = 3, group_size: int = 64, limit_groups: int | None = None,
                    per_split: int = PER_SPLIT, data: str | None = None, results_dir: Path | str = RESULTS_DIR,
                    threads: int = 2, progress: bool = True, prepared=None,
                    retry_failed: bool = False) -> dict[str, Any]:
    """Run the sensitivity pass at ``int<bits>`` for the groups that have no row yet; return the summary.

    ``bits=2`` runs only :func:`int2_groups` of the finished int3 map. ``limit_groups`` stops after that many
    new groups (the file stays resumable); ``retry_failed`` runs failed groups again. ``prepared`` reuses
    :func:`prepare`'s output (tests).
    """
    from .data import describe_data

    weights = f"int{bits}"
    store = sensitivity_store(results_dir)
    slug = sensitivity_slug(weights, group_size, per_split=per_split)
    loaded, items, base_slug = prepared or prepare(per_split, data, results_dir, threads)
    model = loaded.model.eval()
    todo = model_groups(model)
    if bits == 2:
        int3 = store.load_rows(sensitivity_slug("int3", group_size, per_split=per_split))
        if len(int3) < len(todo):
            raise ConfigError("the int2 pass runs the groups int3 barely moves: finish the int3 map first "
                              "(python -m lib sensitivity --bits 3)")
        chosen = set(int2_groups(int3))
        todo = [g for g in todo if g.name in chosen]
    stored = {json.loads(line)["group"]: line for line in store.load_lines(slug)
              if not (retry_failed and json.loads(line).get("status") == "failed")}
    pending = [g for g in todo if g.name not in stored]
    if limit_groups is not None:
        pending = pending[:limit_groups]
    summary: dict[str, Any] = {
        "slug": slug, "kind": "sensitivity", "model": MODEL, "reference": base_slug,
        "quant": QuantSpec(library="hqq", scheme="weight_only", weights=weights, group_size=group_size).to_dict(),
        "subset": {"rule": f"the first {per_split} utterances of each split's fidelity subset "
                           "(one utterance per speaker, lib.fidelity.fidelity_subset)",
                   "ids": [f"{i.utterance.split}/{i.utterance.id}" for i in items]},
        "groups_rule": "int3 KLD below the int3 median" if bits == 2 else "every group",
        "groups": [g.name for g in todo], "data": describe_data(data), "environment": environment(threads),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for group in pending:
        start = time.perf_counter()
        row: dict[str, Any] = {"group": group.name, "side": group.side, "layer": group.layer,
                               "component": group.component, "weights": weights, "group_size": group_size}
        try:
            candidate = copy.deepcopy(model)
            row.update(quantize_group(candidate, group, weights, group_size))
            reuse = group.side == "decoder"
            start_layer = group.layer if group.side == "encoder" else None
            row.update(score(candidate.eval(), items, reuse_encoder=reuse, from_layer=start_layer),
                       encoder_reused=reuse, encoder_from_layer=start_layer, status="ok")
            del candidate
        except Exception as exc:  # a failure is a row with its reason
            row.update(status="failed", error=portable(f"{type(exc).__name__}: {exc}")[:500],
                       traceback=portable(traceback.format_exc())[-2000:])
        row["seconds"] = time.perf_counter() - start
        stored[group.name] = json.dumps(row)
        if progress:
            print(f"{weights} {group.name}: KLD {row.get('kld_mean', float('nan')):.4g} "
                  f"({row['seconds']:.0f} s)", flush=True)
        _save(store, slug, summary, stored, todo)
    if not pending:
        _save(store, slug, summary, stored, todo)
    return store.load(slug)


def _save(store: ResultStore, slug: str, summary: dict[str, Any], stored: dict[str, str], todo: list[Group]) -> None:
    done = [stored[g.name] for g in todo if g.name in stored]
    failed = [g.name for g in todo if g.name in stored and json.loads(stored[g.name]).get("status") == "failed"]
    summary = {**summary, "groups_done": len(done), "groups_failed": failed,
               "status": "ok" if len(done) == len(todo) else "partial",
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    store.save_lines(slug, summary, done)


def sensitivity_table(group_size: int = 64, per_split: int = PER_SPLIT,
                      results_dir: Path | str = RESULTS_DIR) -> "pd.DataFrame":  # noqa: F821
    """One row per group of the int3 map: ``group``, ``label``, ``side``, ``layer``, ``component``, ``kld``,
    ``agreement`` (%), ``rank`` (1 = most sensitive) and ``kld_int2`` where the int2 pass ran it."""
    import pandas as pd

    store = sensitivity_store(results_dir)
    rows = [r for r in store.load_rows(sensitivity_slug("int3", group_size, per_split=per_split))
            if r.get("status") == "ok"]
    int2 = {r["group"]: r["kld_mean"] for r in store.load_rows(sensitivity_slug("int2", group_size,
                                                                                per_split=per_split))
            if r.get("status") == "ok"}
    df = pd.DataFrame([{"group": r["group"], "label": Group(r["side"], r["layer"], r["component"]).label,
                        "side": r["side"], "layer": r["layer"], "component": r["component"],
                        "kld": r["kld_mean"], "agreement": r["agreement"], "kld_int2": int2.get(r["group"])}
                       for r in rows], columns=["group", "label", "side", "layer", "component", "kld",
                                                "agreement", "kld_int2"])
    df["rank"] = df["kld"].rank(ascending=False, method="first").astype("Int64")
    return df.sort_values("rank").reset_index(drop=True)


def map_facts(df) -> dict[str, Any]:
    """Glue-ready facts of a :func:`sensitivity_table`: the most and least sensitive groups with their KLD,
    the component and side with the highest mean KLD, and how the first and last layers compare.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"group": ["encoder.0.fc2", "decoder.1.fc1", "conv"], "label": ["e0 fc2", "d1 fc1", "conv stem"],
    ...     "side": ["encoder", "decoder", "encoder"], "layer": [0, 1, None], "component": ["fc2", "fc1", "conv"],
    ...     "kld": [0.3, 0.01, 0.02], "agreement": [90.0, 99.0, 98.0], "rank": [1, 3, 2]})
    >>> f = map_facts(df); f["most"], f["least"], f["ratio"]
    ('e0 fc2', 'd1 fc1', '30')
    """
    if df.empty:
        return {}
    ranked = df.sort_values("kld", ascending=False)
    indexed = df.dropna(subset=["layer"])
    by_component = indexed.groupby(["side", "component"])["kld"].mean().sort_values(ascending=False)
    side, component = by_component.index[0]
    by_side = indexed.groupby("side")["kld"].mean()
    facts = {"groups": str(len(df)), "most": ranked.iloc[0]["label"], "most_kld": f"{ranked.iloc[0]['kld']:.3g}",
             "least": ranked.iloc[-1]["label"], "least_kld": f"{ranked.iloc[-1]['kld']:.3g}",
             "ratio": f"{ranked.iloc[0]['kld'] / ranked.iloc[-1]['kld']:.0f}",
             "top_component": f"{side} {COMPONENT_NAMES[component]}", "top_component_kld": f"{by_component.iloc[0]:.3g}",
             "top5": "; ".join(f"{r.label} ({r.kld:.3g})" for r in ranked.head(5).itertuples()),
             "bottom5": "; ".join(f"{r.label} ({r.kld:.3g})" for r in ranked.tail(5).iloc[::-1].itertuples())}
    depth_words = []
    for name in ("encoder", "decoder"):
        facts[f"{name}_mean_kld"] = f"{by_side.get(name, float('nan')):.3g}"
        part = indexed[indexed["side"] == name]
        if len(part):
            first, last = part[part["layer"] == part["layer"].min()], part[part["layer"] == part["layer"].max()]
            facts[f"{name}_first_kld"] = f"{first['kld'].mean():.3g}"
            facts[f"{name}_last_kld"] = f"{last['kld'].mean():.3g}"
            ratio = first["kld"].mean() / last["kld"].mean()
            word = "first" if ratio >= 1 else "last"
            depth_words.append(f"in the {name}, the {word} layer's groups are {max(ratio, 1 / ratio):.1f}× as "
                               f"sensitive as the {'last' if word == 'first' else 'first'} layer's on average "
                               f"(KLD {max(first['kld'].mean(), last['kld'].mean()):.3g} against "
                               f"{min(first['kld'].mean(), last['kld'].mean()):.3g})")
    side_most = by_side.idxmax() if len(by_side) else ""
    facts["side_most"] = side_most
    facts["depth"] = "; ".join(depth_words)
    int2 = df.dropna(subset=["kld_int2"]) if "kld_int2" in df else df.iloc[:0]
    facts["int2_groups"] = str(len(int2_groups([{"group": g, "kld_mean": k} for g, k in zip(df["group"], df["kld"])])))
    facts["int2_done"] = str(len(int2))
    if len(int2):
        worst = int2.sort_values("kld_int2").iloc[-1]
        facts["int2_worst"], facts["int2_worst_kld"] = worst["label"], f"{worst['kld_int2']:.3g}"
        facts["int2_median_kld"] = f"{int2['kld_int2'].median():.3g}"
    facts["takeaway"] = (f"One group alone at HQQ int3 costs between {facts['least_kld']} and {facts['most_kld']} "
                         f"nats of KLD per token: {facts['most']} is the most fragile and {facts['least']} the least, "
                         f"{facts['ratio']}× apart; the {side_most} is the more sensitive side on average, and "
                         f"{facts['top_component']} the most sensitive component")
    return facts
