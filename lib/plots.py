"""Seaborn figures with one palette and one library order throughout the book.

Figures take the tables of :mod:`lib.tables` (plain column names) and label their axes with
:func:`lib.display.label`; the paper's compression targets come from :mod:`lib.claims`.
"""
from __future__ import annotations

from .analysis import PROXIES, proxy_frame
from .claims import COMPRESSION_CLAIMS
from .config import LIBRARY_NAMES
from .display import label

LIBRARIES = list(LIBRARY_NAMES.values())  # fp32, torch.ao, torchao, quanto, HQQ, bitsandbytes
PAPER_COMPRESSION = {claim.figure_label: claim.target_pct for claim in COMPRESSION_CLAIMS}


def palette() -> dict[str, tuple]:
    import seaborn as sns

    colors = sns.color_palette("colorblind", 10)
    dark = sns.color_palette("dark", 10)
    # fp32 grey, torch.ao blue, torchao sky, quanto green, HQQ vermillion, bitsandbytes purple; then the runtimes:
    # torch half yellow, CTranslate2 orange, ONNX Runtime brown, OpenVINO pink, whisper.cpp dark green
    return dict(zip(LIBRARIES, [colors[i] for i in (7, 0, 9, 2, 3, 4, 8, 1, 5, 6)] + [dark[2]]))


def _style():
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")


def _libraries_in(data) -> list[str]:
    """The libraries present in ``data``, in the book's order (the hue order of every figure)."""
    return [h for h in LIBRARIES if h in set(data["library"])]


def _log_wer_axis(ax) -> None:
    """A log y axis labelled 5, 10, 20, 50, 100 ... rather than powers of ten."""
    from matplotlib.ticker import LogLocator, ScalarFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())


def _ok(df, *cols):
    """Rows with values in every column ``cols`` (an empty frame with those columns if none)."""
    import pandas as pd

    if any(c not in df.columns for c in cols):
        return pd.DataFrame(columns=list(dict.fromkeys([*df.columns, *cols, "library", "configuration"])))
    return df.dropna(subset=list(cols))


def wer_vs_bits(df):
    """WER against weight bit-width per library, one panel per split, on a log WER axis.

    Dots are configurations; each library's line joins its lowest WER at each bit-width (bitsandbytes nf4
    and fp4 are both 4 bits: the line takes the better one, never their mean). The log axis keeps 3 % and
    a collapsed 700 % on one readable panel.
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns
    _style()
    parts = [_ok(df, col).assign(split=split, wer=lambda d, c=col: d[c])
             for split, col in (("test-clean", "wer_clean"), ("test-other", "wer_other")) if col in df.columns]
    long = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["split", "wer", "bits", "library"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, split in zip(axes, ("test-clean", "test-other")):
        part = long[long["split"] == split]
        if len(part):
            order = _libraries_in(part)
            best = part.groupby(["library", "bits"], as_index=False)["wer"].min()
            sns.scatterplot(part, x="bits", y="wer", hue="library", hue_order=order, palette=palette(), s=40,
                            alpha=0.5, ax=ax, legend=False)
            sns.lineplot(best, x="bits", y="wer", hue="library", hue_order=order, palette=palette(), marker="o",
                         ax=ax, errorbar=None)
            col = split.replace("test-", "wer_")
            # every ΔWER is against the same fp32 run, so WER − ΔWER is fp32's WER
            fp32 = (df[col] - df[f"delta_{col}"]).dropna() if f"delta_{col}" in df else []
            if len(fp32):
                ax.axhline(fp32.iloc[0], color=palette()["fp32"], linestyle="--", linewidth=1, label="fp32")
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(part["bits"].unique()), labels=[str(b) for b in sorted(part["bits"].unique())])
            _log_wer_axis(ax)
            ax.legend(title="library (best per bit-width)", fontsize="small")
        ax.set_title(f"{split} (LibriSpeech sample)")
        ax.set_xlabel("weight bits")
        ax.set_ylabel("WER (%, log scale)")
    fig.tight_layout()
    return fig


def pareto(df, x="small_mb", y="wer_other", clip: float = 40.0):
    """WER (real whisper-base weights) against stored size on the whisper-small architecture.

    WER above ``clip`` is drawn as a triangle on the top edge, labelled with its value,
    so that a collapsed configuration does not squash the rest.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    _style()
    data = _ok(df, x, y)
    fig, ax = plt.subplots(figsize=(8, 5))
    if len(data):
        order = _libraries_in(data)
        shown = data.assign(**{y: data[y].clip(upper=clip)})
        sns.scatterplot(shown, x=x, y=y, hue="library", hue_order=order, palette=palette(), s=70, ax=ax,
                        style=(data[y] > clip).map({True: "off scale", False: "on scale"}),
                        markers={"on scale": "o", "off scale": "^"})
        level, previous = 0, None
        for _, row in data[data[y] > clip].sort_values(x).iterrows():
            # neighbours on the top edge would print over each other: step each close one's label down a line
            level = level + 1 if previous is not None and row[x] - previous < 0.06 * (data[x].max() - data[x].min()) else 0
            previous = row[x]
            ax.annotate(f"{row[y]:.0f}", (row[x], clip), textcoords="offset points", xytext=(6, -4 - 11 * level),
                        fontsize="small")
        front = data.sort_values(x)
        best = front[y].cummin()
        ax.step(front[x], best.clip(upper=clip), where="post", color="grey", lw=1, ls="--", label="Pareto front")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    ax.set_xlabel("stored MB on the whisper-small architecture")
    ax.set_ylabel(f"{label(y)} (%) on whisper-base weights")
    fig.tight_layout()
    return fig


