"""Every configuration row of the experiment grids, on a tiny random Whisper (seconds each)."""
import copy
import glob

import numpy as np
import pytest
import torch

from lib import QuantSpec
from lib.checks import check_quant
from lib.config import CALIBRATED_WEIGHT_LIBRARIES, RUNTIME_LIBRARIES, SCORED_SPLITS, ConfigError
from lib.data import calibration_set
from lib.metrics import stored_bytes
from lib.quantize import quantize
from lib.quantize.common import target_linears
from lib.grids import expand_grid
from lib.transcribe import features, generate
from conftest import REPO

SPECS = {j.config.quant.slug: j.config.quant for g in sorted(glob.glob(str(REPO / "experiments/*.yml")))
         for j in expand_grid(g) if not j.config.quant.is_baseline
         and j.config.quant.library not in RUNTIME_LIBRARIES  # deployment runtimes (any grid): tests/test_runtimes.py
         and j.config.quant.library not in CALIBRATED_WEIGHT_LIBRARIES  # fake-quant rounding: test_auto_round_* below
         and not j.config.quant.per_layer}  # per-layer recipes (mixed.yml): tests/test_sensitivity.py
# Paths that cannot work on Whisper; the harness records them as failed rows with this reason.
EXPECTED_FAILURES = {
    "pt-static-int8-aint8-pc-cal4-methodfx": "FX symbolic tracing of Whisper",
}
# Stored bytes of the quantized Linear layers / their fp32 bytes: upper bound from the bit-width.
def expected_ratio_bound(spec: QuantSpec) -> float:
    bits = 8 if spec.option_dict.get("layout") == "intx" else spec.bits  # intx stores int4 values in int8
    group_overhead = 64 / spec.group_size if spec.group_size else 0  # an fp32 scale + zero point per group
    return (bits + group_overhead + 1.5) / 32  # +1.5 bits: biases, per-row scales, packing


@pytest.fixture(scope="module")
def calibration(synthetic_shared):
    """dev-clean's one synthetic utterance and the synthetic JFK clip (module-wide: built before any autouse fixture)."""
    return calibration_set(2, synthetic_shared / "data" / "librispeech")


@pytest.fixture(scope="module")
def short_features(tiny):
    return features(tiny.processor, [np.zeros(16_000, dtype=np.float32)] * 2)


def test_grids_cover_every_library():
    assert {s.library for s in SPECS.values()} == {"torch_ao", "torchao", "quanto", "hqq", "bnb"}
    assert {s.scheme for s in SPECS.values()} == {"dynamic", "static", "weight_only"}


def linear_activation_quantization(model) -> tuple[int, int]:
    """In PT2E graphs: (Linears whose input is dequantized int8, Linears whose output is requantized)."""
    from lib.quantize.torch_ao import _ops_on_dequantized_weights

    inputs = outputs = 0
    for graph_module in (m for m in model.modules() if isinstance(getattr(m, "graph", None), torch.fx.Graph)):
        for node, _weight in _ops_on_dequantized_weights(graph_module):
            if "linear" in str(node.target):
                inputs += "dequantize" in str(getattr(node.args[0], "target", ""))
                outputs += any(str(u.target).startswith("quantized_decomposed.quantize") for u in node.users)
    return inputs, outputs


