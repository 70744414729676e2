"""Like for like: no chapter table or figure sets a WER beside a WER from another utterance set."""
from __future__ import annotations

import pytest

from lib.grids import GRIDS
from lib.like_for_like import mixed_sets, older_subset_table
from lib.results import ResultStore


@pytest.mark.parametrize("grid", GRIDS)
def test_no_chapter_table_mixes_utterance_sets(grid):
    from lib.tables import grid_table

    table = grid_table(grid, bootstrap=False)  # the committed results, as the book reads them
    assert mixed_sets(table) == []


def test_the_summary_and_runtime_tables_do_not_mix_utterance_sets():
    from lib.runtime_report import runtime_table
    from lib.tables import study_table

    for table in (study_table(), runtime_table()):
        assert mixed_sets(table) == []


def _rows(ids, hyp="a b c"):
    return [{"id": f"1-1-{i:04d}", "split": "test-other", "reference": "A B C", "hypothesis": hyp,
             "audio_sha256": str(i), "audio_seconds": 1.0, "wall_seconds": 1.0, "cpu_seconds": 1.0,
             "encoder_seconds": 0.5, "batch": 0, "batch_wall_seconds": 1.0} for i in ids]


def test_a_row_on_a_subset_keeps_no_raw_wer_and_its_delta_is_on_the_common_set(tmp_path):
    from lib.tables import grid_table

    grid = tmp_path / "g.yml"
    grid.write_text("defaults: {model: 'test:tiny', split: [test-other]}\nfootprint: false\n"
                    "runs: [{library: none}, {library: hqq, scheme: weight_only, weights: int4, group_size: 64},"
                    " {library: hqq, scheme: weight_only, weights: int8, group_size: 64}]\n")
    from lib.grids import expand_grid

    fp32, sub, full = (j.slug for j in expand_grid(grid))
    store = ResultStore(tmp_path / "r")
    quant = {"library": "hqq", "scheme": "weight_only", "weights": "int4", "group_size": 64}
    for slug, rows in ((fp32, _rows(range(10))), (sub, _rows(range(4), "a b x")), (full, _rows(range(10)))):
        store.save(slug, {"slug": slug, "status": "ok", "config": {"quant": quant}, "size": {"stored_bytes": 1},
                          "decoding": {"version": 3}}, rows)
    table = grid_table(grid, results_dir=tmp_path / "r", footprint_dir=tmp_path / "fp")
    by_slug = table.set_index("slug")
    assert by_slug.loc[sub, "wer_other"] != by_slug.loc[sub, "wer_other"]  # NaN: not beside the full set's
    assert by_slug.loc[sub, "subset_wer_other"] == pytest.approx(100 / 3)
    assert by_slug.loc[sub, "common_other"] == 4 and by_slug.loc[full, "wer_other"] == 0.0
    assert (table["ref_n_other"] == 10).all() and mixed_sets(table) == []
    older = older_subset_table(table)
    assert list(older.index) == [by_slug.loc[sub, "configuration"]] and older.iloc[0]["n other"] == 4
