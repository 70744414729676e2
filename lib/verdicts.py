"""The report's verdicts as facts, and the one place that words them.

A verdict is a frozen dataclass of what decided it: the rows, their numbers and intervals, and an
``outcome`` word. :mod:`lib.analysis` and :mod:`lib.claims` compute them; ``sentence()`` (also ``str()``,
and what a notebook displays or glues) renders the prose. Tests assert the fields, the book reads the sentence.

>>> mix, u4 = Row("int4 + top 5 at int8", 290.0, 0.03, 8.5), Row("uniform int4 g64", 298.1, 0.05, 9.0)
>>> verdict = RecipeVerdict("beats", mixed=1, wins=(RecipeWin(mix, u4),))
>>> verdict.outcome, verdict.wins[0].uniform.small_mb
('beats', 298.1)
>>> verdict.sentence()
'int4 + top 5 at int8 (290 MB, KLD 0.03, WER other 8.50) beats uniform int4 g64 (298 MB, KLD 0.05, WER other 9.00) at no larger size: lower KLD and no higher WER on test-other (point estimates).'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

NO_RECIPES = ("No mixed-precision recipe has a WER, fidelity and footprint result in this build; the table lists "
              "each configuration of the grid, and those without results as not run.")
NO_INT8_ANSWER = "No mixed-precision recipe and uniform int8 row both have a WER, fidelity and footprint result yet."
NOT_RESOLVABLE = "not resolvable at this sample size"
NOT_MEASURED = "not yet measured"


class Verdict:
    """A verdict is shown as its sentence: ``str(v)``, and in a notebook (glue, display) through IPython."""

    def sentence(self) -> str:  # pragma: no cover - each verdict defines it
        raise NotImplementedError

    def __str__(self) -> str:
        return self.sentence()

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(self.sentence())

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls._repr_pretty_ = Verdict._repr_pretty_  # IPython asks each class before its dataclass __repr__


@dataclass(frozen=True)
class Interval:
    """A paired difference with its 95% interval: ``Interval(-0.31, -0.9, 0.25)`` reads ``-0.31 [-0.90, +0.25]``."""

    delta: float
    low: float
    high: float

    def text(self) -> str:
        return f"{self.delta:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


@dataclass(frozen=True)
class Row:
    """One configuration as a verdict names it: ``name`` for prose, stored MB (whisper-small architecture), KLD
    and WER on test-other, and the KLD's 95% interval where the table has one."""

    name: str
    small_mb: float
    kld_other: float
    wer_other: float
    kld_interval: tuple[float, float] | None = None

    def facts(self, interval: bool = False) -> str:
        """``'290 MB, KLD 0.03 [0.02, 0.04], WER other 8.50'`` (the interval only with ``interval``)."""
        bounds = f" [{self.kld_interval[0]:.3g}, {self.kld_interval[1]:.3g}]" if interval and self.kld_interval else ""
        return f"{self.small_mb:.0f} MB, KLD {self.kld_other:.3g}{bounds}, WER other {self.wer_other:.2f}"


@dataclass(frozen=True)
class RecipeWin:
    """A mixed-precision ``recipe`` that beats the ``uniform`` row nearest its size; ``paired`` is their WER
    difference on test-other (recipe minus uniform) where both have saved utterances."""

    recipe: Row
    uniform: Row
    paired: Interval | None = None
    on_front: bool = True
    kld_overlap: bool = False


