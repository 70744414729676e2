import pandas as pd
import pytest

from lib.analysis import error_profile
from lib.results import ResultStore


def utterance(ref_words, hits, s, d, i, hypothesis=None, tokens=10):
    """A stored row whose raw text makes exactly these errors (errors are counted from the text when loaded)."""
    words = [f"w{chr(97 + k)}" for k in range(ref_words)]
    text = " ".join(words[:hits] + [f"x{chr(97 + k)}" for k in range(s)] + ["y"] * i)
    return {"id": "1-1-0", "split": "test-clean", "reference": " ".join(words),
            "hypothesis": text if hypothesis is None else hypothesis, "text_tokens": tokens, "audio_seconds": 60.0}


def test_error_profile_tells_a_loop_from_silence(tmp_path):
    store = ResultStore(tmp_path)
    decoding = {"decoding": {"max_new_tokens": 440}, "status": "ok"}
    # looping: one utterance runs to the cap and inserts 300 words; the other is right
    store.save("loop", decoding, [utterance(10, 10, 0, 0, 300, tokens=440), utterance(10, 9, 1, 0, 0)])
    # silent: one empty output, one that stops halfway
    store.save("silent", decoding, [utterance(10, 0, 0, 10, 0, hypothesis=" "), utterance(10, 5, 0, 5, 0)])
    store.save("fine", decoding, [utterance(10, 10, 0, 0, 0), utterance(10, 10, 0, 0, 0)])
    df = pd.DataFrame({"configuration": ["loop", "silent", "fine", "broken"], "slug": ["loop", "silent", "fine", "x"],
                       "status": ["ok", "ok", "ok", "failed"], "wer_clean": [1505.0, 75.0, 0.0, None],
                       "wer_other": [1505.0, 75.0, 0.0, None]})
    profile = error_profile(df, results_dir=tmp_path).set_index("configuration")
    assert list(profile.index) == ["silent", "loop"]  # below 20% and failed rows are left out; lowest WER first
    loop, silent = profile.loc["loop"], profile.loc["silent"]
    assert loop["WER"] == pytest.approx(1505.0)
    assert loop[["substitutions %", "deletions %", "insertions %"]].sum() == pytest.approx(loop["WER"])
    assert (loop["at token cap %"], loop["output length %"]) == (50.0, 1600.0)  # (10 + 300 + 9 + 1) / 20 words
    assert loop["failure mode"] == "loops (insertions)"
    assert (silent["WER"], silent["empty output %"], silent["output length %"]) == (75.0, 50.0, 25.0)
    assert silent["failure mode"] == "falls silent (deletions)"


@pytest.mark.parametrize("x, y, front", [
    ([1, 2, 3], [3.0, 2.0, 1.0], [0, 1, 2]),        # a trade-off: every row is on the front, smallest x first
    ([1, 2, 3], [1.0, 2.0, 3.0], [0]),              # one row beats the others on both
    ([1, 1, 2], [2.0, 1.0, 1.0], [1]),              # a tie on one column: the other decides
    ([2, 1, 1], [1.0, 1.0, 1.0], [1]),              # the exact repeat of a front row is named once
    ([1, 2, None], [2.0, 1.0, 0.1], [0, 1]),        # a row missing a value is left out
    ([3, 4, 1, 2], [5.0, 6.0, 4.0, 4.0], [2]),      # lower is better on both columns
    ([], [], []),
])
def test_the_pareto_front_keeps_the_rows_nothing_beats_on_both_columns(x, y, front):
    from lib.analysis import pareto_front

    df = pd.DataFrame({"a": pd.Series(x, dtype=float), "b": pd.Series(y, dtype=float)})
    assert list(pareto_front(df, ("a", "b")).index) == front
    flipped = pareto_front(df.rename(columns={"a": "b", "b": "a"}), ("a", "b"))  # any two columns, either order
    assert sorted(flipped.index) == sorted(front)


