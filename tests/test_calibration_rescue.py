"""The calibration chapter's verdicts: a pair is judged on its paired WER difference and the rows' levels."""
import pandas as pd

from lib.calibration_rescue import PAIRS, answers, level, pair_verdicts
from lib.results import ResultStore


def _rows(wrong_every: int) -> list[dict]:
    """20 test-other utterances of 10 speakers; every ``wrong_every``-th hypothesis has one wrong word of four."""
    return [{"id": f"{s}-1-{i}", "split": "test-other", "reference": "a b c d",
             "hypothesis": "a b c x" if wrong_every and (2 * s + i) % wrong_every == 0 else "a b c d"}
            for s in range(10) for i in range(2)]


def _table(cal_slug, free_slug, cal_level_row, free_level_row) -> pd.DataFrame:
    return pd.DataFrame([{"slug": free_slug, "configuration": "HQQ int3", "status": "ok", **free_level_row},
                         {"slug": cal_slug, "configuration": "AutoRound int3", "status": "ok", **cal_level_row}])


COLLAPSED = {"delta_wer_other": 20.0, "delta_wer_other_low": 12.0, "delta_wer_other_high": 34.0,
             "delta_wer_clean_high": 7.0, "agree_clean": 93.0, "agree_other": 91.0, "kld_other": 0.19}
WITHIN_BUDGET = {"delta_wer_other": 0.5, "delta_wer_other_low": 0.1, "delta_wer_other_high": 1.2,
                 "delta_wer_clean_low": 0.1, "delta_wer_clean_high": 1.0, "agree_clean": 98.5, "agree_other": 98.2,
                 "kld_other": 0.02}


def _store(tmp_path, cal, free):
    store = ResultStore(tmp_path)
    store.save(cal, {"slug": cal, "status": "ok"}, _rows(0))
    store.save(free, {"slug": free, "status": "ok"}, _rows(1))  # every utterance one word wrong
    return store


def test_a_measurably_better_calibrated_row_that_reaches_a_better_level_rescues(tmp_path):
    pair = PAIRS[0]
    cal, free = f"whisper-base__{pair.calibrated}x", f"whisper-base__{pair.free}x"
    _store(tmp_path, cal, free)
    table = _table(cal, free, WITHIN_BUDGET, COLLAPSED)
    verdict = pair_verdicts(table, tmp_path)[0]
    assert verdict.outcome == "rescues" and verdict.levels == ("within the accuracy budget", "fails 'still works'")
    assert verdict.paired.delta == -25.0 and verdict.paired.high < 0
    assert round(verdict.kld_change_pct) == -89
    assert [v.outcome for v in pair_verdicts(table, tmp_path)[1:]] == ["not yet measured"] * (len(PAIRS) - 1)
    assert answers(table, pair_verdicts(table, tmp_path))[3].outcome == "yes"
    assert answers(table, pair_verdicts(table, tmp_path))[4].outcome == "not yet measured"


def test_a_measurably_better_row_at_the_same_level_only_improves_and_a_tie_changes_nothing(tmp_path):
    pair = PAIRS[0]
    cal, free = f"whisper-base__{pair.calibrated}x", f"whisper-base__{pair.free}x"
    _store(tmp_path, cal, free)
    assert pair_verdicts(_table(cal, free, COLLAPSED, COLLAPSED), tmp_path)[0].outcome == "improves"
    ResultStore(tmp_path).save(free, {"slug": free, "status": "ok"}, _rows(0))  # identical transcripts
    verdict = pair_verdicts(_table(cal, free, COLLAPSED, COLLAPSED), tmp_path)[0]
    assert verdict.outcome == "no measurable change" and verdict.paired.low <= 0 <= verdict.paired.high
    assert answers(_table(cal, free, COLLAPSED, COLLAPSED), [verdict])[3].outcome == "no"


def test_levels_follow_the_ship_box_rules():
    assert level(COLLAPSED) == "fails 'still works'"
    assert level(WITHIN_BUDGET) == "within the accuracy budget"
    assert level({**COLLAPSED, "delta_wer_other_high": 4.0, "agree_clean": 96.0, "agree_other": 95.5}) == "still works"
