"""Notebooks executed by papermill: one configuration's run page (``notebooks/run_config.md`` into
``book/runs/<slug>.ipynb``) and the chapters (``notebooks/<name>.md`` into ``book/<name>.ipynb``).

A chapter's parameters are checked against its parameters cell before it runs, and a failed execution leaves
the committed page as it was (:class:`ChapterFailed`). The chapter list is ``_toc.yml``'s (:data:`CHAPTERS`).

>>> first_line("ValueError: bad\\ntraceback ...")
'ValueError: bad'
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from .config import ConfigError, model_tag
from .grids import Job
from .paths import REPO_ROOT, portable, relative_to_repo
from .results import RESULTS_DIR

NOTEBOOK_SOURCE = REPO_ROOT / "notebooks" / "run_config.md"
LOG_DIR = REPO_ROOT / "logs" / "runs"  # live stdout/stderr of each per-configuration notebook (not committed)


def first_line(error: str | None) -> str:
    """The reason a failure's record leads with, never blank: ``'ValueError: bad\\ntrace...'`` -> ``'ValueError: bad'``."""
    lines = [x.strip() for x in (error or "").splitlines() if x.strip()]
    return lines[0] if lines else "no error text was recorded (see logs/runs/<slug>.log)"


def failure_line(exc: BaseException) -> str:
    """One line for why a job raised: a notebook's own error (papermill's ``ename: evalue``, colour codes
    removed) rather than papermill's wrapper, e.g. ``'DataError: LibriSpeech directory 'x' does not exist; ...'``."""
    import re

    if getattr(exc, "ename", None):
        text = f"{exc.ename}: {exc.evalue}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return first_line(re.sub(r"\x1b\[[0-9;]*m", "", text))


def notebook_parameters(job: Job, results_dir: Path, footprint_dir: Path, force: bool,
                        data: str | None, retry_failed: bool = False, refresh_outdated: bool = False) -> dict[str, Any]:
    """The per-configuration notebook's parameters; folders inside the repository are relative to it
    (``'results'``), since the kernel runs in the repository root and the cell is committed."""
    c = job.config
    return {"model": c.model, "split": list(c.split), "limit": c.limit, "quant": c.quant.to_dict(),
            "batch_size": c.batch_size, "threads": c.threads, "max_new_tokens": c.max_new_tokens,
            "footprint": job.footprint, "footprint_model": job.footprint_model,
            "results_dir": relative_to_repo(results_dir), "footprint_dir": relative_to_repo(footprint_dir),
            "force": force, "retry_failed": retry_failed, "refresh_outdated": refresh_outdated, "data": data,
            **({"noise": c.noise.to_dict()} if c.noise is not None else {})}  # clean runs: as before


def run_title(job: Job) -> str:
    """Page title of an executed run, e.g. ``'Run: HQQ weight-only int4 g64 (whisper-base, all utterances)'``,
    or for a run with an utterance limit ``'Smoke run, 2 utterances per split: HQQ weight-only int4 g64
    (whisper-base)'``."""
    c = job.config
    noise = f", {c.noise.label}" if c.noise is not None else ""
    if c.limit:
        return f"Smoke run, {c.limit} utterances per split: {c.quant.label} ({model_tag(c.model)}{noise})"
    return f"Run: {c.quant.label} ({model_tag(c.model)}, all utterances{noise})"


def execute_notebook(job: Job, runs_dir: Path, results_dir: Path, footprint_dir: Path, force: bool = False,
                     data: str | None = None, log_dir: Path | None = LOG_DIR, retry_failed: bool = False,
                     refresh_outdated: bool = False) -> Path:
    """Execute ``notebooks/run_config.md`` for one job; the output is ``runs_dir/<slug>.ipynb``.

    While it runs, the kernel's stdout/stderr (progress bars every 30 s) stream to
    ``log_dir/<slug>.log``, so a long run can be followed with ``tail -f``.
    """
    import jupytext

    runs_dir.mkdir(parents=True, exist_ok=True)
    output = runs_dir / f"{job.slug}.ipynb"
    notebook = jupytext.read(NOTEBOOK_SOURCE)
    notebook.cells[0].source = notebook.cells[0].source.replace("# One configuration", f"# {run_title(job)}", 1)
    os.environ.setdefault("TQDM_MININTERVAL", "30")  # a progress line every 30 s, not every batch
    with contextlib.ExitStack() as log:
        streams = {}
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            handle = log.enter_context(open(Path(log_dir) / f"{job.slug}.log", "w", buffering=1))
            streams = {"log_output": True, "stdout_file": handle, "stderr_file": handle}
        run_papermill(notebook, output, notebook_parameters(job, results_dir, footprint_dir, force, data,
                                                            retry_failed, refresh_outdated),
                      keep_failed=True, **streams)  # a failed run's notebook shows its error
    return output


def run_papermill(notebook, output: Path, parameters: dict[str, Any], keep_failed: bool = False,
                  **options: Any) -> None:
    """Execute a jupytext-read ``notebook`` with papermill into ``output`` (atomically: a partial file is renamed).

    The kernel runs in the repository root, and the paths papermill records in the notebook
    (``metadata.papermill.input_path``/``output_path``) are relative to it, e.g.
    ``'book/runs/.<slug>.source.ipynb'`` (the converted source, deleted afterwards), so an executed notebook
    holds no machine path. ``keep_failed`` keeps the output of a run that raised.
    """
    import jupytext
    import papermill

    source = output.with_name(f".{output.stem}.source.ipynb")
    partial = output.with_name(f".{output.stem}.part.ipynb")
    jupytext.write(notebook, source)
    succeeded = False
    try:
        with contextlib.chdir(REPO_ROOT):
            papermill.execute_notebook(relative_to_repo(source), relative_to_repo(partial), parameters=parameters,
                                       cwd=".", kernel_name="python3", progress_bar=False, **options)
        succeeded = True
    finally:
        source.unlink(missing_ok=True)
        if partial.exists() and (succeeded or keep_failed):
            partial.write_text(cleaned_notebook(partial.read_text()))
            os.replace(partial, output)


def _library_warning_display(output) -> bool:
    """A rich/NNCF progress display that carries a library warning (``UserWarning: install "ipywidgets"``)."""
    if output.get("output_type") != "display_data":
        return False
    plain = output.get("data", {}).get("text/plain", "")
    return "Warning: " in ("".join(plain) if isinstance(plain, list) else str(plain))


def cleaned_notebook(text: str) -> str:
    """An executed notebook (its JSON text) as the book shows it: without stderr outputs (library warnings,
    torchao's ``.so`` load failures, tqdm bars, which the live log under ``logs/runs`` keeps), with papermill's
    injected parameters folded (``hide-input``: one click shows what ran), the default parameters they
    replace removed (``remove-cell``), and this machine's paths made portable (:func:`lib.paths.portable`).
    Errors and printed results stay.

    >>> nb = '{"cells": [{"cell_type": "code", "id": "a", "source": "", "metadata": {}, "execution_count": 1, "outputs": ['
    >>> nb += '{"output_type": "stream", "name": "stderr", "text": "50%|#####"}, '
    >>> nb += '{"output_type": "stream", "name": "stdout", "text": "ok"}]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    >>> [o["name"] for o in __import__("json").loads(cleaned_notebook(nb))["cells"][0]["outputs"]]
    ['stdout']
    """
    import nbformat

    notebook = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    for cell in notebook.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:  # the record of what ran, folded away
            cell.metadata["tags"] = [*tags, "hide-input"]
        if "parameters" in tags and "remove-cell" not in tags:  # defaults that papermill overrode: misleading
            cell.metadata["tags"] = [*tags, "remove-cell"]
        if cell.get("outputs"):
            cell.outputs = [o for o in cell.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")
                            and not _library_warning_display(o)]
    return portable(nbformat.writes(notebook))



CHAPTER_SOURCES = REPO_ROOT / "notebooks"
def book_chapters(toc: Path = REPO_ROOT / "_toc.yml") -> tuple[str, ...]:
    """The chapter pages in book order, read from ``_toc.yml`` (the one chapter list): the root, then every
    ``file:`` entry (globs of run pages are not chapters).

    >>> book_chapters()[:3]
    ('intro', 'setup', 'baseline')
    """
    import yaml

    data = yaml.safe_load(toc.read_text())
    files = [data["root"]] + [c["file"] for part in data.get("parts", []) for c in part.get("chapters", [])
                              if "file" in c]
    return tuple(files)


CHAPTERS = book_chapters()
BOOK_DIR = REPO_ROOT / "book"


def notebook_defaults(notebook) -> dict[str, Any]:
    """The names and default values of a jupytext-read notebook's ``parameters`` cell (literals only).

    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("limit = None  # e.g. 5\\ngroup_size = 64",
    ...                                                               metadata={"tags": ["parameters"]})])
    >>> notebook_defaults(nb)
    {'limit': None, 'group_size': 64}
    """
    import ast

    for cell in notebook.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse(cell.source)
            return {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)}
    return {}


