"""Uploads at any common rate and length land in the training conditions and classify (issue 12).

Real ESC-50 fold-4 audio (never seen by the shipped models) is resampled to 8, 16, 22.05, 44.1 and 48 kHz,
cut to 1 s and 5 s or joined to 20 s, written as WAV at that rate, and classified by the shipped MoE-C on
ONNX Runtime: 1 s and 5 s clips are one silence-padded 5 s window, a 20 s clip is 7 windows 2.5 s apart.
"""
import io

import librosa
import numpy as np
import pytest
import soundfile as sf

from qmoe.app.inference import AGGREGATION, classify, shipped_models

CLIPS = ["4-119647-A-48.flac", "4-102844-A-49.flac", "4-167077-A-20.flac", "4-125070-A-19.flac"]
RATES = [8000, 16000, 22050, 44100, 48000]
SECONDS = {1: [0.0], 5: [0.0], 20: [0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0]}


@pytest.fixture(scope="module")
def moe_c():
    return next(p for n, p in shipped_models().items() if "QMoE-C" in n)


@pytest.fixture(scope="module")
def audio44k(shared_esc50):
    """20 s of real audio at 44.1 kHz: four fold-4 clips one after another."""
    return np.concatenate([sf.read(shared_esc50 / "audio" / c, dtype="float32")[0] for c in CLIPS])


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("seconds", sorted(SECONDS))
def test_every_rate_and_length_classifies_in_5s_windows(moe_c, audio44k, sr, seconds):
    y = librosa.resample(audio44k[: 44100 * seconds], orig_sr=44100, target_sr=sr, res_type="soxr_hq")
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    pred = classify(buf.getvalue(), moe_c)
    assert pred.clip.sr == 44100  # brought to the rate the figures were drawn from
    assert [w.start_s for w in pred.windows] == SECONDS[seconds]
    assert abs(pred.clip.duration_s - seconds) < 0.01
    for w in pred.windows:
        assert w.probs.shape == (len(pred.class_names),) and abs(w.probs.sum() - 1) < 1e-4
        assert w.routing is not None and w.image.ndim == 3
    assert np.allclose(pred.probs, np.mean([w.probs for w in pred.windows], axis=0))  # AGGREGATION
    assert "mean" in AGGREGATION
    rows = pred.timeline()
    assert len(rows) == len(SECONDS[seconds]) and all(r["label"] in pred.class_names for r in rows)


def test_a_5s_clip_at_44k_gives_the_answer_of_its_figure_at_other_rates(moe_c, audio44k):
    """Resampling a band-limited clip down to 22.05 kHz and back loses what lies above 11 kHz only: the
    answer's class stays the same for the clip (a fold-4 fireworks clip, loud and broadband)."""
    answers = {}
    for sr in (22050, 44100, 48000):
        y = librosa.resample(audio44k[: 44100 * 5], orig_sr=44100, target_sr=sr, res_type="soxr_hq")
        buf = io.BytesIO()
        sf.write(buf, y, sr, format="WAV", subtype="FLOAT")
        answers[sr] = classify(buf.getvalue(), moe_c).label
    assert len(set(answers.values())) == 1, answers
