"""Per-layer recipes, the sensitivity pass and the mixed-precision grid, on the tiny random Whisper (2+2 layers)."""
import copy
import dataclasses
import json
from types import SimpleNamespace

import pytest

from lib.config import ConfigError, QuantSpec, RunConfig, layer_at_depth

HQQ = dict(library="hqq", scheme="weight_only", weights="int3", group_size=64)


def quantized_names(model):
    from lib.quantize.common import outer_quantized_modules

    return sorted(name for name, _kind in outer_quantized_modules(model))


def linears(model, *patterns):
    import fnmatch

    from torch import nn

    return sorted(n for n, m in model.named_modules() if type(m) is nn.Linear
                  and any(fnmatch.fnmatchcase(n, p) for p in patterns))


@pytest.mark.parametrize("group", ["encoder.0.self_attn", "encoder.1.fc2", "decoder.0.encoder_attn",
                                   "decoder.1.self_attn", "decoder.1.fc1", "proj_out"])
def test_a_group_spec_quantizes_only_that_group(tiny_model, group):
    from lib.quantize import quantize
    from lib.mixed_precision import group_of

    g = group_of(group)
    expected = linears(tiny_model, *g.patterns)
    model, meta = quantize(tiny_model, g.spec(depth=2), measure_error=False)
    assert quantized_names(model) == expected and meta["quantized_count"] == len(expected) > 0


def test_stored_bytes_follow_the_recipe(tiny):
    from lib.metrics import stored_bytes
    from lib.quantize import quantize
    from lib.mixed_precision import recipe_stored_bytes

    one = QuantSpec(**HQQ, layers=("model.decoder.layers.*.fc1",), recipe="only-dec-fc1")
    mixed = QuantSpec(**{**HQQ, "weights": "int4"}, overrides={"model.encoder.*": {"weights": "int8"}}, recipe="enc8")
    sizes = {}
    for spec in (QuantSpec(), QuantSpec(**HQQ), one, mixed, QuantSpec(**{**HQQ, "weights": "int4"}),
                 QuantSpec(**{**HQQ, "weights": "int8"})):
        model, _ = quantize(copy.deepcopy(tiny.model), spec, measure_error=False)
        sizes[spec.slug] = stored_bytes(model)
        assert recipe_stored_bytes(spec, "test:tiny") == sizes[spec.slug], spec.slug  # the estimate is exact
    assert sizes["hqq-wo-int3-g64"] < sizes["hqq-wo-int3-g64-only-dec-fc1"] < sizes["fp32"]
    assert sizes["hqq-wo-int4-g64"] < sizes["hqq-wo-int4-g64-enc8"] < sizes["hqq-wo-int8-g64"]


def test_overrides_give_the_stated_bit_widths(tiny_model):
    from lib.quantize import quantize

    spec = QuantSpec(**{**HQQ, "weights": "int4"}, recipe="mix", depth=2,
                     overrides={"model.encoder.layers.1.*": {"weights": "int8", "group_size": 32},
                                "model.encoder.*": {"weights": "int2"}})  # the first matching pattern wins
    model, meta = quantize(tiny_model, spec, measure_error=False)
    got = {n: (m.meta["nbits"], m.meta["group_size"]) for n, m in model.named_modules() if type(m).__name__ == "HQQLinear"}
    assert got["model.encoder.layers.1.fc1"] == (8, 32)
    assert got["model.encoder.layers.0.fc1"] == (2, 64)
    assert got["model.decoder.layers.0.fc2"] == (4, 64)
    assert meta["recipe"]["layers_by_setting"] == {"nbits=8, group_size=32": 6, "nbits=2, group_size=64": 6,
                                                   "nbits=4, group_size=64": 20}


@pytest.mark.parametrize("name, model_layers, depth, expected", [
    ("model.encoder.layers.7.fc2", 12, 6, "model.encoder.layers.3.fc2"),
    ("model.encoder.layers.6.fc2", 12, 6, "model.encoder.layers.3.fc2"),
    ("model.decoder.layers.11.encoder_attn.q_proj", 12, 6, "model.decoder.layers.5.encoder_attn.q_proj"),
    ("model.decoder.layers.0.fc1", 12, 6, "model.decoder.layers.0.fc1"),
    ("model.encoder.layers.1.fc1", 2, 6, "model.encoder.layers.3.fc1"),
    ("model.encoder.layers.4.fc1", 6, 6, "model.encoder.layers.4.fc1"),
    ("proj_out", 12, 6, "proj_out"),
])
def test_layer_indices_map_by_relative_depth(name, model_layers, depth, expected):
    assert layer_at_depth(name, model_layers, depth) == expected


