"""Learn: Eqs. 5-9 step by step on one real sample, with the shipped MoE-C model's own router and experts."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from qmoe.analysis.explain import expert_costs_ms, routing_arrays, walkthrough
from qmoe.app.inference import shipped_models
from qmoe.app.ui import csv_download, dataset, page_config, run_arrays, trained_model
from qmoe.core.errors import QmoeError

page_config("Learn")
st.title("Learn: how the curious Bayesian router decides")

moe_models = {k: v for k, v in shipped_models().items() if "QMoE-C" in k}
if not moe_models:
    st.error("No shipped MoE-C model in data/models (`python -m qmoe ship`).")
    st.stop()
name = st.selectbox("Model", list(moe_models))
tm = trained_model(str(moe_models[name]))
model, experts, classes = tm.model, list(tm.model.expert_names), tm.class_names
try:
    arrays = run_arrays(tm.info["key"])
    cached = routing_arrays(arrays)
except (QmoeError, KeyError):
    st.info("This model's cross-validation run (fold 4) is not cached yet; the walk-through needs its test samples.")
    st.stop()
cfg = tm.info["config"]
ds = dataset(cfg["dataset"])


@st.cache_resource(show_spinner="Timing each expert once...")
def costs(path: str) -> np.ndarray:
    """C(S) of Eq. 9: each packed (deployable) expert's median latency on one embedding, measured once."""
    m = trained_model(path).model
    return expert_costs_ms(m.packed(), np.zeros(m.in_dim, dtype=np.float32), repeats=50)


order = np.argsort(-cached["mutual_information"])  # most uncertain first: the interesting ones
pick = st.selectbox("Sample (fold-4 test clips of this model's cached run, most uncertain first)", order[:50],
                    format_func=lambda i: (f"#{i} · {ds.meta['name'].iloc[arrays['test_idx'][i]]} · true "
                                           f"{classes[arrays['y_true'][i]]} · MI {cached['mutual_information'][i]:.3f}"))
x = tm.standardize(ds.X[arrays["test_idx"][pick]])[0]

c = st.columns(4)
T = c[0].slider("Temperature T (Eq. 5)", 0.1, 5.0, float(model.temperature), 0.1)
k = c[1].slider("top-k (Eq. 6)", 1, len(experts), int(model.top_k))
alpha = c[2].slider("Curiosity alpha (Eq. 8)", 0.0, 3.0, float(model.alpha), 0.05)
S = c[3].slider("MC-dropout passes", 1, 100, int(model.mc_samples))
w = walkthrough(model, x, T, k, alpha, S, seed=model.mc_seed, expert_cost_ms=costs(str(moe_models[name])))

defaults = (T, k, alpha, S) == (model.temperature, model.top_k, model.alpha, model.mc_samples)
if defaults:
    same = np.allclose(w["p_curious"], cached["curious_probs"][pick].astype(float), atol=2e-3)  # cache: float16
    st.caption(f"At the model's own settings the walk-through {'reproduces' if same else 'DIFFERS from'} the cached "
               f"routing record of this sample (run {tm.info['key']}).")


def per_expert(**cols) -> pd.DataFrame:
    return pd.DataFrame({"expert": experts, **cols})


st.header("1 · Router probabilities (Eq. 5)")
st.markdown(f"p_i = softmax(G(z) / T). T = {T:g}: smaller T sharpens, larger T flattens. The Bayesian router "
            f"runs {S} passes with dropout on and averages them; their spread is its uncertainty.")
t1 = per_expert(one_pass_no_dropout=w["deterministic_probs"], mc_mean=w["p"], mc_std=w["p_std"])
st.dataframe(t1, hide_index=True)
fig = go.Figure([go.Box(y=w["mc_probs"][:, j], name=e, boxpoints="all") for j, e in enumerate(experts)])
fig.update_layout(height=280, title=f"Routing probability in each of the {S} MC passes",
                  yaxis=dict(range=[0, 1]), margin=dict(l=10, r=10, t=40, b=10), showlegend=False)