def test_ship_candidates_keep_accuracy_then_trade_size_for_speed():
    from lib.analysis import ship_candidates

    df = pd.DataFrame({"configuration": ["int2", "nf4", "int8", "int8 slow", "fp16", "failed"],
                       "status": ["ok", "ok", "ok", "ok", "ok", "failed"],
                       "small_mb": [236.0, 286.0, 373.0, 380.0, 571.0, None],
                       "latency_ratio": [1.7, 1.3, 1.2, 1.5, 1.1, None],
                       "delta_wer_other": [89.0, 0.9, -0.1, 0.0, 0.0, None]})
    assert list(ship_candidates(df)["configuration"]) == ["nf4", "int8", "fp16"]  # int2 loses accuracy
    assert list(ship_candidates(df, max_wer_increase=0.5)["configuration"]) == ["int8", "fp16"]
    assert list(ship_candidates(df, max_wer_increase=100)["configuration"]) == ["int2", "nf4", "int8", "fp16"]
    df["other_cpu"] = [False, False, True, False, False, None]  # int8 was timed on another CPU class
    assert list(ship_candidates(df)["configuration"]) == ["nf4", "fp16"]


AVX2 = {"cpu": {"simd": ["avx2", "fma"]}}
AVX512 = {"cpu": {"simd": ["avx2", "avx512_vnni", "avx512f", "fma"]}}


def _footprint(store, name, env, library="hqq", ratio=1.5):
    store.save(f"whisper-small__{name}__footprint", {
        "status": "ok", "environment": env, "latency_ratio": ratio, "fp32_latency": {"median": 1.0, "samples": [1.0] * 3},
        "latency": {"median": ratio, "min": ratio, "samples": [ratio] * 3},
        "size": {"stored_bytes": 1e8, "compression_pct": 70.0, "serialized": {"bytes": None}},
        "quant": {"library": library, "scheme": "weight_only", "weights": "int4", "group_size": 64}})


def test_latencies_from_another_cpu_class_are_flagged_and_re_measured_on_the_study_class(tmp_path, monkeypatch):
    import lib.machine
    from lib.footprint import measured_elsewhere
    from lib.display import OTHER_CPU_MARK, display_table
    from lib.tables import all_footprints
    from lib.machine import reference_cpu

    store = ResultStore(tmp_path)
    for name in ("a", "b"):
        _footprint(store, name, AVX2)
    _footprint(store, "c", AVX512)
    assert reference_cpu(store) == "AVX2"
    monkeypatch.setattr(lib.machine, "cpu_description", lambda: AVX2["cpu"])
    late = store.load("whisper-small__c__footprint")
    assert measured_elsewhere(late, store) and not measured_elsewhere(store.load("whisper-small__a__footprint"), store)
    from lib.runner import footprint_done

    assert footprint_done(store, "whisper-small__c__footprint", False) and not footprint_done(
        store, "whisper-small__c__footprint", False, refresh_outdated=True)  # the sweep re-measures it here
    monkeypatch.setattr(lib.machine, "cpu_description", lambda: AVX512["cpu"])
    assert not measured_elsewhere(late, store)  # re-measuring on the other class again would change nothing
    fp = all_footprints(tmp_path)
    assert list(fp["cpu"]) == ["AVX2", "AVX2", "AVX-512 VNNI"] and list(fp["other_cpu"]) == [False, False, True]
    assert display_table(fp, ["configuration", "cpu"]).index[-1].endswith(OTHER_CPU_MARK)
    assert not display_table(fp, ["configuration", "small_mb"]).index[-1].endswith(OTHER_CPU_MARK)  # no latency shown


def test_pt2e_compiled_reads_the_benchmark_or_says_how_to_run_it(tmp_path):
    import json

    from lib.benchmark_files import pt2e_compiled

    table, facts = pt2e_compiled(tmp_path / "missing.json")
    assert table is None and set(facts.values()) == {"pending (benchmarks/pt2e_inductor.py)"}
    variants = {"fp32 eager": {"median_s": 5.0, "first_call_s": 5.1, "samples": [4.9, 5.0, 5.2]},
                "fp32 compiled": {"median_s": 4.0},
                "pt2e int8 reference graph": {"median_s": 8.0},
                "pt2e int8 compiled (freezing)": {"median_s": 3.0, "first_call_s": 61.0},
                "broken": {"error": "InductorError: no C++ compiler"}}
    env = {"threads": 2, "packages": {"torch": "2.13.0", "torchao": "0.18.0"}, "git": {"commit": "abcdef0123"},
           "load_average_1_5_15": [1.2, 1.0, 1.0]}
    path = tmp_path / "pt2e.json"
    path.write_text(json.dumps({"variants": variants, "environment": env, "model": "m", "repeats": 3}))
    table, facts = pt2e_compiled(path)
    assert (facts["pt2e_compiled_int8_vs_fp32"], facts["pt2e_compiled_int8_vs_fp32_compiled"],
            facts["pt2e_compiled_reference_vs_fp32"], facts["pt2e_compiled_compile_s"]) == ("0.60", "0.75", "1.60", "61")
    assert "commit abcdef0" in facts["pt2e_compiled_provenance"] and "within 6%" in facts["pt2e_compiled_provenance"]
    assert table.loc["broken", "error"].startswith("InductorError")


