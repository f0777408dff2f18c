"""The routing pages in Streamlit's AppTest, against the real cache, shipped models and audio."""
import io
import json
import os
import re

import numpy as np
import pytest
import soundfile as sf
from streamlit.testing.v1 import AppTest

from qmoe.analysis.explain import reroute, run_alpha, walkthrough
from qmoe.app.inference import load_model, shipped_models
from qmoe.core import paths
from qmoe.experiments import jobs
from qmoe.experiments.results import results_frame
from qmoe.experiments.store import ResultStore
from tests.conftest import ROOT

TIMEOUT = 180


def _run(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=TIMEOUT)
    at.run()
    _ok(at)
    return at


def _ok(at):
    assert not at.exception, [e.message for e in at.exception]


def _text(at) -> str:
    return " ".join(m.value for m in at.markdown)


def _widget(widgets, label):
    return next(w for w in widgets if w.label.startswith(label))


@pytest.fixture(scope="module")
def moe_model():
    name = next(n for n in shipped_models() if "QMoE-C" in n)
    return name, load_model(str(shipped_models()[name]))


def test_classify_explains_the_routing_of_an_upload_and_survives_bad_files(moe_model, shared_esc50):
    name, tm = moe_model
    at = _run("1_Classify.py")
    at.selectbox[0].select(name)
    at.radio[0].set_value("Upload a file").run()
    at.file_uploader[0].set_value(("notes.wav", b"this is not audio", "audio/wav")).run()
    _ok(at)
    assert at.error and "Cannot classify notes.wav" in at.error[0].value
    flac = (shared_esc50 / "audio" / "4-119647-A-48.flac").read_bytes()
    at.file_uploader[0].set_value(("4-119647-A-48.flac", flac, "audio/flac")).run()
    _ok(at)
    assert not at.error
    text = _text(at)
    assert "Prediction:" in text
    expert = re.search(r"Handled by expert: (\S+)", text).group(1)
    assert expert in tm.model.expert_names
    table = at.dataframe[0].value
    assert table.expert.tolist() == list(tm.model.expert_names)
    assert table.loc[table.chosen, "expert"].item() == expert
    assert np.isclose(table.routing_after.sum(), 1, atol=1e-5)


def test_classify_takes_a_microphone_recording_and_plain_models_show_no_routing(shared_esc50):
    at = _run("1_Classify.py")
    at.selectbox[0].select("esc50 / major / FP32-Base")
    at.radio[0].set_value("Record from the microphone").run()
    y, sr = sf.read(shared_esc50 / "audio" / "4-119647-A-48.flac")
    wav = io.BytesIO()
    sf.write(wav, y, sr, format="WAV")
    at.audio_input[0].set_value(("recording.wav", wav.getvalue(), "audio/wav")).run()
    _ok(at)
    text = _text(at)
    assert "Prediction:" in text and "Handled by expert" not in text


def test_routing_explorer_filters_and_shows_figure2():
    at = _run("2_Routing_explorer.py")
    variant = _widget(at.selectbox, "Variant").value
    df = results_frame()
    runs = df[(df.variant + df.options.map(lambda o: f" [{o}]" if o else "") == variant)
              & (df.dataset == _widget(at.selectbox, "Dataset").value) & (df.task == _widget(at.selectbox, "Task").value) & (df.protocol == _widget(at.selectbox, "Protocol").value)]
    runs = runs[runs.seed == runs.seed.min()]
    chosen = np.concatenate([ResultStore().arrays(k)["routing__chosen_expert"] for k in runs.key])
    experts = ResultStore().get(runs.key.iloc[0])["expert_names"]
    summary = next(d.value for d in at.dataframe if "confidence_mean" in d.value.columns)
    assert summary.samples.tolist() == np.bincount(chosen, minlength=len(experts)).tolist()
    samples = next(d.value for d in at.dataframe if "true_class" in d.value.columns)
    assert len(samples) == len(chosen)
    _widget(at.slider, "Confidence range").set_value((0.6, 0.8)).run()
    _ok(at)
    samples = next(d.value for d in at.dataframe if "true_class" in d.value.columns)
    assert 0 < len(samples) < len(chosen) and samples.confidence.between(0.6, 0.8).all()
    assert "Handled by expert:" in _text(at)
    _widget(at.selectbox, "Dataset").select("folder:esc50-fold4-major").run()  # the shipped folder dataset's MoE runs
    _ok(at)
    assert _widget(at.selectbox, "Task").value == "class" and "folder:esc50-fold4-major" in at.caption[0].value


