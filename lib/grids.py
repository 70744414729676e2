"""YAML experiment grids: one file per chapter, expanded into the configurations it declares.

A grid file declares the configurations of one chapter::

    title: Bit-width
    defaults: {model: embedded:whisper-base, split: [test-clean, test-other]}
    footprint: true            # also measure size/latency on the whisper-small architecture
    runs:                      # one configuration per entry (QuantSpec fields)
      - {library: torch_ao, scheme: dynamic, weights: int8, activations: int8, granularity: per_channel}
    expand:                    # list values are crossed: 2 x 3 = 6 configurations
      - {library: hqq, scheme: weight_only, weights: [int4, int3], group_size: [32, 64, 128]}
      # noise (a lib.config.NoiseSpec): the list values inside it are crossed too, 2 x 2 = 4 conditions
      - {library: none, noise: {kind: [babble, white], snr_db: [10, 0]}}

``noise`` may also be set in ``defaults`` or a ``runs`` entry (one recipe), or be a list of recipes; ``noise:
null`` in an entry is the clean audio.

A mixed-precision recipe is an entry with ``layers``/``overrides`` (see :class:`lib.config.QuantSpec`)::

      - {library: hqq, scheme: weight_only, weights: int4, group_size: 64, recipe: enc-fc1-int8,
         overrides: {"model.encoder.*": {weights: int8}, "model.decoder.layers.*.fc1": {weights: int8}}}

>>> [s["weights"] + str(s["group_size"]) for s in cross({"weights": ["int4", "int3"], "group_size": [32, 64]})]
['int432', 'int464', 'int332', 'int364']
>>> [(s["noise"]["kind"], s["noise"]["snr_db"]) for s in cross({"noise": {"kind": ["babble", "white"], "snr_db": [10, 0]}})]
[('babble', 10), ('babble', 0), ('white', 10), ('white', 0)]
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checks import check_run
from .config import ConfigError, QuantSpec, RunConfig, footprint_slug
from .paths import REPO_ROOT

EXPERIMENTS_DIR = REPO_ROOT / "experiments"
#: The chapters' grids in the book's order (the study is their union, first grid wins).
GRIDS = ("baseline", "scheme", "granularity", "bitwidth", "scope", "runtimes", "mixed")
RUN_FIELDS = {"model", "split", "limit", "batch_size", "threads", "max_new_tokens", "noise"}
GRID_KEYS = {"title", "description", "defaults", "footprint", "footprint_model", "runs", "expand"}


def cross(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Cartesian product over the list-valued fields of one ``expand`` entry (``noise``: see
    :func:`noise_conditions`)."""
    keys = list(entry)
    values = [noise_conditions(v) if k == "noise" else v if isinstance(v, list) and k not in ("split", "layers")
              else [v] for k, v in entry.items()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def noise_conditions(value: Any) -> list[dict[str, Any] | None]:
    """The noise recipes an ``expand`` entry's ``noise`` stands for: a mapping with list values is crossed, a
    list of mappings is each of them, ``None`` is clean audio.

    >>> noise_conditions({"kind": "white", "snr_db": [20, 5]})
    [{'kind': 'white', 'snr_db': 20}, {'kind': 'white', 'snr_db': 5}]
    """
    if value is None:
        return [None]
    if isinstance(value, list):
        return [c for v in value for c in noise_conditions(v)]
    if isinstance(value, dict):
        return cross(value)
    raise ConfigError(f"noise must be a mapping such as {{kind: babble, snr_db: [20, 10]}}, a list of them or "
                      f"null, got {value!r}")


@dataclass(frozen=True)
class Job:
    """One configuration of a grid: WER on real weights, optionally footprint on whisper-small."""

    grid: str
    config: RunConfig
    footprint: bool = True
    footprint_model: str = "footprint:whisper-small"

    @property
    def slug(self) -> str:
        return self.config.slug

    @property
    def footprint_slug(self) -> str:
        return footprint_slug(self.config.quant, self.footprint_model)


def grid_path(grid: str | Path) -> Path:
    """A grid by name or path: ``grid_path("bitwidth")`` -> ``EXPERIMENTS_DIR / "bitwidth.yml"``."""
    return Path(grid) if str(grid).endswith((".yml", ".yaml")) else EXPERIMENTS_DIR / f"{grid}.yml"


def load_grid(path: Path | str) -> dict[str, Any]:
    """The parsed grid file; a missing file, malformed YAML or an unknown key is one :class:`ConfigError` line."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"grid file {str(path)!r} not found; grids live in {EXPERIMENTS_DIR}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path.name}, line {mark.line + 1}" if mark is not None else path.name
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: a grid is a mapping of {sorted(GRID_KEYS)}, not a {type(data).__name__}")
    unknown = set(data) - GRID_KEYS
    if unknown:
        raise ConfigError(f"{path.name}: unknown grid key(s) {sorted(unknown)}")
    return data


def expand_grid(path: Path | str, overrides: dict[str, Any] | None = None) -> list[Job]:
    """All jobs of a grid, in file order, duplicates removed; ``overrides`` replace run defaults.

    Each configuration is checked against its backend and model source (:func:`lib.checks.check_run`).
    """
    data = load_grid(path)
    defaults = {**(data.get("defaults") or {}), **(overrides or {})}
    if set(defaults) - RUN_FIELDS:
        raise ConfigError(f"{Path(path).name}: defaults may only set {sorted(RUN_FIELDS)}")
    entries = [dict(e) for e in data.get("runs") or []]
    for entry in data.get("expand") or []:
        entries += cross(entry)
    jobs, seen = [], {}
    for entry in entries:
        run_fields = {k: entry.pop(k) for k in list(entry) if k in RUN_FIELDS}
        config = RunConfig.from_dict({**defaults, **run_fields, "quant": QuantSpec.from_dict(entry)})
        check_run(config)
        if config.slug in seen:
            if seen[config.slug] != config:
                raise ConfigError(f"{Path(path).name}: two different configurations share the slug {config.slug}; "
                                  "give each recipe its own name")
            continue
        seen[config.slug] = config
        jobs.append(Job(Path(path).stem, config, bool(data.get("footprint", True)),
                        data.get("footprint_model", "footprint:whisper-small")))
    return jobs
