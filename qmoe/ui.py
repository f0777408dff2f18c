"""Streamlit glue shared by the pages: cached loaders and small drawing helpers (no engine logic)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st


@st.cache_data(show_spinner=False, ttl=10)
def results() -> pd.DataFrame:
    """Every cached run (re-read at most every 10 s, so new runs appear)."""
    from .results import results_frame

    return results_frame()


@st.cache_resource(show_spinner="Loading model...")
def trained_model(path: str):
    from .inference import load_model

    return load_model(path)


@st.cache_resource(show_spinner="Loading the image backbone...")
def backbone(name: str):
    from .backbones import get_backbone

    return get_backbone(name)


def csv_download(df: pd.DataFrame, name: str, label: str = "Download CSV") -> None:
    st.download_button(label, df.to_csv(index=False).encode(), file_name=name, mime="text/csv", key=f"dl-{name}")


def waveform_figure(samples: np.ndarray, sr: int):
    import plotly.graph_objects as go

    step = max(1, len(samples) // 4000)  # plot at most ~4k points
    t = np.arange(0, len(samples), step) / sr
    fig = go.Figure(go.Scatter(x=t, y=samples[::step], mode="lines", line=dict(width=1)))
    fig.update_layout(height=200, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="time (s)",
                      yaxis_title="amplitude")
    return fig


def probability_bars(pairs: list[tuple[str, float]], title: str = ""):
    import plotly.graph_objects as go

    names, probs = zip(*pairs) if pairs else ((), ())
    fig = go.Figure(go.Bar(x=list(probs)[::-1], y=list(names)[::-1], orientation="h",
                           text=[f"{p:.2f}" for p in probs][::-1], textposition="auto"))
    fig.update_layout(height=60 + 36 * len(pairs), margin=dict(l=10, r=10, t=30 if title else 10, b=10),
                      xaxis=dict(range=[0, 1], title="probability"), title=title or None)
    return fig