st.plotly_chart(fig, width="stretch")

st.header("2 · The experts disagree (Eq. 7)")
st.markdown(f"Every expert classifies the sample; p̄ is their mean, H(y|z) = {w['H']:.3f} nats its entropy "
            f"(max {np.log(len(classes)):.3f} for {len(classes)} classes): high when the quantization schemes "
            "disagree.")
t2 = pd.DataFrame(w["expert_probs"], columns=classes)
t2.insert(0, "expert", experts)
t2.loc[len(t2)] = ["mean p̄", *w["p_bar"]]
st.dataframe(t2, hide_index=True)

st.header("3 · The curiosity bonus (Eq. 8)")
st.markdown(f"p_i^curious ∝ p_i · exp(alpha · KL(p_i || p̄)), alpha = {alpha:g}. An expert whose answer differs "
            f"from the consensus gets a bonus of at most N^alpha = {len(experts) ** alpha:.2f}. Routing entropy "
            f"{w['routing_entropy_before']:.3f} -> {w['routing_entropy_after']:.3f} nats.")
t3 = per_expert(p=w["p"], kl_to_mean=w["kl"], bonus=w["bonus"], p_curious=w["p_curious"], weight_eq6=w["weights"])
st.dataframe(t3, hide_index=True)
fig = go.Figure([go.Bar(name="p (before)", x=experts, y=w["p"]), go.Bar(name="p curious (after)", x=experts,
                                                                           y=w["p_curious"])])
fig.update_layout(barmode="group", height=280, yaxis=dict(range=[0, 1]), margin=dict(l=10, r=10, t=10, b=10))
st.plotly_chart(fig, width="stretch")

st.header("4 · Top-k combination (Eq. 6)")
chosen = [experts[j] for j in np.flatnonzero(w["weights"] > 0)]
pred = int(np.argmax(w["y"]))
st.markdown(f"y = Σ over the top-{k} experts ({', '.join(chosen)}) of p_i · E_i(z) (their logits, weights not "
            f"renormalised). Prediction: **{classes[pred]}** ({w['y'][pred]:.1%}); true class: "
            f"{classes[arrays['y_true'][pick]]}.")
t4 = pd.DataFrame({"class": classes, "probability": w["y"]})
st.dataframe(t4, hide_index=True)

st.header("5 · Epistemic uncertainty")
st.markdown(f"Each MC pass, routed the same way, gives a class distribution. Predictive entropy "
            f"{w['predictive_entropy']:.4f} − expected entropy {w['expected_entropy']:.4f} = mutual information "
            f"**{w['mutual_information']:.4f} nats**: the part of the uncertainty due to the router not knowing "
            "(0 when every pass agrees).")

st.header("6 · Why sharper routing is steadier (Eq. 9)")
counts = np.bincount(w["chosen_per_pass"], minlength=len(experts))
st.markdown(f"Var(L) ≈ Var(C(S)): latency varies mostly because different inputs (or passes) pick experts of "
            f"different cost. Across the {S} MC passes this sample's top-1 expert is "
            + ", ".join(f"{e} {n}x" for e, n in zip(experts, counts))
            + f"; with each expert's measured cost C (packed, ms) the variance of C(S) is **{w['var_cost']:.4f} ms²** "
              f"(switch rate {w['switch_rate']:.0%}). Raise alpha or lower T and watch it fall.")
t6 = per_expert(cost_ms=w["cost"], passes_chosen=counts)
st.dataframe(t6, hide_index=True)
st.caption("Costs are this machine's median single-embedding latency of each packed expert, measured once per "
           "process (another process may be training, so they are noisy).")
csv_download(pd.concat([t1.assign(step="eq5"), t3.assign(step="eq8"), t6.assign(step="eq9")]),
             "learn-walkthrough.csv")
