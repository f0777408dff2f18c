"""Streamlit glue shared by the pages: cached loaders and small drawing helpers (no engine logic)."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import streamlit as st


def page_config(title: str) -> None:
    """Every page's first call: its tab title, and the app's own navigation even on a fresh server. Streamlit sees
    `pages/` beside app.py and, until some session has run app.py (whose st.navigation turns that mode off), runs a
    page URL's script alone: sidebar "app", no Overview. A page that finds itself run so switches the mode off and
    reruns, through app.py, on the same URL."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
    st.set_page_config(page_title=f"qmoe · {title}", page_icon="🎧", layout="wide")


def store_state() -> tuple:
    """The result store's state, as cheap as one stat and one listing: what every cached frame below is keyed on,
    so a run cached, replaced or dropped shows on the next rerun and nothing is re-read otherwise."""
    from ..experiments.store import ResultStore

    runs = ResultStore().runs
    try:
        info = os.stat(runs)
        return str(runs), info.st_ino, info.st_mtime_ns, len(os.listdir(runs))
    except FileNotFoundError:
        return (str(runs),)


@st.cache_data(show_spinner=False, max_entries=8)
def _results(runtime: str | None, state: tuple) -> pd.DataFrame:
    from ..experiments.results import results_frame

    return results_frame(runtime=runtime)


def results(runtime: str | None = None) -> pd.DataFrame:
    """Every cached run, efficiency figures on `runtime` (None: each run's deployment runtime); read again only
    when the store changed."""
    return _results(runtime, store_state())


results.clear = _results.clear  # Run experiment clears it when its job ends


def _slice(runtime: str | None, dataset: str, state: tuple) -> pd.DataFrame:
    df = _results(runtime, state)
    return df[df["dataset"] == dataset]


RUNTIME_LABELS = {"onnxruntime": "ONNX Runtime (deployment)", "torch-eager": "torch eager (engine, to compare)"}


def runtime_picker(column) -> str:
    """Which runtime's efficiency figures to show; ONNX Runtime, what a device runs, first."""
    from ..deploy.runtime import RUNTIMES

    return column.selectbox("Runtime", list(RUNTIME_LABELS), format_func=RUNTIME_LABELS.get,
                            help="; ".join(f"{RUNTIME_LABELS[k]}: {v}" for k, v in RUNTIMES.items()))


@st.cache_resource(show_spinner="Loading model...")
def trained_model(path: str):
    from .inference import load_model

    return load_model(path)


@st.cache_resource(show_spinner="Loading the image backbone...")
def backbone(name: str):
    from ..audio.backbones import get_backbone

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


def window_timeline(rows: list[dict], expert_names: list[str] | None = None):
    """One bar per 5 s window along the clip: its top class (colour) and probability (text); for an MoE the expert
    that handled it."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label]
        text = [f"{r['probability']:.0%}" + (f" · {expert_names[r['expert']]}" if expert_names else "") for r in mine]
        fig.add_trace(go.Bar(name=label, base=[r["start_s"] for r in mine], x=[r["end_s"] - r["start_s"] for r in mine],
                             y=[f"{r['start_s']:.1f} s" for r in mine], orientation="h", text=text,
                             textposition="inside", hovertemplate="%{y}: " + label + " %{text}<extra></extra>"))
    fig.update_layout(height=80 + 28 * len(rows), barmode="overlay", margin=dict(l=10, r=10, t=30, b=10),
                      title="Windows: top class (and expert)", xaxis_title="time in the clip (s)",
                      yaxis=dict(autorange="reversed", title="window start"), legend=dict(orientation="h", y=-0.3))
    return fig


def probability_bars(pairs: list[tuple[str, float]], title: str = ""):
    import plotly.graph_objects as go

    names, probs = zip(*pairs) if pairs else ((), ())
    fig = go.Figure(go.Bar(x=list(probs)[::-1], y=list(names)[::-1], orientation="h",
                           text=[f"{p:.2f}" for p in probs][::-1], textposition="auto"))
    fig.update_layout(height=60 + 36 * len(pairs), margin=dict(l=10, r=10, t=30 if title else 10, b=10),
                      xaxis=dict(range=[0, 1], title="probability"), title=title or None)
    return fig


# -- routing pages (explorer, alpha sweep, Learn, Classify) -------------------------------------------
@st.cache_data(show_spinner=False, max_entries=64)
def run_record(key: str) -> dict | None:
    """A cached run's full JSON record (runs never change once cached)."""
    from ..experiments.store import ResultStore

    return ResultStore().get(key)


