"""Result files: ``<slug>.json`` (summary) and ``<slug>.jsonl`` (one row per utterance).

Writes are atomic (temporary file + ``os.replace``) and the summary is written
last, so a run interrupted at any point never leaves a result that counts as
done.  A failed configuration is a summary with ``status: "failed"`` and its
error.  While a split is being transcribed, each finished batch is appended
to ``.partial/<slug>__<split>.jsonl`` (:class:`BatchCheckpoint`), so a run
killed after hours resumes at the batch where it stopped; ``sweep --commit``
commits these files every 10 minutes, so a fresh checkout resumes there too.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from .data import read_manifest
from .decoding import outdated_fields
from .paths import REPO_ROOT, portable, relative_to_repo

log = logging.getLogger(__name__)
RESULTS_DIR = REPO_ROOT / "results"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # like any file the user writes (mkstemp makes 0600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CorruptResult(ValueError):
    """A summary file that is not valid JSON (a torn copy, a merge conflict); the message names file and line."""


_reported: set[str] = set()


def read_summary(path: Path) -> dict[str, Any]:
    """The JSON in ``path``; :class:`CorruptResult` (one line naming the file and line) when it is not JSON."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CorruptResult(f"{relative_to_repo(path)}, line {exc.lineno}: not valid JSON ({exc.msg}); "
                            "its configuration counts as not done until the file is fixed or re-run") from None


def read_summary_or_none(path: Path) -> dict[str, Any] | None:
    """Like :func:`read_summary`, but an unreadable file is logged once (one line) and read as None."""
    try:
        return read_summary(path)
    except CorruptResult as exc:
        if str(path) not in _reported:
            _reported.add(str(path))
            log.warning("%s", exc)
        return None


_rows_checked: dict[str, tuple[tuple[int, int], str | None]] = {}


def rows_error(path: Path) -> str | None:
    """None when the JSONL at ``path`` is absent or every line is JSON, else one line naming file and line, e.g.
    ``'results/x.jsonl, line 1: not valid JSON (a merge conflict or a torn copy); ...'``. Cached by size and
    modification time, so every lookup of a result can afford it."""
    try:
        st = path.stat()
    except OSError:
        return None
    stamp = (st.st_size, st.st_mtime_ns)
    cached = _rows_checked.get(str(path))
    if cached and cached[0] == stamp:
        return cached[1]
    error = None
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except json.JSONDecodeError as exc:
            error = (f"{relative_to_repo(path)}, line {number}: not valid JSON ({exc.msg}; a merge conflict or a "
                     "torn copy?); its configuration counts as not done until the file is restored or re-run")
            break
    _rows_checked[str(path)] = (stamp, error)
    return error


def unreadable_results(root: Path | str) -> list[str]:
    """One line for each result file in ``root`` that cannot be read (summary or transcripts), e.g. for a
    chapter to name the rows it cannot show."""
    root = Path(root)
    out = []
    for path in sorted(root.glob("*.json")):
        try:
            read_summary(path)
        except CorruptResult as exc:
            out.append(str(exc))
    out += [e for p in sorted(root.glob("*.jsonl")) if (e := rows_error(p))]
    return out


def is_outdated(summary: dict[str, Any], rows: Callable[[], Iterable[dict[str, Any]]] | None = None) -> bool:
    """An ok result whose decoding recipe differs from today's (:func:`lib.decoding.outdated_fields`)."""
    return summary.get("status") == "ok" and bool(outdated_fields(summary.get("decoding"), rows))


