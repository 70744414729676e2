"""Seaborn figures with one palette and one library order throughout the book.

Figures take the tables of :mod:`lib.tables` (plain column names) and label their axes with
:func:`lib.display.label`; the paper's compression targets come from :mod:`lib.claims`.
"""
from __future__ import annotations


from .analysis import PROXIES, pareto_front, proxy_frame
from .claims import COMPRESSION_CLAIMS
from .config import LIBRARY_NAMES
from .display import label, readable
from .tables import quantized

LIBRARIES = list(LIBRARY_NAMES.values())  # fp32, torch.ao, torchao, quanto, HQQ, bitsandbytes
PAPER_COMPRESSION = {claim.figure_label: claim.target_pct for claim in COMPRESSION_CLAIMS}


def palette() -> dict[str, tuple]:
    import seaborn as sns

    colors = sns.color_palette("colorblind", 10)
    dark = sns.color_palette("dark", 10)
    # fp32 grey, torch.ao blue, torchao sky, quanto green, HQQ vermillion, bitsandbytes purple, AutoRound dark
    # red; then the runtimes: PyTorch cast yellow, CTranslate2 orange, ONNX Runtime brown, OpenVINO pink,
    # whisper.cpp dark green
    return dict(zip(LIBRARIES, [colors[i] for i in (7, 0, 9, 2, 3, 4)] + [dark[3]]
                    + [colors[i] for i in (8, 1, 5, 6)] + [dark[2]]))


LINE_STYLES = ("-", "--", ":", "-.")


def library_variant(color, rank: int):
    """The ``rank``-th configuration of one library in a figure: the library's hue, darker or lighter by rank,
    and its own line style, so rows of one library stay apart (``rank`` 0 is the library's own colour, solid).

    >>> library_variant((0.5, 0.5, 0.5), 0)
    ((0.5, 0.5, 0.5), '-')
    >>> library_variant((0.5, 0.5, 0.5), 1)
    ((0.3, 0.3, 0.3), '--')
    """
    factor = (1.0, 0.6, 1.4, 0.8, 1.2)[rank % 5]
    shade = tuple(round(min(1.0, c * factor) if factor <= 1 else c + (1 - c) * (factor - 1), 3) for c in color[:3])
    return shade, LINE_STYLES[rank % len(LINE_STYLES)]


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


def _label_points(ax, points, fontsize: float = 8, obstacles=()) -> None:
    """Name ``points`` (``(x, y, text)`` in data coordinates) without overlaps, deterministically: the book's one
    label placer (every scatter figure names its points here; adjustText 1.4 left overlapping labels).

    Each label tries a fixed list of offsets (right, left, above, below, then further out with a leader line)
    and takes the first whose box stays inside the axes and meets no earlier label and no marker of
    ``obstacles`` (``(x, y)`` pairs), else the one that meets fewest; the figure's layout must be final
    before this is called.
    """
    from matplotlib.text import Text

    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    to_px = ax.transData.transform
    markers = [to_px((mx, my)) for mx, my in obstacles]
    near = [(7, 0, "left"), (-7, 0, "right"), (0, 9, "center"), (0, -9, "center")]
    far = [(side * dx, sign * 12 * step, "left" if side > 0 else "right") for step in range(1, 12)
           for dx in (14, 45) for sign in (1, -1) for side in (1, -1)]
    placed = []
    for x, y, text in sorted(points, key=lambda p: (p[0], p[1])):
        own = to_px((x, y))
        best = None
        for rank, (dx, dy, ha) in enumerate(near + far):
            note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va="center",
                               fontsize=fontsize, zorder=5,
                               arrowprops=dict(arrowstyle="-", color="0.45", lw=0.6, shrinkA=0, shrinkB=3)
                               if abs(dy) > 9 else None)
            note.update_positions(renderer)
            box = Text.get_window_extent(note, renderer).expanded(1.04, 1.2)  # the text alone, not its leader
            outside = not (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1)
            markers_hit = sum(box.x0 - 3 <= mx <= box.x1 + 3 and box.y0 - 3 <= my <= box.y1 + 3
                              for mx, my in markers if abs(mx - own[0]) + abs(my - own[1]) > 1)
            # a marker under the text costs less than a long leader line
            cost = 100 * outside + 10 * sum(box.overlaps(other) for other in placed) + markers_hit + rank / 12
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, note, box)
            else:
                note.remove()
            if cost < 1:
                break
        placed.append(best[2])