@st.cache_data(show_spinner=False, max_entries=64)
def run_arrays(key: str) -> dict:
    """A cached run's per-sample arrays (each session gets its own copy)."""
    from ..experiments.store import ResultStore

    return ResultStore().arrays(key)


@st.cache_resource(show_spinner="Loading the dataset embeddings...")
def dataset(name: str):
    from ..datasets import get_dataset

    return get_dataset(name)


def run_label(row) -> str:
    """'BitNet-Q4/8-QMoE-C@0.3' or 'BitNet-Q4/8-QMoE-C@0.3 [alpha=0.1]' for a results row."""
    return row["variant"] + (f" [{row['options']}]" if row["options"] else "")


def routing_bars(table, title: str = "Routing probabilities"):
    """Grouped bars per expert: before curiosity (± MC-dropout std) and after it (Eq. 8)."""
    import plotly.graph_objects as go

    fig = go.Figure([
        go.Bar(name="before curiosity (router, MC mean ± std)", x=table["expert"], y=table["routing_before"],
               error_y=dict(type="data", array=table["mc_std"], visible=True),
               text=[f"{v:.3f}" for v in table["routing_before"]], textposition="outside"),
        go.Bar(name="after curiosity (Eq. 8)", x=table["expert"], y=table["routing_after"],
               text=[f"{v:.3f}" for v in table["routing_after"]], textposition="outside"),
    ])
    fig.update_layout(barmode="group", height=320, title=title, yaxis=dict(range=[0, 1.15], title="probability"),
                      margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.2))
    return fig


def paper_task_first(tasks) -> list[str]:
    """Tasks for a picker, the paper's (`major`) first so it is the default."""
    order = {"major": 0, "class": 1}
    return sorted(set(tasks), key=lambda t: (order.get(t, 2), t))


def show_routing_decision(pred, tm, download_name: str = "routing-decision.csv") -> None:
    """The routing decision of an MoE prediction: expert, why, uncertainty, before/after curiosity."""
    from ..core.errors import QmoeError
    from ..analysis.explain import explain, routing_arrays

    st.subheader("Routing decision (Mixture of Experts)")
    ref_key = tm.info.get("key")
    try:
        reference = routing_arrays(run_arrays(ref_key))["mutual_information"] if ref_key else None
    except QmoeError:
        reference = None  # the model's cross-validation run is not cached (yet)
    why = explain(pred.routing, tm.model.expert_names, tm.class_names, reference)
    st.markdown(f"**{why.headline}**")
    st.write(why.why)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Confidence", f"{why.confidence:.1%}", help="Max class probability of the MoE output (Eq. 6).")
    c2.metric("Epistemic uncertainty (MI)", f"{why.mutual_information:.4f} nats",
              help="Mutual information over the router's MC-dropout passes = predictive - expected entropy.")
    c3.metric("Predictive entropy", f"{why.predictive_entropy:.3f} nats")
    c4.metric("Expected entropy", f"{why.expected_entropy:.3f} nats")
    st.plotly_chart(routing_bars(why.table, "Routing probabilities before / after curiosity "
                                            f"(alpha = {tm.model.alpha:g}, {tm.model.mc_samples} MC passes)"),
                    width="stretch")
    st.caption("Each expert's own answer (its top class) and how far it lies from the experts' mean "
               "distribution (KL, the quantity Eq. 8 rewards)."
               + (" The uncertainty percentile compares with the fold-4 test samples of this model's cached "
                  "cross-validation run." if reference is not None else ""))
    st.dataframe(why.table, hide_index=True, width="stretch")
    csv_download(why.table, download_name)


@st.cache_data(show_spinner=False, ttl=30)
def dataset_task_names(name: str) -> tuple[str, ...]:
    """A dataset's tasks (a folder is scanned once per 30 s, not on every rerun); raises what dataset_tasks raises."""
    from ..datasets import dataset_tasks

    return dataset_tasks(name)


def leak_free_first(protocols) -> list[str]:
    """Protocols for a picker, the leak-free `predefined` first so it is the default."""
    return sorted(set(protocols), key=lambda p: (p != "predefined", p))


def paper_dataset_first(datasets) -> list[str]:
    """Datasets for a picker, the shipped ESC-50 grid first so it is the default."""
    return sorted(set(datasets), key=lambda d: (d != "esc50", d))