@pytest.mark.parametrize("slug", sorted(SPECS))
def test_configuration_row(slug, tiny, calibration, short_features):
    spec = SPECS[slug].__class__(**{**SPECS[slug].__dict__, "calibration": min(SPECS[slug].calibration, 2)})
    model = copy.deepcopy(tiny.model)
    names = [n for n, _ in target_linears(copy.deepcopy(tiny.model), spec)]
    fp32_bytes = sum(stored_bytes(model.get_submodule(n)) for n in names if n != "proj_out")
    torch.set_num_threads(1)
    if slug.replace("cal2", "cal4") in EXPECTED_FAILURES:
        with pytest.raises(Exception, match=EXPECTED_FAILURES[slug.replace("cal2", "cal4")]):
            quantize(model, spec, calibration=calibration, processor=tiny.processor)
            generate(model, short_features, max_new_tokens=3)
        return
    model, meta = quantize(model, spec, calibration=calibration, processor=tiny.processor)
    model.eval()  # as the harness does before transcribing
    out = generate(model, short_features, max_new_tokens=3)
    assert out.shape[0] == 2 and out.shape[1] >= 1
    if spec.option_dict.get("method") == "pt2e":  # each quantized half is now one exported graph
        halves = {"all": {"encoder", "decoder"}}.get(spec.scope, {spec.scope})
        assert set(meta["pt2e_quantized_ops"]) == halves
        layers = {"encoder": model.config.encoder_layers * 6, "decoder": model.config.decoder_layers * 10}
        assert all(meta["pt2e_quantized_ops"][h]["linear"] == layers[h] for h in halves)  # every Linear
        assert meta["weight_error"]["layers"] == sum(layers[h] for h in halves)
        assert 0 < meta["weight_error"]["mean"] < 0.05  # int8 per-channel
        assert (model.generation_config.use_cache is False) == ("decoder" in halves)  # cache-free decoder graph
        if "decoder" in halves:  # greedy reads one position: proj_out runs on the last one only
            decoder, enc = model.model.decoder, model.model.encoder(short_features).last_hidden_state
            ids = torch.full((2, 3), model.config.decoder_start_token_id)
            hidden = decoder(input_ids=ids, encoder_hidden_states=enc).last_hidden_state
            assert hidden.shape[1] == 1 and torch.equal(hidden[:, 0], decoder.graph(ids, enc)[:, -1])
        saved = stored_bytes(tiny.model) - stored_bytes(model)  # int8 weights replace fp32 ones (≈3/4 saved)
        assert saved > 0.7 * fp32_bytes, f"saved {saved} of {fp32_bytes} fp32 Linear bytes"
        assert linear_activation_quantization(model) == (sum(layers[h] for h in halves), 0)  # inputs, no outputs
        return
    assert meta["quantized_count"] >= len(names) and meta["quantized_modules"]
    assert meta["proj_out_quantized"] == spec.proj_out
    q_bytes = sum(stored_bytes(model.get_submodule(n)) for n in names if n != "proj_out")
    assert q_bytes / fp32_bytes < expected_ratio_bound(spec), f"stored ratio {q_bytes / fp32_bytes:.3f}"
    if spec.scheme == "static":
        assert meta["calibration"] == [u.id for u in calibration]


def test_scope_leaves_the_other_half_float(tiny):
    model = copy.deepcopy(tiny.model)
    _, meta = quantize(model, QuantSpec(library="hqq", scheme="weight_only", weights="int4", group_size=64,
                                        scope="encoder"))
    assert all(n.startswith(("model.decoder.", "proj_out")) for n in meta["float_linear_names"])
    assert meta["proj_out_tied"] and not meta["proj_out_quantized"]


def test_proj_out_is_untied_only_when_asked(tiny):
    model = copy.deepcopy(tiny.model)
    _, meta = quantize(model, QuantSpec(library="torch_ao", scheme="dynamic", weights="int8", activations="int8",
                                        granularity="per_channel", proj_out=True))
    assert meta["proj_out_quantized"] and not meta["proj_out_tied"]


def test_torchao_bf16_compute_runs_the_whole_model_in_bf16(tiny, short_features):
    model, meta = quantize(copy.deepcopy(tiny.model), QuantSpec(library="torchao", scheme="weight_only",
                                                                weights="int4", group_size=32,
                                                                options={"compute": "bf16"}))
    assert meta["compute_dtype"] == "bf16"
    float_params = {p.dtype for m in model.modules() if not isinstance(m, torch.nn.Linear)
                    for p in m.parameters(recurse=False)}
    assert float_params == {torch.bfloat16}  # convolutions, norms, embeddings: no fp32 left to upcast activations
    assert 0 < meta["weight_error"]["mean"] < 0.2  # measured against the fp32 weights
    assert generate(model.eval(), short_features, max_new_tokens=3).shape[0] == 2


def test_torchao_weight_read_back_through_the_kernel_matches_dequantize():
    """The identity trick used for Int4OpaqueTensor (no dequantize) agrees with a layout that has one."""
    from torchao.quantization import quantize_  # pinned: a broken install fails here, it is never skipped

    from lib.quantize.torchao import config_for, read_back_weight

    linear = torch.nn.Sequential(torch.nn.Linear(64, 96))
    quantize_(linear, config_for(QuantSpec(library="torchao", scheme="weight_only", weights="int4", group_size=32,
                                           options={"layout": "intx"})))
    direct = linear[0].weight.dequantize()
    torch.testing.assert_close(read_back_weight(linear[0]), direct, atol=1e-5, rtol=1e-4)