def test_int4_kernel_reads_the_benchmark_or_says_how_to_run_it(tmp_path):
    import json

    from lib.benchmark_files import int4_kernel

    table, facts = int4_kernel(tmp_path / "missing.json")
    assert table is None and set(facts.values()) == {"pending (benchmarks/int4_kernel.py)"}
    rows = [{"tokens": t, "activations": a, "weights": w, "median_ms": ms, "ratio_to_fp32": ms / base}
            for t, base in ((1500, 100.0), (1, 1.0))
            for (a, w), ms in zip((("float32", "float"), ("float32", "int4 opaque"), ("bfloat16", "float"),
                                   ("bfloat16", "int4 opaque")), (base, 80 * base, 4 * base, 2 * base))]
    env = {"threads": 2, "packages": {"torch": "2.13.0", "torchao": "0.18.0"}, "git": {"commit": "abcdef0123"}}
    path = tmp_path / "int4.json"
    path.write_text(json.dumps({"rows": rows, "environment": env, "linear": [512, 2048], "group_size": 64,
                                "repeats": 3}))
    table, facts = int4_kernel(path)
    assert (facts["int4_kernel_fp32_opaque"], facts["int4_kernel_bf16_opaque"], facts["int4_kernel_bf16_float"]) == (
        "80.0", "2.0", "4.0")
    assert facts["int4_kernel_linear"] == "512 → 2048, group 64" and "commit abcdef0" in facts["int4_kernel_provenance"]
    assert table.loc["float32 · int4 opaque", "decoder step (1 token) ms"] == 80.0
    assert list(table.index) == ["float32 · float", "float32 · int4 opaque", "bfloat16 · float", "bfloat16 · int4 opaque"]


def test_rows_from_the_older_decoding_are_marked_and_counted(tmp_path, monkeypatch):
    import lib.display
    from lib.display import display_table, status_counts

    monkeypatch.setattr(lib.display, "RUNS_DIR", tmp_path)  # no run pages: names stay plain

    df = pd.DataFrame({"configuration": ["fp32", "int8", "int2", "fx"], "status": ["ok", "ok", "ok", "failed"],
                       "older_decoding": [False, True, True, False], "wer_clean": [3.5, 3.6, 90.0, None]})
    assert status_counts(df) == "3 ok (2 marked ‡: decoded with an older recipe, see Setup), 1 failed"
    assert list(display_table(df).index) == ["fp32", "int8 ‡", "int2 ‡", "fx"]
    assert status_counts(df.assign(older_decoding=False)) == "3 ok, 1 failed"


def test_configuration_names_link_to_their_run_pages_and_read_as_words(tmp_path, monkeypatch):
    import lib.display
    from lib.display import display_table

    monkeypatch.setattr(lib.display, "RUNS_DIR", tmp_path)
    (tmp_path / "whisper-base__quanto-static-int8-aint8-cal4__x.ipynb").write_text("{}")
    df = pd.DataFrame({"configuration": ["quanto static w-int8 a-int8 cal 4", "fp32"], "status": "ok",
                       "slug": ["whisper-base__quanto-static-int8-aint8-cal4__x", "whisper-base__fp32__x"],
                       "older_decoding": [True, False], "error": None, "wer_clean": [3.6, 3.5]})
    view = display_table(df)
    assert list(view.index) == ['<a href="runs/whisper-base__quanto-static-int8-aint8-cal4__x.html">quanto static '
                                'w-int8 a-int8, 4 calibration utterances</a> ‡', "fp32"]
    assert "error" not in view.columns and "<a href=" in view.to_html()  # no empty column; links stay HTML


