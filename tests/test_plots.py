import matplotlib
import pandas as pd

from lib import plots

matplotlib.use("Agg")


def delta_frame(values):
    return pd.DataFrame({"configuration": [f"c{i}" for i in range(len(values))], "library": "HQQ",
                         "delta_wer_other": values, "delta_wer_other_low": [v - 1 for v in values],
                         "delta_wer_other_high": [v + 1 for v in values]})


def test_a_collapsed_configuration_is_cut_and_labelled_not_flattening_the_rest():
    fig = plots.delta_wer(delta_frame([0.5, 2.0, 104.0]), "other", clip=30)
    ax = fig.axes[0]
    assert ax.get_xlim()[1] == 30
    assert [t.get_text() for t in ax.texts] == ["+104 →"]


def test_no_clipping_when_every_bar_fits():
    ax = plots.delta_wer(delta_frame([0.5, 2.0]), "other", clip=30).axes[0]
    assert ax.get_xlim()[1] < 30 and not ax.texts


def test_every_library_has_its_own_colour():
    colours = list(plots.palette().values())
    assert len(set(colours)) == len(plots.LIBRARIES) == len(colours)


def test_pareto_draws_collapsed_configurations_on_the_top_edge_with_their_value():
    df = pd.DataFrame({"configuration": ["a", "b", "c"], "library": ["fp32", "HQQ", "torch.ao"],
                       "small_mb": [967.0, 298.0, 376.0], "wer_other": [10.8, 11.1, 114.8]})
    ax = plots.pareto(df, clip=40).axes[0]
    assert ax.get_ylim()[1] < 50 and [t.get_text() for t in ax.texts] == ["115"]


def test_pareto_steps_close_off_scale_labels_apart():
    df = pd.DataFrame({"configuration": list("abcde"), "library": ["HQQ", "quanto", "HQQ", "torch.ao", "fp32"],
                       "small_mb": [236.0, 248.0, 266.0, 376.0, 967.0],
                       "wer_other": [100.0, 687.0, 173.0, 115.0, 10.8]})
    texts = plots.pareto(df, clip=40).axes[0].texts
    offsets = [t.xyann[1] for t in texts]
    assert [t.get_text() for t in texts] == ["100", "687", "173", "115"]
    assert offsets[:3] == sorted(set(offsets[:3]), reverse=True) and offsets[3] == offsets[0]  # far one: first line


def test_wer_vs_bits_joins_each_librarys_best_per_bit_width_on_a_log_axis():
    df = pd.DataFrame({"configuration": ["nf4", "fp4", "int8", "int2"], "library": ["bitsandbytes"] * 3 + ["HQQ"],
                       "bits": [4, 4, 8, 2], "wer_clean": [5.0, 9.0, 3.5, 700.0], "wer_other": [11, 14, 10.5, 650]})
    df["delta_wer_clean"] = df["wer_clean"] - 3.66
    ax = plots.wer_vs_bits(df).axes[0]
    assert ax.get_yscale() == "log"
    fp32_line = next(line for line in ax.get_lines() if line.get_label() == "fp32")
    assert fp32_line.get_ydata()[0] == 3.66
    bnb_line = next(line for line in ax.get_lines() if list(line.get_xdata()) == [4, 8])
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
