"""From the sensitivity map to mixed-precision recipes, written as the YAML grid ``experiments/mixed.yml``.

The grid holds (a) the five most and five least sensitive groups quantized alone at HQQ int3 g64 (the WER
confirmation rows), (b) recipes that keep the k most sensitive groups at int8 and the rest at int4 g64 or
int3 g64, and (c) the community reference: encoder and every fc1 at 8 bits, the rest HQQ 4-bit g64; plus the
uniform int3/int4/int8 g64 rows they are compared with. The recipes cover the layers uniform HQQ quantizes:
the conv stem stays fp32 (HQQ quantizes Linear only) and ``proj_out`` stays tied and fp32, as in the
uniform rows. k is chosen by stored size on the whisper-small architecture (:func:`recipe_stored_bytes`):
the smallest k whose size reaches each of :data:`SIZE_FRACTIONS` of the way from the uniform base to
uniform int8, so the recipes span uniform int3 → uniform int8, and for the int3 base also the largest k
no larger than uniform int4 (the equal-size comparison).

>>> top_k_spec(["encoder.0.fc2", "decoder.5.encoder_attn"], "int4").overrides[1][0]
'model.decoder.layers.5.encoder_attn.*'
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

from .config import QuantSpec
from .sensitivity import Group

OTHER_GROUP_SIZES = (32, 128)  # uniform references beside g64: a recipe must beat the best uniform row at its size
SIZE_FRACTIONS = (0.1, 0.25, 0.5)  # of the way from the uniform base's size to uniform int8's
FOOTPRINT_MODEL = "footprint:whisper-small"
DEPTH = 6  # whisper-base's layers: the depth the map's layer indices count
COMMUNITY = QuantSpec(library="hqq", scheme="weight_only", weights="int4", group_size=64, recipe="enc-fc1-int8",
                      overrides={"model.encoder.*": {"weights": "int8"},
                                 "model.decoder.layers.*.fc1": {"weights": "int8"}})


def uniform(weights: str, group_size: int = 64) -> QuantSpec:
    return QuantSpec(library="hqq", scheme="weight_only", weights=weights, group_size=group_size)


def group_of(name: str) -> Group:
    """``'encoder.3.fc2'`` -> ``Group('encoder', 3, 'fc2')``; ``'proj_out'``, ``'conv'`` likewise."""
    if name == "conv":
        return Group("encoder", None, "conv")
    if name == "proj_out":
        return Group("decoder", None, "proj_out")
    side, layer, component = name.split(".")
    return Group(side, int(layer), component)


def top_k_spec(ranked: Sequence[str], base: str, high: str = "int8", group_size: int = 64,
               depth: int = DEPTH) -> QuantSpec:
    """Uniform ``base`` g64 with the groups in ``ranked`` (most sensitive first) kept at ``high``."""
    overrides = {p: {"weights": high} for name in ranked for p in group_of(name).patterns}
    return QuantSpec(library="hqq", scheme="weight_only", weights=base, group_size=group_size, depth=depth,
                     overrides=overrides, recipe=f"mix-top{len(ranked)}-{high}")


@functools.lru_cache(maxsize=None)
def linear_bytes(out_features: int, in_features: int, bias: bool, weights: str | None, group_size: int | None) -> int:
    """Stored bytes of one Linear of this shape: fp32 (``weights=None``) or HQQ-quantized (measured on a random one)."""
    if weights is None:
        return 4 * (out_features * in_features + (out_features if bias else 0))
    import torch
    from hqq.core.quantize import BaseQuantizeConfig, HQQBackend, HQQLinear

    from .metrics import stored_bytes
    from .quantize.hqq import BITS

    HQQLinear.set_backend(HQQBackend.PYTORCH)
    torch.manual_seed(0)
    linear = torch.nn.Linear(in_features, out_features, bias=bias)
    module = HQQLinear(linear, quant_config=BaseQuantizeConfig(nbits=BITS[weights], group_size=group_size, axis=1),
                       compute_dtype=torch.float32, device="cpu", del_orig=True)
    return stored_bytes(module)


@functools.lru_cache(maxsize=2)
def architecture(model: str = FOOTPRINT_MODEL):
    """The model's modules on the meta device (shapes, no weights)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from .models import parse_model_spec, whisper_config

    _kind, arch = parse_model_spec(model)
    with torch.device("meta"):
        return WhisperForConditionalGeneration(whisper_config(arch))


def recipe_stored_bytes(spec: QuantSpec, model: str = FOOTPRINT_MODEL) -> int:
    """Stored bytes of ``spec`` on ``model``'s architecture, computed from per-shape HQQ sizes (no full model is
    quantized): fp32 bytes, minus each quantized Linear's fp32 bytes, plus its quantized bytes. The footprint
    run measures the same thing on the real model; this estimate chooses k before that run."""
    from .quantize.common import recipe_linears

    arch = architecture(model)
    total = sum(4 * p.numel() for p in arch.parameters()) + sum(4 * b.numel() for b in arch.buffers())
    if spec.is_baseline:
        return total
    for name, linear, setting in recipe_linears(_Shapes(arch), spec):
        out_f, in_f = linear.weight.shape
        bias = linear.bias is not None
        if name != "proj_out":  # proj_out is tied to the embedding: untying adds its quantized copy only
            total -= linear_bytes(out_f, in_f, bias, None, None)
        total += linear_bytes(out_f, in_f, bias, setting["weights"], setting["group_size"])
    return total


