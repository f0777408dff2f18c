"""AppTest of the result pages (Bit-width, Efficiency, Significance, Claims ledger) on the real cache."""
import pytest
from streamlit.testing.v1 import AppTest

from qmoe.results import results_frame
from tests.conftest import ROOT

TIMEOUT = 180


def _run(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _by_label(widgets, label):
    return next(w for w in widgets if w.label == label)


def test_bitwidth_page_shows_cached_f1_and_switches_task():
    at = _run("4_Bit-width.py")
    table = at.dataframe[0].value.set_index("variant")
    task, protocol = _by_label(at.selectbox, "Task").value, _by_label(at.selectbox, "Protocol").value
    df = results_frame()
    sel = df[(df.task == task) & (df.protocol == protocol) & (df.seed == 0) & (df.options == "")
             & (df.selection == "validation") & (df.variant == "FP32-Base")]
    assert table.loc["FP32-Base", "f1_mean"] == pytest.approx(sel.f1_macro.mean())
    assert len(at.get("plotly_chart")) == 4
    other = [t for t in _by_label(at.selectbox, "Task").options if t != task]
    if other:
        _by_label(at.selectbox, "Task").select(other[0]).run()
        assert not at.exception
        assert set(at.dataframe[0].value["task"]) == {other[0]}
    _by_label(at.radio, "Latency error bars").set_value("std of the fold means").run()
    assert not at.exception


def test_efficiency_projection_scales_with_inferences_per_day():
    at = _run("5_Efficiency.py")
    dep = at.dataframe[-1].value
    assert {"variant", "deployment_co2_g", "training_co2_g"} <= set(dep.columns)
    _by_label(at.number_input, "Inferences per day").set_value(2_000_000).run()
    assert not at.exception
    dep2 = at.dataframe[-1].value
    assert dep2["deployment_co2_g"].to_numpy() == pytest.approx(2 * dep["deployment_co2_g"].to_numpy())
    assert any("codecarbon" in c.value for c in at.caption)


def test_significance_page_level_slider_changes_the_verdicts():
    at = _run("6_Significance.py")
    table = at.dataframe[0].value
    assert {"test", "n", "p", "p_corrected", "significant"} <= set(table.columns)
    p = table["p_corrected"].fillna(table["p"])
    assert (table["significant"] == (p < 0.05)).all()
    _by_label(at.slider, "Significance level").set_value(0.001).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert (table["significant"] == (table["p_corrected"].fillna(table["p"]) < 0.001)).all()
    assert f"{int((table['p_corrected'].fillna(table['p']) < 0.001).sum())} of {len(table)}" in at.subheader[0].value


def test_claims_ledger_page_counts_and_filters():
    from qmoe.claims import CLAIMS, HOLDS

    at = _run("7_Claims_ledger.py")
    assert sum(int(m.value) for m in at.metric) == len(CLAIMS)
    assert len(at.dataframe[0].value) == len(CLAIMS)
    _by_label(at.multiselect, "Show verdicts").set_value([HOLDS]).run()
    assert not at.exception
    shown = at.dataframe[0].value
    assert (shown["verdict"] == HOLDS).all() and len(shown) == int(_by_label(at.metric, HOLDS).value)
