"""Bit-width sweep (paper Table 2): F1, packed bytes, latency and energy against bits, per task and protocol."""
import qmoe  # noqa: F401  (first: fixes thread counts)
import plotly.graph_objects as go
import streamlit as st

from qmoe.analysis.tables import is_bitlinear
from qmoe.app import sweeps
from qmoe.app.ui import (RUNTIME_LABELS, csv_download, machines_note, page_config, pick_slice, results, runtime_picker,
                         slice_table)

page_config("Bit-width")
st.title("Bit-width sweep")
st.markdown("Single-model variants of the paper's Table 2 (BitLinear 1–16 bit, any width in between: `Q<k>-Base`) "
            "and the other single experts "
            "(FP32, ternary BitNet, int8 PTQ, popcount), from the result cache: mean ± std over the 5 folds (seed 0, "
            "model selection on a validation split). Bytes are the **packed** deployable model (the exported ONNX "
            "file's bytes beside them); latency is the warm per-sample forward pass on this CPU (1 thread) on the "
            "runtime picked below: ONNX Runtime, what a device runs, or the engine's torch path to compare.")

c0, c1, c2, c3, c4 = st.columns(5)
runtime = runtime_picker(c3)
df = results(runtime)
df, dataset, task, protocol = pick_slice(df, c0, c1, c2)
err = c4.radio("Latency error bars", ["per-sample std (within a run)", "std of the fold means"])

with st.expander("Sweep other bit-widths (background job)", expanded=False):
    with st.form("bit-sweep"):
        st.caption(f"Trains and evaluates `Q<k>-Base` (BitLinear k-bit QAT) for each k on {dataset} / {task} / "
                   f"{protocol}, one run per fold and seed, on both cores; cached points are read back.")
        bits = st.multiselect("Bit-widths", list(range(1, 17)), placeholder="pick one or more of 1..16")
        read_folds = sweeps.fold_and_seed_inputs(dataset, protocol, "bit-sweep")
        if st.form_submit_button("Start the sweep"):
            def make_sweep():
                folds, seeds = read_folds()
                return {"bits": bits, "dataset": dataset, "tasks": [task], "protocols": [protocol], "folds": folds,
                        "seeds": seeds}
            sweeps.start(make_sweep)


@st.cache_resource(show_spinner=False, max_entries=64)
def scatter(table, y, yerr=None, title="", log=False, new=()):
    """One panel of the sweep (`new`: variants a sweep just computed, starred), built once per table and shared
    read-only: plotly's checks of a new figure cost a tenth of a second each, on every rerun."""
    bitlinear = table["variant"].map(is_bitlinear)
    sweep, other = table[bitlinear].sort_values("bits"), table[~bitlinear]
    fig = go.Figure()
    # the BitLinear points are named by the x axis (hover for the name); the other experts are labelled
    for part, name, mode in ((sweep, "BitLinear k-bit", "lines+markers"), (other, "other experts", "markers+text")):
        if part.empty:
            continue
        fig.add_trace(go.Scatter(
            x=part["bits"], y=part[y], mode=mode, name=name, text=part["variant"], textposition="top center",
            hovertemplate="%{text}: %{y:.4g}<extra></extra>",
            error_y=dict(type="data", array=part[yerr].fillna(0), visible=True) if yerr else None))
    fresh = table[table["variant"].isin(new)]
    if not fresh.empty:
        fig.add_trace(go.Scatter(x=fresh["bits"], y=fresh[y], mode="markers", name=sweeps.NEW,
                                 marker=sweeps.NEW_MARKER))
    fig.update_layout(title=title, height=360, margin=dict(l=10, r=10, t=40, b=10), xaxis_title="bits per weight",
                      xaxis_tickvals=[1, 2, 3, 4, 6, 8, 16, 32],
                      xaxis_type="log", yaxis_type="log" if log else None)
    return fig


def draw(job):
    """The table and the four panels, read from the cache as it stands; a running sweep's new points starred."""
    got = sweeps.job_points(job)
    new = ()
    if got is not None:
        _, curve = got
        curve = curve[(curve["dataset"] == dataset) & (curve["task"] == task) & (curve["protocol"] == protocol)]
        new = tuple(curve.loc[curve["new"] & (curve["family"] == "single"), "variant"])
    table = slice_table("bitwidth_table", dataset, task, protocol, runtime)
    if table.empty:
        st.info(f"No single-model runs cached for {task} / {protocol} yet: "
                f"`python -m qmoe train --task {task} --protocol {protocol} --variant Q4-Base ...`")
        return
    variants = st.multiselect("Variants", list(table["variant"]), default=list(table["variant"]))
    table = table[table["variant"].isin(variants)]
    incomplete = table[table["folds"] < 5]
    if not incomplete.empty:
        st.warning("Still filling (fewer than 5 folds cached): " + ", ".join(
            f"{v} ({n}/5)" for v, n in zip(incomplete["variant"], incomplete["folds"])))

    st.subheader(f"{dataset} / {task} / {protocol} — figures on {RUNTIME_LABELS[runtime]}")
    machines_note(table)
    show = table.drop(columns=["energy_method"])
    st.dataframe(show, hide_index=True, width="stretch")
    csv_download(show, f"qmoe-bitwidth-{task}-{protocol}-{runtime}.csv")

    left, right = st.columns(2)
    left.plotly_chart(scatter(table, "f1_mean", "f1_std", "Macro-F1 (± fold std)", new=new), width="stretch")
    right.plotly_chart(scatter(table, "model_bytes", title="Packed model bytes", log=True, new=new), width="stretch")
    lat_err = "latency_ms_std" if err.startswith("per-sample") else "latency_ms_fold_std"
    left.plotly_chart(scatter(table, "latency_ms_mean", lat_err,
                              f"Per-sample latency on {RUNTIME_LABELS[runtime]}, ms (± {err})", new=new),
                      width="stretch")
    right.plotly_chart(scatter(table, "energy_mj", title="Energy per inference, mJ (codecarbon estimate)", new=new),
                       width="stretch")
    method = table["energy_method"].dropna()
    if not method.empty:
        st.caption(f"Energy is codecarbon's estimate, not a measurement: {method.iloc[0]}")
    st.caption("% of 16-bit = mean F1 / Q16-Base's mean F1 (paper Table 2). The paper's latency (~1.1 s) is "
               "CodeCarbon's duration of a whole validation phase divided by 5, and its 'mJ' are training Wh: not "
               "comparable in scale.")
    if new:
        st.markdown("**New points** (computed by the last sweep, starred): " + ", ".join(new))


sweeps.job_panel("bits", draw)
