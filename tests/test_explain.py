"""Routing explanations and on-the-fly rerouting, checked against real MoE models and the real cache."""
import shutil

import numpy as np
import pytest
import torch

from qmoe.analysis.explain import (confidence_by_expert, explain, filter_routing, reroute, routing_arrays,
                                   routing_table, run_alpha, sample_routing, sweep_table, walkthrough)
from qmoe.core.errors import ConfigError, DataError
from qmoe.experiments.results import results_frame
from qmoe.experiments.store import ResultStore
from qmoe.models.moe import BITNET_Q4_Q8, QuantizedMoE

CLASSES = [f"c{i}" for i in range(5)]


@pytest.fixture(scope="module")
def embeddings(esc50):
    X = esc50.X[esc50.folds == 4][:120]
    return ((X - X.mean(0)) / (X.std(0) + 1e-3)).astype(np.float32), esc50.task("major").labels[esc50.folds == 4][:120]


def _moe(state=None, **kw):
    torch.manual_seed(0)
    m = QuantizedMoE(1280, 5, BITNET_Q4_Q8, expert_options={"hidden": (32,)}, **kw)
    if state is not None:
        m.load_state_dict(state)
    return m.eval()


def _arrays(model, X, y):
    """What experiment.run caches for an MoE run."""
    rec = model.routing_record(X)
    return {"y_true": y, "y_pred": rec["prediction"], **{f"routing__{k}": v for k, v in rec.items()}}


@pytest.fixture(scope="module")
def cached_moe():
    df = results_frame()
    runs = df[(df.family == "moe") & df.variant.str.contains("-C@")]
    assert not runs.empty, "the results cache should hold at least one MoE-C run"
    row = runs.iloc[0]
    store = ResultStore()
    return store.get(row.key), store.arrays(row.key)


@pytest.mark.parametrize("alpha,top_k", [(0.0, 1), (0.7, 1), (2.0, 2), (5.0, 3)])
def test_reroute_equals_a_model_built_with_that_alpha(embeddings, alpha, top_k):
    X, y = embeddings
    trained_at = _moe(bayesian=True, alpha=0.3)
    arrays = _arrays(trained_at, X, y)
    truth = _moe(trained_at.state_dict(), bayesian=True, alpha=alpha, top_k=top_k).routing_record(X)
    r = reroute(arrays, alpha, top_k=top_k)
    np.testing.assert_allclose(r.curious_probs, truth["curious_probs"], atol=1e-5)
    assert (r.predictions == truth["prediction"]).mean() >= 0.99  # float32 vs float64 ties only
    assert np.isclose(r.shares.sum(), 1) and (r.chosen == truth["chosen_expert"]).mean() >= 0.99


def test_temperature_is_exact_for_a_deterministic_router(embeddings):
    X, y = embeddings
    plain = _moe()
    hot = _moe(plain.state_dict(), temperature=2.5).routing_record(X)
    r = reroute(_arrays(plain, X, y), 0.0, temperature=2.5)
    np.testing.assert_allclose(r.curious_probs, hot["router_probs"], atol=1e-5)


def test_reroute_reproduces_a_cached_run(cached_moe):
    record, arrays = cached_moe
    r = reroute(arrays, run_alpha(record))
    assert (r.predictions == arrays["y_pred"]).mean() >= 0.995
    assert r.f1_macro == pytest.approx(record["f1_macro"], abs=0.01)
    # newer cache entries keep probabilities at float16 (3 significant digits): compare at that precision
    np.testing.assert_allclose(r.curious_probs, arrays["routing__curious_probs"].astype(float), atol=2e-3)


def test_bad_settings_and_single_model_runs_are_refused(cached_moe):
    _, arrays = cached_moe
    for kw in ({"alpha": -0.1}, {"alpha": 0.2, "temperature": 0}, {"alpha": 0.2, "top_k": 4},
               {"alpha": 0.2, "top_k": 0}):
        with pytest.raises(ConfigError):
            reroute(arrays, **kw)
    with pytest.raises(DataError, match="no routing record"):
        reroute({"y_true": arrays["y_true"], "probs": arrays["probs"]}, 0.2)