@dataclass(frozen=True)
class RecipeVerdict(Verdict):
    """Does a mixed-precision recipe beat a uniform HQQ row at no larger size (lower KLD, no higher WER on
    test-other)? ``outcome`` is ``'no results'``, ``'none beats'`` or ``'beats'``; ``front_only`` pairs each
    losing recipe that is on the size–KLD front with the next larger uniform row; ``left_out`` names rows
    decoded with an older decoding recipe."""

    outcome: Literal["no results", "none beats", "beats"]
    mixed: int = 0
    wins: tuple[RecipeWin, ...] = ()
    front_only: tuple[tuple[Row, Row], ...] = ()
    left_out: tuple[str, ...] = ()

    def sentence(self) -> str:
        if self.outcome == "no results":
            return NO_RECIPES
        if self.outcome == "none beats":
            text = (f"None of the {self.mixed} mixed-precision recipes with results beats a uniform HQQ row at no "
                    "larger stored size (lower KLD and no higher WER on test-other)")
            if self.front_only:
                text += ("; on the size–KLD front only because no uniform row sits at their size: " + "; ".join(
                    f"{m.name} ({m.facts()}; next larger uniform: {u.name}, {u.facts()})" for m, u in self.front_only))
            text += "."
        else:
            parts = []
            for w in self.wins:
                paired = (f"; WER difference on test-other, recipe minus uniform: {w.paired.delta:+.2f} points "
                          f"[{w.paired.low:+.2f}, {w.paired.high:+.2f}]") if w.paired else ""
                parts.append(f"{w.recipe.name} ({w.recipe.facts(interval=True)}) beats {w.uniform.name} "
                             f"({w.uniform.facts(interval=True)}{paired})"
                             + ("" if w.on_front else " but is itself off the size–KLD front"))
            text = "; ".join(parts) + " at no larger size: lower KLD and no higher WER on test-other (point estimates)."
            overlap = [w.recipe.name for w in self.wins if w.kld_overlap]
            if overlap:
                text += (f" For {', '.join(overlap)} the two KLD intervals overlap: on this sample that is a smaller "
                         "model at the same fidelity, not a measurably better one.")
        if self.left_out:
            text += f" Left out until re-decoded with today's decoding recipe (‡): {', '.join(self.left_out)}."
        return text


@dataclass(frozen=True)
class Int8Answer(Verdict):
    """Does the recipe closest to uniform int8 in KLD (``recipe``) match ``int8``'s accuracy? ``wer_matches``:
    its paired WER interval reaches 0 or below (point estimates where there is no pair); ``kld_matches``: the
    two KLD intervals overlap. ``community`` is the community recipe where ``recipe`` beats it on size, KLD
    and WER."""

    outcome: Literal["no results", "answered"]
    recipe: Row | None = None
    int8: Row | None = None
    paired: Interval | None = None
    wer_matches: bool = False
    kld_matches: bool = False
    community: Row | None = None

    @property
    def kld_ratio(self) -> float:
        return self.recipe.kld_other / self.int8.kld_other

    def sentence(self) -> str:
        if self.outcome == "no results":
            return NO_INT8_ANSWER
        m, u = self.recipe, self.int8
        text = (f"Closest to uniform int8 in KLD: {m.name} ({m.small_mb:.0f} MB, {u.small_mb - m.small_mb:.0f} MB less "
                f"than {u.name} at {u.small_mb:.0f} MB) has WER on test-other {m.wer_other:.2f} against "
                f"{u.wer_other:.2f}")
        if self.paired is not None:
            text += f" (paired difference {self.paired.delta:+.2f} points [{self.paired.low:+.2f}, {self.paired.high:+.2f}])"
        text += (f" and a KLD {self.kld_ratio:.0f}× as large ({m.kld_other:.3g} against {u.kld_other:.3g}): int8 "
                 f"accuracy {'in WER' if self.wer_matches else 'neither in WER'}"
                 f"{', and in KLD' if self.kld_matches else (', not in KLD' if self.wer_matches else ' nor in KLD')}.")
        if self.community is not None:
            c = self.community
            text += (" It also beats the community recipe (encoder and every fc1 at int8; "
                     f"{c.small_mb:.0f} MB, KLD {c.kld_other:.3g}, WER on test-other {c.wer_other:.2f}) on all three.")
        return text


@dataclass(frozen=True)
class End:
    """One end of the sensitivity map on the whole sample: ``n`` groups, their ΔWER range on test-other, how
    many intervals lie above / below 0, and their KLD range."""

    n: int
    delta_min: float
    delta_max: float
    above: int
    below: int
    kld_min: float
    kld_max: float

    def text(self) -> str:
        return (f"by {self.delta_min:+.2f} to {self.delta_max:+.2f} points ({self.above} of {self.n} intervals above 0"
                + (f", {self.below} below 0" if self.below else "")
                + f"; KLD {self.kld_min:.3g} to {self.kld_max:.3g})")


