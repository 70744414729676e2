"""The ship box picks by code, per CPU class, and the sample's provenance is read from its files."""
import pandas as pd
import pytest

from lib.ship import class_column, ship_box, ship_markdown


def row(name, mb, ratio, low, high, dwer=(0.1, -0.5, 0.8), agree=99.5, dnll=(0.001, -0.002, 0.004), status="ok",
        quiet=True):
    d, lo, hi = dwer
    out = {"configuration": name, "slug": name, "library": "HQQ", "status": status, "small_mb": mb,
           "compression_pct": 100 * (1 - mb / 967), class_column("AMX"): ratio, class_column("AMX", "_low"): low,
           class_column("AMX", "_high"): high, class_column("AMX", "_quiet"): quiet}
    for split in ("clean", "other"):
        out.update({f"delta_wer_{split}": d, f"delta_wer_{split}_low": lo, f"delta_wer_{split}_high": hi,
                    f"delta_wer_{split}_ci": f"[{lo:+.2f}, {hi:+.2f}]", f"agree_{split}": agree,
                    f"agree_{split}_low": agree - 0.3, f"agree_{split}_high": min(100, agree + 0.3),
                    f"dnll_{split}": dnll[0], f"dnll_{split}_low": dnll[1], f"dnll_{split}_high": dnll[2]})
    return out


@pytest.fixture
def table():
    return pd.DataFrame([
        row("int8 fast", 370, 0.70, 0.66, 0.75),
        row("int8 as fast", 372, 0.72, 0.69, 0.80),  # overlaps the fastest: a tie, not a rank
        row("int4 small", 280, 1.30, 1.25, 1.35, dwer=(0.8, -0.2, 1.4), agree=98.5, dnll=(0.02, 0.01, 0.03)),
        row("int3 tiny", 250, 2.10, 2.0, 2.2, dwer=(3.0, 1.0, 4.5), agree=96.0, dnll=(0.2, 0.1, 0.3)),
        row("int2 broken", 230, 1.9, 1.8, 2.0, dwer=(400, 300, 500), agree=40.0, dnll=(3, 2, 4)),
        row("int8 wrong", 371, 0.50, 0.45, 0.55, dwer=(2.5, 1.6, 4.0), agree=97.0),  # fast, outside the budget
    ])


def test_each_goal_gets_the_configuration_its_rule_names(table):
    box = ship_box(table, "AMX")
    assert box["fastest"]["configuration"] == "int8 fast" and box["fastest"]["ties"] == ["int8 as fast"]
    assert box["smallest_no_loss"]["configuration"] == "int8 fast"  # int4 small: ΔNLL upper bound 0.03 > 0.01
    assert box["max_compression"]["configuration"] == "int3 tiny"  # works: ΔWER upper bound 4.5, agreement 96%
    avoided = {a["configuration"]: a["reason"] for a in box["avoid"]}
    assert avoided["int2 broken"].startswith("collapses") and "int3 tiny" in avoided  # 2.1x slower on AMX


def test_a_latency_without_an_interval_cannot_be_the_fastest_pick(table):
    table.loc[table["configuration"] == "int8 fast", [class_column("AMX", "_low"), class_column("AMX", "_high")]] = 0.70
    box = ship_box(table, "AMX")  # median of 3, no interval: "its whole interval below fp32's" cannot hold
    assert box["fastest"]["configuration"] == "int8 as fast"


def test_nothing_faster_than_fp32_is_said_plainly(table):
    slow = table.assign(**{class_column("AMX"): 1.2, class_column("AMX", "_low"): 1.1,
                           class_column("AMX", "_high"): 1.3})
    box = ship_box(slow, "AMX")
    assert box["fastest"]["configuration"] is None and "keep fp32 for speed" in box["fastest"]["reason"]
    assert "keep fp32 for speed" in ship_markdown(slow, ["AMX"])


def test_provenance_counts_come_from_the_manifest_and_sources(tmp_path):
    from conftest import make_librispeech
    from lib.sample_sources import sample_overview, sources_by_count, speaker_counts

    root = make_librispeech(tmp_path / "L")
    (root / "SOURCES.md").write_text(
        "| split | utterance | dur s | from | how stored |\n|---|---|---|---|---|\n"
        "| test-clean | 61-70968-0000 | 1.0 | a/b @ `1` : `x.flac` | original FLAC bytes copied unchanged |\n"
        "| test-clean | 61-70968-0001 | 1.5 | c/d @ `2` : `y.wav` | WAV (16 kHz) re-encoded losslessly to FLAC |\n")
    overview = sample_overview(root)
    assert overview.loc["test-clean", "utterances"] == 3 and overview.loc["test-clean", "speakers"] == 2
    assert overview.loc["test-clean", "original FLAC"] == 1 and overview.loc["test-clean", "WAV re-encoded to FLAC"] == 1
    assert sources_by_count(root).loc["a/b", "utterances"] == 1
    assert speaker_counts(root, "test-clean").loc["61", "utterances"] == 2


