"""AppTest of the result pages (Bit-width, Efficiency, Significance, Claims ledger) on the real cache."""
import pytest
from streamlit.testing.v1 import AppTest

from qmoe.experiments.results import results_frame
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
    assert _by_label(at.selectbox, "Dataset").value == "esc50"
    assert _by_label(at.selectbox, "Protocol").value == "predefined"  # leak-free first, though "paper" sorts first
    sel = df[(df.dataset == "esc50") & (df.task == task) & (df.protocol == protocol) & (df.seed == 0)
             & (df.options == "") & (df.selection == "validation") & (df.variant == "FP32-Base")]
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


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch-eager"])
def test_efficiency_runtime_picker_shows_that_runtimes_figures(runtime):
    """ONNX Runtime by default (what a device runs); torch eager on request, each from its own measurement."""
    at = _run("5_Efficiency.py")
    picker = _by_label(at.selectbox, "Runtime")
    assert picker.value == "onnxruntime"
    if runtime != picker.value:
        picker.select(runtime).run()
        assert not at.exception
    eff = at.dataframe[0].value.set_index("variant")
    task, protocol = _by_label(at.selectbox, "Task").value, _by_label(at.selectbox, "Protocol").value
    df = results_frame(runtime=runtime)
    sel = df[(df.dataset == "esc50") & (df.task == task) & (df.protocol == protocol) & (df.seed == 0)
             & (df.options == "") & (df.selection == "validation") & (df.variant == "FP32-Base")]
    assert sel.latency_ms_mean.notna().all() and len(sel) == 5  # every fold measured on this runtime
    assert eff.loc["FP32-Base", "latency_ms_mean"] == pytest.approx(sel.latency_ms_mean.mean())


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
    from qmoe.analysis.claims import CLAIMS, HOLDS

    at = _run("7_Claims_ledger.py")
    assert sum(int(m.value) for m in at.metric) == len(CLAIMS)
    assert len(at.dataframe[0].value) == len(CLAIMS)
    _by_label(at.multiselect, "Show verdicts").set_value([HOLDS]).run()
    assert not at.exception
    shown = at.dataframe[0].value
    assert (shown["verdict"] == HOLDS).all() and len(shown) == int(_by_label(at.metric, HOLDS).value)


@pytest.mark.parametrize("page", ["4_Bit-width.py", "5_Efficiency.py", "6_Significance.py"])
def test_result_pages_pick_the_shipped_folder_dataset(page):
    """The folder dataset built from the shared fold-4 audio is in the shipped cache and in every picker."""
    name = "folder:esc50-fold4-major"
    at = _run(page)
    picker = _by_label(at.selectbox, "Dataset")
    assert picker.options[0] == "esc50" and name in picker.options
    picker.select(name).run()
    assert not at.exception, [e.message for e in at.exception]
    assert _by_label(at.selectbox, "Task").options == ["class"]
    assert any(name in h.value for h in at.subheader)
    if page == "4_Bit-width.py":
        df = results_frame()
        protocol = _by_label(at.selectbox, "Protocol").value
        sel = df[(df.dataset == name) & (df.protocol == protocol) & (df.variant == "Q4-Base") & (df.seed == 0)]
        table = at.dataframe[0].value.set_index("variant")
        assert len(sel) == 5 and table.loc["Q4-Base", "f1_mean"] == pytest.approx(sel.f1_macro.mean())
        assert "FP32-Base" in table.index and "Q1-Base" not in table.index  # only what was run on it


def test_run_experiment_page_takes_a_folder_path_and_checks_it(tmp_path):
    at = AppTest.from_file(str(ROOT / "pages" / "9_Run_experiment.py"), default_timeout=TIMEOUT)
    at.run()
    picker = _by_label(at.selectbox, "Dataset")
    assert "esc50" in picker.options and "urbansound8k" in picker.options
    picker.select("urbansound8k").run()  # not downloaded here: said at once, with the command
    assert "data download urbansound8k" in at.error[0].value
    _by_label(at.selectbox, "Dataset").select("your own folder...").run()
    at.text_input[0].input(str(tmp_path / "nowhere")).run()
    assert "does not exist" in at.error[0].value
    _by_label(at.selectbox, "Dataset").select("esc50").run()
    assert not at.error and at.multiselect[0].options == ["major", "class", "reference-categories"]


def test_bitwidth_page_draws_every_cached_bitlinear_width_on_one_curve():
    """Q3/Q5/Q6-Base (issue 13's sweep) sit on the BitLinear k-bit line with Table 2's widths, F1 from the cache."""
    import json

    at = _run("4_Bit-width.py")
    assert _by_label(at.selectbox, "Task").value == "major"
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    line = next(t for t in fig["data"] if t["name"] == "BitLinear k-bit")
    assert {"Q1-Base", "Q2-Base", "Q3-Base", "Q4-Base", "Q5-Base", "Q6-Base", "Q8-Base", "Q16-Base"} <= set(line["text"])
    table = at.dataframe[0].value.set_index("variant")
    assert (table.loc[["Q3-Base", "Q5-Base", "Q6-Base"], "folds"] == 5).all()


def test_a_table_of_runs_timed_on_two_cpu_models_says_so():
    """The shipped grid was timed on one CPU model; runs added on another machine (Q3/Q5/Q6-Base here) are flagged
    beside the table, since their latency and energy do not compare."""
    at = _run("4_Bit-width.py")
    table = at.dataframe[0].value.set_index("variant")
    cpus = {c for cell in table["cpu"] for c in cell.split(" + ")}
    warned = " ".join(w.value for w in at.warning)
    if len(cpus) > 1:
        assert f"measured on {len(cpus)} CPU models" in warned and all(c in warned for c in cpus)
    else:
        assert "CPU models" not in warned