@dataclass(frozen=True)
class ConfirmationVerdict(Verdict):
    """Does the whole-sample run keep the map's most and least sensitive groups apart? ``outcome``:
    ``'no rows'``, ``'waiting'`` (not yet one finished row at each end), ``'holds'`` (every most-sensitive
    group's KLD above every least-sensitive one's) or ``'overlap'`` (``overlap_group`` reaches the top set)."""

    outcome: Literal["no rows", "waiting", "holds", "overlap"]
    done: int = 0
    total: int = 0
    most: End | None = None
    least: End | None = None
    overlap_group: str | None = None

    @property
    def pending(self) -> int:
        return self.total - self.done

    def sentence(self) -> str:
        if self.outcome == "no rows":
            return "No single-group confirmation row has a result in this build."
        if self.outcome == "waiting":
            return (f"{self.done} of {self.total} single-group confirmation rows have a result; the comparison of the "
                    "two ends waits for at least one of each.")
        text = (f"On the whole sample (test-other) the {self.most.n} most sensitive groups, each quantized alone, "
                f"change WER {self.most.text()}, the {self.least.n} least {self.least.text()}")
        if self.outcome == "holds":
            text += ": whole-sample KLD keeps the two ends apart, so the map holds beyond its subset"
        else:
            text += (f": the ends overlap in whole-sample KLD ({self.overlap_group} reaches the most sensitive set), so "
                     "the subset's ranking is not reliable at that end")
        if self.pending:
            text += f"; {self.pending} of the {self.total} rows have no result yet"
        return text + "."


@dataclass(frozen=True)
class GapReading:
    """One aggressive row in one noise kind: its ΔWER to fp32 at ``high_snr`` (``at_high``) and at ``low_snr``
    (``at_low``), the change (low minus high) with its interval over ``utterances``, and its verdict word."""

    configuration: str
    noise: str
    high_snr: float
    low_snr: float
    at_high: float
    at_low: float
    change: Interval
    utterances: int
    verdict: str

    def text(self) -> str:
        words = {"supported": "grows", "contradicted": "shrinks",
                 NOT_RESOLVABLE: "changes by an amount this sample cannot resolve"}
        return (f"{self.configuration} in {self.noise} noise: ΔWER {self.at_high:+.2f} at {self.high_snr:g} dB, "
                f"{self.at_low:+.2f} at {self.low_snr:g} dB, change {self.change.text()} over {self.utterances} "
                f"utterances ({words[self.verdict]})")


@dataclass(frozen=True)
class NoiseVerdict(Verdict):
    """Does the gap between the aggressive formats and fp32 grow as SNR falls? ``verdict`` merges the
    readings' words (``'not yet measured'`` without one); ``skipped`` holds ``(kind, SNR, fp32 WER)`` where
    fp32 itself fails (WER above ``reference_limit``); without readings, ``needed`` runs are wanted and
    ``missing`` names ``(configuration, conditions)`` still without a result."""

    verdict: str
    readings: tuple[GapReading, ...] = ()
    skipped: tuple[tuple[str, float, float], ...] = ()
    reference_limit: float = 50.0
    needed: int = 0
    missing: tuple[tuple[str, str], ...] = ()
    missing_runs: int = 0
    snrs: tuple[float, float] = (20.0, 0.0)

    def evidence(self) -> str:
        if not self.readings:
            if not self.missing_runs:
                return "the runs it needs share no utterance"
            have = "none" if self.missing_runs == self.needed else f"{self.needed - self.missing_runs}"
            return (f"{have} of the {self.needed} runs it needs {'has' if have == 'none' else 'have'} a result; "
                    "without one: " + "; ".join(f"{name} ({conditions})" for name, conditions in self.missing))
        text = "; ".join(r.text() for r in self.readings)
        if self.skipped:
            by_kind: dict[str, list[str]] = {}
            for kind, snr, wer in self.skipped:
                by_kind.setdefault(kind, []).append(f"{snr:g} dB, fp32 WER {wer:.2f}%")
            text += (f". Not used, because fp32 itself fails there (WER above {self.reference_limit:g}%): "
                     + "; ".join(f"{kind} at {', '.join(items)}" for kind, items in by_kind.items()))
        return text

    def key(self) -> str:
        return "; ".join(f"{r.configuration}, {r.noise}: gap {r.change.text()} from {r.high_snr:g} to {r.low_snr:g} dB"
                         for r in self.readings)

    def sentence(self) -> str:
        if not self.readings:
            return (f"Not yet measured: the verdict compares fp32, bitsandbytes nf4 and HQQ int3 g64 at "
                    f"{self.snrs[0]:g} and {self.snrs[1]:g} dB SNR, and {self.evidence()}.")
        return (self.verdict[:1].upper() + self.verdict[1:] + ": " + self.evidence()
                + " (test-clean with noise, whisper-base, points of WER; positive change = the gap to fp32 is wider "
                  "at the lower SNR).")


#: How usable a row is, worst first (lib.ship's rules, on both splits): the rescue verdicts compare these.
LEVELS = ("fails 'still works'", "still works", "within the accuracy budget", "no measurable loss")