class _Shapes:
    """A read-only view of a meta model for :func:`recipe_linears`: untying ``proj_out`` changes nothing here."""

    def __init__(self, model):
        import copy
        from types import SimpleNamespace

        self._model, self.config = model, copy.copy(model.config)
        self.proj_out = SimpleNamespace(weight=model.proj_out.weight, bias=None)
        self.model = SimpleNamespace(decoder=SimpleNamespace(embed_tokens=SimpleNamespace(weight=None)))

    def named_modules(self):
        return self._model.named_modules()


def choose_k(ranked: Sequence[str], base: str, fractions: Sequence[float] = SIZE_FRACTIONS,
             model: str = FOOTPRINT_MODEL, depth: int = DEPTH, at_most: Sequence[str] = ()) -> list[tuple[int, int]]:
    """``(k, stored bytes)``, by k: for each size fraction, the smallest k whose recipe reaches that fraction of
    the way from uniform ``base`` to uniform int8 on ``model``'s architecture; for each uniform bit-width in
    ``at_most``, the largest k whose recipe is no larger than it (the equal-size comparison)."""
    low, high = recipe_stored_bytes(uniform(base), model), recipe_stored_bytes(uniform("int8"), model)
    sizes = [recipe_stored_bytes(top_k_spec(ranked[:k], base, depth=depth), model) if k else low
             for k in range(len(ranked) + 1)]
    chosen = {next(k for k, s in enumerate(sizes) if s >= low + f * (high - low)) for f in fractions}
    for weights in at_most:
        cap = recipe_stored_bytes(uniform(weights), model)
        chosen.add(max(k for k, s in enumerate(sizes) if s <= cap))
    return [(k, sizes[k]) for k in sorted(chosen - {0})]


def _entry(spec: QuantSpec) -> dict[str, Any]:
    """A grid entry: the spec's fields that differ from the defaults, in a readable order."""
    d = spec.to_dict()
    keys = ["library", "scheme", "weights", "group_size", "proj_out", "recipe", "depth", "layers", "overrides"]
    defaults = QuantSpec().to_dict()
    return {k: d[k] for k in keys if k in d and d[k] != defaults.get(k) and d[k] not in (None, [], {})}


def mixed_grid_text(table, model: str = FOOTPRINT_MODEL, source: str = "", depth: int = DEPTH) -> str:
    """The text of ``experiments/mixed.yml`` from a :func:`lib.sensitivity.sensitivity_table`."""
    import yaml

    def line(spec: QuantSpec, comment: str) -> str:
        flow = yaml.safe_dump(_entry(spec), default_flow_style=True, sort_keys=False, width=10_000).strip()
        return f"  - {flow}  # {comment}"

    ranked = list(table["group"])
    alone = [g for g in ranked if g != "conv"]  # the conv stem cannot be an HQQ spec (fake-quantized in the map)
    kld = dict(zip(table["group"], table["kld"]))
    recipe_groups = [g for g in ranked if group_of(g).layer is not None]
    out = ["title: Mixed precision",
           "description: One group of layers alone at HQQ int3 g64 (the sensitivity map's five most and five least "
           "sensitive), recipes keeping the k most sensitive groups at int8, and the community recipe.",
           f"# Written by lib.mixed_precision.write_mixed_grid from {source or 'the sensitivity map'}; edit the map, not this file,",
           "# or copy an entry to write your own recipe (layers/overrides are fnmatch patterns over module names;",
           f"# depth {depth}: layer indices count whisper-base's layers, mapped by relative depth onto whisper-small's 12).",
           'defaults: {model: "embedded:whisper-base", split: [test-clean, test-other]}',
           "footprint: true", "runs:",
           "  # uniform references (the same slugs as in the Bit-width grid: run once)"]
    out += [line(uniform(w), f"uniform {w}") for w in ("int3", "int4", "int8")]
    out.append("  # uniform int3/int4 at the other group sizes (the Granularity grid's slugs): the rest of the uniform front")
    out += [line(uniform(w, g), f"uniform {w} g{g}") for g in OTHER_GROUP_SIZES for w in ("int3", "int4")]
    out.append("  # (a) one group alone at int3 g64: the five most sensitive, then the five least (int3 KLD on the map)")
    for name in alone[:5] + alone[-5:]:
        spec = group_of(name).spec("int3", 64, depth)
        out.append(line(spec, f"{group_of(name).label}: KLD {kld[name]:.3g}"))
    for base in ("int4", "int3"):
        out.append(f"  # (b) the k most sensitive groups at int8, the rest {base} g64 (k by whisper-small stored size)")
        at_most = ("int4",) if base == "int3" else ()
        for k, size in choose_k(recipe_groups, base, model=model, depth=depth, at_most=at_most):
            out.append(line(top_k_spec(recipe_groups[:k], base, depth=depth),
                            f"k={k}: {size / 1e6:.1f} MB on whisper-small"))
    out.append("  # (c) community reference: encoder and every fc1 at 8 bits, the rest HQQ 4-bit g64")
    out.append(line(COMMUNITY, f"{recipe_stored_bytes(COMMUNITY, model) / 1e6:.1f} MB on whisper-small"))
    return "\n".join(out) + "\n"


def write_mixed_grid(path: Path | str | None = None, table=None) -> Path:
    """Write ``experiments/mixed.yml`` from the int3 sensitivity map (:func:`lib.sensitivity.sensitivity_table`)."""
    from .grids import EXPERIMENTS_DIR
    from .sensitivity import sensitivity_slug, sensitivity_table

    table = sensitivity_table() if table is None else table
    if table.empty:
        from .config import ConfigError

        raise ConfigError("no sensitivity map yet: run python -m lib sensitivity first")
    path = Path(path) if path else EXPERIMENTS_DIR / "mixed.yml"
    path.write_text(mixed_grid_text(table, source=f"results/sensitivity/{sensitivity_slug()}"))
    return path