def test_bitsandbytes_int8_logs_its_float16_cast_once(tiny, short_features, caplog):
    import logging

    cast_logger = logging.getLogger("bitsandbytes.autograd._functions")
    for once in [f for f in cast_logger.filters if type(f).__name__ == "_PassOnce"]:
        cast_logger.removeFilter(once)  # as in a fresh process: an earlier bnb test already showed its one copy
    model, _ = quantize(copy.deepcopy(tiny.model), QuantSpec(library="bnb", scheme="dynamic", weights="int8",
                                                             activations="int8", options={"threshold": 0}))
    model.eval()  # in train mode bitsandbytes takes a float path that does not log
    with caplog.at_level("WARNING", logger="bitsandbytes"):
        generate(model, short_features, max_new_tokens=3)  # dozens of MatMul8bitLt calls
        generate(model, short_features, max_new_tokens=3)
    casts = [r for r in caplog.records if r.getMessage().startswith("MatMul8bitLt: inputs will be cast")]
    assert len(casts) == 1, f"{len(casts)} copies of the float16-cast warning (exactly one is shown)"


@pytest.mark.parametrize("kwargs, message", [
    (dict(library="hqq", scheme="weight_only", weights="int5", group_size=64), "hqq does not support"),
    (dict(library="bnb", scheme="weight_only", weights="nf4", group_size=64), "bnb does not support"),
    (dict(library="quanto", scheme="static", weights="int8", activations="int8"), "needs calibration"),
    (dict(library="torchao", scheme="weight_only", weights="int4", group_size=48), "supported:"),
    (dict(library="torchao", scheme="weight_only", weights="int4", group_size=64, options={"compute": "fp16"}),
     "compute='fp16' not allowed"),
    (dict(library="torch_ao", scheme="dynamic", weights="int8", activations="int8", granularity="per_channel",
          options={"method": "pt2e"}), "applies to scheme 'static' only"),
    (dict(library="bnb", scheme="weight_only", weights="nf4", options={"threshold": 6.0}), "threshold"),
])
def test_invalid_specs_raise_listing_what_is_supported(kwargs, message):
    with pytest.raises(ConfigError, match=message):  # field checks when built, backend support where input arrives
        check_quant(QuantSpec(**kwargs))


def test_static_activation_ablation_emulates_torch_ao_and_isolates_each_activation(tiny, fake_librispeech, tmp_path):
    """The fake-quant emulation reproduces torch.ao's own kernel, and dropping a quantization point never hurts."""
    from lib.diagnostics import static_activation_ablation, static_variants

    summary = static_activation_ablation("test:tiny", calibration=2, data=str(fake_librispeech), threads=1,
                                         max_new_tokens=4, results_dir=tmp_path)
    assert summary["status"] == "ok", summary.get("error")
    error = {r["variant"]: 1 - r["encoder_cosine_jfk"] for r in summary["rows"]}
    assert len(error) == len(static_variants()) + 2  # + fp32 and the real kernel
    assert error["fp32"] < 1e-9
    recipe, kernel = error["inputs + outputs (torch.ao eager recipe), 7-bit"], error[next(v for v in error if "kernel" in v)]
    assert 0 < recipe and abs(recipe - kernel) < 0.25 * kernel
    assert error["inputs only, 8-bit"] < error["inputs only, 7-bit"] < recipe
    assert error["inputs + outputs in the encoder only, 7-bit"] == recipe  # the decoder cannot move the encoder
    assert summary["calibration"] == ["1272-128104-0000", "jfk"]
    again = static_activation_ablation("test:tiny", calibration=2, data=str(fake_librispeech), results_dir=tmp_path)
    assert again["started"] == summary["started"]  # cached, not re-run

    from lib.benchmark_files import STATIC_ABLATION_FACTS, static_ablation

    table, facts = static_ablation(results_dir=tmp_path, model="test:tiny", calibration=2)
    assert len(table) == len(error) and set(facts) == {f"static_ablation_{k}" for k in STATIC_ABLATION_FACTS}
    assert facts["static_ablation_recipe"] == f"{1 - recipe:.4f}"
    assert static_ablation(results_dir=tmp_path)[0] is None  # not run yet: no table, facts say pending


