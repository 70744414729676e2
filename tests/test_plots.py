import matplotlib
import pandas as pd
import pytest

from lib import plots

matplotlib.use("Agg")


def delta_frame(values):
    return pd.DataFrame({"configuration": [f"c{i}" for i in range(len(values))], "library": "HQQ",
                         "delta_wer_other": values, "delta_wer_other_low": [v - 1 for v in values],
                         "delta_wer_other_high": [v + 1 for v in values]})


def test_a_collapsed_configuration_is_cut_and_labelled_not_flattening_the_rest():
    fig = plots.delta_wer(delta_frame([0.5, 2.0, 104.0]), "other")
    ax = fig.axes[0]
    assert ax.get_xlim()[1] == pytest.approx(3.15)  # zoomed on the working rows' intervals, not on 104
    assert [t.get_text() for t in ax.texts] == ["+104 →"]


@pytest.mark.parametrize("values, last_high, right, marks", [
    ([0.5, 2.0], 3.0, 3.15, []),  # every interval fits: the axis ends just past them, nothing is cut
    ([0.2, 0.5, 6.0], 18.0, 7.8, ["▸"]),  # one wide interval would squash the rest: it is cut and marked
])
def test_the_axis_follows_the_working_rows(values, last_high, right, marks):
    frame = delta_frame(values)
    frame.loc[len(values) - 1, "delta_wer_other_high"] = last_high
    ax = plots.delta_wer(frame, "other").axes[0]
    assert ax.get_xlim()[1] == pytest.approx(right) and [t.get_text() for t in ax.texts] == marks


def test_every_library_has_its_own_colour():
    colours = list(plots.palette().values())
    assert len(set(colours)) == len(plots.LIBRARIES) == len(colours)


def test_pareto_names_the_front_and_counts_collapsed_configurations_in_the_legend():
    df = pd.DataFrame({"configuration": ["a", "b", "c", "d"], "library": ["fp32", "HQQ", "torch.ao", "HQQ"],
                       "small_mb": [967.0, 298.0, 376.0, 400.0], "wer_other": [10.8, 11.1, 114.8, 12.0]})
    ax = plots.pareto(df, clip=40).axes[0]
    assert ax.get_ylim()[1] < 40
    assert [t.get_text() for t in ax.texts] == ["b", "a"]  # the front, smallest first; d is beaten by b
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "off scale: 1 above 40%\n(WER 115%), drawn\non the top edge" in legend


def test_front_labels_do_not_overlap():
    df = pd.DataFrame({"configuration": [f"configuration number {i}" for i in range(6)], "library": "HQQ",
                       "small_mb": [200.0, 202.0, 204.0, 206.0, 208.0, 960.0],
                       "wer_other": [14.0, 13.5, 13.0, 12.5, 12.0, 10.0]})
    fig = plots.pareto(df)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert len(boxes) == 6
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_latency_figure_names_the_size_latency_front():
    df = pd.DataFrame({"configuration": ["fp32", "int8", "int4", "slow int8"], "status": "ok",
                       "library": ["fp32", "torch.ao", "HQQ", "quanto"], "small_mb": [967.0, 375.0, 290.0, 380.0],
                       "latency_ratio": [1.0, 0.9, 1.7, 9.0]})
    ax = plots.latency_vs_size(df).axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["int4", "int8", "slow int8"]


def test_compression_bars_are_named_and_the_axis_is_ticked_every_ten_percent():
    df = pd.DataFrame({"configuration": ["fp32", "HQQ weight-only int4 g64", "torch.ao static w-int8 a-int8 cal 4"],
                       "library": ["fp32", "HQQ", "torch.ao"], "compression_pct": [0.0, 69.2, 61.1]})
    ax = plots.compression_bars(df).axes[0]
    assert [t.get_text().replace("\n", " ") for t in ax.get_yticklabels()] == [
        "torch.ao static w-int8 a-int8, 4 calibration utterances", "HQQ weight-only int4 g64"]
    assert list(ax.get_xticks())[:4] == [0, 10, 20, 30]


def test_wer_vs_bits_zooms_on_4_to_8_bits_and_keeps_the_collapse_on_a_log_panel():
    df = pd.DataFrame({"configuration": ["nf4", "fp4", "int8", "int2"], "library": ["bitsandbytes"] * 3 + ["HQQ"],
                       "bits": [4, 4, 8, 2], "wer_clean": [5.0, 9.0, 3.5, 700.0], "wer_other": [11, 14, 10.5, 650]})
    df["ref_wer_clean"] = 3.66  # fp32 on the utterances the points are scored on (lib.tables.reference_set_columns)
    fig = plots.wer_vs_bits(df)
    zoom, collapse = fig.axes[0], fig.axes[2]  # test-clean: 4–8 bits above, 1–4 bits below
    assert zoom.get_yscale() == "linear" and collapse.get_yscale() == "log"
    assert zoom.get_ylim()[1] < 20 and collapse.get_ylim()[1] > 700
    fp32_line = next(line for line in zoom.get_lines() if line.get_label() == "fp32")
    assert fp32_line.get_ydata()[0] == 3.66
    bnb_line = next(line for line in zoom.get_lines() if line.get_label() == "bitsandbytes")
    assert list(bnb_line.get_ydata()) == [5.0, 3.5]  # the better 4-bit configuration, not the mean of the two


def test_proxies_leave_out_configurations_whose_encoder_is_untouched():
    df = pd.DataFrame({"configuration": ["fp32", "int8", "int4", "decoder only"],
                       "library": ["fp32", "HQQ", "HQQ", "torch.ao"], "status": "ok",
                       "encoder_cosine": [1.0, 0.9998, 0.98, 1.0], "weight_error": [None, 0.005, 0.09, 0.01],
                       "wer_other": [10.8, 10.8, 11.1, 10.7]})
    left, right = plots.proxies(df).axes[:2]
    drawn = lambda ax: sum(len(c.get_offsets()) for c in ax.collections)
    assert (drawn(left), drawn(right)) == (2, 3)  # fp32 nowhere; decoder only has no encoder distance
    assert left.get_xscale() == right.get_xscale() == "log"


def test_runtime_tradeoff_keeps_the_working_rows_readable_and_marks_an_off_scale_row():
    df = pd.DataFrame({"configuration": ["CTranslate2 int8", "ONNX Runtime int8 static (4 calibration utterances)"],
                       "library": ["CTranslate2", "ONNX Runtime"], "latency_ratio_amx": [0.6, 0.7],
                       "wer_other": [9.4, 24.4]})
    ax = plots.runtime_tradeoff(df, "AMX", reference_wer=9.3).axes[0]
    assert ax.get_ylim()[1] < 24.4  # the collapsed static row does not stretch the axis
    assert sorted(t.get_text() for t in ax.texts) == ["int8", "int8 static ↑ 24.4"]
