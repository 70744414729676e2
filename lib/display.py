"""How tables look in the book: plain column names become labels, rows get their marks, numbers are rounded.

Marks on a configuration's name: ``‡`` decoded with the older recipe, ``§`` latency timed on another CPU
class than the study's (not comparable).

>>> label("delta_wer_other_low"), label("small_mb"), label("wer_dev_clean"), label("status")
('ΔWER other low', 'MB (whisper-small architecture)', 'WER dev-clean', 'status')
>>> readable("torch.ao static w-int8 a-int8 per-channel cal 4 method=pt2e")
'torch.ao static w-int8 a-int8 per-channel, 4 calibration utterances, PT2E'
"""
from __future__ import annotations

import functools
import html
import re
from typing import Iterable

import pandas as pd

from .paths import RUNS_DIR

OLDER_DECODING_MARK = " ‡"
OTHER_CPU_MARK = " §"
#: The columns timed on the study's one CPU class (the § mark's subject); per-class columns
#: (``latency_ratio_<class>``) name their class and never carry the mark.
STUDY_CLASS_COLUMNS = {"latency_s", "latency_min_s", "latency_ratio", "fp32_latency_s", "encoder_s", "decoder_s",
                       "encoder_ratio", "decoder_ratio", "latency_cpu", "cpu", "timing_spread_pct"}

LABELS = {"small_mb": "MB (whisper-small architecture)", "base_mb": "MB (whisper-base)",
          "peak_mb": "peak MiB resident (whisper-small architecture)", "loaded_mb": "MiB resident, loaded",
          "serialized_mb": "serialized MB (whisper-small architecture)",
          "compression_pct": "compression %", "latency_s": "latency s", "latency_min_s": "latency min s",
          "fp32_latency_s": "fp32 latency s", "latency_ratio": "latency ratio", "latency_cpu": "latency CPU",
          "other_cpu": "other CPU", "cpu": "CPU", "encoder_s": "encoder s", "decoder_s": "decoder s",
          "encoder_ratio": "encoder ratio", "decoder_ratio": "decoder ratio", "timing_spread_pct": "timing spread %",
          "load_1min_end": "load (1 min) at end", "encoder_cosine": "encoder cosine", "weight_error": "weight error",
          "encoder_distance": "encoder distance", "older_decoding": "older decoding", "pairs": "pairs",
          "foreign_pct": "other processes' CPU %", "quiet": "quiet (evidence)"}
_SPLIT_COLUMN = re.compile(r"(delta_)?(wer|rtfx)_(.+?)(_low_utt|_high_utt|_low|_high|_ci)?")
_SPLIT_METRICS = {"kld": "KLD", "agree": "top-1 agree %", "dnll": "ΔNLL", "n": "n", "common": "n", "words": "words",
                  "fid_n": "n fidelity", "fp32_wer": "fp32 WER"}
_METRIC_COLUMN = re.compile(r"(fid_n|fp32_wer|kld|agree|dnll|n|common|words)_(clean|other|dev_clean)(_low|_high|_p99)?")
_CLASS_COLUMN = re.compile(r"latency_ratio_([a-z0-9_]+?)(_low|_high)?")
CPU_CLASS_NAMES = {"avx2": "AVX2", "avx_512_vnni": "AVX-512 VNNI", "amx": "AMX", "avx_512": "AVX-512",
                   "avx2_vnni": "AVX2 VNNI"}

ACCURACY_COLUMNS = ["configuration", "status", "wer_clean", "delta_wer_clean", "delta_wer_clean_ci", "wer_other",
                    "delta_wer_other", "delta_wer_other_ci", "common_other", "error"]
COST_COLUMNS = ["configuration", "kld_other", "agree_other", "dnll_other", "small_mb", "compression_pct",
                "latency_ratio"]  # a chapter's second table: fidelity, size and latency (one table is too wide)
DISPLAY_COLUMNS = ACCURACY_COLUMNS[:-1] + COST_COLUMNS[1:] + ["error"]
COMPACT_COLUMNS = ["configuration", "status", "small_mb", "compression_pct", "wer_clean", "wer_other",
                   "latency_ratio"]


