"""What a configuration writes when there is no speech, and whether it keeps one short word.

WER cannot show these failures: text invented on silence or noise (there is no reference to insert against),
and empty output. This module builds the clips, decodes them with one configuration and scores the raw rows
when they are loaded.

**Clips** (16 kHz float32, made here, never part of a scored split; each with a stable id and the sha256 of its
float32 samples):

* ``silence``: digital zeros;
* ``white`` / ``pink``: seeded Gaussian noise (:func:`lib.noise.white` / :func:`lib.noise.pink`), scaled to an
  RMS of ``level`` dBFS (``20 log10 RMS``, full scale 1.0);
* ``babble``: :func:`lib.noise.babble`, six talker streams of the calibration pool (dev-clean and the jfk clip)
  with no target talker, scaled to ``level`` dBFS;
* ``word``: one word cut from an unscored recording at fixed times (:data:`ONE_WORD_CUTS`), with the word it
  holds as its reference.

The noise of a clip is drawn from :func:`lib.noise.utterance_rng` of ``(seed, clip id)``, so it is the same
on every machine and for any subset of clips.

**Metrics** (words are those of the project's normalizer, :func:`lib.metrics.normalize`): words per minute of
non-speech (sum of words / sum of minutes, with a BCa interval resampling clips), the share of non-speech clips
with any word, the most common invented phrases, the one-word clips' exact / empty counts, and, from the
configuration's WER result (``results/<slug>.jsonl``), the share of speech utterances with no word.

>>> [c.id for c in nonspeech_clips(kinds=("silence", "white"), lengths=(5,), levels=(-30,))]
['silence-5s', 'white-m30dbfs-5s-s0']
>>> words("Thank you.  ")
2
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .data import SAMPLE_RATE, Utterance

log = logging.getLogger(__name__)

KINDS = ("silence", "white", "pink", "babble")
LENGTHS = (5, 30)  # seconds: a short pause and a whole Whisper window
LEVELS = (-30, -50)  # dBFS of white and pink noise: audible hiss, and near the floor of a quiet room
BABBLE_LEVEL = -30  # dBFS: babble is speech-like, one level (its talkers are each at equal active RMS)
SEEDS = (0,)
BABBLE_TALKERS = 6
#: One-word clips: (source id in the calibration pool, start s, end s or None for the end, the word).
#: Cut at a dip of the 20 ms frame level at least 18 dB below the recording's loud level (95th percentile),
#: read off the frame levels of these recordings; fp32 whisper-base transcribes each cut as its word.
ONE_WORD_CUTS = (("jfk", 0.0, 0.64, "and"),  # "And so my fellow Americans"
                 ("2412-153948-0000", 0.0, 0.62, "if"),  # "IF THE READER WILL EXCUSE ME"
                 ("1272-141231-0000", 2.40, 3.16, "sir"),  # "... TO THE UNIVERSE SIR I EXIST"
                 ("1272-128104-0001", 3.80, None, "matter"))  # "... THAN HIS MATTER"
NONSPEECH_SPLIT, WORD_SPLIT = "nonspeech", "one-word"


@dataclass(frozen=True)
class Clip:
    """One clip: ``kind`` (:data:`KINDS` or ``word``), its audio and what made it (``recipe``)."""

    id: str
    kind: str
    audio: np.ndarray = field(repr=False)
    recipe: dict[str, Any] = field(default_factory=dict)
    expected: str = ""  # the word a one-word clip holds ("" for non-speech)

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def sha256(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.audio, dtype=np.float32).tobytes()).hexdigest()

    def record(self) -> dict[str, Any]:
        """What a result stores of the clip (no audio): id, kind, seconds, sha256, recipe, expected word."""
        return {"id": self.id, "kind": self.kind, "seconds": round(self.seconds, 4), "sha256": self.sha256,
                "expected": self.expected, **self.recipe}

    def utterance(self) -> Utterance:
        """The clip as an :class:`~lib.data.Utterance` for :func:`lib.transcribe.transcribe` (split ``nonspeech``
        or ``one-word``; reference: the expected word or empty)."""
        split = WORD_SPLIT if self.kind == "word" else NONSPEECH_SPLIT
        return Utterance(self.id, split, self.expected, self.audio, sha256=self.sha256)


def at_level(x: np.ndarray, level_dbfs: float) -> np.ndarray:
    """``x`` scaled to an RMS of ``level_dbfs`` (full scale 1.0), as float32.

    >>> round(float(np.sqrt(np.mean(at_level(np.ones(10), -20) ** 2))), 6)
    0.1
    """
    x = np.asarray(x, dtype=np.float64)
    rms = float(np.sqrt(np.mean(x ** 2)))
    return (x * (10 ** (level_dbfs / 20) / rms) if rms > 0 else x).astype(np.float32)


def _level_tag(level: float) -> str:
    return f"{'m' if level < 0 else ''}{abs(level):g}dbfs"


def nonspeech_clips(kinds: Sequence[str] = KINDS, lengths: Sequence[int] = LENGTHS,
                    levels: Sequence[float] = LEVELS, seeds: Sequence[int] = SEEDS,
                    pool: Sequence[Utterance] | None = None, babble_level: float = BABBLE_LEVEL) -> list[Clip]:
    """The non-speech clips, kind by kind, then length, level, seed; ``pool`` is the babble speech
    (default: :func:`lib.noise.babble_pool`, read only when ``babble`` is asked for)."""
    from . import noise

    clips = []
    for kind in kinds:
        for seconds in lengths:
            n = int(seconds * SAMPLE_RATE)
            if kind == "silence":
                clips.append(Clip(f"silence-{seconds}s", kind, np.zeros(n, dtype=np.float32), {"length_s": seconds}))
                continue
            for level in ([babble_level] if kind == "babble" else levels):
                for seed in seeds:
                    cid = f"{kind}-{_level_tag(level)}-{seconds}s-s{seed}"
                    rng = noise.utterance_rng(seed, cid)
                    recipe = {"length_s": seconds, "level_dbfs": level, "seed": seed}
                    if kind == "babble":
                        pool = noise.babble_pool() if pool is None else pool
                        raw, sources = noise.babble(n, rng, pool, BABBLE_TALKERS)
                        recipe["sources"] = sources
                    else:
                        raw = getattr(noise, kind)(n, rng)
                    clips.append(Clip(cid, kind, at_level(raw, level), recipe))
    return clips


def one_word_clips(pool: Sequence[Utterance] | None = None, cuts: Sequence[tuple] = ONE_WORD_CUTS) -> list[Clip]:
    """The cuts of :data:`ONE_WORD_CUTS` whose source recording is in ``pool`` (default: the calibration pool);
    the clip records the source's file sha256 and the cut times."""
    from .noise import babble_pool

    pool = {u.id: u for u in (babble_pool() if pool is None else pool)}
    clips = []
    for source, start, end, word in cuts:
        if source not in pool:
            log.info("one-word clip %r skipped: %s is not in the calibration pool", word, source)
            continue
        u = pool[source]
        audio = u.audio[int(round(start * SAMPLE_RATE)):None if end is None else int(round(end * SAMPLE_RATE))]
        clips.append(Clip(f"word-{source}-{word}", "word", np.asarray(audio, dtype=np.float32),
                          {"source": source, "source_sha256": u.sha256, "start_s": start, "end_s": end}, word))
    return clips


