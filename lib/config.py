"""Frozen, validated configuration objects whose slug names every artifact.

A :class:`RunConfig` is one evaluation (model x quantization x splits); a
:class:`QuantSpec` is one point of the paper's design space.  Both are checked
when built, so a bad value fails before any model is loaded.

>>> QuantSpec(library="hqq", scheme="weight_only", weights="int4", group_size=64).slug
'hqq-wo-int4-g64'
>>> RunConfig(split=("test-clean",), limit=20).slug
'whisper-base__fp32__test-clean__n20'
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

SPLITS = ("test-clean", "test-other", "dev-clean")
SCHEMES = ("none", "dynamic", "static", "weight_only")
GRANULARITIES = ("per_tensor", "per_channel", "per_group")
SCOPES = ("all", "encoder", "decoder")
DEFAULT_MODEL = "embedded:whisper-base"

_SCHEME_TAG = {"none": "", "dynamic": "dyn", "static": "static", "weight_only": "wo"}
_LIBRARY_TAG = {"torch_ao": "pt",  # torch.ao.quantization; "torchao" is the separate library
                "ctranslate2": "ct2", "onnxruntime": "ort", "openvino": "ov", "whisper_cpp": "ggml"}
_GRAN_TAG = {"per_tensor": "pt", "per_channel": "pc", "per_group": ""}


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

    def __post_init__(self) -> None:
        opts = self.options
        if isinstance(opts, Mapping):
            opts = tuple(sorted(opts.items()))
        object.__setattr__(self, "options", tuple(sorted(tuple(p) for p in opts)))
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
        if self.library == "none":
            if (self.scheme, self.weights) != ("none", "fp32"):
                raise ConfigError("library 'none' is the fp32 baseline: leave scheme/weights unset")
            return
        from .quantize import validate_spec  # light: allow-lists only, no heavy imports

        validate_spec(self)

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
        if self.scope != "all":
            parts.append(f"{self.scope[:3]}only")
        if self.proj_out:
            parts.append("projout")
        if self.calibration:
            parts.append(f"cal{self.calibration}")
        parts += [f"{k}{_slug_value(v)}" for k, v in self.options]
        return "-".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["options"] = dict(self.options)
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


def model_tag(model: str) -> str:
    """``'embedded:whisper-base'`` -> ``'whisper-base'``; ``'openai/whisper-small'`` -> ``'openai-whisper-small'``."""
    name = model.split(":", 1)[1] if ":" in model and not model.startswith("/") else model
    if model.startswith(("local:", "/", ".")):
        name = name.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


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
        from .models import check_model_spec

        check_model_spec(self.model, needs_weights=True)

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
