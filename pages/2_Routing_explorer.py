"""Routing explorer: the per-sample routing records of a cached MoE run, filtered; the Figure 2 view."""
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from qmoe.analysis.explain import confidence_by_expert, explain, filter_routing, routing_table, sample_routing
from qmoe.app.inference import classify, shipped_models
from qmoe.app.ui import (csv_download, leak_free_first, page_config, paper_dataset_first, paper_task_first, results,
                         routing_bars, run_arrays, run_label, run_record, show_routing_decision, trained_model)
from qmoe.core.errors import QmoeError
from qmoe.models.registry import list_variants

MOE_NAMES = set(list_variants("moe"))


@st.cache_data(show_spinner=False, max_entries=16)
def samples(keys: tuple[str, ...], folds: tuple[int, ...]) -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    """(every test sample of these runs, experts, classes, each sample's label for the picker): cached runs never
    change, and building the table and thousands of labels on each rerun took a second."""
    tables = []
    for key, fold in zip(keys, folds):
        rec = run_record(key)
        t = routing_table(run_arrays(key), rec["expert_names"], rec["class_names"])
        t.insert(0, "fold", fold)
        tables.append(t)
    table = pd.concat(tables, ignore_index=True)
    labels = [f"fold {f} · #{n} · {t} -> {p} via {e}" for f, n, t, p, e in
              zip(table["fold"], table["sample"], table["true_class"], table["predicted"], table["expert"])]
    return table, rec["expert_names"], rec["class_names"], labels

page_config("Routing explorer")
st.title("Routing explorer")
st.markdown("Every test sample of a cached Mixture-of-Experts run, with the expert the router chose for it, "
            "its routing probabilities before and after the curiosity term, and its uncertainty. "
            "Or upload a clip of your own below: the shipped MoE-C model routes it live.")

upload_tab, cached_tab = st.tabs(["Upload a clip", "Cached runs"])
with upload_tab:  # runs first: the cached-runs view may st.stop() when a filter leaves nothing
    moe_models = {n: p for n, p in shipped_models().items() if trained_model(str(p)).info["variant"] in MOE_NAMES}
    up = st.file_uploader("Audio file (wav, flac, ogg, mp3)", type=["wav", "flac", "ogg", "mp3"], key="route-upload")
    if up is not None and moe_models:
        name = st.selectbox("MoE model (trained on folds 1, 2, 3, 5)", list(moe_models))
        try:
            pred = classify(up.getvalue(), moe_models[name])
        except QmoeError as e:
            st.error(f"Cannot route {up.name}: {e}")
        else:
            st.markdown(f"**Prediction: {pred.label}** ({pred.probs.max():.0%})")
            show_routing_decision(pred, trained_model(str(moe_models[name])), "routing-upload.csv")

with cached_tab:
    df = results()
    moe = df[df.family == "moe"].copy()
    if moe.empty:
        st.info("No MoE run is cached yet; `python -m qmoe reproduce` is filling the cache (or use Run experiment).")
        st.stop()
    moe["run"] = moe.apply(run_label, axis=1)

    c = st.columns(5)
    dataset = c[0].selectbox("Dataset", paper_dataset_first(moe.dataset.unique()))
    moe = moe[moe.dataset == dataset]
    task = c[1].selectbox("Task", paper_task_first(moe.task.unique()), help="major = 5 categories (paper); class = 50 classes")
    moe = moe[moe.task == task]
    protocol = c[2].selectbox("Protocol", leak_free_first(moe.protocol.unique()))
    moe = moe[moe.protocol == protocol]
    runs = sorted(moe.run.unique())
    default = next((i for i, r in enumerate(runs) if r == "BitNet-Q4/8-QMoE-C@0.2"), 0)
    variant = c[3].selectbox("Variant", runs, index=default)
    moe = moe[(moe.run == variant) & (moe.seed == moe[moe.run == variant].seed.min())]
    folds = sorted(int(f) for f in moe.fold.unique())
    fold = c[4].selectbox("Fold", ["all cached folds"] + folds)
    chosen_runs = moe if fold == "all cached folds" else moe[moe.fold == fold]

    table, experts, classes, labels = samples(tuple(chosen_runs.key), tuple(int(f) for f in chosen_runs.fold))
    st.caption(f"{dataset} / task {task} / protocol {protocol} / {variant} / seed {int(chosen_runs.seed.iloc[0])} · "
               f"{len(chosen_runs)} fold(s), {len(table)} test samples · cached runs")

    with st.sidebar:
        st.header("Filter")
        measure = st.radio("Confidence", ["confidence", "expert_confidence"],
                           format_func={"confidence": "MoE output (Eq. 6)",
                                        "expert_confidence": "chosen expert's own"}.get)
        pick_experts = st.multiselect("Expert", experts)
        pick_classes = st.multiselect("True class", classes)
        conf = st.slider("Confidence range", 0.0, 1.0, (0.0, 1.0), 0.01)
    shown = filter_routing(table, pick_experts, pick_classes, conf, measure)

    st.subheader("Figure 2: confidence of the samples each expert receives")
    summary, test = confidence_by_expert(table, experts, measure)
    left, right = st.columns([3, 2])
    with left:
        fig = go.Figure([go.Box(y=table.loc[table.expert == e, measure], name=e, boxpoints="outliers")
                         for e in experts])
        fig.update_layout(showlegend=False, height=380, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="expert",
                          yaxis_title={"confidence": "MoE output confidence"}.get(measure, "expert's own confidence"))
        st.plotly_chart(fig, width="stretch")
    with right:
        st.dataframe(summary, hide_index=True, width="stretch")
        csv_download(summary, "routing-figure2.csv")
        if test is None:
            st.info("The Welch t-test needs at least 2 samples on the highest-precision expert and on the others.")
        else:
            x = test.extra
            st.markdown(f"**{test.test}**: {test.comparison}: mean {x['mean_a']:.3f} (n={x['n_a']}) vs "
                        f"{x['mean_b']:.3f} (n={x['n_b']}), relative difference {x['relative_difference']:+.1%}, "
                        f"t = {test.statistic:.2f}, p = {test.p:.3g}.")
            st.caption("The paper (alpha 0.2, N = 2000): the Q8 expert receives samples with 20% lower confidence "
                       "(0.577 vs 0.722, t = -15.29). " + (test.warning or ""))

    st.subheader(f"Samples ({len(shown)} of {len(table)} after filters)")
    st.dataframe(shown, hide_index=True, width="stretch")
    csv_download(shown, "routing-samples.csv")

    st.subheader("One sample, explained")
    if shown.empty:
        st.info("No sample matches the filters.")
        st.stop()
    row_id = st.selectbox("Sample", shown.index, format_func=labels.__getitem__)
    r = table.loc[row_id]
    sample_key = chosen_runs[chosen_runs.fold == r.fold].key.iloc[0]
    why = explain(sample_routing(run_arrays(sample_key), int(r["sample"])), experts, classes,
                  table.loc[table.fold == r.fold, "mutual_information"])
    st.markdown(f"**{why.headline}** · true class {r.true_class}, predicted {why.prediction} ({why.confidence:.1%})")
    st.write(why.why)
    st.plotly_chart(routing_bars(why.table), width="stretch")
    st.dataframe(why.table, hide_index=True, width="stretch")
    csv_download(why.table, "routing-sample.csv")
