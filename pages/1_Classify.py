"""Classify a sound with a shipped model: waveform, spectrogram figure, top-5 classes, the model's held-out
scores to weigh the answer by, and for an MoE model the routing decision (which expert, why, how uncertain).

Thin: the engine classifies (on ONNX Runtime; torch is loaded only for an MoE's routing record) and scores; the
page draws. The ONNX download is made when clicked, not on every rerun."""
import json

import streamlit as st

from qmoe.app.inference import AGGREGATION, classify, describe_scores, model_scores, onnx_file, shipped_models
from qmoe.app.ui import (page_config, probability_bars, show_routing_decision, trained_model, waveform_figure,
                         window_timeline)
from qmoe.core import paths
from qmoe.core.errors import QmoeError

page_config("Classify")
st.title("Classify a sound")

models = shipped_models()
if not models:
    st.error("No shipped model in data/models. Create them with `python -m qmoe ship`.")
    st.stop()
model_name = st.selectbox("Model (trained on ESC-50 folds 1, 2, 3, 5; runs on ONNX Runtime)", list(models))
model_path = str(models[model_name])
st.download_button("Download this model as ONNX", lambda: onnx_file(model_path),
                   file_name=models[model_name].stem + ".onnx", mime="application/octet-stream",
                   help="What a device runs: the quantized layers at their bit-width, one clip per call; input: the "
                        "backbone embedding of the spectrogram figure (z-scored inside); output: class logits. "
                        "Classes and recipe are in the file's metadata.")

examples = json.loads((paths.EXAMPLES_DIR / "examples.json").read_text()) if (
    paths.EXAMPLES_DIR / "examples.json").exists() else []
kinds = ["Example clip (ESC-50 fold 4)", "Upload a file"] + (["Record from the microphone"]
                                                             if hasattr(st, "audio_input") else [])
source_kind = st.radio("Sound", kinds, horizontal=True)
source, source_name = None, None
if source_kind.startswith("Example") and examples:
    labels = [f"{e['class_name']} — {e['file']}" for e in examples]
    pick = st.selectbox("Example", labels)
    ex = examples[labels.index(pick)]
    source, source_name = paths.EXAMPLES_DIR / ex["file"], ex["file"]
    st.caption(f"True class: **{ex['class_name']}** ({ex['major']}). {ex['attribution']}")
elif source_kind.startswith("Record"):
    rec = st.audio_input("Record a sound (a few seconds)")
    if rec is not None:
        source, source_name = rec.getvalue(), "your recording"
else:
    up = st.file_uploader("Audio file (wav, flac, ogg, mp3; up to 60 s are used, in 5 s windows)",
                          type=["wav", "flac", "ogg", "mp3"])
    if up is not None:
        source, source_name = up.getvalue(), up.name

if source is None:
    st.stop()

try:
    with st.spinner("Decoding, rendering, embedding..."):
        pred = classify(source, models[model_name])
except QmoeError as e:
    st.error(f"Cannot classify {source_name}: {e}")
    st.stop()
except Exception as e:  # never take the session down on odd input; show what happened
    st.error(f"Cannot classify {source_name}: unexpected {type(e).__name__}: {e}")
    st.stop()

clip = pred.clip
if clip.trimmed:
    st.warning(f"The clip is longer than the cap; only its first {clip.duration_s:.0f} s were used.")
st.audio(clip.samples, sample_rate=clip.sr)
left, right = st.columns(2)
with left:
    st.markdown(f"**Prediction: {pred.label}** ({pred.probs.max():.0%})")
    scores = model_scores(model_path)
    held = scores["held_out"]
    if held is not None:  # how far to trust the answer: this model on clips it never saw
        where = (f"{scores['dataset']} fold {held['fold']} ({held['n_test']} clips, unseen in training; "
                 f"{scores['protocol']} folds, seed {scores['seed']})")
        m1, m2 = st.columns(2)
        m1.metric("Held-out macro-F1", f"{held['f1_macro']:.3f}", help=f"This model's macro-F1 on {where}.")
        m2.metric("Held-out accuracy", f"{held['accuracy']:.3f}", help=f"This model's accuracy on {where}.")
    st.caption(describe_scores(scores))
    st.plotly_chart(probability_bars(pred.top(5), "Top-5 classes"), width="stretch")
shown = pred.shown
if len(pred.windows) > 1:
    st.subheader(f"{len(pred.windows)} windows of 5 s")
    st.caption(f"The models learned from 5 s clips at 44.1 kHz, so the clip is classified in 5 s windows every 2.5 s "
               f"(the last one padded with silence); its answer is the {AGGREGATION}.")
    expert_names = list(trained_model(model_path).model.expert_names) if pred.routing is not None else None
    st.plotly_chart(window_timeline(pred.timeline(), expert_names), width="stretch")
    starts = [w.start_s for w in pred.windows]
    pick = st.select_slider("Window shown below (figure and routing)", options=starts, value=shown.start_s,
                            format_func=lambda s: f"{s:.1f}–{s + 5:.1f} s")
    shown = pred.windows[starts.index(pick)]
with right:
    st.image(shown.image, caption=f"Mel-spectrogram figure of {shown.start_s:.1f}–{shown.start_s + 5:.1f} s "
                                  "(the model's input: the training figures' recipe)")
st.plotly_chart(waveform_figure(clip.samples, clip.sr), width="stretch")
st.caption(" · ".join(f"{k} {v:.0f} ms" for k, v in pred.timings_ms.items())
           + f" · {clip.duration_s:.2f} s, recorded at {clip.original_sr} Hz, {clip.channels} channel(s), "
             f"classified at {clip.sr} Hz on ONNX Runtime")

if shown.routing is not None:
    show_routing_decision(shown, trained_model(model_path))  # the engine model: loaded once per process