def test_latency_by_cpu_puts_a_second_cpu_class_beside_the_study_class(tmp_path):
    from lib.cpu_classes import latency_by_cpu

    assert latency_by_cpu(tmp_path)[0] is None  # before benchmarks/cpu_class_latency.py ran
    main, second = ResultStore(tmp_path), ResultStore(tmp_path / "by-cpu" / "avx-512-vnni")
    _footprint(main, "hqq-wo-int4-g64", AVX2, ratio=1.6)
    _footprint(main, "pt-dyn", AVX2, library="none", ratio=1.0)  # only in the study: not shown
    _footprint(second, "hqq-wo-int4-g64", AVX512, ratio=1.1)
    table, facts = latency_by_cpu(tmp_path)
    assert list(table.columns) == ["latency ratio (AVX2)", "pairs, other CPU % (AVX2)",
                                   "latency ratio (AVX-512 VNNI)", "pairs, other CPU % (AVX-512 VNNI)"]
    # records without a foreign CPU share are shown, marked ¶: not evidence
    assert table.values.tolist() == [["1.60 ¶", "3, not recorded", "1.10 ¶", "3, not recorded"]]
    assert facts["cpu_classes_compared"] == "AVX2 and AVX-512 VNNI"
    assert facts["cpu_fp32_seconds"] == "1.0 s on AVX2, 1.0 s on AVX-512 VNNI"
    assert facts["cpu_faster"] == "on AVX2: none; on AVX-512 VNNI: none"
    assert facts["cpu_quiet"] == "0 of 1 on AVX2; 0 of 1 on AVX-512 VNNI"


def test_only_a_quiet_timing_counts_as_evidence(tmp_path):
    from lib.cpu_classes import latency_by_cpu
    from lib.ship import quiet_timing
    from lib.tables import class_stores, latency_by_class

    main, second = ResultStore(tmp_path), ResultStore(tmp_path / "by-cpu" / "avx-512-vnni")
    _footprint(main, "hqq-wo-int4-g64", AVX2, ratio=1.6)
    for name, group, share in (("hqq-wo-int4-g64", 64, 0.01), ("hqq-wo-int4-g32", 32, 0.20)):
        _footprint(second, name, AVX512, ratio=0.5)
        slug = f"whisper-small__{name}__footprint"
        stored = second.load(slug)
        second.save(slug, {**stored, "latency_ratio_low": 0.45, "latency_ratio_high": 0.55,
                           "quant": {**stored["quant"], "group_size": group},
                           "timing": {"pairs": 10, "ratios": [0.5] * 10, "foreign_cpu_share": share}})
    table, facts = latency_by_cpu(tmp_path)
    assert facts["cpu_quiet"] == "0 of 1 on AVX2; 1 of 2 on AVX-512 VNNI"
    assert "¶" not in table.loc["HQQ weight-only int4 g64", "latency ratio (AVX-512 VNNI)"]
    assert table.loc["HQQ weight-only int4 g32", "latency ratio (AVX-512 VNNI)"].endswith("¶")  # 20% foreign
    assert facts["cpu_faster"] == "on AVX2: none; on AVX-512 VNNI: HQQ weight-only int4 g64"
    stores = class_stores(tmp_path)
    quiet = latency_by_class("whisper-small__hqq-wo-int4-g64__footprint", stores)
    noisy = latency_by_class("whisper-small__hqq-wo-int4-g32__footprint", stores)
    assert quiet_timing(quiet, "AVX-512 VNNI") and not quiet_timing(noisy, "AVX-512 VNNI")
    assert not quiet_timing(quiet, "AVX2")  # 3 samples, no foreign share recorded


def test_benchmark_by_cpu_puts_each_cpu_class_in_a_column(tmp_path):
    import json

    from lib.benchmark_files import benchmark_by_cpu

    def write(path, env, ratio):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"environment": env, "variants": {
            "fp32 eager": {"ratio_to_fp32_eager": 1.0}, "pt2e int8 compiled (freezing)": {"ratio_to_fp32_eager": ratio}}}))

    write(tmp_path / "pt2e_inductor.json", AVX2, 0.6)
    assert benchmark_by_cpu("pt2e_inductor", tmp_path) is None  # one class: nothing to compare
    write(tmp_path / "by-cpu" / "avx-512-vnni" / "pt2e_inductor.json", AVX512, 0.3)
    table = benchmark_by_cpu("pt2e_inductor", tmp_path)
    assert list(table.columns) == ["× fp32 (AVX2)", "× fp32 (AVX-512 VNNI)"]
    assert table.loc["pt2e int8 compiled (freezing)"].tolist() == [0.6, 0.3]
    from lib.benchmark_files import per_class_text

    assert per_class_text(table, "pt2e int8 compiled (freezing)") == "0.60× on AVX2, 0.30× on AVX-512 VNNI"