def pick_slice(df: pd.DataFrame, dataset_column, task_column, protocol_column) -> tuple[pd.DataFrame, str, str, str]:
    """Dataset, task and protocol pickers over the cached runs; returns (that dataset's rows, dataset, task, protocol).

    ESC-50 and its paper task come first; stops the page when nothing is cached."""
    if df.empty:
        st.warning("No cached runs yet. Run `python -m qmoe reproduce`.")
        st.stop()
    dataset = dataset_column.selectbox(
        "Dataset", paper_dataset_first(df["dataset"]),
        help="esc50 = the shipped grid; folder:<name> = a folder of your own audio (python -m qmoe train --dataset ...)")
    df = df[df["dataset"] == dataset]
    pairs = sorted(set(zip(df["task"], df["protocol"])))
    task = task_column.selectbox("Task", paper_task_first({t for t, _ in pairs}),
                                 help="major = the 5 ESC-50 categories (the paper's task); class = the 50 classes "
                                      "(a folder dataset's one task is its class folders)")
    protocol = protocol_column.selectbox(
        "Protocol", leak_free_first(p for t, p in pairs if t == task),
        help="predefined = the dataset's own folds (leak-free); paper = the reference's shuffled folds (leaky)")
    return df, dataset, task, protocol


@st.cache_data(show_spinner=False, max_entries=64)
def _slice_table(name: str, runtime: str | None, dataset: str, task: str, protocol: str, state: tuple):
    from ..analysis import tables as analysis
    from ..experiments.store import ResultStore

    df = _slice(runtime, dataset, state)
    if name == "significance_table":
        table, missing = analysis.significance_table(df, ResultStore(), task, protocol)
        return table, list(dict.fromkeys(str(m) for m in missing))
    if name == "latency_variance":
        return analysis.latency_variance(ResultStore(), df, task, protocol)
    return getattr(analysis, name)(df, task, protocol)


def slice_table(name: str, dataset: str, task: str, protocol: str, runtime: str | None = None):
    """`qmoe.analysis.tables.<name>` of one dataset's runs for a task and protocol (bitwidth_table, efficiency_table,
    latency_variance, or significance_table: then (table, what is missing)), computed once per store state and
    slice: the tests and array reads take up to seconds, and reruns (a slider moved) need none of them."""
    return _slice_table(name, runtime, dataset, task, protocol, store_state())


# -- Overview: the findings as pictures --------------------------------------------------------------
@st.cache_data(show_spinner="Judging the claims...", max_entries=4)
def _ledger(state: tuple) -> pd.DataFrame:
    from ..analysis.claims import ledger

    return ledger(_results("onnxruntime", state))


def cached_ledger() -> pd.DataFrame:
    """The claims ledger on the deployment runtime's figures: seconds to judge, so judged again only when the
    store changed."""
    return _ledger(store_state())


VERDICT_COLOURS = {"holds": "#2ca02c", "does not hold": "#d62728", "not yet run": "#bbbbbb",
                   "not testable here": "#8c8c8c"}


def verdicts_by_area(ledger: pd.DataFrame):
    """Stacked bars: how many claims of each area hold, do not hold, or cannot be judged here."""
    import plotly.graph_objects as go

    from ..analysis.claims import AREAS, area

    counts = ledger.assign(area=ledger["id"].map(area)).groupby(["area", "verdict"]).size().unstack(fill_value=0)
    counts = counts.reindex([a for a in AREAS if a in counts.index])
    fig = go.Figure([go.Bar(name=v, y=counts.index, x=counts[v], orientation="h", marker_color=c, text=counts[v],
                            textposition="inside") for v, c in VERDICT_COLOURS.items() if v in counts])
    fig.update_layout(barmode="stack", height=300, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="claims",
                      yaxis=dict(autorange="reversed"), legend=dict(orientation="h", y=-0.2))
    return fig


def f1_against_bits(df: pd.DataFrame, task: str = "major", protocol: str = "predefined"):
    """Macro-F1 (± fold std) of the BitLinear k-bit experts against bits, FP32 as the reference line."""
    import plotly.graph_objects as go

    from ..analysis.tables import bitwidth_table, is_bitlinear

    t = bitwidth_table(df, task, protocol)
    sweep = t[t["variant"].map(is_bitlinear)].sort_values("bits")
    fig = go.Figure(go.Scatter(x=sweep["bits"], y=sweep["f1_mean"], mode="lines+markers", name="Qk-Base (BitLinear)",
                               error_y=dict(type="data", array=sweep["f1_std"].fillna(0)),
                               text=sweep["variant"], hovertemplate="%{text}: F1 %{y:.3f}<extra></extra>"))
    fp32 = t[t["variant"] == "FP32-Base"]
    if not fp32.empty:
        fig.add_hline(y=float(fp32["f1_mean"].iloc[0]), line_dash="dash", annotation_text="FP32-Base")
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=10, b=10), xaxis=dict(type="log", title="bits per weight",
                      tickvals=[1, 2, 4, 8, 16]), yaxis_title=f"macro-F1 ({task}, {protocol} folds)")
    return fig


