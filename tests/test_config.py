import pytest

from lib.checks import check_quant, check_run
from lib.config import ConfigError, QuantSpec, RunConfig


@pytest.mark.parametrize("spec, slug", [
    (QuantSpec(), "fp32"),
    (QuantSpec(library="torch_ao", scheme="dynamic", weights="int8", activations="int8",
               granularity="per_tensor"), "pt-dyn-int8-aint8-pt"),
    (QuantSpec(library="hqq", scheme="weight_only", weights="int3", group_size=64), "hqq-wo-int3-g64"),
    (QuantSpec(library="bnb", scheme="weight_only", weights="nf4", options={"double_quant": True}),
     "bnb-wo-nf4-double_quant1"),
    (QuantSpec(library="torch_ao", scheme="static", weights="int8", activations="int8", granularity="per_channel",
               scope="encoder", calibration=4), "pt-static-int8-aint8-pc-enconly-cal4"),
])
def test_quant_slugs(spec, slug):
    assert spec.slug == slug


def test_torch_ao_and_torchao_slugs_differ():
    a = QuantSpec(library="torch_ao", scheme="dynamic", weights="int8", activations="int8", granularity="per_channel")
    b = QuantSpec(library="torchao", scheme="dynamic", weights="int8", activations="int8", granularity="per_channel")
    assert a.slug != b.slug


def test_run_slug_names_model_quant_splits_and_limit():
    config = RunConfig(split=("test-clean", "test-other"), limit=20)
    assert config.slug == "whisper-base__fp32__test-clean+test-other__n20"
    assert RunConfig(split="test-other").slug == "whisper-base__fp32__test-other"


def test_config_is_frozen_and_round_trips():
    config = RunConfig(quant=QuantSpec(library="hqq", scheme="weight_only", weights="int4", group_size=32))
    with pytest.raises(AttributeError):
        config.limit = 3
    again = RunConfig.from_dict(config.to_dict())
    assert again == config and again.slug == config.slug


@pytest.mark.parametrize("kwargs, message", [
    (dict(split="test-dirty"), "unknown split"),
    (dict(limit=0), "limit must be a positive integer"),
    (dict(limit=-3), "limit must be a positive integer"),
    (dict(model="footprint:whisper-small"), "not for WER"),
    (dict(model="whisper small please"), "unknown model spec"),
    (dict(model="local:/no/such/dir"), "does not exist"),
    (dict(model="embedded:whisper-large"), "only embedded:whisper-base"),
])
def test_bad_run_config_fails_with_the_fix(kwargs, message):
    with pytest.raises(ConfigError, match=message):  # field checks when built, model source where input arrives
        check_run(RunConfig(**kwargs))


@pytest.mark.parametrize("kwargs, message", [
    (dict(library="tensorrt", scheme="dynamic", weights="int8"), "unknown library 'tensorrt'; use one of"),
    (dict(library="hqq", scheme="weight_only", weights="int5", group_size=64), "supported:"),
    (dict(library="bnb", scheme="weight_only", weights="nf4", group_size=32), "supported:"),
    (dict(library="torch_ao", scheme="static", weights="int8", activations="int8"), "needs calibration data"),
    (dict(library="hqq", scheme="weight_only", weights="int4", group_size=64, calibration=3), "only applies"),
    (dict(library="hqq", scheme="weight_only", weights="int4", group_size=64, options={"colour": 1}),
     "has no option"),
    (dict(scheme="sometimes"), "unknown scheme"),
    (dict(library="none", scheme="dynamic", weights="int8"), "fp32 baseline"),
])
def test_bad_quant_spec_fails_listing_what_is_supported(kwargs, message):
    with pytest.raises(ConfigError, match=message):  # field checks when built, backend support where input arrives
        check_quant(QuantSpec(**kwargs))


def test_a_stored_config_rebuilds_on_any_machine():
    """Building a config checks its fields only: no backend import, no filesystem look-up."""
    stored = {"model": "local:/a/machine/we/are/not/on", "split": ["test-clean"], "limit": 2,
              "quant": {"library": "hqq", "scheme": "weight_only", "weights": "int4", "group_size": 64}}
    config = RunConfig.from_dict(stored)
    assert config.slug == "on__hqq-wo-int4-g64__test-clean__n2"
    with pytest.raises(ConfigError, match="does not exist"):
        check_run(config)


def test_labels_read_like_the_configuration():
    assert QuantSpec(library="hqq", scheme="weight_only", weights="int4", group_size=64).label == "HQQ weight-only int4 g64"
    assert QuantSpec(library="torch_ao", scheme="static", weights="int8", activations="int8", granularity="per_channel",
                     scope="encoder", calibration=4).label == "torch.ao static w-int8 a-int8 per-channel encoder only cal 4"
    assert QuantSpec().label == "fp32"


def test_unknown_fields_are_named():
    with pytest.raises(ConfigError, match="unknown quantization field"):
        QuantSpec.from_dict({"library": "hqq", "bitz": 4})
    with pytest.raises(ConfigError, match="unknown run field"):
        RunConfig.from_dict({"modle": "x"})


def test_bits_from_weight_format():
    assert [QuantSpec(library="bnb", scheme="weight_only", weights=w).bits for w in ("nf4", "fp4")] == [4, 4]
    assert QuantSpec().bits == 32