def test_a_shallow_recipe_covers_both_deeper_layers(tiny_model):
    from lib.quantize import quantize

    spec = QuantSpec(**HQQ, layers=("model.encoder.layers.0.fc2",), depth=1, recipe="enc0-fc2")
    model, _ = quantize(tiny_model, spec, measure_error=False)
    assert quantized_names(model) == ["model.encoder.layers.0.fc2", "model.encoder.layers.1.fc2"]


def test_recipe_slugs_and_records_round_trip_and_plain_specs_are_unchanged():
    spec = QuantSpec(**HQQ, depth=6, layers=["model.encoder.layers.3.fc2"], recipe="only-enc3-fc2")
    assert spec.slug == "hqq-wo-int3-g64-only-enc3-fc2" and "recipe only-enc3-fc2" in spec.label
    record = json.loads(json.dumps(RunConfig(quant=spec).to_dict()))
    assert RunConfig.from_dict(record) == RunConfig(quant=spec)
    plain = QuantSpec(**HQQ)
    assert set(plain.to_dict()) == {"library", "scheme", "weights", "activations", "granularity", "group_size",
                                    "scope", "proj_out", "calibration", "options"}
    assert plain.slug == "hqq-wo-int3-g64"


def test_a_yaml_grid_declares_a_recipe(tmp_path):
    from lib.grids import expand_grid

    grid = tmp_path / "mine.yml"
    grid.write_text("""title: Mine
defaults: {model: "embedded:whisper-base", split: [test-clean]}
runs:
  - {library: hqq, scheme: weight_only, weights: int4, group_size: 64, recipe: enc-fc1-int8,
     overrides: {"model.encoder.*": {weights: int8}, "model.decoder.layers.*.fc1": {weights: int8}}}
expand:
  - {library: hqq, scheme: weight_only, weights: [int3, int2], group_size: 64, depth: 6, recipe: only-enc0-fc2,
     layers: [model.encoder.layers.0.fc2]}
""")
    jobs = expand_grid(grid)
    assert [j.config.quant.slug for j in jobs] == ["hqq-wo-int4-g64-enc-fc1-int8", "hqq-wo-int3-g64-only-enc0-fc2",
                                                    "hqq-wo-int2-g64-only-enc0-fc2"]
    assert jobs[0].config.quant.overrides[0] == ("model.encoder.*", (("weights", "int8"),))
    assert jobs[1].config.quant.layers == ("model.encoder.layers.0.fc2",)


def test_two_recipes_with_one_name_in_a_grid_are_refused(tmp_path):
    from lib.grids import expand_grid

    grid = tmp_path / "clash.yml"
    grid.write_text("""title: Clash
runs:
  - {library: hqq, scheme: weight_only, weights: int3, group_size: 64, recipe: mine, layers: ["model.encoder.*"]}
  - {library: hqq, scheme: weight_only, weights: int3, group_size: 64, recipe: mine, layers: ["model.decoder.*"]}
""")
    with pytest.raises(ConfigError, match="share the slug"):
        expand_grid(grid)


@pytest.mark.parametrize("fields, message", [
    ({"overrides": {"model.encoder.*": {"bits": 8}}, "recipe": "x"}, "unknown: \\['bits'\\]"),
    ({"overrides": {"model.encoder.*": {"group_size": 0}}, "recipe": "x"}, "group_size must be a positive"),
    ({"layers": ["model.encoder.*"]}, "needs a recipe name"),
    ({"layers": ["model.encoder.*"], "recipe": "Bad Name"}, "needs a recipe name"),
    ({"layers": ["model.encoder.layers.3.fc2"], "recipe": "x"}, "set depth"),
    ({"layers": ["proj_out"], "recipe": "x"}, "proj_out: true"),
    ({"recipe": "x"}, "only apply with layers or overrides"),
    ({"layers": ["model.encoder.*"], "recipe": "x", "depth": 0}, "depth must be a positive"),
])
def test_bad_recipes_are_refused_when_built(fields, message):
    with pytest.raises(ConfigError, match=message):
        QuantSpec(**HQQ, **fields)


@pytest.mark.parametrize("spec, message", [
    (QuantSpec(library="torch_ao", scheme="dynamic", weights="int8", activations="int8", recipe="x",
               layers=("model.encoder.*",)), "implemented for hqq"),
    (QuantSpec(**HQQ, overrides={"model.encoder.*": {"weights": "int5"}}, recipe="x"), "override 'model.encoder.\\*'"),
    (QuantSpec(**HQQ, overrides={"model.encoder.*": {"group_size": 48}}, recipe="x"), "group_size=48"),
])
def test_recipes_a_library_cannot_run_are_refused_when_checked(spec, message):
    from lib.checks import check_quant

    with pytest.raises(ConfigError, match=message):
        check_quant(spec)