_NAME_WORDS = [(re.compile(r" cal (\d+)"), r", \1 calibration utterances"), (re.compile(r" method=(\w+)"),
                lambda m: ", " + m.group(1).upper()), (re.compile(r" double_quant=True"), " double-quantized scales"),
               (re.compile(r" threshold=([\d.]+)"), r" outlier threshold \1"),
               (re.compile(r" compute=(\w+)"), r" \1 compute"), (re.compile(r" layout=intx"), " one value per byte"),
               (re.compile(r" \+proj_out recipe only$"), " on proj_out only"),
               (re.compile(r" recipe only-(enc|dec)(\d+)-(sattn|xattn|fc1|fc2)$"),
                lambda m: f" on {_SIDE_WORDS[m.group(1)]} layer {m.group(2)} {_PART_WORDS[m.group(3)]} only"),
               (re.compile(r" recipe mix-top(\d+)-(\w+)$"), r", \1 most sensitive groups at \2"),
               (re.compile(r" recipe enc-fc1-int8$"), ", encoder and every fc1 at int8 (community recipe)")]
_SIDE_WORDS = {"enc": "encoder", "dec": "decoder"}
_PART_WORDS = {"sattn": "self-attention", "xattn": "cross-attention", "fc1": "fc1", "fc2": "fc2"}


def readable(name: str) -> str:
    """A configuration's name in words for tables and figures: ``'... cal 4'`` reads
    ``'..., 4 calibration utterances'``, ``double_quant=True`` ``'double-quantized scales'``, and so on.

    >>> readable("HQQ weight-only int3 g64 recipe only-dec5-xattn")
    'HQQ weight-only int3 g64 on decoder layer 5 cross-attention only'
    >>> readable("HQQ weight-only int4 g64 recipe mix-top5-int8")
    'HQQ weight-only int4 g64, 5 most sensitive groups at int8'
    """
    for pattern, words in _NAME_WORDS:
        name = pattern.sub(words, name)
    return name


def label(column: str) -> str:
    """The readable label of a plain column name (names without one are returned as they are)."""
    if column in LABELS:
        return LABELS[column]
    metric = _METRIC_COLUMN.fullmatch(column)
    if metric:
        name, split, suffix = metric.groups()
        return f"{_SPLIT_METRICS[name]} {split.replace('_', '-')}{ {'_low': ' low', '_high': ' high', '_p99': ' p99', None: ''}[suffix]}"
    cls = _CLASS_COLUMN.fullmatch(column)
    if cls and cls.group(1) in CPU_CLASS_NAMES:
        return f"latency ratio {CPU_CLASS_NAMES[cls.group(1)]}" + {"_low": " low", "_high": " high", None: ""}[cls.group(2)]
    match = _SPLIT_COLUMN.fullmatch(column)
    if not match:
        return column
    delta, metric, split, suffix = match.groups()
    suffix = {"_low": " low", "_high": " high", "_ci": " CI", "_low_utt": " low (utterances)",
              "_high_utt": " high (utterances)", None: ""}[suffix]
    return f"{'Δ' if delta else ''}{'WER' if metric == 'wer' else 'RTFx'} {split.replace('_', '-')}{suffix}"


