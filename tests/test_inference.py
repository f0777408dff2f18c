"""Classifying real audio with the shipped models: the audio path lands where the shared figures do."""
import numpy as np
import pytest

from qmoe.app.inference import classify, load_model, shipped_models
from qmoe.core.errors import AudioError


@pytest.fixture(scope="module")
def fp32_major():
    models = shipped_models()
    assert "esc50 / major / FP32-Base" in models, f"shipped models: {list(models)}"
    return models["esc50 / major / FP32-Base"]


def test_shipped_models_held_out_fold_4():
    for name, path in shipped_models().items():
        cfg = load_model(str(path)).info["config"]
        assert cfg["fold"] == 4 and cfg["protocol"] == "predefined", name


def test_audio_path_agrees_with_the_shared_figures(fp32_major, esc50, shared_esc50):
    tm = load_model(str(fp32_major))
    rows = np.flatnonzero(esc50.folds == 4)[::20]  # 20 fold-4 clips, spread over the classes
    via_audio, via_figure = [], []
    for i in rows:
        name = esc50.meta["name"].iloc[i]
        pred = classify(shared_esc50 / "audio" / f"{name}.flac", fp32_major)
        via_audio.append(pred.probs)
        via_figure.append(tm.predict_proba(esc50.X[i])[0])
        assert pred.image.shape == (240, 320, 3) and pred.clip.duration_s == pytest.approx(5.0, abs=0.01)
    via_audio, via_figure = np.array(via_audio), np.array(via_figure)
    assert (via_audio.argmax(1) == via_figure.argmax(1)).mean() >= 0.95
    assert np.abs(via_audio - via_figure).max() < 0.05


def test_moe_model_explains_its_routing(shared_esc50):
    moe = [p for n, p in shipped_models().items() if "QMoE-C" in n]
    assert moe, "a shipped MoE-C model is expected in data/models"
    pred = classify(shared_esc50 / "audio" / "4-119647-A-48.flac", moe[0])
    r = pred.routing
    assert r is not None and np.isclose(r["curious_probs"].sum(), 1, atol=1e-5)
    assert 0 <= int(r["chosen_expert"]) < r["curious_probs"].shape[0]
    assert r["mutual_information"] >= -1e-6


def test_bad_audio_is_refused_with_the_engine_message(fp32_major, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    with pytest.raises(AudioError):
        classify(bad, fp32_major)