def all_clips(data: str | None = None) -> list[Clip]:
    """The study's clip set: :func:`nonspeech_clips` then :func:`one_word_clips`, from ``data``'s pool."""
    from .noise import babble_pool

    pool = babble_pool(data)
    return nonspeech_clips(pool=pool) + one_word_clips(pool)


# --- running one configuration -------------------------------------------------------------------------------

def nonspeech_dir() -> Path:
    from .results import RESULTS_DIR

    return RESULTS_DIR / "nonspeech"


def nonspeech_slug(config) -> str:
    """``whisper-base__ct2-dyn-int8-aint8__nonspeech``: the model and quantization of a run, no split."""
    from .config import model_tag

    return f"{model_tag(config.model)}__{config.quant.slug}__nonspeech"


def run_nonspeech(config, *, data: str | None = None, results_dir: Path | str | None = None, force: bool = False,
                  retry_failed: bool = False, clips: Sequence[Clip] | None = None) -> dict[str, Any]:
    """Quantize ``config``'s model as the WER run does (:func:`lib.evaluate.load_quantized`), decode every clip
    with the study's recipe (:func:`decode`) and store the raw rows under ``results_dir/<slug>.json(l)``: the
    summary holds the configuration, decoding recipe, environment, model source and every clip's record (sha256
    included); ``speech_slug`` names the WER result whose transcripts give the empty share on speech. A stored ``ok`` result (or a failure, unless ``retry_failed``) is returned
    as it is. Any error is a ``failed`` summary with its stage and reason, never raised."""
    from .checks import check_run
    from .evaluate import Stage, load_quantized, peak_rss_mb, record_failure
    from .machine import environment
    from .results import ResultStore
    from .transcribe import decoding_recipe

    store = ResultStore(results_dir or nonspeech_dir())
    slug = nonspeech_slug(config)
    stored = None if force else store.get(slug)
    if stored is not None and (stored.get("status") == "ok" or not retry_failed):
        return stored
    summary: dict[str, Any] = {"slug": slug, "config": config.to_dict(), "speech_slug": config.slug,
                               "decoding": decoding_recipe(config.batch_size, config.threads, config.max_new_tokens),
                               "environment": environment(config.threads),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    stage, rows = Stage("clips"), None
    try:
        import torch

        clips = list(all_clips(data) if clips is None else clips)
        summary["clips"] = [c.record() for c in clips]
        stage.name = "check"
        check_run(config)
        stage.name = "load"
        torch.set_num_threads(config.threads)
        model, processor = load_quantized(config, data, summary, stage)
        stage.name = "transcribe"
        rows, seconds = decode(model, processor, clips, config.batch_size, config.max_new_tokens)
        summary.update(decode_seconds=seconds, peak_rss_mb=peak_rss_mb(), status="ok")
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        record_failure(summary, stage.name, exc)
        rows = None
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if rows is None and stored is not None and stored.get("status") == "ok":
        return summary  # a failure never replaces finished rows
    store.save(slug, summary, rows)
    return summary


def decode(model, processor, clips: Sequence[Clip], batch_size: int = 8, max_new_tokens: int = 440
           ) -> tuple[list[dict[str, Any]], float]:
    """Raw rows of the clips, decoded in batches with the study's recipe (:func:`lib.transcribe.generate`, each
    clip's token budget from its length); no warm-up or timing (nothing here is a speed). Returns rows, seconds.
    Each row: ``id``, ``split``, ``reference``, ``hypothesis`` (raw), ``audio_seconds``, ``text_tokens``,
    ``tokens``, ``audio_sha256``."""
    from .decoding import END_OF_TEXT
    from .transcribe import features, generate

    start, rows = time.perf_counter(), []
    for i in range(0, len(clips), batch_size):
        batch = [c.utterance() for c in clips[i:i + batch_size]]
        ids = generate(model, features(processor, [u.audio for u in batch]), max_new_tokens,
                       [u.duration for u in batch])
        texts = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        for j, (u, text) in enumerate(zip(batch, texts)):
            tokens = [int(t) for t in ids[j] if t < END_OF_TEXT]
            rows.append({"id": u.id, "split": u.split, "reference": u.reference, "hypothesis": text.strip(),
                         "audio_seconds": round(u.duration, 4), "text_tokens": len(tokens), "tokens": tokens,
                         "audio_sha256": u.sha256})
    return rows, time.perf_counter() - start


def run_grid(grid: str | Path = "nonspeech", *, only: str | None = None, force: bool = False,
             retry_failed: bool = False, data: str | None = None, results_dir: Path | str | None = None,
             after_each=None) -> list[dict[str, Any]]:
    """:func:`run_nonspeech` for every configuration of a grid (file order), skipping finished slugs;
    ``only`` keeps slugs containing it; ``after_each(job, summary)`` runs after each decoded configuration."""
    from .grids import expand_grid, grid_path
    from .results import ResultStore

    store = ResultStore(results_dir or nonspeech_dir())
    out = []
    for job in expand_grid(grid_path(grid)):
        slug = nonspeech_slug(job.config)
        if only and only not in slug:
            continue
        state = None if force else (store.get(slug) or {}).get("status")
        if state == "ok" or (state == "failed" and not retry_failed):
            log.info("done %s (%s)", slug, state)
            continue
        log.info("start %s", slug)
        summary = run_nonspeech(job.config, data=data, results_dir=store.root, force=force, retry_failed=retry_failed)
        log.info("%s %s%s", summary["status"], slug,
                 f": {summary.get('error', '')[:200]}" if summary["status"] != "ok" else "")
        out.append(summary)
        if after_each is not None:
            after_each(job, summary)
    return out


# --- scoring (when loading) ----------------------------------------------------------------------------------

def said(text: str) -> str:
    """A hypothesis as the project's normalizer reads it (:func:`lib.metrics.normalize`), keeping only tokens
    with a letter or digit (the normalizer leaves a bare ``'.'`` of ``'...'``).

    >>> said("[Music] Thank you..."), said("...")
    ('thank you', '')
    """
    from .metrics import normalize

    return " ".join(t for t in normalize(text or "").split() if any(ch.isalnum() for ch in t))


def words(text: str) -> int:
    """Words of a hypothesis: tokens of :func:`said`."""
    return len(said(text).split())


def nonspeech_metrics(rows: Sequence[dict[str, Any]], top: int = 3) -> dict[str, Any]:
    """Scores of the non-speech rows (split ``nonspeech``): ``words_per_min`` with ``low``/``high`` (95% BCa,
    clips resampled), the same over the clips without speech in them (``no_babble_wpm``, ``no_babble_low``,
    ``no_babble_high``: silence, white and pink noise), ``share_with_output`` (clips with at least one word), ``clips``, ``minutes`` and
    ``top_phrases``: the ``top`` most common normalized outputs as ``(phrase, clips)``, ties by phrase.

    >>> rows = [{"split": "nonspeech", "hypothesis": "Thank you.", "audio_seconds": 30.0},
    ...         {"split": "nonspeech", "hypothesis": "", "audio_seconds": 30.0}]
    >>> m = nonspeech_metrics(rows)
    >>> m["words_per_min"], m["share_with_output"], m["top_phrases"]
    (2.0, 0.5, [('thank you', 1)])
    """
    from .metrics import ratio_interval

    rows = [r for r in rows if r.get("split", NONSPEECH_SPLIT) == NONSPEECH_SPLIT]
    if not rows:
        return {"clips": 0, "minutes": 0.0, "words_per_min": float("nan"), "low": float("nan"),
                "high": float("nan"), "share_with_output": float("nan"), "top_phrases": []}
    counts = [words(r["hypothesis"]) for r in rows]
    minutes = [r["audio_seconds"] / 60 for r in rows]
    interval = ratio_interval(counts, minutes)
    phrases = Counter(p for r in rows if (p := said(r["hypothesis"])))
    ranked = sorted(phrases.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    synthetic = [i for i, r in enumerate(rows) if r.get("id", "").split("-")[0] != "babble"]
    quiet = (ratio_interval([counts[i] for i in synthetic], [minutes[i] for i in synthetic]) if synthetic
             else {"delta": float("nan"), "low": float("nan"), "high": float("nan")})
    by_kind: dict[str, int] = {}
    for r, c in zip(rows, counts):  # clip ids start with their kind: silence-5s, white-m30dbfs-5s-s0, ...
        by_kind[r.get("id", "clip").split("-")[0]] = by_kind.get(r.get("id", "clip").split("-")[0], 0) + c
    return {"clips": len(rows), "minutes": float(sum(minutes)), "words": int(sum(counts)), "by_kind": by_kind,
            "words_per_min": interval["delta"], "low": interval["low"], "high": interval["high"],
            "no_babble_wpm": quiet["delta"], "no_babble_low": quiet["low"], "no_babble_high": quiet["high"],
            "share_with_output": float(np.mean([c > 0 for c in counts])), "top_phrases": ranked}


def one_word_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Scores of the one-word rows: ``exact`` (normalized output is the expected word), ``empty`` (no word),
    ``extra`` (more than one word) and ``outputs`` (clip id -> normalized output).

    >>> one_word_metrics([{"id": "w1", "split": "one-word", "reference": "and", "hypothesis": "And."},
    ...                   {"id": "w2", "split": "one-word", "reference": "if", "hypothesis": ""}])["exact"]
    1
    """
    rows = [r for r in rows if r.get("split") == WORD_SPLIT]
    out = {r["id"]: said(r["hypothesis"]) for r in rows}
    return {"clips": len(rows), "exact": sum(out[r["id"]] == said(r["reference"]) for r in rows),
            "empty": sum(not out[r["id"]] for r in rows), "extra": sum(len(out[r["id"]].split()) > 1 for r in rows),
            "outputs": out}


def speech_empty(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The share of speech rows (a WER result's) whose hypothesis has no word after normalization.

    >>> speech_empty([{"hypothesis": "hello"}, {"hypothesis": " "}, {"hypothesis": "..."}, {"hypothesis": "a b"}])
    {'utterances': 4, 'empty': 2, 'share': 0.5}
    """
    empty = sum(words(r.get("hypothesis") or "") == 0 for r in rows)
    return {"utterances": len(rows), "empty": empty, "share": empty / len(rows) if rows else float("nan")}


def score(summary: dict[str, Any], rows: Sequence[dict[str, Any]], speech_rows: Sequence[dict[str, Any]] | None
          ) -> dict[str, Any]:
    """One configuration's row of the non-speech table: its identity, status, and (when ok) every metric."""
    from .config import QuantSpec

    quant = QuantSpec.from_dict((summary.get("config") or {}).get("quant"))
    out: dict[str, Any] = {"slug": summary["slug"], "configuration": quant.label, "status": summary.get("status")}
    if summary.get("status") != "ok":
        return {**out, "error": (summary.get("error") or "").splitlines()[0][:200] if summary.get("error") else ""}
    ns, ow = nonspeech_metrics(rows), one_word_metrics(rows)
    out.update({f"ns_{k}": v for k, v in ns.items()})
    out.update({f"word_{k}": v for k, v in ow.items()})
    sp = speech_empty(speech_rows) if speech_rows else {"utterances": 0, "empty": 0, "share": float("nan")}
    out.update({f"speech_{k}": v for k, v in sp.items()})
    return out


def load_nonspeech(results_dir: Path | str | None = None, speech_dir: Path | str | None = None,
                   grid: str | Path | None = "nonspeech") -> "Any":
    """Every stored non-speech result scored now, one row per configuration (grid order when ``grid`` is given,
    then any other stored slug), as a pandas DataFrame; speech rows come from ``speech_dir`` (``results/``) under
    each result's ``speech_slug``. A grid configuration without a result is a ``pending`` row; a result whose clip
    hashes differ from the first ok result's (fp32's, in grid order) is an ``other clips`` row, not scored."""
    import pandas as pd

    from .results import RESULTS_DIR, ResultStore

    store = ResultStore(results_dir or nonspeech_dir())
    speech = ResultStore(speech_dir or RESULTS_DIR)
    order: list[str] = []
    labels: dict[str, str] = {}
    if grid is not None:
        from .grids import expand_grid, grid_path

        for job in expand_grid(grid_path(grid)):
            order.append(nonspeech_slug(job.config))
            labels[order[-1]] = job.config.quant.label
    stored = {s["slug"]: s for s in store.summaries()}
    reference = next((clip_hashes(stored[s]) for s in order + sorted(stored) if s in stored
                      and stored[s].get("status") == "ok"), None)
    records = []
    for slug in order + sorted(set(stored) - set(order)):
        summary = stored.get(slug)
        if summary is None:
            records.append({"slug": slug, "configuration": labels.get(slug, slug), "status": "pending"})
            continue
        if summary.get("status") == "ok" and clip_hashes(summary) != reference:  # not comparable with the others
            summary = {**summary, "status": "other clips",
                       "error": "decoded other clips than the first result; run python -m lib nonspeech --force"}
        rows = store.load_rows(slug) if summary.get("status") == "ok" else []
        speech_slug = summary.get("speech_slug")
        speech_rows = speech.load_rows(speech_slug) if speech_slug and speech.exists(speech_slug) else None
        records.append(score(summary, rows, speech_rows))
    return pd.DataFrame.from_records(records)


def clip_hashes(summary: dict[str, Any]) -> dict[str, str]:
    """Clip id -> sha256 of a stored result (to check two results decoded the same audio)."""
    return {c["id"]: c["sha256"] for c in summary.get("clips") or []}


def phrases_text(pairs: Sequence[Sequence[Any]], max_words: int = 8) -> str:
    """``[('thank you', 3), ('you', 1)]`` -> ``'"thank you" (3), "you" (1)'``; none -> ``'none'``; a phrase
    longer than ``max_words`` words is cut there and ends with ``…``.

    >>> phrases_text([("thank you", 3), ("you", 1)]), phrases_text([("a b c", 1)], max_words=2)
    ('"thank you" (3), "you" (1)', '"a b…" (1)')
    """
    def cut(p):
        w = p.split()
        return " ".join(w[:max_words]) + ("…" if len(w) > max_words else "")

    return ", ".join(f'"{cut(p)}" ({n})' for p, n in pairs) or "none"


def display_table(df) -> "Any":
    """The chapter's table: one row per configuration, numbers rounded, intervals as text."""
    import pandas as pd

    def row(r):
        if r["status"] != "ok":
            return {"configuration": r["configuration"], "words / min of non-speech (95% CI)": r["status"]
                    + (f": {r['error']}" if isinstance(r.get("error"), str) and r.get("error") else ""),
                    "words / min without babble (95% CI)": "", "non-speech clips with output": "",
                    "one-word clips: exact / empty": "",
                    "speech utterances with no word": "", "most common invented phrases": ""}
        speech = (f"{100 * r['speech_share']:.1f}% ({int(r['speech_empty'])}/{int(r['speech_utterances'])})"
                  if r["speech_utterances"] else "no WER result")
        with_output = round(r["ns_share_with_output"] * r["ns_clips"])
        return {"configuration": r["configuration"],
                "words / min of non-speech (95% CI)": f"{r['ns_words_per_min']:.1f} ({r['ns_low']:.1f}–{r['ns_high']:.1f})",
                "words / min without babble (95% CI)": f"{r['ns_no_babble_wpm']:.1f} "
                                                       f"({r['ns_no_babble_low']:.1f}–{r['ns_no_babble_high']:.1f})",
                "non-speech clips with output": f"{100 * r['ns_share_with_output']:.0f}% "
                                                f"({with_output}/{int(r['ns_clips'])})",
                "one-word clips: exact / empty": f"{int(r['word_exact'])} / {int(r['word_empty'])} of "
                                                 f"{int(r['word_clips'])}",
                "speech utterances with no word": speech,
                "most common invented phrases": phrases_text(r["ns_top_phrases"])}

    return pd.DataFrame([row(r) for _, r in df.iterrows()])



def kind_table(df) -> "Any":
    """Words emitted per clip kind (summed over its clips), one row per configuration that ran."""
    import pandas as pd

    ok = df[df["status"] == "ok"]
    return pd.DataFrame([{"configuration": r["configuration"], **{k: int(r["ns_by_kind"].get(k, 0)) for k in KINDS},
                          "one-word clips said": ", ".join(v or "(nothing)" for v in r["word_outputs"].values())}
                         for _, r in ok.iterrows()])


def clips_table(summary: dict[str, Any]) -> "Any":
    """The clips a stored result decoded: id, kind, seconds, level, seed or cut, the word, sha256 (first 12)."""
    import pandas as pd

    def made_of(c):
        if c["kind"] == "word":
            end = f"{c['end_s']:.2f} s" if c.get("end_s") is not None else "end"
            return f"{c['source']} from {c['start_s']:.2f} s to {end}"
        if c["kind"] == "silence":
            return "zeros"
        return f"{c['level_dbfs']:g} dBFS, seed {c['seed']}" + (f", {len(c['sources'])} talker streams"
                                                                if c.get("sources") else "")

    return pd.DataFrame([{"clip": c["id"], "kind": c["kind"], "seconds": f"{c['seconds']:g}", "made of": made_of(c),
                          "expected word": c.get("expected") or "", "sha256": c["sha256"][:12]}
                         for c in summary.get("clips") or []])


def headline(df) -> dict[str, str]:
    """Glue-ready text for the chapter's sentence: fp32's words/min, share with output and top phrase; the
    configuration with the most words/min and its numbers; how many configurations ran; the most one-word clips
    any configuration missed; the configurations' range of empty outputs on speech.

    >>> import pandas as pd
    >>> df = pd.DataFrame([{"slug": "m__fp32__nonspeech", "configuration": "fp32", "status": "ok",
    ...     "ns_minutes": 3.5, "ns_words_per_min": 3.4, "ns_no_babble_wpm": 2.0, "ns_no_babble_low": 1.0,
    ...     "ns_no_babble_high": 4.0, "ns_low": 1.0, "ns_high": 9.0, "ns_share_with_output": 1.0,
    ...     "ns_clips": 12, "ns_top_phrases": [("you", 9)], "word_clips": 4, "word_exact": 4, "speech_share": 0.0,
    ...     "speech_utterances": 266}])
    >>> headline(df)["fp32_wpm"], headline(df)["top_label"]
    ('3.4', 'fp32')
    """
    ok = df[df["status"] == "ok"]
    fp32 = ok[ok["slug"].str.contains("__fp32__", regex=False)]
    top = ok.loc[ok["ns_words_per_min"].idxmax()] if len(ok) else None
    speech = ok[ok["speech_utterances"] > 0]["speech_share"] if len(ok) else []

    def pct(x):
        return f"{100 * x:.0f}%"

    facts = {"configs": str(len(ok)), "planned": str(len(df)),
             "minutes": f"{ok['ns_minutes'].iloc[0]:.1f}" if len(ok) else "pending",
             "clips": str(int(ok["ns_clips"].iloc[0])) if len(ok) else "pending",
             "word_clips": str(int(ok["word_clips"].iloc[0])) if len(ok) else "pending"}
    if len(fp32):
        r = fp32.iloc[0]
        facts.update(fp32_wpm=f"{r['ns_words_per_min']:.1f}", fp32_share=pct(r["ns_share_with_output"]),
                     fp32_phrase=phrases_text(r["ns_top_phrases"][:1]))
    if len(fp32):
        facts.update(fp32_quiet=f"{fp32.iloc[0]['ns_no_babble_wpm']:.1f}")
    if len(ok):
        loud = ok.loc[ok["ns_no_babble_wpm"].idxmax()]
        facts.update(quiet_label=loud["configuration"], quiet_wpm=f"{loud['ns_no_babble_wpm']:.1f}",
                     quiet_low=f"{loud['ns_no_babble_low']:.1f}", quiet_high=f"{loud['ns_no_babble_high']:.1f}")
    if top is not None:
        facts.update(top_label=top["configuration"], top_wpm=f"{top['ns_words_per_min']:.1f}",
                     top_low=f"{top['ns_low']:.1f}", top_high=f"{top['ns_high']:.1f}",
                     top_share=pct(top["ns_share_with_output"]),
                     worst_word_missed=str(int((ok["word_clips"] - ok["word_exact"]).max())),
                     speech_max=f"{100 * max(speech):.1f}%" if len(speech) else "no WER result")
    return facts