def labelled(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its columns renamed to their labels."""
    return df.rename(columns=label)


@functools.lru_cache(maxsize=1)
def _slugs_by_name() -> dict[str, str]:
    """Each configuration name of the grids (full runs, no utterance limit) and the slug of its WER run."""
    from .grids import GRIDS, expand_grid, grid_path

    jobs = [job for grid in GRIDS for job in expand_grid(grid_path(grid))]
    return {**{job.config.quant.label: job.slug for job in jobs}, **{readable(job.config.quant.label): job.slug for job in jobs}}


def run_link(slug: str | None, text: str) -> str:
    """``text`` as an HTML link to the run page of ``slug`` (``runs/<slug>.html``, relative to a chapter),
    or ``text`` alone when that run has no executed page."""
    if isinstance(slug, str) and (RUNS_DIR / f"{slug}.ipynb").exists():
        return f'<a href="runs/{html.escape(slug)}.html">{html.escape(text)}</a>'
    return html.escape(text)


def linked_names(df: pd.DataFrame) -> pd.Series:
    """Each row's readable configuration name (:func:`readable`), linked to its run page where it has one
    (the ``slug`` column, else the grids' slug of that name)."""
    slugs = df["slug"] if "slug" in df else df["configuration"].map(_slugs_by_name())
    return pd.Series([run_link(slug, readable(name)) for slug, name in zip(slugs, df["configuration"])],
                     index=df.index)


def marked_names(df: pd.DataFrame, names: pd.Series | None = None, latency_shown: bool = True) -> pd.Series:
    """Each row's configuration (or ``names``) with its marks, e.g. ``'HQQ weight-only int4 g64 ‡'``; the
    other-CPU mark § (a latency note) only where the table shows a latency (``latency_shown``)."""
    names = (df["configuration"] if names is None else names).copy()
    flags = [("older_decoding", OLDER_DECODING_MARK)] + ([("other_cpu", OTHER_CPU_MARK)] if latency_shown else [])
    for flag, mark in flags:
        if flag in df:
            names = names + df[flag].map({True: mark}).fillna("")
    return names


def display_table(df: pd.DataFrame, columns: Iterable[str] = DISPLAY_COLUMNS) -> pd.DataFrame:
    """Rounded, readable view of a table of :mod:`lib.tables` (missing values blank, long errors cut).

    ``columns`` are plain names (those absent are skipped); the view's headers are their labels and its
    index is the configuration with its marks.
    """
    cols = [c for c in columns if c in df.columns]
    view = df[cols].copy()
    for tag in ("clean", "other"):  # "ΔWER other" and its interval in one cell: "+0.37 [-0.10, +1.24]"
        delta, ci = f"delta_wer_{tag}", f"delta_wer_{tag}_ci"
        if delta in view and ci in view:
            view[delta] = [f"{d:+.2f} {c}" if d == d and isinstance(c, str) else "" for d, c in zip(view[delta], view[ci])]
            view = view.drop(columns=ci)
    for name, fmt in (("kld", "{:.3g} [{:.3g}, {:.3g}]"), ("agree", "{:.1f} [{:.1f}, {:.1f}]"),
                      ("dnll", "{:+.3f} [{:+.3f}, {:+.3f}]")):  # fidelity with its interval in one cell
        for tag in ("clean", "other"):
            col, low, high = f"{name}_{tag}", f"{name}_{tag}_low", f"{name}_{tag}_high"
            if col in view and low in df and high in df and low not in view:
                view[col] = [fmt.format(v, lo, hi) if v == v else "" for v, lo, hi in zip(df[col], df[low], df[high])]
    view = view.drop(columns=[c for c in view.columns if c != "configuration" and view[c].isna().all()])
    for c in view.columns:
        if c.startswith(("common_", "n_", "fid_n_", "words_")):
            view[c] = view[c].map(lambda v: "" if pd.isna(v) else str(int(v)))
    if "configuration" in view:
        view["configuration"] = marked_names(df, linked_names(df),
                                             latency_shown=bool(STUDY_CLASS_COLUMNS & set(cols)))
    for c in view.columns:
        if view[c].dtype.kind == "f":
            view[c] = view[c].round(2)
    if "error" in view:
        view["error"] = view["error"].map(brief_error)
        if not view["error"].astype(bool).any():
            view = view.drop(columns="error")
    view = labelled(view.fillna("").set_index("configuration").rename_axis(None))  # one header row
    legend = marks_legend(view.index)
    if not legend and not view.index.astype(str).str.contains("<a href=", regex=False).any():
        return view
    styled = view.style.format(precision=2, na_rep="")  # a Styler keeps the run-page links as HTML
    if not legend:
        return styled
    return styled.set_caption(legend).set_table_styles(
        [{"selector": "caption", "props": "caption-side: bottom; text-align: left; font-size: 0.85em;"}])


MARK_MEANINGS = {OLDER_DECODING_MARK.strip(): "‡ decoded with an older recipe on an older, smaller subset (Setup, "
                 "decoding recipe): no raw WER beside the others; its ΔWER is on the utterances it shares with fp32 "
                 "(Summary, rows on the older subset)", OTHER_CPU_MARK.strip(): "§ this row's latency comes from another CPU class than the "
                 "table's (the study's class); not comparable with the other rows"}


def marks_legend(names) -> str:
    """The legend of the marks that ``names`` carry, e.g. ``'‡ decoded with an older recipe …'`` (or '')."""
    used = [meaning for mark, meaning in MARK_MEANINGS.items() if any(str(n).endswith(mark) for n in names)]
    return "; ".join(used)


def run_log_html(rows: pd.DataFrame) -> str:
    """The run log as one HTML table (rows of :func:`lib.runner.sweep_status`): the configuration's readable
    name linked to its run page, its chapter, the WER run's state and WER per split, the footprint's state,
    the CPU class, and for a failed run the reason (its traceback is in :func:`failure_details_html`)."""
    def wer(v):
        return "" if v is None or v != v else f"{v:.2f}"

    def cpu(r):
        classes = [c for c in dict.fromkeys((r["wer CPU"], r["footprint CPU"])) if c]
        return " / ".join(classes)

    head = ["configuration", "chapter", "WER run", "WER clean", "WER other", "footprint", "CPU class",
            "failure reason"]
    body = []
    for _, r in rows.iterrows():
        reason = f'{r["failed_run"]}, {r["failed_stage"]}: {brief_error(r["error"].strip().splitlines()[-1])}' if r[
            "error"] else ""
        state = {"pending": "not run"}
        cells = [run_link(r["slug"], readable(r["configuration"])), r["grid"], state.get(r["wer"], r["wer"]),
                 wer(r["wer_clean"]), wer(r["wer_other"]), state.get(r["footprint"], r["footprint"]), cpu(r),
                 html.escape(reason)]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ('<table class="table runlog">\n<thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>")


def failure_details_html(rows: pd.DataFrame) -> str:
    """One collapsed block per failed run (rows of :func:`lib.runner.sweep_status`): the configuration, the
    run and stage that failed and the reason as its summary, the stored traceback inside (or 'none')."""
    blocks = []
    for _, r in rows[rows["error"].astype(bool)].iterrows():
        title = (f'{run_link(r["slug"], readable(r["configuration"]))}: {html.escape(r["failed_run"])} failed at '
                 f'{html.escape(r["failed_stage"] or "?")}: {html.escape(r["error"].strip().splitlines()[-1])}')
        trace = html.escape(r["traceback"] or r["error"])
        blocks.append(f"<details><summary>{title}</summary>\n<pre>{trace}</pre>\n</details>")
    return "\n".join(blocks) or "<p>No run failed.</p>"


def compact_table(df: pd.DataFrame) -> pd.DataFrame:
    """The study in one small table (for a terminal or a note): size and latency on whisper-small, WER on base.

    Failed rows keep the last line of their error (``reason``); rows not run stay blank. Names carry the
    marks of :func:`display_table`; headers are labels.
    """
    view = df[[c for c in COMPACT_COLUMNS if c in df.columns]].copy()
    if "configuration" in view:
        view["configuration"] = marked_names(df, df["configuration"].map(readable))
    if "error" in df:
        view["reason"] = df["error"].fillna("").map(lambda e: brief_error(e.strip().splitlines()[-1]) if e.strip() else "")
    return labelled(view.round(2))


def status_counts(df: pd.DataFrame) -> str:
    """``'12 ok, 2 failed, 3 not run'`` for a chapter table, or ``'12 ok (5 marked ‡ …), 2 failed'``
    (a count of zero failed or not-run rows is left out).

    ``‡`` counts the ok rows still decoded with the older recipe (see :data:`lib.transcribe.DECODING`).
    """
    counts = df["status"].value_counts()
    older = int(df["older_decoding"].sum()) if "older_decoding" in df else 0
    text = ", ".join([f"{counts.get('ok', 0)} ok"] + [f"{counts[k]} {word}" for k, word in
                                                     (("failed", "failed"), ("pending", "not run")) if counts.get(k)])
    note = f" ok ({older} marked{OLDER_DECODING_MARK}: decoded with an older recipe, see Setup)"
    return text.replace(" ok", note, 1) if older else text


def brief_error(error: str | None, width: int = 160) -> str:
    """A failure's reason for a table cell, never cut mid-expression: the error's first non-blank line, and when
    that is longer than ``width``, its first clause (up to the first ``'; '``) if it has one, else the line whole.

    >>> brief_error("ValueError: CTranslate2 has no bfloat16 compute type; get_supported_compute_types('cpu') = "
    ...             "['float32', 'int8']", width=40)
    'ValueError: CTranslate2 has no bfloat16 compute type'
    >>> brief_error("RuntimeError: boom\\nTraceback ...")
    'RuntimeError: boom'
    >>> brief_error(None)
    ''
    """
    lines = [x.strip() for x in str(error or "").splitlines() if x.strip()]
    line = lines[0] if lines else ""
    return line.split("; ", 1)[0] if len(line) > width else line


def whole_table(df: pd.DataFrame, na: str = "–", precision: int | None = None):
    """``df`` as a Styler that shows every row, column and character (no ``…``, no ``rows × columns`` footer),
    whole numbers as integers (``99`` rather than ``99.0``, in float and in mixed columns alike), other floats as
    they are (``0.99958``; round the table first) or at ``precision`` decimals, and missing values as ``na``
    (never ``NaN``).

    >>> html = whole_table(pd.DataFrame({"n": [99.0, None], "x": [0.99958, 10.5]})).to_html()
    >>> ">99<" in html and ">0.99958<" in html and ">–<" in html and "NaN" not in html and "99.0" not in html
    True
    """
    def cell(v):
        if v is None or (isinstance(v, float) and v != v):
            return na
        if isinstance(v, bool):
            return str(v)
        if isinstance(v, float):
            return f"{v:.0f}" if v.is_integer() else f"{v:.{precision}f}" if precision is not None else f"{v:g}"
        return str(v)

    view = df.copy()
    if isinstance(view.index, pd.MultiIndex) or view.index.dtype.kind == "f":
        view.index = [cell(i) for i in view.index]
    return view.style.format(cell)


def shorten(text: str, width: int = 160) -> str:
    """Cut at a word boundary: ``shorten("a bc def", 5)`` -> ``'a bc…'``."""
    return text if len(text) <= width else text[:width].rsplit(" ", 1)[0] + "…"


RECIPE_COLUMNS = ["configuration", "status", "small_mb", "wer_clean", "wer_other", "delta_wer_other",
                  "delta_wer_other_ci", "kld_clean", "kld_other", "agree_other", "footprint", "error"]


def sensitivity_view(table: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` most and ``n`` least sensitive groups of :func:`lib.sensitivity.sensitivity_table`, readable:
    rank, group, KLD and top-1 agreement at int3, KLD at int2 where it ran."""
    part = pd.concat([table.head(n), table.tail(n)]) if len(table) > 2 * n else table
    view = part[["rank", "label", "kld", "agreement", "kld_int2"]].rename(columns={
        "label": "group", "kld": "KLD int3", "agreement": "top-1 agree % int3", "kld_int2": "KLD int2"})
    view["KLD int3"] = view["KLD int3"].map(lambda v: f"{v:.3g}")
    view["top-1 agree % int3"] = view["top-1 agree % int3"].map(lambda v: f"{v:.1f}")
    view["KLD int2"] = view["KLD int2"].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
    return view.set_index("rank")


def confirmation_view(table: pd.DataFrame) -> pd.DataFrame:
    """Readable :func:`lib.analysis.confirmation_table`: map rank and KLD (the fixed subset) next to the
    whole-sample KLD and ΔWER on test-other with its interval; rows with no result say so."""
    if table.empty:
        return table

    def number(v, fmt):
        return "" if pd.isna(v) else format(v, fmt)

    view = pd.DataFrame({
        "rank": table["rank"], "group": table["group"], "end of the map": table["end"] + " sensitive",
        "KLD int3 (map subset)": table["map_kld"].map(lambda v: number(v, ".3g")),
        "KLD int3 (whole sample, other)": table["kld_other"].map(lambda v: number(v, ".3g")),
        "WER other": table["wer_other"].map(lambda v: number(v, ".2f")),
        "ΔWER other [95% CI]": [
            "" if pd.isna(d) else f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]"
            for d, lo, hi in zip(table["delta_wer_other"], table["delta_wer_other_low"], table["delta_wer_other_high"])],
        "status": table["status"]})
    return view.set_index("rank")