def _box_points(box, n: int = 6) -> list[tuple[float, float]]:
    """A grid of points covering ``box`` (data coordinates), for :func:`_label_points` to keep labels off it."""
    import numpy as np

    xs = np.linspace(box.x0, box.x1, n) if box.x1 > box.x0 else [box.x0]
    ys = (np.geomspace(box.y0, box.y1, n) if box.y0 > 0 and box.y1 > box.y0 else np.linspace(box.y0, box.y1, n))
    return [(float(x), float(y)) for x in xs for y in ys]


def _names(data, width: int | None = None):
    """Readable configuration names (:func:`lib.display.readable`) of ``data``'s rows, wrapped at ``width``
    characters when given (for axis tick labels)."""
    import textwrap

    names = [readable(n) for n in data["configuration"]]
    return [textwrap.fill(n, width) for n in names] if width else names


def wer_vs_bits(df):
    """WER against weight bit-width per library: 4 and 8 bits on a linear axis (top), 1 to 4 on a log axis
    (bottom), test-clean left and test-other right.

    Dots are configurations, dodged sideways by library so that equal bit-widths stay apart; each library's
    line joins its lowest WER at each bit-width (bitsandbytes nf4 and fp4 are both 4 bits: the line takes
    the better one, never their mean). The dashed line is fp32. Claim 3 is decided at 4 and 8 bits, where
    every WER lies within a few points of fp32, so the top row zooms there; the collapse below 4 bits
    (up to several hundred %) has its own log panel.
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    _style()
    parts = [_ok(df, col).assign(split=split, wer=lambda d, c=col: d[c])
             for split, col in (("test-clean", "wer_clean"), ("test-other", "wer_other")) if col in df.columns]
    long = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["split", "wer", "bits", "library"])
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), height_ratios=[3, 2])
    colors = palette()
    order = _libraries_in(long) if len(long) else []
    dodge = {lib: 0.09 * (i - (len(order) - 1) / 2) for i, lib in enumerate(order)}
    for column, split in enumerate(("test-clean", "test-other")):
        part = long[long["split"] == split]
        col = split.replace("test-", "wer_")
        fp32 = df[f"ref_{col}"].dropna() if f"ref_{col}" in df else []  # fp32 on the points' utterances
        for row, (low, high) in enumerate(((4, 8), (1, 4))):
            ax = axes[row, column]
            window = part[(part["bits"] >= low) & (part["bits"] <= high)]
            for lib in _libraries_in(window) if len(window) else []:
                mine = window[window["library"] == lib]
                # dodge: a fixed sideways step per library, in bits above and in log2(bits) below
                shift = (lambda b, d=dodge[lib]: b + 2 * d) if row == 0 else (lambda b, d=dodge[lib]: b * 2 ** d)
                ax.scatter(shift(mine["bits"]), mine["wer"], color=colors[lib], alpha=0.45, s=30)
                best = mine.groupby("bits", as_index=False)["wer"].min()
                ax.plot(shift(best["bits"]), best["wer"], color=colors[lib], marker="o", lw=1.6, label=lib)
            if len(fp32):
                ax.axhline(fp32.iloc[0], color=colors["fp32"], linestyle="--", linewidth=1, label="fp32")
            ticks = [b for b in sorted(part["bits"].unique()) if low <= b <= high] if len(part) else []
            if row == 0:
                ax.set_xlim(low - 0.6, high + 0.6)
                if len(window):
                    top = window["wer"].max()
                    bottom = min(window["wer"].min(), fp32.iloc[0] if len(fp32) else top)
                    pad = 0.08 * (top - bottom) + 0.2
                    ax.set_ylim(bottom - pad, top + pad)
                ax.set_ylabel("WER (%)")
                ax.set_title(f"{split} (LibriSpeech sample): 4 and 8 bits")
            else:
                ax.set_xscale("log", base=2)
                ax.set_xlim(low / 1.25, high * 1.25)
                _log_wer_axis(ax)
                ax.set_ylabel("WER (%, log scale)")
                ax.set_title(f"{split}: 1 to 4 bits (log scale)", fontsize="medium")
            ax.set_xticks(ticks, labels=[str(b) for b in ticks])
            ax.set_xlabel("weight bits")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes.flat[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h), labels.append(lab)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    if labels:  # one legend under the four panels, so that they get the page's whole width
        fig.legend(handles, labels, title=None, loc="lower center", ncols=len(labels), fontsize="small",
                   frameon=False, bbox_to_anchor=(0.5, 0.0))
    return fig


def pareto(df, x="small_mb", y="wer_other", clip: float = 40.0):
    """WER (real whisper-base weights) against stored size on the whisper-small architecture.

    The points on the Pareto front (among configurations below ``clip`` % WER) are named; configurations
    above ``clip`` sit on the top edge as upward triangles, and the legend says how many there are and
    their range, so that a collapsed configuration does not squash the rest.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    _style()
    data = _ok(df, x, y)
    fig, ax = plt.subplots(figsize=(8.5, 6))
    colors = palette()
    if len(data):
        order = _libraries_in(data)
        on, off = data[data[y] <= clip], data[data[y] > clip]
        top = min(clip, on[y].max() + 0.25 * (on[y].max() - on[y].min()) + 1) if len(on) else clip
        for lib in order:
            mine = on[on["library"] == lib]
            if lib == "fp32":  # the reference, drawn above the runtimes' fp32 rows that share its size and WER
                ax.scatter(mine[x], mine[y], color=colors[lib], marker="*", s=260, edgecolor="black", lw=0.8,
                           zorder=6, label=lib)
                continue
            ax.scatter(mine[x], mine[y], color=colors[lib], s=55, edgecolor="white", lw=0.6, zorder=3, label=lib)
            above = off[off["library"] == lib]
            ax.scatter(above[x], [top] * len(above), color=colors[lib], marker="^", s=70, edgecolor="black",
                       lw=0.6, zorder=3, clip_on=False)
        front = pareto_front(on, (x, y))
        step_x = list(front[x]) + [data[x].max()]
        ax.step(step_x, list(front[y]) + [front[y].iloc[-1]] if len(front) else [], where="post", color="grey",
                lw=1, ls="--", zorder=2)
        ax.set_ylim(min(on[y].min() - 1.5, 0.9 * on[y].min()) if len(on) else 0, top)
        span = data[x].max() - data[x].min()
        ax.set_xlim(data[x].min() - 0.04 * span, data[x].max() + 0.04 * span)
        handles, labels = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], color="grey", ls="--", lw=1))
        labels.append(f"Pareto front (WER ≤ {clip:.0f}%)")
        if len(off):
            handles.append(Line2D([], [], marker="^", color="0.4", markeredgecolor="black", ls="", markersize=8))
            span = (f"{off[y].min():.0f} to {off[y].max():.0f}" if len(off) > 1 else f"{off[y].iloc[0]:.0f}")
            labels.append(f"off scale: {len(off)} above {clip:.0f}%\n(WER {span}%), drawn\non the top edge")
        legend = ax.legend(handles, labels, loc="upper right", fontsize="small", framealpha=0.95, ncols=2)
        ax.set_xlabel("stored MB on the whisper-small architecture")
        ax.set_ylabel(f"{label(y)} (%) on whisper-base weights")
        fig.tight_layout()
        fig.canvas.draw()
        box = legend.get_window_extent(fig.canvas.get_renderer()).transformed(ax.transData.inverted())
        _label_points(ax, list(zip(front[x], front[y], _names(front))),
                      obstacles=list(zip(on[x], on[y])) + _box_points(box))
    else:
        ax.set_xlabel("stored MB on the whisper-small architecture")
        ax.set_ylabel(f"{label(y)} (%) on whisper-base weights")
        fig.tight_layout()
    return fig


