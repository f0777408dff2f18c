"""Alpha sweep: train at any alphas in the background and watch the curves fill in; the cached 'alpha sweep' stage;
inference-time rerouting for any alpha."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from qmoe.analysis.explain import RECOMPUTED, reroute, run_alpha, sweep_table
from qmoe.app import sweeps
from qmoe.app.ui import (csv_download, leak_free_first, page_config, paper_task_first, results, run_arrays, run_label,
                         run_record, store_state)

page_config("Alpha sweep")
st.title("Curiosity strength alpha")
st.markdown("Eq. 8 multiplies each expert's routing probability by exp(alpha · KL(expert || experts' mean)). "
            "The paper: alpha = 0.02 collapses routing onto one expert, 0.2-0.3 keep it useful and cut the "
            "fold-level F1 variance (Sec. 5.3).")

df = results()
moe = df[(df.family == "moe") & (df.dataset == "esc50")]
if moe.empty:
    st.info("No MoE run is cached yet; `python -m qmoe reproduce` is filling the cache.")
    st.stop()
c = st.columns(3)
task = c[0].selectbox("Task", paper_task_first(moe.task.unique()))
protocol = c[1].selectbox("Protocol", leak_free_first(moe[moe.task == task].protocol.unique()))
alpha = c[2].slider("alpha", 0.0, 2.0, 0.3, 0.01)


@st.cache_data(show_spinner="Reading the cached sweep...", max_entries=16)
def cached_sweep(task: str, protocol: str, state: tuple) -> pd.DataFrame:
    """Read again only when the store changed (`state`), not by hashing the whole frame on every rerun."""
    return sweep_table(results(), task=task, protocol=protocol)


sweep = cached_sweep(task, protocol, store_state())

st.subheader("Train at other alphas")
with st.form("alpha-sweep"):
    st.caption("A background job trains and evaluates the MoE at each alpha (router and experts trained with "
               "curiosity at that alpha), one run per fold and seed, on both cores; points already cached are read "
               "back. An MoE-C fold takes about half a minute here.")
    c = st.columns([2, 3])
    base = c[0].selectbox("MoE", sweeps.moe_bases(), help="the paper's MoE-C recipes first")
    alphas = c[1].text_input("alphas (several at once)", "0.05, 0.5, 0.7")
    read_options = sweeps.moe_option_inputs(base, "alpha-sweep")
    read_folds = sweeps.fold_and_seed_inputs("esc50", protocol, "alpha-sweep")
    if st.form_submit_button("Start the sweep"):
        def make_sweep():
            folds, seeds = read_folds()
            return {"variants": [base], "alphas": sweeps.parse_values(alphas, float, "alphas"),
                    "moe": read_options(), "tasks": [task], "protocols": [protocol], "folds": folds,
                    "seeds": seeds}
        sweeps.start(make_sweep)


def draw(job):
    """The job's sweep against alpha, the grid's cached stage in grey beside it."""
    got = sweeps.job_points(job)
    if got is None:
        return
    points, curve = got
    curve = curve[curve["family"] == "moe"]
    st.markdown(f"**Sweep: {job.get('what')}** ({int(points['cached'].sum())}/{len(points)} runs cached)")
    if curve.empty:
        st.info("No point of this sweep has finished yet.")
        return
    reference = cached_sweep(curve["task"].iloc[0], curve["protocol"].iloc[0], store_state()).rename(
        columns={"f1_fold_std": "f1_std"})
    left, right = st.columns(2)
    left.plotly_chart(sweeps.curve_figure(curve, "alpha", "f1_mean", "f1_std", "Macro-F1 (± fold std)",
                                            reference, "cached grid (alpha sweep stage)"),
                      width="stretch", key="sweep-f1")
    right.plotly_chart(sweeps.curve_figure(curve, "alpha", "levene_p_vs_uniform",
                                             title="Levene p, fold-F1 variance vs uniform routing",
                                             reference=reference, reference_name="cached grid"),
                       width="stretch", key="sweep-levene")
    left.plotly_chart(sweeps.curve_figure(curve, "alpha", "latency_ms_mean", "latency_ms_std",
                                            "Latency per sample, ms (± within-run std)"),
                      width="stretch", key="sweep-latency")
    share_cols = [k for k in curve.columns if k.startswith("share:")]
    labels = [f"{a:g}" + (" (new)" if n else "") for a, n in zip(curve.alpha, curve.new)]
    fig = go.Figure([go.Bar(name=k.split(":", 1)[1], x=labels, y=curve[k]) for k in share_cols])
    fig.update_layout(barmode="stack", height=340, title="Routing share per expert", xaxis_title="alpha",
                      margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    right.plotly_chart(fig, width="stretch", key="sweep-shares")
    sweeps.new_points_note(curve, "alpha")
    with st.expander("The sweep's points, per setting"):
        st.dataframe(curve, hide_index=True, width="stretch")


sweeps.job_panel("alpha", draw)

st.subheader("Cached sweep (trained and evaluated at each alpha)")
if sweep.empty:
    st.info(f"No run of the 'alpha sweep' stage is cached yet for {task}/{protocol}.")
else:
    st.caption(f"esc50 / task {task} / protocol {protocol} / seed 0: BitNet-Q4/8-QMoE-C trained at each alpha; "
               "F1 mean and std over the cached folds, latency std = mean over folds of the per-sample latency std; "
               "routing share = fraction of test samples whose top-1 expert it is. Levene's test compares the fold "
               "F1 variance with the uniform-routing baseline (BitNet-Q4/8-QMoE-uniform).")
    hit = sweep[np.isclose(sweep.alpha, alpha)]
    if hit.empty:
        st.markdown(f"alpha = {alpha:g} is not a cached sweep value (cached: "
                    f"{', '.join(f'{a:g}' for a in sweep.alpha)}); see the recomputation below.")
    else:
        h = hit.iloc[0]
        m = st.columns(4)
        m[0].metric("F1 (mean over folds)", f"{h.f1_mean:.3f}", help=f"{int(h.folds)} fold(s)")
        m[1].metric("F1 fold std", f"{h.f1_fold_std:.3f}" if h.folds > 1 else "n/a")
        m[2].metric("Latency std (ms)", f"{h.latency_ms_std:.3f}")
        m[3].metric("Levene p vs uniform", "n/a" if np.isnan(h.levene_p_vs_uniform) else f"{h.levene_p_vs_uniform:.3g}")
        shares = {k.split(":", 1)[1]: v for k, v in h.items() if k.startswith("share:") and not pd.isna(v)}
        st.markdown(f"Cached routing shares at alpha = {alpha:g}: "
                    + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    share_cols = [k for k in sweep.columns if k.startswith("share:")]
    fig = go.Figure([go.Bar(name=k.split(":", 1)[1], x=[f"{a:g}" for a in sweep.alpha], y=sweep[k])
                     for k in share_cols])
    fig.update_layout(barmode="stack", height=300, title="Routing share per expert (cached)",
                      xaxis_title="alpha", yaxis_title="share", margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(fig, width="stretch")
    st.dataframe(sweep, hide_index=True, width="stretch")
    csv_download(sweep, "alpha-sweep-cached.csv")

st.subheader("Recomputed for any alpha (inference-time routing)")
st.caption(RECOMPUTED + " Latency cannot be recomputed: it needs a measurement.")
runs = moe[(moe.task == task) & (moe.protocol == protocol) & (moe.seed == 0)].copy()
runs["run"] = runs.apply(run_label, axis=1)
names = sorted(runs.run.unique())
default = next((i for i, r in enumerate(names) if r == "BitNet-Q4/8-QMoE-C@0.3"), 0)
cc = st.columns(3)
run_name = cc[0].selectbox("Cached run to reroute", names, index=default)
temperature = cc[1].slider("Temperature T", 0.1, 5.0, 1.0, 0.1)
top_k = cc[2].number_input("top-k", 1, 4, 1)
picked = runs[runs.run == run_name].sort_values("fold")
rec0 = run_record(picked.key.iloc[0])
experts = rec0["expert_names"]
top_k = min(int(top_k), len(experts))

rows = []
for _, row in picked.iterrows():
    arrays = run_arrays(row.key)
    r = reroute(arrays, alpha, temperature, top_k)
    own = reroute(arrays, run_alpha(run_record(row.key)))
    rows.append({"fold": int(row.fold), "f1_recomputed": r.f1_macro, "f1_cached": row.f1_macro,
                 "f1_at_run_alpha": own.f1_macro, "routing_entropy": r.routing_entropy,
                 **{f"share:{n}": s for n, s in zip(experts, r.shares)}})
per_fold = pd.DataFrame(rows)
m = st.columns(3)
m[0].metric(f"F1 at alpha={alpha:g} (recomputed)", f"{per_fold.f1_recomputed.mean():.3f}",
            delta=f"{per_fold.f1_recomputed.mean() - per_fold.f1_cached.mean():+.3f} vs cached run",
            help=f"mean over {len(per_fold)} cached fold(s)")
m[1].metric("F1 fold std (recomputed)", f"{per_fold.f1_recomputed.std():.3f}" if len(per_fold) > 1 else "n/a")
m[2].metric("Routing entropy (nats)", f"{per_fold.routing_entropy.mean():.3f}")
st.markdown(f"Recomputed routing shares at alpha = {alpha:g}, T = {temperature:g}, top-{top_k}: "
            + ", ".join(f"{n} {per_fold[f'share:{n}'].mean():.1%}" for n in experts)
            + f" · run: {run_name}, trained at alpha = {run_alpha(rec0):g}.")
st.dataframe(per_fold, hide_index=True, width="stretch")
csv_download(per_fold, "alpha-recomputed.csv")



@st.cache_data(max_entries=32, show_spinner=False)
def recomputed_curve(keys: tuple, experts: tuple, temperature: float, top_k: int) -> pd.DataFrame:
    """Recomputed F1 and shares on an alpha grid 0..2 (mean over the picked folds)."""
    rows = []
    for a in np.round(np.linspace(0, 2, 41), 3):
        rs = [reroute(run_arrays(k), float(a), temperature, top_k) for k in keys]
        rows.append({"alpha": a, "f1_mean": np.mean([r.f1_macro for r in rs]),
                     **{n: np.mean([r.shares[j] for r in rs]) for j, n in enumerate(experts)}})
    return pd.DataFrame(rows)


curve = recomputed_curve(tuple(picked.key), tuple(experts), temperature, top_k)
fig = go.Figure([go.Scatter(x=curve.alpha, y=curve[n], name=f"share {n}", stackgroup="one") for n in experts])
fig.add_vline(x=alpha, line_dash="dash")
fig.update_layout(height=300, title=f"Recomputed routing shares vs alpha ({run_name})", xaxis_title="alpha",
                  yaxis_title="share", margin=dict(l=10, r=10, t=40, b=10))
st.plotly_chart(fig, width="stretch")
csv_download(curve, "alpha-recomputed-curve.csv", "Download the curve (CSV)")
