"""The claims ledger: verdict logic, faithful transcription, and the ledger on the real cache."""
import re

import pandas as pd
import pytest

from qmoe.analysis import claims as C
from qmoe.analysis import tables as A
from qmoe.experiments.results import results_frame
from qmoe.experiments.store import ResultStore
from tests.conftest import ROOT
from tests.test_analysis import frame

VERDICTS = {C.HOLDS, C.FAILS, C.UNTESTABLE, C.NOT_RUN}


def _ev(df):
    return C.Evidence(df, store=None)


def test_judge_covers_every_verdict():
    ev = _ev(frame({"FP32-Base": [0.8] * 5}))
    yes = C.Claim("a", "x", "t", "1", measure=lambda ev, p: C.Outcome("1", True))
    no = C.Claim("b", "x", "t", "1", measure=lambda ev, p: C.Outcome("0", False))

    def missing(ev, p):
        raise A.Missing("Q4-Base", "python -m qmoe train --variant Q4-Base")

    absent = C.Claim("c", "x", "t", "1", measure=missing)
    elsewhere = C.Claim("d", "x", "t", "1", measure=lambda ev, p: C.Outcome("0.5", True), untestable="no Quinn")
    assert C.judge(yes, ev, "predefined")["verdict"] == C.HOLDS
    assert C.judge(no, ev, "predefined")["verdict"] == C.FAILS
    j = C.judge(absent, ev, "predefined")
    assert j["verdict"] == C.NOT_RUN and j["command"].startswith("python -m qmoe train")
    j = C.judge(elsewhere, ev, "predefined")  # an analogue is shown but never judged
    assert j["verdict"] == C.UNTESTABLE and j["value"].startswith("ESC-50 analogue")
    assert C.judge(C.Claim("e", "x", "t", "1", untestable="no data"), ev, "paper")["verdict"] == C.UNTESTABLE


def test_overall_verdict_prefers_the_leak_free_protocol():
    v = lambda x: {"verdict": x}  # noqa: E731
    assert C.overall({"paper": v(C.HOLDS), "predefined": v(C.FAILS)}) == (C.FAILS, "leak-free predefined folds")
    assert C.overall({"paper": v(C.HOLDS), "predefined": v(C.NOT_RUN)})[0] == C.HOLDS
    assert C.overall({"paper": v(C.NOT_RUN), "predefined": v(C.NOT_RUN)})[0] == C.NOT_RUN


def test_percent_of_16bit_claim_is_judged_by_its_criterion():
    claim = C.pct_of("Q4-Base", "Q16-Base", at_least=99.0)
    ok = frame({"Q4-Base": [0.80] * 5, "Q16-Base": [0.80] * 5}, energy_mj=1.0)
    bad = frame({"Q4-Base": [0.70] * 5, "Q16-Base": [0.80] * 5}, energy_mj=1.0)
    assert claim(_ev(ok), "predefined").holds
    out = claim(_ev(bad), "predefined")
    assert not out.holds and out.value.startswith("87.5%")
    with pytest.raises(A.Missing):
        claim(_ev(frame({"Q4-Base": [0.8] * 5})), "predefined")


def test_significance_claim_uses_the_bonferroni_family():
    q16 = [0.80, 0.82, 0.79, 0.81, 0.83]
    df = frame({"Q16-Base": q16, "Q2-Base": [x - 0.04 + 0.002 * i for i, x in enumerate(q16)]})
    out = C.paired_claim(C.BITS, "Q2-Base", "Q16-Base", "significant-lower")(_ev(df), "predefined")
    assert out.holds and "Bonferroni x1" in out.test and out.n == 5
    out = C.paired_claim(C.BITS, "Q2-Base", "Q16-Base", "not-significant")(_ev(df), "predefined")
    assert not out.holds


def test_paper_values_are_transcribed_from_the_paper():
    text = (ROOT.parent / "shared" / "paper" / "paper-arxiv-2511.11743v3.txt").read_text()
    for c in C.CLAIMS:
        for number in re.findall(r"\d+\.\d+", c.paper_value):
            assert number in text, f"{c.id}: {number} is not in the paper"
        assert re.search(r"Abstract|Intro|Sec\.|Table|App\.|Fig\.", c.location), c.id
    ids = [c.id for c in C.CLAIMS]
    assert len(ids) == len(set(ids)) >= 15


def test_ledger_on_the_real_cache(tmp_path):
    led = C.ledger(results_frame(), ResultStore())
    assert list(led.columns) == C.COLUMNS and len(led) == len(C.CLAIMS)
    assert set(led["verdict"]) <= VERDICTS
    assert set(led["verdict_paper"]) <= VERDICTS and set(led["verdict_predefined"]) <= VERDICTS
    not_run = led[led["verdict"] == C.NOT_RUN]
    assert not_run["command"].str.startswith("python -m qmoe train").all()
    untestable = led[led["verdict"] == C.UNTESTABLE]
    assert untestable["notes"].str.contains("not on this machine|cannot be downloaded on this machine").all()
    judged = led[led["verdict"].isin([C.HOLDS, C.FAILS])]
    assert (judged["verdict_basis"] != "").all() and judged["criterion"].str.len().gt(0).all()
    assert len(judged) >= 1  # the single-model runs are in the repo's results/
    out = C.write_ledger(tmp_path / "claims.csv", led)
    back = pd.read_csv(out)
    assert back["id"].tolist() == led["id"].tolist()


def test_cli_hook_writes_the_csv(tmp_path, capsys):
    from qmoe.__main__ import main

    out = tmp_path / "c.csv"
    assert main(["claims", "--out", str(out)]) == 0  # `python -m qmoe claims --out ...`
    assert "written to" in capsys.readouterr().out
    assert len(pd.read_csv(out)) == len(C.CLAIMS)


def test_machine_figures_are_ranked_on_one_cpu_only():
    """The shipped cache holds Q3/Q5/Q6-Base timed on another CPU than the grid: latency and energy claims must
    not rank them against the grid's variants, while their F1 stays in the F1 claims."""
    df = results_frame()
    esc = df[(df["dataset"] == "esc50") & (df["task"] == "major") & (df["protocol"] == "predefined")]
    table = C.one_cpu(A.efficiency_table(esc, "major", "predefined").set_index("variant"))
    cpus = table["cpu"].fillna("")
    assert cpus.nunique() >= 2, "the cache is expected to hold runs from two CPU models"
    other = table.attrs["other_cpu"]
    assert other and set(other) == set(table.index[cpus != table.attrs["cpu"]])
    assert table.loc[other, C.MACHINE_COLUMNS].isna().all().all()
    assert table.loc[other, "f1_mean"].notna().all()
    kept = table.drop(index=other)
    assert kept["latency_ms_mean"].notna().all()
    # argbest ranks only the kept variants
    out = C.argbest(None, "latency_ms_mean", "Q1-Base", family="single")(_ev(esc), "predefined")
    best = out.value.split(" (")[0]
    assert best not in other
