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
    from qmoe.results import results_frame

    at = _run("app.py")
    assert at.title[0].value.startswith("qmoe")
    head, summary = at.dataframe[0].value, at.dataframe[1].value
    assert {"task", "protocol", "variant", "F1 (macro)"} <= set(head.columns)
    assert {"variant", "f1_mean", "f1_std"} <= set(summary.columns)
    # the numbers on screen are the cache's
    df = results_frame()
    fp32 = df[(df.variant == "FP32-Base") & (df.task == "major") & (df.protocol == "predefined") & (df.seed == 0)]
    row = summary[(summary.variant == "FP32-Base") & (summary.task == "major") & (summary.protocol == "predefined")]
    assert row["f1_mean"].iloc[0] == pytest.approx(fp32["f1_macro"].mean())


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
