"""Frozen, validated configuration objects whose slug names every artifact.

A :class:`RunConfig` is one evaluation (model x quantization x splits); a
:class:`QuantSpec` is one point of the paper's design space.  Both check their
fields when built and import nothing else from ``lib``: whether a backend
supports a spec and whether a model exists is checked where input arrives
(:func:`lib.checks.check_run`: the CLI, grid expansion, ``evaluate``).

>>> QuantSpec(library="hqq", scheme="weight_only", weights="int4", group_size=64).slug
'hqq-wo-int4-g64'
>>> RunConfig(split=("test-clean",), limit=20).slug
'whisper-base__fp32__test-clean__n20'
"""
from __future__ import annotations

import dataclasses
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

SPLITS = ("test-clean", "test-other", "dev-clean")
SCHEMES = ("none", "dynamic", "static", "weight_only")
GRANULARITIES = ("per_tensor", "per_channel", "per_group")
SCOPES = ("all", "encoder", "decoder")
DEFAULT_MODEL = "embedded:whisper-base"

#: Library keys in the book's order (tables, legends, palettes) with their readable names.
LIBRARY_NAMES = {"none": "fp32", "torch_ao": "torch.ao", "torchao": "torchao", "quanto": "quanto", "hqq": "HQQ",
                 "bnb": "bitsandbytes", "torch_cast": "torch half", "ctranslate2": "CTranslate2",
                 "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "whisper_cpp": "whisper.cpp"}

_SCHEME_TAG = {"none": "", "dynamic": "dyn", "static": "static", "weight_only": "wo"}
_LIBRARY_TAG = {"torch_ao": "pt",  # torch.ao.quantization; "torchao" is the separate library
                "ctranslate2": "ct2", "onnxruntime": "ort", "openvino": "ov", "whisper_cpp": "ggml"}
_GRAN_TAG = {"per_tensor": "pt", "per_channel": "pc", "per_group": ""}
OVERRIDE_KEYS = ("weights", "group_size")  # what a per-layer override may change
_RECIPE_NAME = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")
_LAYER_INDEX = re.compile(r"^(model\.(?:encoder|decoder)\.layers\.)(\d+)(\..*|)$")


class ConfigError(ValueError):
    """A configuration value that cannot be run; the message names the fix."""


def _slug_value(value: Any) -> str:
    """``6.0`` -> ``'6'``, ``True`` -> ``'1'``, ``'x_y'`` -> ``'x_y'``."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return re.sub(r"[^A-Za-z0-9_.]+", "", str(value))


def weight_bits(weights: str) -> int:
    """Nominal weight bit-width: ``'int4'`` -> 4, ``'nf4'`` -> 4, ``'float16'`` -> 16, ``'fp32'`` -> 32."""
    digits = re.findall(r"\d+", weights)
    return int(digits[-1]) if digits else 32


@dataclass(frozen=True)
class QuantSpec:
    """One quantization configuration.

    ``library`` selects the backend module (``none`` is the fp32 baseline);
    ``weights``/``activations`` name the number formats; ``granularity`` (``None`` =
    the library's default) and ``group_size`` the scale sharing; ``scope`` which Linear layers are
    touched; ``proj_out`` whether the tied output projection is untied and
    quantized; ``calibration`` how many unscored utterances calibrate a
    static scheme; ``options`` holds backend-specific knobs as sorted pairs.

    A mixed-precision **recipe** narrows and varies that choice per layer: ``layers`` are fnmatch patterns
    over module names (empty = every layer the scope selects), ``overrides`` ordered pairs of pattern ->
    ``{weights, group_size}`` (the first matching pattern wins), ``depth`` the number of encoder/decoder
    layers the patterns' layer indices count (required when a pattern names one, e.g. 6 for whisper-base;
    on a model of another depth an index covers the layers at the same relative depth,
    :func:`layer_at_depth`), and ``recipe`` the short name that goes into the slug in their place:

    >>> QuantSpec(library="hqq", scheme="weight_only", weights="int3", group_size=64, depth=6,
    ...           layers=("model.encoder.layers.3.fc2",), recipe="only-enc3-fc2").slug
    'hqq-wo-int3-g64-only-enc3-fc2'
    """

    library: str = "none"
    scheme: str = "none"
    weights: str = "fp32"
    activations: str = "none"
    granularity: str | None = None
    group_size: int | None = None
    scope: str = "all"
    proj_out: bool = False
    calibration: int = 0
    options: tuple[tuple[str, Any], ...] = ()
    layers: tuple[str, ...] = ()
    overrides: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    depth: int | None = None
    recipe: str | None = None

    def __post_init__(self) -> None:
        opts = self.options
        if isinstance(opts, Mapping):
            opts = tuple(sorted(opts.items()))
        object.__setattr__(self, "options", tuple(sorted(tuple(p) for p in opts)))
        self._check_recipe()
        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown scheme {self.scheme!r}; use one of {', '.join(SCHEMES)}")
        if self.granularity is not None and self.granularity not in GRANULARITIES:
            raise ConfigError(
                f"unknown granularity {self.granularity!r}; use one of {', '.join(GRANULARITIES)}")
        if self.scope not in SCOPES:
            raise ConfigError(f"unknown scope {self.scope!r}; use one of {', '.join(SCOPES)}")
        if self.group_size is not None and (not isinstance(self.group_size, int) or self.group_size <= 0):
            raise ConfigError(f"group_size must be a positive integer or null, got {self.group_size!r}")
        if self.calibration < 0:
            raise ConfigError(f"calibration must be >= 0 utterances, got {self.calibration}")
        if self.library not in LIBRARY_NAMES:
            raise ConfigError(f"unknown library {self.library!r}; use one of: {', '.join(LIBRARY_NAMES)}")
        if self.library == "none":
            if (self.scheme, self.weights) != ("none", "fp32"):
                raise ConfigError("library 'none' is the fp32 baseline: leave scheme/weights unset")
            return
        if self.scheme == "static" and self.calibration <= 0:
            raise ConfigError(f"{self.library} static quantization needs calibration data: set calibration >= 1 "
                              "(unscored dev-clean + jfk utterances)")
        if self.scheme != "static" and self.calibration:
            raise ConfigError(f"calibration={self.calibration} only applies to scheme 'static'")

    def _check_recipe(self) -> None:
        """Normalize and validate ``layers``, ``overrides``, ``depth`` and ``recipe`` (see the class docstring)."""
        layers = (self.layers,) if isinstance(self.layers, str) else tuple(self.layers or ())
        if any(not isinstance(p, str) or not p.strip() for p in layers):
            raise ConfigError(f"layers must be a list of module-name patterns, e.g. ['model.encoder.layers.*.fc1'], "
                              f"got {self.layers!r}")
        object.__setattr__(self, "layers", layers)
        pairs = self.overrides.items() if isinstance(self.overrides, Mapping) else (self.overrides or ())
        overrides = []
        for pair in pairs:
            try:
                pattern, setting = pair
            except (TypeError, ValueError):
                raise ConfigError(f"overrides is a mapping of pattern -> {{weights, group_size}}, got {pair!r}") from None
            setting = dict(setting.items() if isinstance(setting, Mapping) else setting)
            unknown = set(setting) - set(OVERRIDE_KEYS)
            if not isinstance(pattern, str) or not pattern.strip() or not setting or unknown:
                raise ConfigError(f"override {pattern!r}: {{{', '.join(OVERRIDE_KEYS)}}} only, at least one "
                                  f"(unknown: {sorted(unknown) or 'none'})")
            g = setting.get("group_size")
            if g is not None and (not isinstance(g, int) or isinstance(g, bool) or g <= 0):
                raise ConfigError(f"override {pattern!r}: group_size must be a positive integer, got {g!r}")
            if "weights" in setting and not isinstance(setting["weights"], str):
                raise ConfigError(f"override {pattern!r}: weights is a format name like int8, got {setting['weights']!r}")
            overrides.append((pattern, tuple(sorted(setting.items()))))
        object.__setattr__(self, "overrides", tuple(overrides))
        per_layer = bool(layers or overrides)
        if self.depth is not None and (not isinstance(self.depth, int) or isinstance(self.depth, bool)
                                       or self.depth <= 0):
            raise ConfigError(f"depth must be a positive number of layers (whisper-base: 6) or null, got {self.depth!r}")
        if per_layer and self.library == "none":
            raise ConfigError("layers/overrides need a quantization library (fp32 quantizes nothing)")
        if per_layer and not (isinstance(self.recipe, str) and _RECIPE_NAME.fullmatch(self.recipe)):
            raise ConfigError(f"a spec with layers/overrides needs a recipe name for its slug, lower-case words "
                              f"joined by '-', e.g. recipe: only-enc3-fc2 (got {self.recipe!r})")
        if not per_layer and (self.recipe is not None or self.depth is not None):
            raise ConfigError("recipe/depth only apply with layers or overrides; set those or drop recipe/depth")
        patterns = list(layers) + [p for p, _ in overrides]
        if self.depth is None and any(_LAYER_INDEX.match(p) for p in patterns):
            raise ConfigError("a pattern names a layer index: set depth to the number of layers it counts "
                              "(whisper-base: depth: 6)")
        if not self.proj_out and any(p.startswith("proj_out") for p in patterns):
            raise ConfigError("a pattern names proj_out: set proj_out: true so it is untied and can be quantized")

    @property
    def per_layer(self) -> bool:
        """True for a mixed-precision recipe (``layers`` or ``overrides`` set)."""
        return bool(self.layers or self.overrides)

    def setting_for(self, name: str) -> dict[str, Any] | None:
        """``{weights, group_size}`` for module ``name`` (a name at :attr:`depth`), or None when not quantized.

        >>> s = QuantSpec(library="hqq", scheme="weight_only", weights="int4", group_size=64, recipe="enc-int8",
        ...               overrides={"model.encoder.*": {"weights": "int8"}})
        >>> s.setting_for("model.encoder.layers.0.fc1"), s.setting_for("model.decoder.layers.0.fc1")
        ({'weights': 'int8', 'group_size': 64}, {'weights': 'int4', 'group_size': 64})
        """
        if self.layers and not any(fnmatch.fnmatchcase(name, p) for p in self.layers):
            return None
        for pattern, setting in self.overrides:
            if fnmatch.fnmatchcase(name, pattern):
                return {"weights": self.weights, "group_size": self.group_size, **dict(setting)}
        return {"weights": self.weights, "group_size": self.group_size}

    @property
    def is_baseline(self) -> bool:
        return self.library == "none"

    @property
    def option_dict(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def bits(self) -> int:
        return weight_bits(self.weights)

    @property
    def label(self) -> str:
        """A short readable name for tables and titles (the :attr:`slug` names files).

        >>> QuantSpec(library="torch_ao", scheme="dynamic", weights="int8", activations="int8").label
        'torch.ao dynamic w-int8 a-int8'
        >>> QuantSpec(library="bnb", scheme="weight_only", weights="nf4", options={"double_quant": True}).label
        'bitsandbytes weight-only nf4 double_quant=True'
        """
        if self.is_baseline:
            return "fp32"
        parts = [LIBRARY_NAMES[self.library], self.scheme.replace("_", "-"), self.weights]
        if self.activations != "none":
            parts[-1] = f"w-{self.weights} a-{self.activations}"
        if self.granularity:
            parts.append(self.granularity.replace("_", "-"))
        if self.group_size:
            parts.append(f"g{self.group_size}")
        if self.scope != "all":
            parts.append(f"{self.scope} only")
        if self.proj_out:
            parts.append("+proj_out")
        if self.calibration:
            parts.append(f"cal {self.calibration}")
        if self.options:
            parts.append(", ".join(f"{k}={v}" for k, v in self.options))
        if self.recipe:
            parts.append(f"recipe {self.recipe}")
        return " ".join(parts)

    @property
    def slug(self) -> str:
        if self.is_baseline:
            return "fp32"
        parts = [_LIBRARY_TAG.get(self.library, self.library), _SCHEME_TAG[self.scheme], self.weights]
        if self.activations != "none":
            parts.append(f"a{self.activations}")
        if self.granularity and _GRAN_TAG[self.granularity]:
            parts.append(_GRAN_TAG[self.granularity])
        if self.group_size:
            parts.append(f"g{self.group_size}")
        if self.recipe:
            parts.append(self.recipe)
        if self.scope != "all":
            parts.append(f"{self.scope[:3]}only")
        if self.proj_out:
            parts.append("projout")
        if self.calibration:
            parts.append(f"cal{self.calibration}")
        parts += [f"{k}{_slug_value(v)}" for k, v in self.options]
        return "-".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data; the recipe fields appear only when set (older records stay identical)."""
        d = dataclasses.asdict(self)
        d["options"] = dict(self.options)
        for key in ("layers", "overrides", "depth", "recipe"):
            d.pop(key)
        if self.per_layer:
            d.update(layers=list(self.layers), overrides={p: dict(s) for p, s in self.overrides},
                     depth=self.depth, recipe=self.recipe)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "QuantSpec":
        data = dict(data or {})
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(
                f"unknown quantization field(s) {sorted(unknown)}; "
                f"allowed: {[f.name for f in dataclasses.fields(cls)]}")
        return cls(**data)


def layer_at_depth(name: str, model_layers: int, depth: int) -> str:
    """The name a module of a ``model_layers``-deep encoder/decoder has at ``depth`` layers, by relative depth.

    Layer ``j`` of ``model_layers`` is layer ``j * depth // model_layers`` of ``depth``: the recipe of a
    6-layer whisper-base applied to the 12-layer whisper-small covers small layers 2i and 2i+1 with base layer i.

    >>> layer_at_depth("model.encoder.layers.7.fc2", 12, 6), layer_at_depth("model.encoder.layers.7.fc2", 6, 6)
    ('model.encoder.layers.3.fc2', 'model.encoder.layers.7.fc2')
    >>> layer_at_depth("proj_out", 12, 6)
    'proj_out'
    """
    match = _LAYER_INDEX.match(name)
    if not match or model_layers == depth:
        return name
    return f"{match.group(1)}{int(match.group(2)) * depth // model_layers}{match.group(3)}"


def model_tag(model: str) -> str:
    """``'embedded:whisper-base'`` -> ``'whisper-base'``; ``'openai/whisper-small'`` -> ``'openai-whisper-small'``."""
    name = model.split(":", 1)[1] if ":" in model and not model.startswith("/") else model
    if model.startswith(("local:", "/", ".")):
        name = name.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def footprint_slug(spec: QuantSpec, model: str) -> str:
    """The file name of a size/latency run: ``footprint_slug(QuantSpec(), "footprint:whisper-small")`` ->
    ``'whisper-small__fp32__footprint'``."""
    return f"{model_tag(model)}__{spec.slug}__footprint"


@dataclass(frozen=True)
class RunConfig:
    """One evaluation: a model, a quantization, the splits to score.

    ``limit`` keeps the first N utterances of each split (``None`` = all);
    ``batch_size`` and ``threads`` fix how decoding runs and is timed;
    ``max_new_tokens`` caps each transcript (440 = Whisper's full window).
    """

    model: str = DEFAULT_MODEL
    split: tuple[str, ...] = ("test-clean", "test-other")
    limit: int | None = None
    quant: QuantSpec = field(default_factory=QuantSpec)
    batch_size: int = 8
    threads: int = 2
    max_new_tokens: int = 440

    def __post_init__(self) -> None:
        splits = (self.split,) if isinstance(self.split, str) else tuple(self.split)
        object.__setattr__(self, "split", splits)
        if isinstance(self.quant, Mapping):
            object.__setattr__(self, "quant", QuantSpec.from_dict(self.quant))
        if not splits:
            raise ConfigError("no split given; use one or more of " + ", ".join(SPLITS))
        for s in splits:
            if s not in SPLITS:
                raise ConfigError(f"unknown split {s!r}; use one of {', '.join(SPLITS)}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit <= 0):
            raise ConfigError(f"limit must be a positive integer (or omitted for all), got {self.limit!r}")
        if self.batch_size <= 0 or self.threads <= 0 or not 0 < self.max_new_tokens <= 440:
            raise ConfigError("batch_size and threads must be positive integers, max_new_tokens in 1..440")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("empty model spec; use e.g. embedded:whisper-base or openai/whisper-small")

    @property
    def slug(self) -> str:
        parts = [model_tag(self.model), self.quant.slug, "+".join(self.split)]
        if self.limit:
            parts.append(f"n{self.limit}")
        if self.max_new_tokens != 440:
            parts.append(f"max{self.max_new_tokens}")
        return "__".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "split": list(self.split), "limit": self.limit,
                "quant": self.quant.to_dict(), "batch_size": self.batch_size, "threads": self.threads,
                "max_new_tokens": self.max_new_tokens}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        data = dict(data)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown run field(s) {sorted(unknown)}; allowed: "
                              f"{[f.name for f in dataclasses.fields(cls)]}")
        if "quant" in data and not isinstance(data["quant"], QuantSpec):
            data["quant"] = QuantSpec.from_dict(data["quant"])
        return cls(**data)
