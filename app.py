"""qmoe: curiosity-driven quantized Mixture-of-Experts for audio classification (Streamlit app).

The entry point: names the pages (the first is the Overview, the findings as pictures) and runs the one asked for.
"""
import qmoe  # noqa: F401  (first: fixes thread counts before numpy/torch load)
from pathlib import Path

import streamlit as st

PAGES_DIR = Path(__file__).parent / "pages"


def overview() -> None:
    from qmoe.app import ui

    st.title("qmoe — curiosity-driven quantized Mixture-of-Experts")
    st.markdown(
        "The paper *Uncertainty Makes It Stable: Curiosity-Driven Quantized Mixture-of-Experts* (arXiv 2511.11743), "
        "reproduced and questioned on ESC-50: audio → mel-spectrogram figure → EfficientNet-Lite0 embedding → "
        "quantized MLP experts, or a Mixture of them with a Bayesian, curiosity-driven router. Below, what we found; "
        "every number comes from the engine's result cache (leak-free predefined folds, the paper's 5-category task, "
        "efficiency on ONNX Runtime: what a device runs).")
    df = ui.results("onnxruntime")
    if df.empty:
        st.warning("The result cache is empty. Run `python -m qmoe reproduce` (or `python -m qmoe train`).")
        st.stop()
    found = ui.overview()

    st.subheader("Which of the paper's claims hold")
    st.plotly_chart(found["verdicts"], width="stretch")
    st.page_link(PAGES["Claims ledger"], label="Every claim, its value and test → Claims ledger", icon="📋")

    left, right = st.columns(2)
    with left:
        st.subheader("What bits cost in accuracy")
        st.plotly_chart(found["bits"], width="stretch")
        st.page_link(PAGES["Bit-width"], label="Bit-width sweep →", icon="📉")
    with right:
        st.subheader("Does curiosity stabilise the MoE?")
        st.plotly_chart(found["spread"], width="stretch")
        st.page_link(PAGES["Alpha sweep"], label="Alpha sweep →", icon="🎚️")
        st.page_link(PAGES["Significance"], label="Significance tests →", icon="🧪")

    st.subheader("Latency and energy of each variant on ONNX Runtime")
    st.plotly_chart(found["cost"], width="stretch")
    st.page_link(PAGES["Efficiency"], label="Efficiency: latency spread, CO₂, deployment projection →", icon="⚡")

    st.subheader("Try it")
    c1, c2, c3 = st.columns(3)
    c1.page_link(PAGES["Classify"], label="Classify a sound: which quantized expert handles it, and why", icon="🎧")
    c2.page_link(PAGES["Routing explorer"], label="Routing explorer: every routing decision of a run", icon="🔀")
    c3.page_link(PAGES["Run experiment"], label="Run experiment: train and sweep from the browser", icon="🧮")
    with st.expander("Headline numbers (mean ± fold std; leak-free rows first)"):
        head = found["headline"]
        st.dataframe(head, hide_index=True, width="stretch")
        ui.csv_download(head, "qmoe-headline.csv")
    st.caption("Protocols: **predefined** = ESC-50's own folds (leak-free; early stopping on a validation split of "
               "the training folds); **paper** = the reference code's shuffled split (leaky). Tasks: **major** = the 5 "
               "major categories (the paper's ESC-50 task), **class** = the 50 classes. ESC-50: K. J. Piczak, ACM MM "
               "2015 — CC BY-NC 3.0, clips from freesound.org; non-commercial use only.")


PAGES = {p.stem.split("_", 1)[1].replace("_", " "): st.Page(str(p), url_path=p.stem.split("_", 1)[1],
                                                             title=p.stem.split("_", 1)[1].replace("_", " "))
         for p in sorted(PAGES_DIR.glob("*.py"))}
st.set_page_config(page_title="qmoe", page_icon="🎧", layout="wide")
st.navigation([st.Page(overview, title="Overview", icon="🎧", default=True), *PAGES.values()]).run()
