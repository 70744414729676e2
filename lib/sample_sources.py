"""What the LibriSpeech sample holds and where each file came from, read from ``MANIFEST.tsv`` and ``SOURCES.md``.

``SOURCES.md`` lists every utterance in Markdown tables (split, utterance id, duration, the repository the
audio was taken from, how it was stored: original FLAC bytes, or WAV re-encoded losslessly to FLAC).

>>> parse_source_row("| test-clean | 1089-134686-0000 | 10.435 | a/b @ `bf58` : `x.flac` | — | original FLAC bytes copied unchanged | 0.3 |  |")
{'split': 'test-clean', 'id': '1089-134686-0000', 'repository': 'a/b', 'stored': 'original FLAC'}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .data import read_manifest
from .metrics import speaker


def parse_source_row(line: str) -> dict[str, str] | None:
    """One per-utterance row of ``SOURCES.md``, or None for any other line."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) < 5 or not cells[0].startswith(("test-", "dev-")) or cells[1].count("-") != 2:
        return None
    stored = next((c for c in cells[3:] if "FLAC bytes" in c or c.startswith("WAV")), "")
    return {"split": cells[0], "id": cells[1], "repository": cells[3].split(" @ ")[0].strip(),
            "stored": "original FLAC" if "FLAC bytes" in stored else "WAV re-encoded to FLAC" if stored else "unknown"}


def source_rows(root: Path | str) -> dict[tuple[str, str], dict[str, str]]:
    """Per-utterance provenance by ``(split, id)``, from ``SOURCES.md`` (empty when there is none)."""
    path = Path(root) / "SOURCES.md"
    if not path.exists():
        return {}
    rows = (parse_source_row(line) for line in path.read_text().splitlines())
    return {(r["split"], r["id"]): r for r in rows if r}


def sample_overview(root: Path | str):
    """Per split: utterances, minutes, speakers, original FLAC files, WAV re-encodes (from the manifest)."""
    import pandas as pd

    manifest, sources = read_manifest(Path(root)), source_rows(root)
    rows: dict[str, dict[str, Any]] = {}
    for utt, entry in manifest.items():
        r = rows.setdefault(entry["split"], {"utterances": 0, "minutes": 0.0, "speakers": set(),
                                             "original FLAC": 0, "WAV re-encoded to FLAC": 0, "unknown": 0})
        r["utterances"] += 1
        r["minutes"] += float(entry["duration_s"]) / 60
        r["speakers"].add(speaker(utt))
        r[sources.get((entry["split"], utt), {}).get("stored", "unknown")] += 1
    table = pd.DataFrame({s: {**r, "speakers": len(r["speakers"])} for s, r in rows.items()}).T
    table = table.drop(columns=["unknown"]) if not table["unknown"].any() else table
    return table.rename_axis("split")


def sources_by_count(root: Path | str):
    """Repositories the audio came from, with how many utterances each gave, most first."""
    import pandas as pd

    manifest, sources = read_manifest(Path(root)), source_rows(root)
    repos = [sources.get((e["split"], utt), {}).get("repository", "unknown") for utt, e in manifest.items()]
    return pd.Series(repos).value_counts().rename_axis("repository").rename("utterances").to_frame()


def speaker_counts(root: Path | str, split: str):
    """Utterances per speaker in one split, most first (the sample is not random)."""
    import pandas as pd

    ids = [utt for utt, e in read_manifest(Path(root)).items() if e["split"] == split]
    return pd.Series([speaker(i) for i in ids]).value_counts().rename_axis("speaker").rename("utterances").to_frame()