def check_parameters(name: str, given: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` (one line) when a parameter is not in the chapter's parameters cell or its value
    has another type than the default's (None accepts anything; an int passes for a float).

    >>> check_parameters("bitwidth", {"group_size": "abc"}, {"group_size": 64})
    Traceback (most recent call last):
    lib.config.ConfigError: chapter bitwidth: parameter group_size takes an int (default 64), not 'abc'
    """
    for key, value in given.items():
        if key not in defaults:
            raise ConfigError(f"chapter {name}: no parameter {key!r}; it takes "
                              f"{', '.join(f'{k} (default {v!r})' for k, v in defaults.items()) or 'none'}")
        default = defaults[key]
        if default is None or value is None:
            continue
        wanted = type(default)
        ok = (isinstance(value, wanted) and not (wanted is int and isinstance(value, bool))
              or (wanted is float and isinstance(value, int) and not isinstance(value, bool)))
        if not ok:
            raise ConfigError(f"chapter {name}: parameter {key} takes a{'n' if wanted.__name__[0] in 'aeiou' else ''} "
                              f"{wanted.__name__} (default {default!r}), not {value!r}")


def execute_chapter(name: str, parameters: dict[str, Any] | None = None) -> Path:
    """Execute ``notebooks/<name>.md`` with papermill into ``book/<name>.ipynb``.

    Parameters are checked against the chapter's parameters cell first (:func:`check_parameters`); a failed
    execution raises :class:`ChapterFailed` and leaves the committed page as it was. Result files that cannot be
    read are named on stderr (the page names them in its rows' status: ``unreadable``).
    """
    import sys

    import jupytext
    import papermill

    from .results import unreadable_results

    source = CHAPTER_SOURCES / f"{name}.md"
    if not source.exists() or name == "run_config":
        chapters = sorted(p.stem for p in CHAPTER_SOURCES.glob("*.md") if p.stem != "run_config")
        raise ConfigError(f"no chapter {name!r}; chapters: {', '.join(chapters)}")
    notebook = jupytext.read(source)
    check_parameters(name, parameters or {}, notebook_defaults(notebook))
    for line in unreadable_results(RESULTS_DIR):
        print(f"warning: {line}", file=sys.stderr)
    output = BOOK_DIR / f"{name}.ipynb"
    try:
        run_papermill(notebook, output, parameters or {})
    except papermill.PapermillExecutionError as exc:
        raise ChapterFailed(f"chapter {name} failed at cell {exc.exec_count}: {failure_line(exc)}; "
                            f"{relative_to_repo(output)} was left as it was") from None
    return output


class ChapterFailed(ConfigError):
    """A chapter's execution raised; its committed page is untouched."""