def test_a_corrupt_summary_reads_as_unreadable_in_the_tables(tmp_path, caplog):
    from lib.grids import expand_grid
    from lib.tables import all_footprints, grid_table

    grid = tmp_path / "g.yml"
    grid.write_text("defaults: {model: 'test:tiny', split: [test-clean], limit: 1}\nfootprint: false\n"
                    "runs: [{library: none}, {library: hqq, scheme: weight_only, weights: int4, group_size: 64}]\n")
    fp32, hqq = (j.slug for j in expand_grid(grid))
    store = ResultStore(tmp_path / "r")
    store.save(fp32, {"status": "failed", "error": "boom", "config": {"quant": {"library": "none"}}})
    store.summary_path(hqq).write_text('{"status": "ok", "metrics": {')  # torn copy
    (tmp_path / "fp").mkdir()
    (tmp_path / "fp" / "x__footprint.json").write_text("<<<<<<< HEAD\n")
    with caplog.at_level("WARNING", logger="lib.results"):
        table = grid_table(grid, results_dir=tmp_path / "r", footprint_dir=tmp_path / "fp")
        footprints = all_footprints(tmp_path / "fp")
    assert list(table["status"]) == ["failed", "unreadable"] and footprints.empty  # named, not "pending"
    messages = [r.getMessage() for r in caplog.records]
    assert sum(f"{hqq}.json, line 1: not valid JSON" in m for m in messages) == 1
    assert sum("x__footprint.json, line 1: not valid JSON" in m for m in messages) == 1


def test_re_timing_on_the_study_class_keeps_the_other_class_timing(tmp_path, monkeypatch):
    import lib.machine
    from lib.config import QuantSpec
    from lib.footprint import measure_footprint
    from lib.tables import class_stores, latency_by_class

    store = ResultStore(tmp_path)
    for name in ("a", "b"):
        _footprint(store, name, AVX2)
    slug = "whisper-small__torch_cast-bfloat16__footprint"
    store.save(slug, {**store.load("whisper-small__a__footprint"), "slug": slug, "latency_ratio": 0.5,
                      "environment": AVX512, "quant": {"library": "torch_cast", "weights": "bfloat16"}})
    monkeypatch.setattr(lib.machine, "cpu_description", lambda: AVX2["cpu"])
    monkeypatch.setattr("lib.footprint.load_model", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("re-timed")))
    redone = measure_footprint(QuantSpec(library="torch_cast", weights="bfloat16"), results_dir=tmp_path,
                               refresh_outdated=True)
    assert redone["status"] == "failed"  # the stand-in measurement; what matters is what was kept
    kept = latency_by_class(slug, class_stores(tmp_path))
    assert kept["latency_ratio_avx_512_vnni"] == 0.5


def test_a_recipe_between_two_uniform_sizes_is_named_with_the_next_larger_uniform_not_called_a_win():
    from lib.analysis import recipe_verdict

    df = pd.DataFrame({"configuration": ["u3", "u4", "mix"], "recipe": ["uniform", "uniform", "mix-top5-int8"],
                       "status": "ok", "small_mb": [278.0, 298.0, 292.0], "kld_other": [0.19, 0.02, 0.11],
                       "wer_other": [27.5, 10.3, 14.6]})
    verdict = recipe_verdict(df)
    assert (verdict.outcome, verdict.mixed, verdict.wins) == ("none beats", 1, ())
    (mix, larger), = verdict.front_only
    assert (mix.name, mix.small_mb, mix.kld_other, mix.wer_other) == ("mix", 292.0, 0.11, 14.6)
    assert (larger.name, larger.small_mb, larger.kld_other) == ("u4", 298.0, 0.02)


def test_a_verdict_is_shown_as_its_sentence_where_a_chapter_glues_or_displays_it():
    from IPython.core.interactiveshell import InteractiveShell

    from lib.verdicts import NO_INT8_ANSWER, Int8Answer

    verdict = Int8Answer("no results")
    assert InteractiveShell.instance().display_formatter.format(verdict)[0]["text/plain"] == NO_INT8_ANSWER
    assert str(verdict) == verdict.sentence() and repr(verdict).startswith("Int8Answer(outcome='no results'")