@dataclass(frozen=True)
class RescuePair(Verdict):
    """A calibrated row (``calibrated``) against the calibration-free row at the same bits and group (``free``).

    ``paired``: WER difference on test-other, calibrated minus calibration-free, on the utterances both cover
    (95% interval, speakers resampled); ``levels``: each row's usability (:data:`LEVELS`); ``kld_change_pct``:
    how much calibration moves the teacher-forced KLD on test-other. ``outcome``: ``'rescues'`` (measurably
    better *and* a better level), ``'improves'`` (measurably better, same level), ``'no measurable change'``,
    ``'worse'`` (measurably worse), or ``'not yet measured'``."""

    route: str
    bits: int
    outcome: Literal["rescues", "improves", "no measurable change", "worse", "not yet measured"]
    calibrated: str
    free: str
    paired: Interval | None = None
    levels: tuple[str, str] | None = None
    kld: tuple[float, float] | None = None
    kld_change_pct: float | None = None
    calibration: str = ""

    def sentence(self) -> str:
        if self.outcome == "not yet measured":
            return f"{self.calibrated} against {self.free}: {NOT_MEASURED}."
        kld = (f"; KLD on test-other {self.kld[1]:.3g} → {self.kld[0]:.3g} ({self.kld_change_pct:+.0f}%)"
               if self.kld else "")
        return (f"{self.calibrated} ({self.calibration}) against {self.free}: {self.outcome} — WER on test-other "
                f"{self.paired.text()} points, calibrated minus calibration-free; {self.levels[1]} → "
                f"{self.levels[0]}{kld}.")


@dataclass(frozen=True)
class RescueAnswer(Verdict):
    """The chapter's answer at one bit-width: ``'yes'`` (some calibrated row rescues its calibration-free
    counterpart), ``'it helps'`` (measurably better, no change of level), ``'no'`` (no calibrated row measurably
    better), or ``'not yet measured'``. ``pairs`` are the verdicts it rests on; ``best`` the calibrated row with
    the lowest ΔWER on test-other (its level and interval)."""

    bits: int
    outcome: Literal["yes", "it helps", "no", "not yet measured"]
    pairs: tuple[RescuePair, ...] = ()
    best: str | None = None
    best_delta: Interval | None = None
    best_level: str | None = None

    def sentence(self) -> str:
        if self.outcome == "not yet measured":
            return f"At {self.bits} bits: {NOT_MEASURED} (no calibrated row and its counterpart both have results)."
        words = {"yes": "yes", "it helps": "it helps, but rescues nothing", "no": "no"}[self.outcome]
        measured = [p for p in self.pairs if p.outcome != "not yet measured"]
        best = (f" The best calibrated row, {self.best}, has ΔWER on test-other {self.best_delta.text()} against fp32 "
                f"({self.best_level}).") if self.best else ""
        return (f"At {self.bits} bits, can calibration rescue it? {words.capitalize()}: "
                + "; ".join(f"{p.route} {p.outcome}" for p in measured) + "." + best)


@dataclass(frozen=True)
class StaticReading:
    """One static recipe against its library's dynamic int8: WER difference (static minus dynamic) per split on
    the utterances both cover (95% interval, speakers resampled), and the reading's verdict word."""

    recipe: str
    clean: Interval
    other: Interval
    verdict: str
    dynamic: str = "dynamic int8"

    def text(self) -> str:
        return (f"{self.recipe} − {self.dynamic}: test-clean {self.clean.text()}, test-other {self.other.text()} "
                f"({self.verdict})")


@dataclass(frozen=True)
class StaticVerdict(Verdict):
    """The paper's second claim, "static quantization is worse than dynamic": one :class:`StaticReading` per
    static recipe with results; ``outcome`` merges their verdicts (``'not measured'`` without any)."""

    outcome: str
    readings: tuple[StaticReading, ...] = ()

    def evidence(self) -> str:
        if not self.readings:
            return "no static int8 row and its library's dynamic int8 both have a WER result"
        return "per-channel weights; " + "; ".join(r.text() for r in self.readings)

    def key(self) -> str:
        """The landing page's line: test-other only."""
        return "; ".join(f"{r.recipe} − {r.dynamic}, other: {r.other.text()}" for r in self.readings)

    def sentence(self) -> str:
        if not self.readings:
            return "No result yet."
        return (self.outcome[:1].upper() + self.outcome[1:] + ": " + "; ".join(r.text() for r in self.readings)
                + " (static − dynamic int8 of the same library, or of torch.ao where the runtime has none; per-channel "
                  "weights; positive = static worse).")