@pytest.mark.parametrize("fields", [{"layers": ("model.encoder.layers.*.fc3",)},
                                    {"overrides": {"model.decoder.layers.*.mlp": {"weights": "int8"}}}])
def test_a_pattern_that_matches_no_layer_is_one_clear_error(tiny_model, fields):
    from lib.quantize import quantize

    with pytest.raises(ConfigError, match="matches no Linear layer of this model.*fix the pattern"):
        quantize(tiny_model, QuantSpec(**HQQ, recipe="x", **fields), measure_error=False)


def test_groups_of_the_tiny_model_and_of_whisper_base(tiny):
    from lib.sensitivity import groups, model_groups

    found = model_groups(tiny.model)
    assert len(found) == 1 + 2 * 3 + 2 * 4 + 1 == 16
    assert len(groups(6, 6)) == 44
    assert found[0].name == "conv" and found[-1].name == "proj_out"
    assert [g.tag for g in found[7:11]] == ["dec0-sattn", "dec0-xattn", "dec0-fc1", "dec0-fc2"]


def test_conv_stem_is_fake_quantized_in_float(tiny_model):
    from lib.sensitivity import fake_quantize_conv

    before = tiny_model.model.encoder.conv1.weight.detach().clone()
    fake_quantize_conv(tiny_model, "int3", 64)
    after = tiny_model.model.encoder.conv1.weight
    assert after.dtype == before.dtype and after.shape == before.shape
    assert 0 < float((after - before).norm() / before.norm()) < 0.5
    assert len(set(after[0].flatten()[:64].tolist())) <= 8  # 3 bits: at most 8 levels in a group


@pytest.fixture
def prepared(tiny):
    """Two fake utterances with fp32's tokens, features, log-probabilities and encoder states (tiny model)."""
    import torch

    from lib.decoding import END_OF_TEXT
    from lib.fidelity import teacher_forced_logprobs
    from lib.sensitivity import Item, encoder_layer_inputs

    model = copy.deepcopy(tiny.model).eval()
    torch.manual_seed(0)
    items = []
    for i, split in enumerate(("test-clean", "test-other")):
        feats = torch.randn(1, 80, 3000)
        tokens = [400 + i, 500, 600]
        hidden, inputs = encoder_layer_inputs(model, feats)
        logp = teacher_forced_logprobs(model, None, tokens + [END_OF_TEXT], hidden)
        items.append(Item(SimpleNamespace(id=f"1-2-{i}", split=split), tokens, feats, logp, hidden, inputs))
    return SimpleNamespace(model=model), items, "tiny__fp32"


def test_the_sensitivity_pass_scores_each_group_and_resumes(tmp_path, prepared):
    from lib.sensitivity import run_sensitivity, sensitivity_table

    first = run_sensitivity(limit_groups=3, results_dir=tmp_path, prepared=prepared, progress=False)
    assert first["status"] == "partial" and first["groups_done"] == 3
    assert len(first["subset"]["ids"]) == 2 and first["data"]["manifest_sha256"]
    done = run_sensitivity(results_dir=tmp_path, prepared=prepared, progress=False)
    assert done["status"] == "ok" and done["groups_done"] == 16
    table = sensitivity_table(results_dir=tmp_path)
    assert len(table) == 16 and (table["kld"] > 0).all() and table["rank"].tolist() == list(range(1, 17))
    int2 = run_sensitivity(bits=2, results_dir=tmp_path, prepared=prepared, progress=False)
    assert int2["groups_done"] == 8 and sensitivity_table(results_dir=tmp_path)["kld_int2"].notna().sum() == 8


@pytest.mark.parametrize("group", ["encoder.1.fc1", "decoder.0.fc2"])
def test_reusing_fp32_encoder_states_changes_nothing(prepared, group):
    from lib.mixed_precision import group_of
    from lib.sensitivity import quantize_group, score

    loaded, items, _ = prepared
    model = copy.deepcopy(loaded.model)
    g = group_of(group)
    quantize_group(model, g, "int3", 64)
    full = score(model, items, reuse_encoder=False)
    fast = score(model, items, reuse_encoder=g.side == "decoder", from_layer=g.layer if g.side == "encoder" else None)
    assert fast["kld_mean"] == pytest.approx(full["kld_mean"], rel=1e-5)