AUTO_ROUND_SPECS = {j.config.quant.slug: j.config.quant for j in expand_grid(REPO / "experiments/calibrated_rounding.yml")
                    if j.config.quant.library in CALIBRATED_WEIGHT_LIBRARIES}


def test_calibrated_grid_compares_auto_round_with_hqq_at_equal_bits_and_group():
    hqq = {j.config.quant.slug for j in expand_grid(REPO / "experiments/calibrated_rounding.yml")
           if j.config.quant.library == "hqq"}
    for spec in AUTO_ROUND_SPECS.values():
        check_quant(spec)
        assert spec.calibration >= 1 and f"hqq-wo-{spec.weights}-g{spec.group_size}" in hqq
    bitwidth = {j.config.slug for j in expand_grid(REPO / "experiments/bitwidth.yml")}
    assert {j.config.slug for j in expand_grid(REPO / "experiments/calibrated_rounding.yml")
            if j.config.quant.library == "hqq"} <= bitwidth  # shared result files, not re-runs


@pytest.mark.parametrize("kwargs, message", [
    (dict(library="auto_round", scheme="weight_only", weights="int4", group_size=64), "set calibration >= 1"),
    (dict(library="auto_round", scheme="weight_only", weights="int2", group_size=64, calibration=2), "supported:"),
    (dict(library="auto_round", scheme="weight_only", weights="int4", group_size=64, calibration=2,
          options={"iters": 0}), "iters=0 not allowed"),
    (dict(library="hqq", scheme="weight_only", weights="int4", group_size=64, calibration=2), "only applies"),
])
def test_auto_round_invalid_specs_raise(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        check_quant(QuantSpec(**kwargs))


@pytest.mark.parametrize("weights, group, options", [("int4", 64, {}), ("int3", 32, {}), ("int4", 32, {"batch": 1})])
def test_auto_round_rounds_every_linear_to_its_grid(weights, group, options, tiny, calibration, short_features):
    """2 calibration clips, 20 steps a block (or mini-batches of a drawn clip pair): each group of each rounded
    weight takes <= 2**bits values."""
    spec = QuantSpec(library="auto_round", scheme="weight_only", weights=weights, group_size=group, calibration=2,
                     options={"iters": 20, **options})
    check_quant(spec)
    model = copy.deepcopy(tiny.model)
    names = [n for n, _ in target_linears(copy.deepcopy(tiny.model), spec)]
    torch.set_num_threads(1)
    model, meta = quantize(model, spec, calibration=calibration, processor=tiny.processor, calibration_tokens=4)
    assert meta["emulated"] is True and meta["quantized_count"] == len(names) == meta["weight_error"]["layers"]
    assert meta["quantized_modules"] == {"RoundedLinear": len(names)} and meta["float_linear_names"] == ["proj_out"]
    assert 0 < meta["weight_error"]["mean"] < 0.5
    assert meta["calibration"] == [u.id for u in calibration] and meta["batch"] == (options.get("batch") or 2)
    assert all(v["best"] < v["first"] for v in meta["block_loss"].values())  # the tuning lowered every block's loss
    for name in names:
        layer = model.get_submodule(name)
        groups = layer.weight.detach().reshape(-1, group)
        assert max(len(torch.unique(g)) for g in groups) <= 2 ** spec.bits, name
        assert layer.scale.shape == layer.zero_point.shape == (layer.out_features, layer.in_features // group)
    assert generate(model.eval(), short_features, max_new_tokens=3).shape[0] == 2


def test_auto_round_calibrates_on_unscored_audio_only(tiny, calibration):
    assert {u.split for u in calibration} <= {"dev-clean", "extra"}
    assert not {u.split for u in calibration} & set(SCORED_SPLITS)
    scored = [calibration[0].__class__(**{**calibration[0].__dict__, "id": "1089-134686-0000", "split": "test-clean"})]
    spec = QuantSpec(library="auto_round", scheme="weight_only", weights="int4", group_size=64, calibration=1,
                     options={"iters": 20})
    with pytest.raises(ValueError, match="unscored"):
        quantize(copy.deepcopy(tiny.model), spec, calibration=scored, processor=tiny.processor)
