import subprocess
import sys

import pytest

from conftest import REPO


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lib", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args, message", [
    (["run", "--model", "no such model"], "unknown model spec"),
    (["run", "--split", "test-dirty"], "unknown split"),
    (["run", "--limit", "0"], "limit must be a positive integer"),
    (["run", "--model", "footprint:whisper-small"], "not for WER"),
    (["run", "--library", "tensorrt"], "unknown library"),
    (["run", "--library", "hqq", "--weights", "int5", "--group-size", "64"], "supported:"),
    (["run", "--data", "/no/such/librispeech", "--limit", "1"], "does not exist"),
])
def test_bad_input_is_one_clear_line(args, message):
    out = run_cli(*args)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], out.stderr[-2000:]


def test_table_prints_the_study_as_markdown():
    out = run_cli("table", "--status", "ok")
    assert out.returncode == 0, out.stderr[-2000:]
    header, rule, *rows = out.stdout.strip().splitlines()
    assert header.split("|")[1].strip() == "configuration" and "MB (whisper-small architecture)" in header and "WER other" in header
    assert rows and all("| ok " in r for r in rows) and any(r.startswith("| fp32 ") for r in rows)
    assert "nan" not in out.stdout


def test_compact_table_keeps_the_last_line_of_an_error():
    import pandas as pd

    from lib.display import compact_table

    df = pd.DataFrame({"configuration": ["a", "b"], "status": ["failed", "pending"], "small_mb": [None, None],
                       "error": ["Traceback ...\nRuntimeError: FX tracing failed", None]})
    assert list(compact_table(df)["reason"]) == ["RuntimeError: FX tracing failed", ""]


def _study_row(slug, configuration, clean, other, compression=None):
    """A study-table row with ΔWER (value, low, high) per split."""
    row = {"slug": f"whisper-base__{slug}__test-clean+test-other", "configuration": configuration, "status": "ok",
           "compression_pct": compression, "small_mb": None if compression is None else 966.9 * (1 - compression / 100)}
    for split, (value, low, high) in (("clean", clean), ("other", other)):
        row.update({f"delta_wer_{split}": value, f"delta_wer_{split}_low": low, f"delta_wer_{split}_high": high,
                    f"delta_wer_{split}_ci": f"[{low:+.2f}, {high:+.2f}]"})
    return row


def test_claims_verdicts_follow_the_confidence_intervals(tmp_path):
    import pandas as pd

    from lib.claims import claims_table

    df = pd.DataFrame([
        _study_row("quanto-wo-int8", "quanto weight-only int8", (-0.5, -0.9, -0.1), (-0.4, -0.8, -0.05)),
        _study_row("pt-dyn-int8-aint8-pc", "torch.ao dynamic", (2.0, 0.5, 3.7), (2.5, 0.9, 4.1), 61.2),
        _study_row("pt-dyn-int8-aint8-pc-projout", "torch.ao dynamic +proj_out", (2.0, 0.5, 3.7), (2.5, 0.9, 4.1), 56.9)])
    claims = claims_table(df, results_dir=tmp_path)
    assert claims.loc["Static quantization is worse than dynamic", "verdict"] == "not measured"
    headline = claims.loc["Dynamic int8 keeps, or even improves, fp32's accuracy"]
    assert headline["verdict"] == "contradicted"  # the only dynamic int8 row loses; weight-only int8 is no evidence
    assert "quanto weight-only" not in headline["evidence"] + headline["key"]
    assert claims.loc["Dynamic int8 shrinks the model by 57%", "paper"] == "−57%"
    assert claims.loc["Dynamic int8 shrinks the model by 57%", "here"].startswith("−56.9%")
    assert claims.loc["Dynamic int8 shrinks the model by 57%", "verdict"] == "supported"  # 56.9 within 2 points
    assert claims.loc["nf4 / int3 shrink the model by up to 71%", "verdict"] == "not measured"

    # per-utterance rows: eager static loses 5 words per utterance against dynamic, PT2E loses none
    from lib.results import ResultStore

    def rows(extra_errors):  # raw text: errors are counted when results are loaded
        words = "a b c d e f g h i j".split()
        hypothesis = " ".join(["x"] * extra_errors + words[extra_errors:])
        return [{"id": f"{i}-1-0", "split": split, "reference": " ".join(words), "hypothesis": hypothesis}
                for split in ("test-clean", "test-other") for i in range(20)]

    store = ResultStore(tmp_path)
    for slug, errors in (("pt-dyn-int8-aint8-pc", 0), ("pt-static-int8-aint8-pc-cal4", 5),
                         ("pt-static-int8-aint8-pc-cal4-methodpt2e", 0)):
        store.save(f"whisper-base__{slug}__test-clean+test-other", {"status": "ok"}, rows(errors))
    df = pd.concat([df, pd.DataFrame([_study_row("pt-static-int8-aint8-pc-cal4", "eager", *[(50.0, 40.0, 60.0)] * 2),
                                      _study_row("pt-static-int8-aint8-pc-cal4-methodpt2e", "pt2e",
                                                 *[(0.0, -1.0, 1.0)] * 2)])])
    from lib.claims import static_claim

    verdict = static_claim(df, store)
    assert verdict.outcome == "depends on the recipe: supported / not resolvable at this sample size"
    eager, pt2e = verdict.readings
    assert (eager.recipe, eager.clean.delta, eager.verdict) == ("torch.ao eager static (4 utterances)", 50.0, "supported")
    assert eager.clean.low > 0 and pt2e.other.delta == 0.0 and pt2e.verdict == "not resolvable at this sample size"
    static = claims_table(df, results_dir=tmp_path).loc["Static quantization is worse than dynamic"]
    assert (static["verdict"], static["sentence"]) == (verdict.outcome, verdict.sentence())


def test_the_dynamic_int8_claim_holds_per_row_as_the_paper_states_it(tmp_path):
    import pandas as pd

    from lib.claims import DYNAMIC_INT8_CLAIM, accuracy_word, claims_table

    df = pd.DataFrame([
        _study_row("torchao-dyn-int8-aint8", "torchao dynamic", (0.1, -0.3, 0.5), (-0.17, -0.57, 0.26)),
        _study_row("pt-dyn-int8-aint8-pc", "torch.ao dynamic", (2.0, 0.5, 3.7), (2.5, 0.9, 4.1)),
        _study_row("quanto-wo-int8", "quanto weight-only int8", (-0.5, -0.9, -0.1), (-0.4, -0.8, -0.05))])
    claims = claims_table(df, results_dir=tmp_path, noise=False)
    claim = claims.loc[DYNAMIC_INT8_CLAIM]
    assert claim["verdict"] == "depends on the library: holds for 1 of 2"  # weight-only int8 is not a reading
    assert claim["key"].startswith("torchao dynamic keeps: other -0.17 [-0.57, +0.26]")
    assert [accuracy_word(r) for _, r in df.iterrows()] == ["keeps", "loses", "improves"]


def test_the_other_cpu_mark_follows_the_study_class_columns_only():
    import pandas as pd

    from lib.display import display_table

    df = pd.DataFrame({"configuration": ["a"], "slug": ["a"], "status": ["ok"], "other_cpu": [True],
                       "latency_ratio": [0.5], "latency_ratio_amx": [0.6]})
    def name(columns):
        view = display_table(df, columns)
        return str(getattr(view, "data", view).index[0])  # a Styler where marks carry a legend

    assert name(["configuration", "latency_ratio"]).endswith("§")
    assert not name(["configuration", "latency_ratio_amx"]).endswith("§")
