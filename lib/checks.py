"""Checks that need more than a config's own fields: does the model exist, does the backend support the spec.

A :class:`~lib.config.RunConfig` checks only its fields, so a stored result's config rebuilds on any
machine. These checks run where input arrives: the CLI, grid expansion, ``evaluate`` and
``measure_footprint`` (model loading checks the model spec again).

>>> from lib.config import QuantSpec, RunConfig
>>> check_run(RunConfig(quant=QuantSpec(library="hqq", scheme="weight_only", weights="int4", group_size=64)))
>>> check_run(RunConfig(model="footprint:whisper-small"))
Traceback (most recent call last):
lib.config.ConfigError: footprint:whisper-small has seeded random weights: use it for size and latency (python -m lib footprint), not for WER; score embedded:whisper-base or a real checkpoint instead
"""
from __future__ import annotations

from .config import QuantSpec, RunConfig
from .models import check_model_spec
from .quantize import validate_spec


def check_quant(spec: QuantSpec) -> None:
    """Raise :class:`~lib.config.ConfigError` when ``spec``'s library does not support it (lists what it does)."""
    validate_spec(spec)


def check_run(config: RunConfig) -> None:
    """Raise :class:`~lib.config.ConfigError` when ``config`` cannot run here: a WER run needs real weights
    (not ``footprint:``), a ``local:`` model an existing directory, and the backend must support the spec."""
    check_model_spec(config.model, needs_weights=True)
    check_quant(config.quant)