def test_explanation_names_the_expert_and_says_when_curiosity_changed_the_choice(embeddings):
    X, y = embeddings
    m = _moe(bayesian=True, alpha=8.0)  # strong curiosity: some choices flip away from the router's favourite
    arrays = _arrays(m, X, y)
    r = routing_arrays(arrays)
    flipped = np.flatnonzero(r["router_probs"].argmax(1) != r["chosen_expert"])
    kept = np.flatnonzero(r["router_probs"].argmax(1) == r["chosen_expert"])
    assert len(flipped) and len(kept)
    for i, changed in ((flipped[0], True), (kept[0], False)):
        e = explain(sample_routing(arrays, i), BITNET_Q4_Q8, CLASSES, r["mutual_information"])
        assert e.headline.startswith(f"Handled by expert: {BITNET_Q4_Q8[r['chosen_expert'][i]]} (")
        assert e.table.chosen.sum() == 1 and e.table.expert[e.table.chosen].item() == e.expert
        assert np.isclose(e.table.routing_after.sum(), 1, atol=1e-5)
        assert ("handed the sample to" in e.why) == changed
        assert e.mi_percentile == pytest.approx(100 * np.mean(r["mutual_information"] < r["mutual_information"][i]))


def test_routing_table_filters_and_figure2(cached_moe):
    record, arrays = cached_moe
    experts, classes = record["expert_names"], record["class_names"]
    t = routing_table(arrays, experts, classes)
    assert len(t) == len(arrays["y_true"])
    chosen = np.bincount(arrays["routing__chosen_expert"], minlength=len(experts))
    summary, test = confidence_by_expert(t, experts)
    assert summary.samples.tolist() == chosen.tolist() and np.isclose(summary.share.sum(), 1)
    for e in experts:
        if (t.expert == e).sum():
            assert summary.set_index("expert").confidence_mean[e] == pytest.approx(t.confidence[t.expert == e].mean())
    busiest = experts[int(chosen.argmax())]
    sub = filter_routing(t, [busiest], classes[:2], (0.5, 0.9))
    assert len(sub) < len(t) and set(sub.expert) <= {busiest} and set(sub.true_class) <= set(classes[:2])
    assert sub.confidence.between(0.5, 0.9).all()
    if test is not None:
        assert test.extra["n_a"] + test.extra["n_b"] == len(t)


def test_sweep_table_reads_the_sweep_runs(cached_moe, tmp_path):
    """Copy the cached MoE-C@0.3 runs (the sweep's alpha = 0.3 point) into a store of their own."""
    src = ResultStore()
    df = results_frame()
    runs = df[(df.variant == "BitNet-Q4/8-QMoE-C@0.3") & (df.task == "major") & (df.protocol == "predefined")
              & (df.seed == 0) & (df.options == "")]
    if runs.empty:
        pytest.skip("no BitNet-Q4/8-QMoE-C@0.3 run cached yet")
    store = ResultStore(tmp_path)
    store.runs.mkdir(parents=True)
    for key in runs.key:
        for ext in ("json", "npz"):
            shutil.copy(src.runs / f"{key}.{ext}", store.runs / f"{key}.{ext}")
    table = sweep_table(results_frame(store), store)
    assert table.alpha.tolist() == [0.3]
    row = table.iloc[0]
    assert row.folds == len(runs) and row.f1_mean == pytest.approx(runs.f1_macro.mean())
    counts = sum(np.bincount(src.arrays(k)["routing__chosen_expert"], minlength=3) for k in runs.key)
    assert [row[f"share:{n}"] for n in BITNET_Q4_Q8] == pytest.approx((counts / counts.sum()).tolist())


def test_walkthrough_matches_the_model_and_reacts_to_its_knobs(embeddings):
    X, _ = embeddings
    m = _moe(bayesian=True, alpha=0.3)
    x = X[7]
    rec = m.routing_record(x)
    w = walkthrough(m, x, 1.0, 1, 0.3, 10, seed=m.mc_seed)
    np.testing.assert_allclose(w["p_curious"], rec["curious_probs"][0], atol=1e-6)
    assert w["mutual_information"] == pytest.approx(float(rec["mutual_information"][0]), abs=1e-6)
    assert walkthrough(m, x, 0.2, 1, 0.3, 10)["routing_entropy_before"] < w["routing_entropy_before"]
    assert walkthrough(m, x, 1.0, 1, 0.3, 1)["mutual_information"] == pytest.approx(0, abs=1e-6)
    plain = walkthrough(m, x, 1.0, 3, 0.0, 10)
    np.testing.assert_allclose(plain["p_curious"], plain["p"])
    np.testing.assert_allclose(plain["weights"], plain["p"])  # top-k = N: every expert, weight p_i
    with pytest.raises(ConfigError):
        walkthrough(m, x, 1.0, 4, 0.3, 10)
