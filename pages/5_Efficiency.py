"""Efficiency (paper Tables 3, 5, 7 and Appendix A): energy, CO2, latency mean/std, MoE vs MoE-C latency spread,
and the deployment projection for a chosen number of inferences per day."""
import qmoe  # noqa: F401  (first: fixes thread counts)
import plotly.graph_objects as go
import streamlit as st

from qmoe.analysis.tables import deployment_table
from qmoe.app.ui import (RUNTIME_LABELS, csv_download, machines_note, page_config, pick_slice, results, runtime_picker,
                         slice_table)
from qmoe.measure.energy import PAPER_G_PER_KWH

page_config("Efficiency")
st.title("Efficiency: latency, energy, CO₂")

c0, c1, c2, c3 = st.columns(4)
runtime = runtime_picker(c3)
df = results(runtime)
df, dataset, task, protocol = pick_slice(df, c0, c1, c2)

eff = slice_table("efficiency_table", dataset, task, protocol, runtime)
st.subheader(f"Every variant — {dataset} / {task} / {protocol} on {RUNTIME_LABELS[runtime]} "
             "(mean over cached folds, seed 0)")
if eff["latency_ms_mean"].isna().all():
    st.info(f"No run of this slice was measured on {RUNTIME_LABELS[runtime]}; runs cached before runtimes were "
            "recorded were timed on torch eager.")
machines_note(eff)
st.dataframe(eff.drop(columns=["energy_method"]), hide_index=True, width="stretch")
csv_download(eff, f"qmoe-efficiency-{task}-{protocol}-{runtime}.csv")
method = eff["energy_method"].dropna()
if not method.empty:
    st.caption(f"Energy and CO₂ are codecarbon's estimate, not a measurement: {method.iloc[0]}")
load = eff["load_average_max"].max()
if load == load:  # recorded
    st.caption(f"Timings: warm per-sample forward passes on {RUNTIME_LABELS[runtime]}, 1 thread. `load_average_max` is the machine's 1-minute load "
               f"average when they were taken (highest here {load:.1f} on {eff.shape[0]} variants); above ~1 other "
               "work shared the cores and the spread is inflated. Re-measure on a quiet machine with "
               "`python -m qmoe reproduce --retime --workers 1` (it retrains, checks the predictions are unchanged "
               "and replaces only what was measured).")



@st.cache_resource(show_spinner=False, max_entries=32)
def bars(eff) -> tuple[go.Figure, go.Figure]:
    """Latency, and energy with CO₂, per variant: built once per table and shared read-only (plotly's checks of
    a new figure cost a tenth of a second each, on every rerun)."""
    order = eff.sort_values("latency_ms_mean")
    latency = go.Figure(go.Bar(x=order["variant"], y=order["latency_ms_mean"],
                               error_y=dict(type="data", array=order["latency_ms_std"].fillna(0)),
                               marker_color=["#636efa" if f == "single" else "#ef553b" for f in order["family"]]))
    latency.update_layout(title="Per-sample latency, ms (± per-sample std); red = MoE", height=380,
                          margin=dict(l=10, r=10, t=40, b=10))
    energy = go.Figure([go.Bar(name="energy (mJ)", x=order["variant"], y=order["energy_mj"]),
                        go.Bar(name="CO₂ (µg)", x=order["variant"], y=order["co2_ug"])])
    energy.update_layout(title="Per inference: energy (mJ) and CO₂ (µg)", height=380, barmode="group",
                         margin=dict(l=10, r=10, t=40, b=10))
    return latency, energy


left, right = st.columns(2)
latency, energy = bars(eff)
left.plotly_chart(latency, width="stretch")
right.plotly_chart(energy, width="stretch")

st.subheader("Latency spread: MoE vs MoE-C (Eq. 9)")
st.markdown("Per-sample latency of every timed call, pooled over the 5 folds; Levene's test (median-centred) on "
            "those calls. The paper's figure (230 → 29 ms std) is the fold-to-fold std of a validation phase's duration.")
lv = slice_table("latency_variance", dataset, task, protocol, runtime)
if lv.empty:
    st.info("No MoE / MoE-C pair has all 5 folds cached for this task and protocol yet "
            "(stage 'MoE (predefined, major)' of `python -m qmoe reproduce`).")
else:
    st.dataframe(lv, hide_index=True, width="stretch")
    csv_download(lv, f"qmoe-latency-variance-{task}-{protocol}.csv")

st.subheader("Deployment projection (Appendix A.1)")
c1, c2, c3 = st.columns(3)
per_day = c1.number_input("Inferences per day", min_value=0, value=1_000_000, step=100_000)
days = c2.slider("Days", 1, 3650, 365)
g = c3.number_input("Grid intensity (g CO₂/kWh)", min_value=0.0, value=PAPER_G_PER_KWH, step=10.0,
                    help="367 g/kWh is the paper's scenario")
dep = deployment_table(eff[eff["folds"] > 0], per_day, days, g)
if not dep.empty:
    st.markdown(f"**{per_day:,} inferences/day for {days} days at {g:.0f} g/kWh**: serving emissions vs one training run "
                "(one fold's early-stopped training, codecarbon estimate).")
    st.dataframe(dep, hide_index=True, width="stretch")
    csv_download(dep, f"qmoe-deployment-{task}-{protocol}.csv")