def test_a_timing_that_fails_the_quiet_rule_is_never_a_pick(table):
    table.loc[table["configuration"] == "int8 fast", class_column("AMX", "_quiet")] = False  # another job shared the CPU
    box = ship_box(table, "AMX")
    assert box["fastest"]["configuration"] == "int8 as fast" and "int8 fast" in box["unquiet"]
    table[class_column("AMX", "_quiet")] = False
    box = ship_box(table, "AMX")
    assert box["fastest"]["configuration"] is None and "passes the quiet rule" in box["fastest"]["reason"]


def test_avoid_leads_with_the_routes_a_reader_would_try(table):
    table["bits"] = [8, 8, 4, 3, 2, 8]
    table.loc[len(table)] = {**row("int8 collapsed", 370, 0.9, 0.85, 0.95, dwer=(90, 80, 100), agree=50.0), "bits": 8}
    names = [a["configuration"] for a in ship_box(table, "AMX")["avoid"]]
    assert names.index("int8 collapsed") < names.index("int2 broken")  # both collapse: the int8 route first


def test_accuracy_first_is_the_fastest_with_no_measurable_loss(table):
    box = ship_box(table, "AMX")
    assert box["accuracy_first"]["configuration"] == "int8 fast"  # "int8 wrong" is faster but loses accuracy
    lossy = table[table["configuration"] != "int8 fast"].assign(**{"dnll_other_high": 0.05})
    box = ship_box(lossy, "AMX")
    assert box["accuracy_first"]["configuration"] is None and "keep fp32" in box["accuracy_first"]["reason"]


def test_the_minute_table_has_goals_as_rows_and_classes_as_columns(table):
    from lib.ship import GOAL_NAMES, minute_table, picks_table

    minute = minute_table(table, ["AMX"])
    assert list(minute.index) == list(GOAL_NAMES.values()) and list(minute.columns) == ["AMX"]
    assert minute.loc[GOAL_NAMES["fastest"], "AMX"] == "**int8 fast**<br>×0.70 [0.66, 0.75]"
    table[class_column("AMX", "_quiet")] = False
    assert minute.loc[GOAL_NAMES["fastest"], "AMX"] != minute_table(table, ["AMX"]).loc[GOAL_NAMES["fastest"], "AMX"]
    assert minute_table(table, ["AMX"]).loc[GOAL_NAMES["fastest"], "AMX"] == "no quiet timing yet"
    picks = picks_table(table.assign(fp32_wer_clean=5.0, fp32_wer_other=9.0), ["AMX"])
    assert picks.loc["int3 tiny", "WER other: fp32 → Δ"] == "9.00 → +3.00 [+1.00, +4.50]"


def test_two_x_needs_the_whole_interval_at_or_below_half(table):
    from lib.ship import two_x_verdicts

    assert two_x_verdicts(table, ["AMX"])["AMX"].startswith("not reached: the fastest with no measurable loss is int8 fast")
    fast = table.assign(**{class_column("AMX"): 0.45, class_column("AMX", "_low"): 0.42,
                           class_column("AMX", "_high"): 0.48})
    assert two_x_verdicts(fast, ["AMX"])["AMX"].startswith("reached: ")
    edge = table.assign(**{class_column("AMX", "_high"): 0.52, class_column("AMX"): 0.49, class_column("AMX", "_low"): 0.46})
    assert two_x_verdicts(edge, ["AMX"])["AMX"].startswith("at the edge")


def test_avoid_routes_name_one_row_per_library_and_scheme_and_skip_missing_kernels(table):
    from lib.ship import avoid_routes

    table["scheme"], table["scope"], table["bits"] = "weight_only", "all", 8.0
    extra = pd.DataFrame([row("slow on an unquiet CPU", 300, 8.8, 8.5, 9.1, quiet=False),
                          row("no kernel here", 300, float("nan"), float("nan"), float("nan"), status="failed")])
    extra["library"], extra["scheme"], extra["scope"], extra["bits"] = ["torchao", "ctranslate2"], "dynamic", "all", 8.0
    extra["error"] = "NotOffered: no bfloat16 compute type"
    routes = avoid_routes(pd.concat([table, extra], ignore_index=True), ["AMX"])
    reasons = {r["configuration"]: r["reason"] for r in routes}
    assert "no kernel here" not in reasons  # a kernel this CPU lacks is no route to weigh
    assert reasons["slow on an unquiet CPU"] == "8.8× slower than fp32 on AMX (timing not shown quiet)"
    assert sum(r["library"] == "HQQ" for r in routes) == 1  # one row speaks for HQQ weight-only