def latency_vs_size(df):
    """Latency ratio to fp32 (forced 32 tokens, whisper-small architecture) against stored size; the
    configurations on the size/latency front (none smaller and faster at once) are named."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    _style()
    data = _ok(df, "small_mb", "latency_ratio")
    fig, ax = plt.subplots(figsize=(8.5, 6))
    if len(data):
        sns.scatterplot(data, x="small_mb", y="latency_ratio", hue="library",
                        hue_order=_libraries_in(data), palette=palette(), s=60, ax=ax)
        from matplotlib.ticker import FuncFormatter

        ax.axhline(1.0, color="black", lw=1, ls=":")
        ax.set_yscale("log", base=2)
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 1.35)  # headroom: the slowest point's label stays inside the axes, not clipped
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        legend = ax.legend(loc="upper right", fontsize="small", framealpha=0.95, ncols=2)
        ax.set_xlabel("stored MB on the whisper-small architecture")
        ax.set_ylabel("latency / fp32 latency (log scale; < 1 is faster)")
        fig.tight_layout()
        fig.canvas.draw()
        box = legend.get_window_extent(fig.canvas.get_renderer()).transformed(ax.transData.inverted())
        front = pareto_front(data[data["configuration"] != "fp32"], ("small_mb", "latency_ratio"))
        slowest = data.nlargest(1, "latency_ratio")
        named = pd.concat([front, slowest[~slowest.index.isin(front.index)]])
        _label_points(ax, list(zip(named["small_mb"], named["latency_ratio"], _names(named))),
                      obstacles=list(zip(data["small_mb"], data["latency_ratio"])) + _box_points(box))
    else:
        ax.set_xlabel("stored MB on the whisper-small architecture")
        ax.set_ylabel("latency / fp32 latency (log scale; < 1 is faster)")
        fig.tight_layout()
    return fig


def compression_bars(df):
    """Compression % against fp32 per configuration (horizontal bars named by configuration, the value at
    each bar's end), with the paper's −57% and −71% marked."""
    import matplotlib.pyplot as plt

    _style()
    data = _ok(df, "compression_pct").sort_values("compression_pct")
    data = data[data["configuration"] != "fp32"]
    fig, ax = plt.subplots(figsize=(8.5, max(3, 0.3 * len(data) + 1.2)))
    colors = palette()
    if len(data):
        y = list(range(len(data)))
        ax.barh(y, data["compression_pct"], color=[colors[lib] for lib in data["library"]], height=0.75)
        for i, value in zip(y, data["compression_pct"]):
            ax.text(value + 0.6, i, f"{value:.0f}", va="center", fontsize=7.5)
        ax.set_yticks(y, labels=_names(data, 48), fontsize=8.5)
        ax.set_ylim(-0.7, len(data) - 0.3)
        for (name, value), style in zip(PAPER_COMPRESSION.items(), ("--", ":")):
            ax.axvline(value, color="black", ls=style, lw=1.2)
        present = _libraries_in(data)
        from matplotlib.lines import Line2D

        handles = [plt.Rectangle((0, 0), 1, 1, color=colors[lib]) for lib in present]
        handles += [Line2D([], [], color="black", ls=style, lw=1.2) for style in ("--", ":")][:len(PAPER_COMPRESSION)]
        ax.legend(handles, present + list(PAPER_COMPRESSION), loc="lower right", fontsize="small", framealpha=0.95)
        ax.set_xlim(0, max(85.0, data["compression_pct"].max() + 6))
        ax.set_xticks(range(0, int(ax.get_xlim()[1]) + 1, 10))
    ax.set_xlabel("size reduction vs fp32 (%), whisper-small architecture")
    ax.set_ylabel("")
    fig.tight_layout()
    return fig


def delta_wer(df, split: str = "other", collapse: float = 10.0):
    """ΔWER against fp32 with 95% paired-bootstrap intervals, one bar per configuration.

    The axis is zoomed on the working rows (ΔWER at most ``collapse`` points): it ends just past their
    intervals, or 30% past their largest point estimate when one interval reaches beyond 2.5 times that, so
    their differences stay visible. Anything beyond the edge (a bar or
    an interval's end) is cut there and marked: the bar's value is printed at the edge with an arrow, an
    interval that runs off the edge ends in ``▸``.
    """
    import matplotlib.pyplot as plt

    _style()
    col = f"delta_wer_{split}"
    low, high = f"{col}_low", f"{col}_high"
    data = _ok(df, col, low, high).sort_values(col)
    fig, ax = plt.subplots(figsize=(8.5, max(3.0, 0.42 * len(data) + 1.2)))
    colors = palette()
    if len(data):
        y = list(range(len(data)))
        working = data[data[col] <= collapse]
        point = max(working[col].max(), 0.5) if len(working) else collapse
        reach = working[high].max() if len(working) else collapse
        # the working rows' intervals, unless one wide interval would squash the rest: then 30% past the points
        right = max(1.5, 1.05 * reach if reach <= 2.5 * point else 1.3 * point)
        left = min(-1.0, 1.15 * working[low].min()) if len(working) else -1.0
        left = max(left, -right)
        ax.barh(y, data[col].clip(lower=left, upper=right), color=[colors[lib] for lib in data["library"]])
        center = data[col].clip(left, right)
        ax.errorbar(center, y, xerr=[(center - data[low].clip(left, right)).clip(lower=0),
                                     (data[high].clip(left, right) - center).clip(lower=0)],
                    fmt="none", ecolor="black", lw=1, capsize=3)
        for i, (value, hi) in enumerate(zip(data[col], data[high])):
            if value > right:
                ax.text(right * 0.985, i, f"{value:+.0f} →", ha="right", va="center", fontsize="small",
                        color="white", fontweight="bold")
            elif hi > right:
                ax.text(right, i, "▸", ha="right", va="center", fontsize="small", color="black")
        ax.set_xlim(left, right)
        ax.set_yticks(y, labels=_names(data, 44), fontsize=9)
        ax.axvline(0, color="black", lw=1)
        present = _libraries_in(data)
        ax.legend([plt.Rectangle((0, 0), 1, 1, color=colors[lib]) for lib in present], present, fontsize="small",
                  loc="lower right", framealpha=0.95)
        cut = int((data[col] > right).sum() + ((data[col] <= right) & (data[high] > right)).sum())
        note = f"; {cut} cut at the edge (→ value, ▸ interval)" if cut else ""
        ax.set_xlabel(f"ΔWER vs fp32 on test-{split} (points; bars: 95% CI{note})")
    else:
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

    Read it as: if KLD ranks configurations as WER does, the dots rise from left to right. Labels are placed
    by :func:`_label_points`, clear of every dot and of the legend.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    _style()
    data = _ok(quantized(df), f"kld_{split}",
               f"delta_wer_{split}")
    data = data[data[f"kld_{split}"] > 0]
    fig, ax = plt.subplots(figsize=(8, 5))
    sns.scatterplot(data, x=f"kld_{split}", y=f"delta_wer_{split}", hue="library", hue_order=_libraries_in(data),
                    palette=palette(), s=60, ax=ax)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=5.0)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel(f"mean KL divergence to fp32, test-{split} (nats per token, log)")
    ax.set_ylabel(f"{label(f'delta_wer_{split}')} (points; symlog beyond ±5)")
    legend = ax.legend(title=None, fontsize=8, loc="upper left")
    fig.tight_layout()
    named = data[data["configuration"].isin(disagreements or [])]
    if len(named):
        fig.canvas.draw()
        box = legend.get_window_extent(fig.canvas.get_renderer()).transformed(ax.transData.inverted())
        _label_points(ax, list(zip(named[f"kld_{split}"], named[f"delta_wer_{split}"], named["configuration"])),
                      fontsize=7, obstacles=list(zip(data[f"kld_{split}"], data[f"delta_wer_{split}"]))
                      + _box_points(box))
    return fig


def runtime_tradeoff(df, cpu_class: str, reference_wer: float | None = None, headroom: float = 5.0):
    """WER on test-other (whisper-base weights) against the latency ratio to PyTorch fp32 on ``cpu_class``
    (whisper-small architecture), one marker shape and colour per runtime, every point named.

    Points right of 1 are slower than PyTorch fp32; the dotted line is PyTorch fp32's WER. The y axis stops
    ``headroom`` points above that line so the rows that matter stay readable: a row beyond it is drawn at the
    top edge as an upward triangle labelled with its WER. Labels are placed by :func:`_label_points`, clear of
    every marker and of each other.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .ship import class_column

    _style()
    col = class_column(cpu_class)
    data = _ok(df, col, "wer_other") if col in df else df.iloc[0:0]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    if len(data):
        order = _libraries_in(data)
        markers = dict(zip(order, "osDP^vXp*h"))
        top = (reference_wer if reference_wer is not None else data["wer_other"].min()) + headroom
        inside, beyond = data[data["wer_other"] <= top], data[data["wer_other"] > top]
        sns.scatterplot(inside, x=col, y="wer_other", hue="library", hue_order=order, style="library",
                        style_order=order, markers=markers, palette=palette(), s=80, ax=ax)
        ceiling = top + 0.4
        for _, row in beyond.iterrows():
            ax.scatter(row[col], ceiling, marker="^", s=90, color=palette()[row["library"]], clip_on=False)
        points = []
        for _, row in data.iterrows():
            name = row["configuration"].replace(row["library"], "").strip() or row["configuration"]
            name = name.replace(" (4 calibration utterances)", "").replace(" (nncf.quantize)", "")
            y = row["wer_other"] if row["wer_other"] <= top else ceiling
            if row["wer_other"] > top:
                name += f" ↑ {row['wer_other']:.1f}"
            points.append((row[col], y, name))
        ax.axvline(1.0, color="grey", lw=1, ls="--")
        if reference_wer is not None:
            ax.axhline(reference_wer, color="grey", lw=1, ls=":", label="PyTorch fp32 WER")
        ax.set_ylim(top=ceiling + 0.6)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
        ax.set_xlabel(f"latency ratio to PyTorch fp32 on {cpu_class} (whisper-small architecture; < 1 is faster)")
        ax.set_ylabel("WER test-other (%) on whisper-base weights")
        fig.tight_layout()  # the final layout before labels are placed (they are placed in display coordinates)
        # every marker is an obstacle: no label covers a point or another label
        _label_points(ax, points, fontsize=7, obstacles=[(x, y) for x, y, _ in points])
        return fig
    ax.set_xlabel(f"latency ratio to PyTorch fp32 on {cpu_class} (whisper-small architecture; < 1 is faster)")
    ax.set_ylabel("WER test-other (%) on whisper-base weights")
    fig.tight_layout()
    return fig


def noise_delta_wer(df, clean_x: float = 25.0):
    """ΔWER against fp32 at the same SNR and noise kind, per configuration (lines, coloured by library; bars:
    95% paired interval, speakers resampled), one panel per noise kind; the study's clean test-clean ΔWER is
    drawn at the right, marked ``clean``. The y axis is linear within ±5 points, logarithmic beyond.

    Read it as: a line that rises to the left loses more to fp32 as the noise gets louder. With no noisy
    result, the panels say so.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    _style()
    kinds = [k for k in dict.fromkeys(df["noise"]) if k != "clean"] if len(df) else []
    kinds = kinds or ["babble", "white"]
    data = _ok(df[df["configuration"] != "fp32"] if len(df) else df, "delta_wer", "delta_wer_low", "delta_wer_high")
    colors, markers = palette(), "osD^vP*Xh<>"
    configurations = list(dict.fromkeys(data["configuration"]))
    library_of = dict(zip(data["configuration"], data["library"]))
    variants = {name: [n for n in configurations if library_of[n] == library_of[name]].index(name)
                for name in configurations}  # a configuration's rank within its library: its shade and line style
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4.2), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        part = data[data["noise"].isin([kind, "clean"])]
        for i, name in enumerate(configurations):
            rows = part[part["configuration"] == name].copy()
            if rows.empty or not (rows["noise"] == kind).any():
                continue
            rows["x"] = rows["snr_db"].where(rows["noise"] != "clean", clean_x) + 0.25 * (i - len(configurations) / 2)
            rows = rows.sort_values("x")
            library = rows["library"].iloc[0]
            color, style = library_variant(colors[library], variants[name])
            ax.errorbar(rows["x"], rows["delta_wer"], yerr=[rows["delta_wer"] - rows["delta_wer_low"],
                                                            rows["delta_wer_high"] - rows["delta_wer"]],
                        color=color, ls=style, marker=markers[i % len(markers)], ms=5, lw=1.2, capsize=2,
                        label=readable(name))
        ax.axhline(0, color="black", lw=1)
        ax.set_yscale("symlog", linthresh=5.0)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_xlim(-1.5, clean_x + 1.5)
        ax.set_xticks([0, 5, 10, 20, clean_x], labels=["0", "5", "10", "20", "clean"])
        ax.set_xlabel("SNR (dB, active speech RMS / noise RMS)")
        ax.set_title(f"{kind} noise, test-clean")
        if not (part["noise"] == kind).any():
            ax.text(0.5, 0.5, "no result with this noise", transform=ax.transAxes, ha="center", va="center",
                    color="0.4")
    axes[0][0].set_ylabel("ΔWER vs fp32 at the same SNR (points)")
    handles, names = axes[0][-1].get_legend_handles_labels()
    for ax in axes[0][:-1]:
        h, n = ax.get_legend_handles_labels()
        handles += [x for x, m in zip(h, n) if m not in names]
        names += [m for m in n if m not in names]
    if handles:
        axes[0][-1].legend(handles, names, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                           frameon=False)
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
