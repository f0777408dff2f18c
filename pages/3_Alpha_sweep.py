"""Alpha sweep: cached runs of the 'alpha sweep' stage, and inference-time rerouting for any alpha."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from qmoe.analysis.explain import RECOMPUTED, reroute, run_alpha, sweep_table
from qmoe.app.ui import (csv_download, leak_free_first, paper_task_first, results, run_arrays, run_label, run_record,
                         store_state)

st.set_page_config(page_title="qmoe · Alpha sweep", page_icon="🎧", layout="wide")
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
