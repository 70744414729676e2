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
>>> RunConfig(split=("test-clean",), noise=NoiseSpec(kind="babble", snr_db=10)).slug
'whisper-base__fp32__test-clean__noise-babble-snr10-s0'
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Mapping

SPLITS = ("test-clean", "test-other", "dev-clean")
SCHEMES = ("none", "dynamic", "static", "weight_only")
GRANULARITIES = ("per_tensor", "per_channel", "per_group")
SCOPES = ("all", "encoder", "decoder")
SCORED_SPLITS = ("test-clean", "test-other")  # dev-clean (and the jfk clip) calibrate and make babble
NOISE_KINDS = ("babble", "white", "pink")
NOISE_LEVELS = ("active_rms",)  # how the speech level is measured: see lib.noise.active_rms
BABBLE_TALKERS = 6
DEFAULT_MODEL = "embedded:whisper-base"

#: Library keys in the book's order (tables, legends, palettes) with their readable names.
LIBRARY_NAMES = {"none": "fp32", "torch_ao": "torch.ao", "torchao": "torchao", "quanto": "quanto", "hqq": "HQQ",
                 "bnb": "bitsandbytes", "auto_round": "AutoRound", "torch_cast": "PyTorch cast", "ctranslate2": "CTranslate2",
                 "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "whisper_cpp": "whisper.cpp"}

#: Libraries whose weight-only rounding is fitted on calibration audio (``calibration`` utterances >= 1).
CALIBRATED_WEIGHT_LIBRARIES = ("auto_round",)

#: Deployment runtimes' own names for a weights value (whisper.cpp's ggml types, CTranslate2's compute types).
_RUNTIME_FORMATS = {"whisper_cpp": {"fp32": "f32", "float16": "f16", "int8": "Q8_0", "int5": "Q5_0", "int4": "Q4_0"},
                    "ctranslate2": {"fp32": "float32"}, "onnxruntime": {}, "openvino": {},
                    "torch_cast": {}}
#: The deployment runtimes (and the plain PyTorch cast): library values tested in tests/test_runtimes.py.
RUNTIME_LIBRARIES = tuple(_RUNTIME_FORMATS)
_SCHEME_TAG = {"none": "", "dynamic": "dyn", "static": "static", "weight_only": "wo"}
_LIBRARY_TAG = {"torch_ao": "pt",  # torch.ao.quantization; "torchao" is the separate library
                "auto_round": "autoround",
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
    static scheme; ``calibration_folds`` (0 = off) draws them instead from the scored sample's own speakers,
    cross-fitted: the speakers fall into that many folds, and each fold's utterances are scored by a model
    calibrated on the other folds' speakers (:func:`lib.data.calibration_for`), so no utterance is scored by a
    model that heard its speaker; ``options`` holds backend-specific knobs as sorted pairs.

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
    calibration_folds: int = 0
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
        if self.calibration_folds and (not isinstance(self.calibration_folds, int) or self.calibration_folds < 2
                                       or not self.calibration_count):
            raise ConfigError(f"calibration_folds must be 2 or more (speaker folds) and needs calibration utterances "
                              f"(calibration >= 1, or a whisper_cpp imatrix: n); got {self.calibration_folds!r}")
        if self.library not in LIBRARY_NAMES:
            raise ConfigError(f"unknown library {self.library!r}; use one of: {', '.join(LIBRARY_NAMES)}")
        if self.library == "none":
            if (self.scheme, self.weights) != ("none", "fp32"):
                raise ConfigError("library 'none' is the fp32 baseline: leave scheme/weights unset")
            return
        if self.scheme == "static" and self.calibration <= 0:
            raise ConfigError(f"{self.library} static quantization needs calibration data: set calibration >= 1 "
                              "(unscored dev-clean + jfk utterances)")
        if self.library in CALIBRATED_WEIGHT_LIBRARIES and self.calibration <= 0:
            raise ConfigError(f"{self.library} fits its rounding on calibration audio: set calibration >= 1 "
                              "(unscored dev-clean + jfk utterances)")
        if self.scheme != "static" and self.calibration and self.library not in CALIBRATED_WEIGHT_LIBRARIES:
            raise ConfigError(f"calibration={self.calibration} only applies to scheme 'static' "
                              f"(or a calibrated weight-only library: {', '.join(CALIBRATED_WEIGHT_LIBRARIES)})")

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
    def calibration_count(self) -> int:
        """How many utterances calibrate this spec: ``calibration`` (static rows, AutoRound) or ``options:
        {imatrix: n}`` (whisper.cpp's importance matrix); 0 when none do.

        >>> QuantSpec(library="whisper_cpp", scheme="dynamic", weights="int3", activations="int8", group_size=256,
        ...           options={"build": "native", "imatrix": 64}).calibration_count
        64
        """
        return self.calibration or int(self.option_dict.get("imatrix") or 0)

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
        if self.library in _RUNTIME_FORMATS:
            return self._runtime_label()
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
        if self.calibration_folds:
            parts.append(f"(cross-speaker, {self.calibration_folds} folds)")
        if self.recipe:
            parts.append(f"recipe {self.recipe}")
        return " ".join(parts)

    def _runtime_label(self) -> str:
        """A deployment runtime's row named by the runtime's own format names.

        >>> QuantSpec(library="whisper_cpp", scheme="dynamic", weights="int5", activations="int8", group_size=32).label
        'whisper.cpp Q5_0'
        >>> QuantSpec(library="ctranslate2", scheme="dynamic", weights="int8", activations="int8",
        ...           options={"float": "float32"}).label
        'CTranslate2 int8_float32'
        >>> QuantSpec(library="onnxruntime", scheme="weight_only", weights="int4", group_size=32).label
        'ONNX Runtime int4 weight-only group 32'
        >>> QuantSpec(library="openvino", weights="fp32", options={"precision": "bf16"}).label
        'OpenVINO fp32 (bf16 inference)'
        >>> QuantSpec(library="whisper_cpp", scheme="dynamic", weights="int4", activations="int8", group_size=256,
        ...           options={"build": "native"}).label
        'whisper.cpp Q4_K (native build)'
        """
        fmt = _RUNTIME_FORMATS[self.library].get(self.weights, self.weights)
        opts = self.option_dict
        if self.library == "whisper_cpp" and self.group_size == 256:  # ggml's k-quants
            fmt = f"Q{weight_bits(self.weights)}_K"
        elif self.library == "whisper_cpp" and opts.get("sym") is False:
            fmt = f"Q{weight_bits(self.weights)}_1"
        if self.library == "ctranslate2" and opts.get("float"):
            fmt = f"{fmt}_{opts['float']}"
        parts = [LIBRARY_NAMES[self.library], fmt]
        if self.library == "onnxruntime" and self.scheme != "none":
            parts += [self.scheme.replace("_", "-"), (self.granularity or "").replace("_", "-")]
        if self.library == "openvino" and self.scheme == "weight_only":
            parts += ["weights", "sym" if opts.get("sym", True) else "asym"]
        if self.library == "openvino" and self.scheme == "static":
            parts += ["static (nncf.quantize)"]
        if self.group_size and self.library in ("openvino", "onnxruntime"):
            parts.append(f"group {self.group_size}")
        if self.library == "openvino" and opts.get("precision"):
            parts.append(f"({opts['precision']} inference)")
        if self.calibration:
            parts.append(f"({self.calibration} calibration utterances)")
        if opts.get("smooth_quant") is False:
            parts.append("(SmoothQuant off)")
        if self.library == "whisper_cpp" and opts.get("build"):
            parts.append(f"({opts['build']} build)")
        if self.library == "whisper_cpp" and opts.get("imatrix"):
            parts.append(f"+ importance matrix ({opts['imatrix']} utterances)")
        if self.calibration_folds:
            parts.append(f"(cross-speaker, {self.calibration_folds} folds)")
        if self.recipe:
            parts.append(f"recipe {self.recipe}")
        return " ".join(p for p in parts if p)

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
        if self.calibration_folds:
            parts.append(f"xspk{self.calibration_folds}")
        return "-".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data; the recipe fields appear only when set (older records stay identical)."""
        d = dataclasses.asdict(self)
        d["options"] = dict(self.options)
        for key in ("layers", "overrides", "depth", "recipe", "calibration_folds"):
            d.pop(key)
        if self.calibration_folds:
            d["calibration_folds"] = self.calibration_folds
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


@dataclass(frozen=True)
class NoiseSpec:
    """Noise mixed into every utterance of a run before feature extraction (:func:`lib.noise.mix`).

    ``kind``: ``babble`` (``talkers`` streams of calibration-set speech summed, never a scored utterance),
    ``white`` or ``pink`` (seeded Gaussian, pink shaped to 1/f power). ``snr_db``: active-speech RMS over
    noise RMS, in dB (``level`` names that measure). ``seed``: with the utterance id, it fixes the noise
    audio, so the same recipe gives the same noisy audio on every machine.

    >>> NoiseSpec(kind="white", snr_db=-5, seed=1).slug
    'noise-white-snrm5-s1'
    >>> NoiseSpec(kind="babble", snr_db=2.5).slug, NoiseSpec(kind="babble", snr_db=0).talkers
    ('noise-babble-snr2.5-s0', 6)
    """

    kind: str
    snr_db: float
    seed: int = 0
    level: str = "active_rms"
    talkers: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise ConfigError(f"unknown noise kind {self.kind!r}; use one of {', '.join(NOISE_KINDS)}")
        if isinstance(self.snr_db, bool) or not isinstance(self.snr_db, (int, float)) or not -20 <= self.snr_db <= 60:
            raise ConfigError(f"noise snr_db must be a number of dB in -20..60, got {self.snr_db!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"noise seed must be a non-negative integer, got {self.seed!r}")
        if self.level not in NOISE_LEVELS:
            raise ConfigError(f"unknown noise level measure {self.level!r}; use one of {', '.join(NOISE_LEVELS)}")
        if self.kind != "babble" and self.talkers is not None:
            raise ConfigError(f"talkers applies to babble noise only; drop it from the {self.kind} recipe")
        if self.kind == "babble":
            talkers = BABBLE_TALKERS if self.talkers is None else self.talkers
            if isinstance(talkers, bool) or not isinstance(talkers, int) or not 1 <= talkers <= 32:
                raise ConfigError(f"babble talkers must be an integer in 1..32, got {self.talkers!r}")
            object.__setattr__(self, "talkers", talkers)
        object.__setattr__(self, "snr_db", float(self.snr_db))

    @property
    def slug(self) -> str:
        snr = _slug_value(abs(self.snr_db))
        parts = ["noise", self.kind, f"snr{'m' if self.snr_db < 0 else ''}{snr}", f"s{self.seed}"]
        if self.kind == "babble" and self.talkers != BABBLE_TALKERS:
            parts.append(f"t{self.talkers}")
        if self.level != NOISE_LEVELS[0]:
            parts.append(self.level.replace("_", ""))
        return "-".join(parts)

    @property
    def label(self) -> str:
        """``'babble, 10 dB SNR'``."""
        return f"{self.kind}, {self.snr_db:g} dB SNR"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: "Mapping[str, Any] | NoiseSpec | None") -> "NoiseSpec | None":
        """A recipe from a stored/YAML mapping (None stays None); unknown fields are one line naming the allowed."""
        if data is None or isinstance(data, NoiseSpec):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"noise must be a mapping such as {{kind: babble, snr_db: 10}}, got {data!r}")
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = set(data) - set(fields)
        if unknown:
            raise ConfigError(f"unknown noise field(s) {sorted(unknown)}; allowed: {fields}")
        if "kind" not in data or "snr_db" not in data:
            raise ConfigError("a noise recipe needs kind and snr_db, e.g. {kind: babble, snr_db: 10}")
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


WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.onnx")
_weights_digests: dict[tuple, str | None] = {}


def weights_sha256(folder: str | Path) -> str | None:
    """sha256 over a local model folder's weight files (names and bytes, in name order), or None when the folder
    does not exist or holds none. Cached per process by name, size and modification time.

    Two fine-tunes in folders with the same name get different digests, so they never share a result.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        return None
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in root.glob(pattern) if p.is_file()})
    stamp = (str(root.resolve()), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if stamp not in _weights_digests:
        digest = hashlib.sha256()
        for p in files:
            digest.update(p.name.encode() + b"\0")
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        _weights_digests[stamp] = digest.hexdigest() if files else None
    return _weights_digests[stamp]


def model_tag(model: str) -> str:
    """``'embedded:whisper-base'`` -> ``'whisper-base'``; ``'openai/whisper-small'`` -> ``'openai-whisper-small'``.

    A ``local:`` folder is named by its base name and the first 12 hex digits of :func:`weights_sha256`
    (``'local:/x/whisper-base'`` -> ``'whisper-base-07cadb9f2567'``), so a result belongs to the weights, not to
    the folder's name (a folder that does not exist here keeps the bare name; a run refuses it anyway).
    """
    name = model.split(":", 1)[1] if ":" in model and not model.startswith("/") else model
    if model.startswith(("local:", "/", ".")):
        digest = weights_sha256(name)
        name = name.rstrip("/").split("/")[-1] + (f"-{digest[:12]}" if digest else "")
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
    ``max_new_tokens`` caps each transcript (440 = Whisper's full window);
    ``noise`` mixes a :class:`NoiseSpec` into the audio (``None``: clean audio, and no slug change).
    """

    model: str = DEFAULT_MODEL
    split: tuple[str, ...] = ("test-clean", "test-other")
    limit: int | None = None
    quant: QuantSpec = field(default_factory=QuantSpec)
    batch_size: int = 8
    threads: int = 2
    max_new_tokens: int = 440
    noise: NoiseSpec | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise", NoiseSpec.from_dict(self.noise))
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
        if self.noise is not None and set(splits) - set(SCORED_SPLITS):
            raise ConfigError(f"noise applies to the scored splits {', '.join(SCORED_SPLITS)} only: dev-clean "
                              "is the calibration and babble source; drop dev-clean from split")

    @property
    def slug(self) -> str:
        parts = [model_tag(self.model), self.quant.slug, "+".join(self.split)]
        if self.noise is not None:
            parts.append(self.noise.slug)
        if self.limit:
            parts.append(f"n{self.limit}")
        if self.max_new_tokens != 440:
            parts.append(f"max{self.max_new_tokens}")
        return "__".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The stored form; ``noise`` appears only when set, so a clean run's record is what it always was."""
        out = {"model": self.model, "split": list(self.split), "limit": self.limit,
               "quant": self.quant.to_dict(), "batch_size": self.batch_size, "threads": self.threads,
               "max_new_tokens": self.max_new_tokens}
        if self.noise is not None:
            out["noise"] = self.noise.to_dict()
        return out

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