def test_the_mixed_grid_is_written_from_a_map_and_expands(tmp_path, tiny):
    import pandas as pd

    from lib.grids import expand_grid
    from lib.mixed_precision import mixed_grid_text
    from lib.sensitivity import model_groups

    names = [g.name for g in model_groups(tiny.model)]
    table = pd.DataFrame({"group": names, "kld": [1.0 / (i + 1) for i in range(len(names))]})
    path = tmp_path / "mixed.yml"
    path.write_text(mixed_grid_text(table, model="test:tiny", depth=2))
    jobs = expand_grid(path)
    slugs = [j.config.quant.slug for j in jobs]
    assert slugs[:7] == ["hqq-wo-int3-g64", "hqq-wo-int4-g64", "hqq-wo-int8-g64", "hqq-wo-int3-g32",
                         "hqq-wo-int4-g32", "hqq-wo-int3-g128", "hqq-wo-int4-g128"]
    assert "hqq-wo-int3-g64-only-conv" not in slugs  # the conv stem cannot be an HQQ spec
    assert slugs[7] == "hqq-wo-int3-g64-only-enc0-sattn" and slugs[16] == "hqq-wo-int3-g64-only-projout"
    assert any(s.startswith("hqq-wo-int3-g64-mix-top") for s in slugs)
    assert slugs[-1] == "hqq-wo-int4-g64-enc-fc1-int8"


def test_the_recipe_table_lists_configurations_without_results_as_not_run(monkeypatch):
    import pandas as pd

    import lib.tables as tables

    monkeypatch.setattr(tables, "chapter_table", lambda grid, limit=None: pd.DataFrame(
        {"slug": ["whisper-base__hqq-wo-int4-g64-enc-fc1-int8__test-clean+test-other"], "status": ["pending"],
         "footprint": ["pending"], "configuration": ["x"]}))
    df = tables.recipe_table("scope")
    assert df["status"].tolist() == ["not run"] and df["footprint"].tolist() == ["not run"]


def test_the_committed_mixed_grid_is_part_of_the_study_and_expands():
    from lib.grids import GRIDS, expand_grid, grid_path

    slugs = [j.config.quant.slug for j in expand_grid(grid_path("mixed"))]
    assert "mixed" in GRIDS and len(slugs) == len(set(slugs))
    assert slugs[:3] == ["hqq-wo-int3-g64", "hqq-wo-int4-g64", "hqq-wo-int8-g64"]
    assert sum("-only" in s for s in slugs) == 10 and slugs[-1] == "hqq-wo-int4-g64-enc-fc1-int8"
    assert sum("-mix-top" in s for s in slugs) >= 6


def _confirmation_inputs(least_kld):
    import pandas as pd

    sensitivity = pd.DataFrame({"group": ["proj_out", "decoder.5.fc2", "decoder.1.fc2", "decoder.0.fc1"],
                                "label": ["proj_out", "d5 fc2", "d1 fc2", "d0 fc1"], "kld": [0.07, 0.01, 3e-4, 2e-4],
                                "rank": [1, 2, 3, 4]})
    slug = "whisper-base__hqq-wo-int3-g64-only-{}__test-clean+test-other"
    recipes = pd.DataFrame({
        "slug": [slug.format(t) for t in ("projout", "dec5-fc2", "dec1-fc2", "dec0-fc1")] + ["whisper-base__hqq-wo-int3-g64__test-clean+test-other"],
        "status": ["ok", "ok", "ok", "not run", "ok"], "kld_other": [0.075, 0.012, least_kld, None, 1.0],
        "wer_other": [15.1, 10.0, 9.4, None, 50.0], "delta_wer_other": [5.8, 0.7, 0.0, None, 40.0],
        "delta_wer_other_low": [1.9, 0.1, -0.3, None, 30.0], "delta_wer_other_high": [18.2, 1.3, 0.3, None, 50.0]})
    return sensitivity, recipes


def test_the_confirmation_pairs_each_single_group_row_with_its_map_entry():
    from lib.analysis import confirmation_table, confirmation_verdict

    table = confirmation_table(*_confirmation_inputs(least_kld=2e-4))
    assert table["group"].tolist() == ["proj_out", "d5 fc2", "d1 fc2", "d0 fc1"]  # the uniform row is left out
    assert table["end"].tolist() == ["most", "most", "least", "least"]
    assert table["status"].tolist()[-1] == "not run" and table["kld_other"].isna().tolist()[-1]
    verdict = confirmation_verdict(table)
    assert verdict.outcome == "holds" and (verdict.most.n, verdict.most.above) == (2, 2)
    assert (verdict.done, verdict.total, verdict.pending) == (3, 4, 1)
    assert (verdict.least.n, verdict.least.above, verdict.least.below) == (1, 0, 0)