def fold_spread_across_seeds(df: pd.DataFrame, task: str = "major", protocol: str = "predefined"):
    """Fold-level F1 std of each seed's run: the uniform MoE against its curiosity twins (the paper's stability
    claim is about this spread)."""
    import plotly.graph_objects as go

    from ..analysis.tables import CURIOUS, UNIFORM, Missing, seed_matrix, seeds_available

    fig = go.Figure()
    for name in (UNIFORM, CURIOUS[0.2], CURIOUS[0.3]):
        seeds = seeds_available(df, name, task, protocol)
        try:
            stds = seed_matrix(df, name, task, protocol, seeds).std(axis=1, ddof=1) if seeds else []
        except Missing:
            stds = []
        fig.add_trace(go.Box(y=list(stds), name=name.replace("BitNet-Q4/8-QMoE", "MoE"), boxpoints="all",
                             hovertemplate="fold std %{y:.3f}<extra></extra>"))
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=10, b=10), showlegend=False,
                      yaxis_title="fold std of macro-F1, one point per seed")
    return fig


def latency_and_energy(df: pd.DataFrame, task: str = "major", protocol: str = "predefined"):
    """Per-inference latency (ms) and energy (mJ) of every variant, as the deployment runtime measured them."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    from ..analysis.tables import efficiency_table

    t = efficiency_table(df, task, protocol).dropna(subset=["latency_ms_mean"]).sort_values("latency_ms_mean")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("latency per clip (ms, batch 1)", "energy per clip (mJ)"),
                        shared_yaxes=True, horizontal_spacing=0.02)
    colour = ["#636efa" if f == "single" else "#ef553b" for f in t["family"]]
    fig.add_trace(go.Bar(y=t["variant"], x=t["latency_ms_mean"], orientation="h", marker_color=colour,
                         hovertemplate="%{y}: %{x:.3f} ms<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(y=t["variant"], x=t["energy_mj"], orientation="h", marker_color=colour,
                         hovertemplate="%{y}: %{x:.2f} mJ<extra></extra>"), 1, 2)
    fig.update_layout(height=140 + 22 * len(t), margin=dict(l=10, r=10, t=30, b=10), showlegend=False)
    return fig


@st.cache_resource(show_spinner=False, max_entries=4)
def _overview(state: tuple) -> dict:
    df = _results("onnxruntime", state)
    esc = df[df["dataset"] == "esc50"]
    return {"verdicts": verdicts_by_area(_ledger(state)), "bits": f1_against_bits(esc),
            "spread": fold_spread_across_seeds(esc), "cost": latency_and_energy(esc), "headline": headline_table(df)}


def overview() -> dict:
    """The Overview's figures (verdicts, bits, spread, cost) and headline table, built once per store state and
    shared, read-only, by every session: the findings change only when the runs do, and building them took a
    second (st.plotly_chart only reads a figure)."""
    return _overview(store_state())


def headline_table(df: pd.DataFrame) -> pd.DataFrame:
    """The headline rows with units on every number, leak-free protocol first."""
    from ..experiments.results import headline

    head = headline(df)
    head = head.assign(**{"size (KB)": (head.pop("model_bytes") / 1024).round(1),
                          "latency (ms)": head.pop("latency_ms_mean").round(3)})
    return head.sort_values("protocol", key=lambda p: p != "predefined", kind="stable")


def machines_note(table: pd.DataFrame) -> None:
    """Warn when a table's runs were measured on more than one CPU model: their latency and energy do not compare
    (and fp32 training is bit-identical only on one CPU type, so F1 differs by a training run's noise too)."""
    if "cpu" not in table:
        return
    by_cpu = {}
    for variant, cpus in zip(table["variant"], table["cpu"].fillna("")):
        for cpu in filter(None, cpus.split(" + ")):
            by_cpu.setdefault(cpu, []).append(variant)
    if len(by_cpu) > 1:
        st.warning("These runs were measured on " + f"{len(by_cpu)} CPU models: " + "; ".join(
            f"{cpu} ({len(v)} variant{'s' * (len(v) > 1)}: {', '.join(v[:4])}{', ...' if len(v) > 4 else ''})"
            for cpu, v in sorted(by_cpu.items(), key=lambda kv: -len(kv[1])))
            + ". Latency and energy compare only between runs on the same CPU.")