def latency_vs_size(df):
    """Latency ratio to fp32 (forced 32 tokens, whisper-small architecture) against stored size."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    _style()
    data = _ok(df, "small_mb", "latency_ratio")
    fig, ax = plt.subplots(figsize=(8, 5))
    if len(data):
        sns.scatterplot(data, x="small_mb", y="latency_ratio", hue="library",
                        hue_order=_libraries_in(data), palette=palette(), s=70, ax=ax)
        from matplotlib.ticker import FuncFormatter

        ax.axhline(1.0, color="black", lw=1, ls=":")
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    ax.set_xlabel("stored MB on the whisper-small architecture")
    ax.set_ylabel("latency / fp32 latency (log scale; < 1 is faster)")
    fig.tight_layout()
    return fig


def compression_bars(df):
    """Compression % against fp32 per configuration, with the paper's −57% and −71% marked."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    _style()
    data = _ok(df, "compression_pct").sort_values("compression_pct")
    fig, ax = plt.subplots(figsize=(10, max(3, 0.28 * len(data) + 1)))
    if len(data):
        sns.barplot(data, y="configuration", x="compression_pct", hue="library",
                    hue_order=_libraries_in(data), palette=palette(), dodge=False,
                    ax=ax)
        for (label, value), style in zip(PAPER_COMPRESSION.items(), ("--", ":")):
            ax.axvline(value, color="black", ls=style, lw=1, label=label)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    ax.set_xlabel("size reduction vs fp32 (%), whisper-small architecture")
    ax.set_ylabel("")
    fig.tight_layout()
    return fig


def delta_wer(df, split: str = "other", clip: float = 30.0):
    """ΔWER against fp32 with 95% paired-bootstrap intervals, one bar per configuration.

    The axis stops at ``clip`` points so that a collapsed configuration does not
    flatten the others; bars beyond it are cut and labelled with their value.
    """
    import matplotlib.pyplot as plt

    _style()
    col = f"delta_wer_{split}"
    data = _ok(df, col, f"{col}_low", f"{col}_high").sort_values(col)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.32 * len(data) + 1)))
    colors = palette()
    if len(data):
        y = range(len(data))
        ax.barh(list(y), data[col], color=[colors[lib] for lib in data["library"]])
        ax.errorbar(data[col], list(y), xerr=[data[col] - data[f"{col}_low"], data[f"{col}_high"] - data[col]],
                    fmt="none", ecolor="black", lw=1, capsize=3)
        ax.set_yticks(list(y), labels=list(data["configuration"]))
        ax.axvline(0, color="black", lw=1)
        if data[f"{col}_high"].max() > clip:
            ax.set_xlim(min(-1.0, data[f"{col}_low"].min() - 0.5), clip)
            for i, value in zip(y, data[col]):
                if value > clip:
                    ax.text(clip * 0.98, i, f"{value:+.0f} →", ha="right", va="center", fontsize="small",
                            color="white", fontweight="bold")
        present = _libraries_in(data)
        ax.legend([plt.Rectangle((0, 0), 1, 1, color=colors[lib]) for lib in present], present, fontsize="small",
                  loc="best")
    ax.set_xlabel(f"ΔWER vs fp32 on test-{split} (points; bars: 95% CI)")
    fig.tight_layout()
    return fig