def test_alpha_sweep_recomputes_for_the_slider_alpha():
    at = _run("3_Alpha_sweep.py")
    assert _widget(at.selectbox, "Protocol").value == "predefined"  # the leak-free protocol is the default
    assert "Recomputed on the fly" in " ".join(c.value for c in at.caption)
    _widget(at.slider, "alpha").set_value(1.5).run()
    _ok(at)
    run = _widget(at.selectbox, "Cached run").value
    df = results_frame()
    keys = df[(df.variant + df.options.map(lambda o: f" [{o}]" if o else "") == run) & (df.task == "major")
              & (df.protocol == "predefined") & (df.seed == 0)].sort_values("fold").key
    store = ResultStore()
    shares = np.mean([reroute(store.arrays(k), 1.5).shares for k in keys], axis=0)
    experts = store.get(keys.iloc[0])["expert_names"]
    expected = ", ".join(f"{n} {s:.1%}" for n, s in zip(experts, shares))
    assert f"Recomputed routing shares at alpha = 1.5, T = 1, top-1: {expected}" in _text(at)
    per_fold = next(d.value for d in at.dataframe if "f1_recomputed" in d.value.columns)
    own = [reroute(store.arrays(k), run_alpha(store.get(k))).f1_macro for k in keys]
    assert per_fold.f1_at_run_alpha.tolist() == pytest.approx(own)


def test_learn_walks_through_one_sample_and_follows_alpha(moe_model):
    _, tm = moe_model
    at = _run("8_Learn.py")
    assert "reproduces the cached routing record" in " ".join(c.value for c in at.caption)
    _widget(at.slider, "Curiosity alpha").set_value(2.0).run()
    _ok(at)
    table = next(d.value for d in at.dataframe if "p_curious" in d.value.columns)
    from qmoe.datasets import get_dataset
    arrays = ResultStore().arrays(tm.info["key"])
    pick = _widget(at.selectbox, "Sample").value
    x = tm.standardize(get_dataset("esc50").X[arrays["test_idx"][pick]])[0]
    w = walkthrough(tm.model, x, 1.0, 1, 2.0, 10, seed=tm.model.mc_seed)
    np.testing.assert_allclose(table.p_curious.to_numpy(), w["p_curious"], atol=1e-6)
    assert "alpha = 2" in _text(at)


def test_run_experiment_page_shows_progress_and_refuses_a_second_run(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path)
    at = _run("9_Run_experiment.py")
    assert "No experiment is running" in " ".join(i.value for i in at.info)
    (tmp_path / jobs.LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "spec": {"variants": ["Q8-Base"]},
                                                       "done": 2, "total": 5, "current": "major/predefined/Q8-Base/fold 3"}))
    at.run()
    _ok(at)
    assert [b.label for b in at.button][:1] == ["Cancel the job"]  # the running job's, beside its progress
    next(b for b in at.button if b.label == "Run").click().run()  # the grid form's Run button
    _ok(at)
    assert "already going" in at.error[0].value and "Q8-Base" in at.error[0].value
    assert at.get("progress")[0].value == 40  # 2 of 5 runs


def test_run_experiment_sweep_tab_refuses_bad_values_with_the_reason_and_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path)
    at = _run("9_Run_experiment.py")
    by_label = lambda widgets, label: next(w for w in widgets if w.label == label)  # noqa: E731
    by_label(at.text_input, "alphas (MoE)").input("0.1, lots").run()
    next(b for b in at.button if b.label == "Start the sweep").click().run()
    _ok(at)
    assert "Cannot start this sweep: alphas: 'lots' is not a number" in " ".join(e.value for e in at.error)
    by_label(at.text_input, "alphas (MoE)").input("0.1").run()
    by_label(at.text_input, "top-k").input("9").run()
    next(b for b in at.button if b.label == "Start the sweep").click().run()
    assert "top_k must be an integer between 1 and the number" in " ".join(e.value for e in at.error)
    assert jobs.current_run(tmp_path) is None and not (tmp_path / jobs.JOB_NAME).exists()


def test_run_experiment_page_draws_the_last_sweeps_curve_with_its_new_points_starred(tmp_path, monkeypatch):
    from qmoe.experiments.sweep import Sweep

    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path)
    jobs.start_sweep(Sweep(bits=[3, 6], folds=[2], seeds=[1], options={"hidden": [16]}), tmp_path)  # a real job
    assert jobs.wait(tmp_path, timeout=600)["status"] == "done", (tmp_path / "run.log").read_text()[-2000:]
    at = _run("9_Run_experiment.py")
    assert "2 run(s) finished and cached (2 computed now" in " ".join(s.value for s in at.success)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "against bits" in json.dumps(fig["layout"]["title"])
    names = [t["name"] for t in fig["data"]]
    assert names == ["this sweep: BitLinear k-bit", "new: computed by this sweep"]  # one line, both points starred
    assert sorted(r["variant"] for r in ResultStore(tmp_path).records()) == ["Q3-Base", "Q6-Base"]
    assert "New points" in " ".join(m.value for m in at.markdown)