def test_the_confirmation_says_when_the_ends_overlap():
    from lib.analysis import confirmation_table, confirmation_verdict

    verdict = confirmation_verdict(confirmation_table(*_confirmation_inputs(least_kld=0.02)))
    assert verdict.outcome == "overlap" and verdict.overlap_group == "d1 fc2"
    assert (verdict.least.kld_min, verdict.least.kld_max) == (0.02, 0.02)


def test_a_recipe_is_measured_against_the_uniform_row_of_its_own_group_size():
    import pandas as pd

    from lib.analysis import recipe_gains

    df = pd.DataFrame({"configuration": ["u4 g64", "u4 g32", "m"], "recipe": ["uniform", "uniform", "mix-top5-int8"],
                       "weights": "int4", "group_size": [64, 32, 64], "status": "ok",
                       "small_mb": [298.0, 323.0, 310.0], "kld_other": [0.02, 0.015, 0.0125]})
    assert recipe_gains(df).endswith("int4 g64 (KLD 0.02) k=5 0.0125 (-38%, +12 MB)")


def test_the_recipe_verdict_compares_one_decoding_recipe_and_names_every_winner():
    import pandas as pd

    from lib.analysis import recipe_verdict

    df = pd.DataFrame({"configuration": ["u4 g64", "u4 g32", "m5", "m11"],
                       "recipe": ["uniform", "uniform", "mix-top5-int8", "mix-top11-int8"], "status": "ok",
                       "small_mb": [298.0, 323.0, 310.0, 322.0], "kld_other": [0.02, 0.015, 0.0125, 0.012],
                       "wer_other": [10.3, 11.7, 10.0, 9.9], "older_decoding": [False, False, False, False]})
    verdict = recipe_verdict(df)
    assert verdict.outcome == "beats" and [w.recipe.name for w in verdict.wins] == ["m5", "m11"]
    assert [w.uniform.name for w in verdict.wins] == ["u4 g32", "u4 g32"] and verdict.wins[0].recipe.small_mb == 310.0
    assert verdict.left_out == ()
    df.loc[1, "older_decoding"] = True  # the only beaten row was decoded with an older decoding recipe: left out
    verdict = recipe_verdict(df)
    assert (verdict.outcome, verdict.mixed, verdict.wins, verdict.left_out) == ("none beats", 2, (), ("u4 g32",))


def test_the_recipe_verdict_says_when_a_win_is_within_the_kld_intervals(tmp_path):
    import pandas as pd

    from lib.analysis import recipe_verdict

    df = pd.DataFrame({"configuration": ["u4", "m5"], "recipe": ["uniform", "mix-top5-int8"], "status": "ok",
                       "small_mb": [323.0, 310.0], "kld_other": [0.015, 0.0125], "wer_other": [10.3, 10.0],
                       "kld_other_low": [0.011, 0.009], "kld_other_high": [0.02, 0.017]})
    win, = recipe_verdict(df, results_dir=tmp_path).wins
    assert win.kld_overlap and win.recipe.kld_interval == (0.009, 0.017) and win.paired is None
    df["kld_other_high"] = [0.02, 0.0105]  # the recipe's whole interval lies below the uniform row's
    win, = recipe_verdict(df, results_dir=tmp_path).wins
    assert not win.kld_overlap


def test_the_int8_question_is_answered_in_wer_and_in_kld(tmp_path):
    import pandas as pd

    from lib.analysis import int8_answer

    df = pd.DataFrame({"configuration": ["u8", "m21", "community"],
                       "recipe": ["uniform", "mix-top21-int8", "enc-fc1-int8"], "weights": ["int8", "int4", "int4"],
                       "status": "ok", "small_mb": [397.0, 348.0, 355.0], "kld_other": [6e-05, 0.0045, 0.007],
                       "wer_other": [9.36, 8.99, 9.16]})
    answer = int8_answer(df, results_dir=tmp_path)
    assert (answer.outcome, answer.recipe.name, answer.recipe.small_mb, answer.int8.small_mb) == (
        "answered", "int4 + top 21 at int8", 348.0, 397.0)
    assert answer.wer_matches and not answer.kld_matches and answer.paired is None
    assert answer.community is not None and answer.community.small_mb == 355.0
    df.loc[1, "wer_other"] = 12.0  # worse in WER too, and no longer ahead of the community recipe
    answer = int8_answer(df, results_dir=tmp_path)
    assert not answer.wer_matches and not answer.kld_matches and answer.community is None
