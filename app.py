import qmoe  # noqa: F401  (first: fixes thread counts before numpy/torch load)
"""qmoe: curiosity-driven quantized Mixture-of-Experts for audio classification (Streamlit app)."""
import streamlit as st

from qmoe.results import summary
from qmoe.ui import csv_download, results

st.set_page_config(page_title="qmoe", page_icon="🎧", layout="wide")
st.title("qmoe — curiosity-driven quantized Mixture-of-Experts")
st.markdown(
    "This app reproduces and questions the paper *Uncertainty Makes It Stable: Curiosity-Driven Quantized "
    "Mixture-of-Experts* (arXiv 2511.11743). Audio becomes a mel-spectrogram figure, an ImageNet CNN "
    "(EfficientNet-Lite0) embeds it, and small quantized MLP experts classify the embedding.\n\n"
    "Every number below is read from the engine's result cache (`results/`), each run stored with its full "
    "config and code version. The default protocol is **leak-free** (ESC-50's predefined folds, model "
    "selection on a validation split carved from the training folds); the paper's shuffled split is "
    "available as protocol `paper` and flagged as leaky.\n\n"
    "Use **Classify** in the sidebar to upload a sound and see what the shipped model hears."
)

df = results()
if df.empty:
    st.info("The result cache is empty. Run `python -m qmoe train --variant FP32-Base --variant Q4-Base`.")
    st.stop()

st.subheader("Cached results (mean ± std over folds)")
st.caption("Task `major` = ESC-50's 5 major categories (the paper's task); `class` = the 50 classes.")
summ = summary(df)
st.dataframe(summ, hide_index=True, width="stretch")
csv_download(summ, "qmoe-summary.csv")

with st.expander(f"All {len(df)} cached runs (one row per fold)"):
    st.dataframe(df, hide_index=True, width="stretch")
    csv_download(df, "qmoe-results.csv")

st.caption("ESC-50: K. J. Piczak, ACM MM 2015 — CC BY-NC 3.0, clips from freesound.org; non-commercial use only.")