def proxies(df, target: str = "wer_other"):
    """WER against the two cheap proxies, log-log: encoder distance (1 − cosine on one clip) and weight error.

    Configurations whose encoder is untouched (encoder distance 0) are left out of the left panel.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    _style()
    frame = proxy_frame(df) if len(df) else df
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (proxy, description) in zip(axes, PROXIES.items()):
        data = _ok(frame, proxy, target)
        if len(data):
            sns.scatterplot(data, x=proxy, y=target, hue="library",
                            hue_order=_libraries_in(data), palette=palette(), s=50,
                            ax=ax, legend=ax is axes[-1])
            ax.set_xscale("log")
            _log_wer_axis(ax)
        ax.set_xlabel(f"{description} (log)")
        ax.set_ylabel(f"{label(target)} (%, log) on whisper-base weights")
    if axes[-1].get_legend():
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
    fig.tight_layout()
    return fig


def kld_vs_delta_wer(df, split: str = "other", disagreements: list[str] | None = None):
    """ΔWER against fp32 (linear, symlog beyond ±5 points) against mean KLD to fp32 (log), one dot per
    configuration, coloured by library; ``disagreements`` (configuration names) are labelled.

    Read it as: if KLD ranks configurations as WER does, the dots rise from left to right.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    _style()
    data = _ok(df[df["library"] != LIBRARY_NAMES["none"]] if "library" in df else df, f"kld_{split}",
               f"delta_wer_{split}")
    data = data[data[f"kld_{split}"] > 0]
    fig, ax = plt.subplots(figsize=(8, 5))
    sns.scatterplot(data, x=f"kld_{split}", y=f"delta_wer_{split}", hue="library", hue_order=_libraries_in(data),
                    palette=palette(), s=60, ax=ax)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=5.0)
    ax.axhline(0, color="0.5", lw=0.8)
    for _, r in data[data["configuration"].isin(disagreements or [])].iterrows():
        ax.annotate(r["configuration"], (r[f"kld_{split}"], r[f"delta_wer_{split}"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(f"mean KL divergence to fp32, test-{split} (nats per token, log)")
    ax.set_ylabel(f"{label(f'delta_wer_{split}')} (points; symlog beyond ±5)")
    ax.legend(title=None, fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def sensitivity_heatmap(table):
    """The sensitivity map: mean KLD to fp32 when one group alone is quantized (HQQ int3 g64), layer index ×
    component, encoder and decoder side by side, on one log colour scale; each cell is annotated with its KLD
    in units of 10⁻³ (``14`` is a KLD of 0.014).

    The conv stem (fake-quantized) sits in the encoder panel's ``stem`` column, ``proj_out`` in the decoder
    panel's ``out`` column. ``table`` is :func:`lib.sensitivity.sensitivity_table`.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import seaborn as sns
    from matplotlib.colors import LogNorm

    from .sensitivity import COMPONENT_NAMES, DECODER_COMPONENTS, ENCODER_COMPONENTS

    _style()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    kld = table["kld"].astype(float)
    norm = LogNorm(vmin=max(kld.min(), 1e-6), vmax=max(kld.max(), 2e-6)) if len(table) else None
    layers = sorted(int(x) for x in table["layer"].dropna().unique()) if len(table) else []
    panels = (("encoder", ["conv", *ENCODER_COMPONENTS], ["stem", *map(str, layers)]),
              ("decoder", [*DECODER_COMPONENTS, "proj_out"], [*map(str, layers), "out"]))
    for ax, (side, rows, columns) in zip(axes, panels):
        grid = pd.DataFrame(np.nan, index=[COMPONENT_NAMES[c] for c in rows], columns=columns)
        for r in table[table["side"] == side].itertuples():
            column = ("stem" if r.component == "conv" else "out") if pd.isna(r.layer) else str(int(r.layer))
            grid.loc[COMPONENT_NAMES[r.component], column] = r.kld
        annot = grid.map(lambda v: "" if pd.isna(v) else f"{v * 1e3:.2g}")  # in units of 10^-3: short labels
        sns.heatmap(grid, ax=ax, norm=norm, cmap="rocket_r", annot=annot, fmt="", cbar=side == "decoder",
                    cbar_kws={"label": "mean KLD to fp32 (log scale); cells ×10⁻³"}, linewidths=0.5,
                    linecolor="white", annot_kws={"fontsize": "small"})
        ax.set_title(side)
        ax.grid(False)
        ax.set_xlabel("layer")
        ax.set_ylabel("")
    fig.tight_layout()
    return fig
