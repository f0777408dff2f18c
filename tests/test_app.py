"""The pages run in Streamlit's AppTest against the real engine, cache and shipped models."""
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

TIMEOUT = 180


def _run(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_overview_shows_cached_results():
    """The findings first (charts), the headline table behind an expander with units, leak-free rows first."""
    from qmoe.experiments.results import results_frame

    at = _run("app.py")
    assert at.title[0].value.startswith("qmoe")
    assert len(at.get("plotly_chart")) >= 3
    head = at.dataframe[0].value
    assert {"task", "protocol", "variant", "F1 (macro)", "size (KB)", "latency (ms)"} <= set(head.columns)
    assert head["protocol"].iloc[0] == "predefined"
    df = results_frame()  # the numbers on screen are the cache's
    fp32 = df[(df.dataset == "esc50") & (df.variant == "FP32-Base") & (df.task == "major")
              & (df.protocol == "predefined") & (df.seed == 0) & (df.options == "") & (df.selection == "validation")]
    row = head[(head.dataset == "esc50") & (head.variant == "FP32-Base") & (head.task == "major")
               & (head.protocol == "predefined")]
    assert row["F1 (macro)"].iloc[0].startswith(f"{fp32['f1_macro'].mean():.3f} ±")


def test_classify_page_predicts_an_example_clip():
    at = _run("pages/1_Classify.py")
    assert at.selectbox[0].options  # shipped models
    text = " ".join(m.value for m in at.markdown)
    assert "Prediction:" in text
    # pick another example: the prediction is recomputed for it
    examples = at.selectbox[1]
    examples.select_index(len(examples.options) - 1).run()
    assert not at.exception
    assert "Prediction:" in " ".join(m.value for m in at.markdown)


def test_classify_page_shows_the_models_held_out_scores_beside_its_answer():
    from qmoe.app.inference import model_scores, shipped_models

    at = _run("pages/1_Classify.py")
    name = at.selectbox[0].value
    scores = model_scores(str(shipped_models()[name]))
    held = scores["held_out"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Held-out macro-F1"] == f"{held['f1_macro']:.3f}"
    assert metrics["Held-out accuracy"] == f"{held['accuracy']:.3f}"
    said = " ".join(c.value for c in at.caption)
    assert f"test fold {held['fold']}" in said and "predefined folds" in said and "5-fold cross-validation" in said
    # another model: its own figures
    at.selectbox[0].select("esc50 / major / FP32-Base").run()
    assert not at.exception
    fp32 = model_scores(str(shipped_models()["esc50 / major / FP32-Base"]))["held_out"]
    assert {m.label: m.value for m in at.metric}["Held-out macro-F1"] == f"{fp32['f1_macro']:.3f}"