class ResultStore:
    """Folder of results keyed by run slug."""

    def __init__(self, root: Path | str = RESULTS_DIR):
        self.root = Path(root)

    def summary_path(self, slug: str) -> Path:
        return self.root / f"{slug}.json"

    def rows_path(self, slug: str) -> Path:
        return self.root / f"{slug}.jsonl"

    def exists(self, slug: str) -> bool:
        return self.summary_path(slug).exists()

    def status(self, slug: str) -> str | None:
        return (self.get(slug) or {}).get("status")

    def get(self, slug: str) -> dict[str, Any] | None:
        """The summary, or None when there is none or it or its transcripts are unreadable (logged once, one
        line naming the file and line: :func:`read_summary_or_none`, :func:`rows_error`)."""
        if not self.exists(slug):
            return None
        error = rows_error(self.rows_path(slug))
        if error is not None:
            if error not in _reported:
                _reported.add(error)
                log.warning("%s", error)
            return None
        return read_summary_or_none(self.summary_path(slug))

    def problem(self, slug: str) -> str | None:
        """Why a stored result cannot be read (one line naming the file and line), or None."""
        if not self.exists(slug):
            return None
        error = rows_error(self.rows_path(slug))
        if error is None:
            try:
                read_summary(self.summary_path(slug))
            except CorruptResult as exc:
                error = str(exc)
        return error

    def reusable(self, slug: str, force: bool = False, retry_failed: bool = False,
                 refresh_outdated: bool = False) -> dict[str, Any] | None:
        """The stored result to return instead of running again, or None to run.

        ``force`` re-runs anything; ``retry_failed`` re-runs only a stored failure;
        ``refresh_outdated`` re-runs a result decoded with an older recipe (:func:`is_outdated`).
        """
        summary = None if force else self.get(slug)
        if summary is None:
            return None
        summary = self.load_or_none(slug)
        if summary is None or (retry_failed and summary.get("status") == "failed"):
            return None
        return None if refresh_outdated and self.is_outdated(slug, summary) else summary

    def is_outdated(self, slug: str, summary: dict[str, Any] | None = None) -> bool:
        summary = summary if summary is not None else self.load(slug)
        return is_outdated(summary, lambda: self.load_rows(slug))

    def state(self, slug: str) -> str:
        """``pending`` (also for an unreadable summary), ``failed``, ``outdated`` (ok, but decoded with an older
        recipe) or ``ok``."""
        summary = self.get(slug)  # an unreadable summary counts as not done
        if summary is None:
            return "pending"
        return "outdated" if self.is_outdated(slug, summary) else summary.get("status", "pending")

    def load(self, slug: str) -> dict[str, Any]:
        return read_summary(self.summary_path(slug))

    def load_or_none(self, slug: str) -> dict[str, Any] | None:
        """Same as :meth:`get`."""
        return self.get(slug)

    def load_lines(self, slug: str) -> list[str]:
        """The JSONL lines of a result, as stored; :class:`CorruptResult` (file and line) when one is not JSON."""
        path = self.rows_path(slug)
        if not path.exists():
            return []
        error = rows_error(path)
        if error is not None:
            raise CorruptResult(error)
        return [line for line in path.read_text().splitlines() if line.strip()]

    def valid_lines(self, slug: str, summary: dict[str, Any], today: dict[str, dict[str, str | None]],
                    data_root: Path | None = None, references: dict[tuple[str, str], str] | None = None
                    ) -> dict[tuple[str, str], str]:
        """Stored lines whose utterance has today's audio and, where ``references`` are given, today's reference
        text, keyed by ``(split, id)``; see :func:`stored_coverage`."""
        return self.sorted_lines(slug, summary, today, data_root, references)[0]

    def sorted_lines(self, slug: str, summary: dict[str, Any], today: dict[str, dict[str, str | None]],
                     data_root: Path | None = None, references: dict[tuple[str, str], str] | None = None
                     ) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str], dict[str, dict[str, Any]]]:
        """One read of the stored JSONL, sorted against today's data: the lines still valid (as
        :meth:`valid_lines`), the lines of utterances today's data does not hold (a smaller or other copy of the
        sample: a run keeps them, so it never drops rows it did not decode), and those lines' recorded coverage."""
        lines = self.load_lines(slug)
        rows = [json.loads(line) for line in lines]
        covered = stored_coverage(summary, rows, data_root)
        valid, others, coverage = {}, {}, {}
        for r, line in zip(rows, lines):
            key, here = (r["split"], r["id"]), (today.get(r["split"]) or {})
            recorded = covered.get(r["split"], {}).get(r["id"])
            if r["id"] not in here:
                if r["id"] in covered.get(r["split"], {}):
                    others[key] = line
                    coverage.setdefault(r["split"], {})[r["id"]] = recorded
            elif (here[r["id"]] is not None and recorded == here[r["id"]]
                  and (references is None or references.get(key) == r.get("reference"))):
                valid[key] = line
        return valid, others, coverage

    def save_lines(self, slug: str, summary: dict[str, Any], lines: list[str] | None) -> Path:
        """Like :meth:`save`, with the JSONL given as lines (stored rows are written back unchanged)."""
        if lines is not None:
            atomic_write_text(self.rows_path(slug), "".join(line + "\n" for line in lines))
        atomic_write_text(self.summary_path(slug), json.dumps(summary, indent=1, default=_jsonable) + "\n")
        return self.summary_path(slug)

    def load_rows(self, slug: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.load_lines(slug)]

    def save(self, slug: str, summary: dict[str, Any], rows: Iterable[dict[str, Any]] | None = None) -> Path:
        if summary.get("status") == "failed":  # tracebacks name files: keep them free of machine paths
            summary = {**summary, **{k: portable(summary[k]) for k in ("error", "traceback") if summary.get(k)}}
        if rows is not None:
            atomic_write_text(self.rows_path(slug), "".join(json.dumps(r) + "\n" for r in rows))
        atomic_write_text(self.summary_path(slug), json.dumps(summary, indent=1, default=_jsonable) + "\n")
        return self.summary_path(slug)

    def summaries(self) -> list[dict[str, Any]]:
        """Every readable summary in the folder (an unreadable one is logged and left out)."""
        return [s for p in sorted(self.root.glob("*.json")) if (s := read_summary_or_none(p)) is not None]

    def archive_outdated(self, slug: str) -> Path | None:
        """Keep an outdated result as ``older-decoding/<slug>.json`` and ``.jsonl`` before it is re-run.

        The book compares its transcripts with the refreshed ones on the utterances both cover, so the effect of
        the decoding change is measured, not confused with a change of the utterance set.
        """
        if self.get(slug) is None or not self.is_outdated(slug):
            return None
        target = self.root / "older-decoding" / f"{slug}.json"
        if self.rows_path(slug).exists():
            atomic_write_text(target.with_suffix(".jsonl"), self.rows_path(slug).read_text())
        atomic_write_text(target, self.summary_path(slug).read_text())
        return target

    def older_decoding(self) -> dict[str, dict[str, Any]]:
        """Archived outdated summaries by slug (see :meth:`archive_outdated`)."""
        folder = self.root / "older-decoding"
        found = {p.stem: read_summary_or_none(p) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
        return {slug: summary for slug, summary in found.items() if summary is not None}

    def checkpoint(self, slug: str, split: str, key: dict[str, Any]) -> "BatchCheckpoint":
        return BatchCheckpoint(self.root / ".partial" / f"{slug}__{split}.jsonl", key)

    def saved_batches(self, slug: str) -> dict[str, int]:
        """Batches kept by an interrupted run of ``slug``, per split, e.g. ``{"test-other": 5}``.

        Batches decoded with an older recipe are left out: the next run discards them.
        """
        saved = {}
        for path in sorted((self.root / ".partial").glob(f"{slug}__*.jsonl")):
            lines = path.read_text().splitlines()
            decoding = (stored_key(lines) or {}).get("decoding")  # no recipe: a checkpoint older than the key's decoding field
            if lines and decoding and not outdated_fields(decoding, rows=lambda: []):
                saved[path.stem[len(slug) + 2:]] = len(lines) - 1
        return saved

    def discard_checkpoints(self, slug: str) -> None:
        for path in (self.root / ".partial").glob(f"{slug}__*.jsonl"):
            path.unlink(missing_ok=True)


class BatchCheckpoint:
    """Finished batches of one unfinished split, kept so that a killed run resumes.

    A JSON-lines file: a header ``{"key": ...}``, then one line per finished
    batch, e.g. ``{"batch": 3, "rows": [...], "seconds": {"loop": 41.2, ...}}``.
    ``key`` says what the batches are valid for (slug, utterance ids, batch
    size, model source, library versions); a file whose header holds another
    key is discarded, so a changed configuration or upgraded library never
    mixes with old transcripts.  A torn last line (killed mid-write) is ignored.
    """

    def __init__(self, path: Path | str, key: dict[str, Any]):
        self.path = Path(path)
        self.key = json.loads(json.dumps(key, default=_jsonable))  # compare as stored

    def load(self) -> dict[int, dict[str, Any]]:
        """Finished batches by index; {} when there is no valid checkpoint."""
        if not self.path.exists():
            return {}
        lines = self.path.read_text().splitlines()
        if stored_key(lines) != self.key:
            self.discard()
            return {}
        batches: dict[int, dict[str, Any]] = {}
        for i, line in enumerate(lines[1:], start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # torn write: keep what precedes it, drop the rest
                atomic_write_text(self.path, "".join(x + "\n" for x in lines[:i]))
                break
            batches[record["batch"]] = record
        return batches

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with open(self.path, "a") as f:
            if new:
                f.write(json.dumps({"key": self.key}) + "\n")
            f.write(json.dumps(record, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def stored_coverage(summary: dict[str, Any], rows: list[dict[str, Any]], data_root: Path | None = None
                    ) -> dict[str, dict[str, str | None]]:
    """``{split: {id: audio sha256}}`` of what a stored result was computed on.

    Newer results record it (``coverage``; rows also carry ``audio_sha256``). For a result from before that, it
    is recovered from today's ``MANIFEST.tsv`` only when that is provably the manifest the result was computed
    on, extended: today's manifest restricted to the result's utterances (plus dev-clean) must hash to the
    manifest hash the result recorded. Otherwise it is empty and the rows are not reused.
    """
    if summary.get("coverage"):
        return summary["coverage"]
    out: dict[str, dict[str, str | None]] = {}
    for r in rows:
        if r.get("audio_sha256"):
            out.setdefault(r["split"], {})[r["id"]] = r["audio_sha256"]
    if out or not rows:
        return out
    recorded = (summary.get("data") or {}).get("manifest_sha256")
    if (summary.get("data") or {}).get("kind") != "directory" or data_root is None:
        return {}
    manifest_path = Path(data_root) / "MANIFEST.tsv"
    if not recorded or not manifest_path.exists():
        return {}
    ids = {r["id"] for r in rows}
    lines = manifest_path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if line.split("\t")[1] in ids or line.startswith("dev-clean\t")]
    if hashlib.sha256("".join(kept).encode()).hexdigest() != recorded:
        return {}
    manifest = read_manifest(Path(data_root))
    for r in rows:
        out.setdefault(r["split"], {})[r["id"]] = manifest[r["id"]]["sha256_flac"]
    return out


def stored_key(lines: list[str]) -> dict[str, Any] | None:
    """The key in a checkpoint's header line, e.g. ``['{"key": {"slug": "a"}}', ...]`` -> ``{"slug": "a"}``."""
    try:
        return json.loads(lines[0]).get("key") if lines else None
    except json.JSONDecodeError:
        return None


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)
