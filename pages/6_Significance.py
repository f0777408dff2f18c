"""Significance tests of the paper's Table 6 and Sec. 5.5, computed live from the cached fold scores."""
import qmoe  # noqa: F401  (first: fixes thread counts)
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from qmoe.analysis.tables import CONFIDENCE_VARIANT, Missing, routing_confidence
from qmoe.app.ui import csv_download, page_config, pick_slice, results, slice_table, store_state
from qmoe.experiments.store import ResultStore

page_config("Significance")
st.title("Significance tests")
st.markdown("Paired t-tests on the 5 fold scores, Bonferroni-corrected within each family; variance claims tested "
            "**across seeds** (Levene on fold deviations from each seed's mean, and Welch on per-seed fold stds), with "
            "the single-run Levene the paper reports shown for contrast; Welch's t-test on routing confidences "
            "(Figure 2); Spearman's rho for rank stability. Each row names its test and n; small-n warnings are kept.")

df = results()
c0, c1, c2, c3 = st.columns(4)
df, dataset, task, protocol = pick_slice(df, c0, c1, c2)
level = c3.slider("Significance level", 0.001, 0.10, 0.05, step=0.001, format="%.3f")


@st.cache_data(show_spinner=False, max_entries=16)
def figure2(dataset: str, task: str, protocol: str, state: tuple):
    """(Figure 2's test or why it cannot run, every pooled sample's confidence and routed expert): reading the
    five runs' arrays takes a second, so once per store state."""
    store, df = ResultStore(), results()
    df = df[df["dataset"] == dataset]
    try:
        c = routing_confidence(store, df, task, protocol)
    except Missing as e:
        return str(e), None, None
    sel = df[(df["task"] == task) & (df["protocol"] == protocol) & (df["variant"] == CONFIDENCE_VARIANT)
             & (df["seed"] == 0) & (df["options"] == "")]
    arrays = [store.arrays(key) for key in sel["key"]]
    return (c, np.concatenate([a["routing__confidence"].ravel() for a in arrays]),
            np.concatenate([a["routing__chosen_expert"].ravel() for a in arrays]))


table, missing = slice_table("significance_table", dataset, task, protocol)
if table.empty:
    st.info("No comparison has all its runs cached yet.")
else:
    p_judge = table["p_corrected"].fillna(table["p"])
    table.insert(table.columns.get_loc("p_corrected") + 1, "significant", p_judge < level)
    st.subheader(f"{dataset} / {task} / {protocol}: {int((p_judge < level).sum())} of {len(table)} tests "
                 f"significant at {level:.3f}")
    st.dataframe(table, hide_index=True, width="stretch")
    csv_download(table, f"qmoe-significance-{task}-{protocol}.csv")

if missing:
    with st.expander(f"{len(missing)} comparisons wait for runs"):
        st.markdown("\n".join(f"- {m}" for m in missing))

st.subheader("Figure 2: confidence by routed expert")
c, conf, chosen = figure2(dataset, task, protocol, store_state())
if isinstance(c, str):
    st.info(c)
else:
    fig = go.Figure([go.Box(y=conf[chosen == i], name=f"{n} ({c['shares'][n]:.0%})")
                     for i, n in enumerate(c["expert_names"]) if np.any(chosen == i)])
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=30, b=10), yaxis_title="confidence (top class prob.)",
                      title=f"{CONFIDENCE_VARIANT}, {c['n']} test samples over 5 folds")
    st.plotly_chart(fig, width="stretch")
    if c["test"] is not None:
        t = c["test"]
        st.markdown(f"**{t.test}**, {t.comparison}: mean {t.extra['mean_a']:.3f} vs {t.extra['mean_b']:.3f} "
                    f"({t.extra['relative_difference']:+.1%}), t = {t.statistic:.2f}, p = {t.p:.3g}, "
                    f"n = {t.extra['n_a']} vs {t.extra['n_b']}.")
