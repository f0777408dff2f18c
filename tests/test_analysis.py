"""qmoe.analysis.tables: tables and tests from the results cache, each checked against a hand computation."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from qmoe.analysis import tables as A
from qmoe.experiments.results import COLUMNS, results_frame


def frame(scores: dict, task="major", protocol="predefined", metric="f1_macro", family="single", **extra) -> pd.DataFrame:
    """A results frame from {variant: [per-fold values]} or {variant: {seed: [per-fold values]}}."""
    rows = []
    for variant, v in scores.items():
        per_seed = v if isinstance(v, dict) else {0: v}
        for seed, vals in per_seed.items():
            for fold, x in enumerate(vals, start=1):
                row = dict.fromkeys(COLUMNS)
                row.update(dataset="esc50", task=task, protocol=protocol, variant=variant, fold=fold, seed=seed,
                           selection="validation", options="", family=family, f1_macro=0.5, latency_ms_mean=1.0,
                           key=f"{variant}-{seed}-{fold}", **extra)
                row[metric] = x
                rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def test_fold_values_needs_every_fold_and_names_the_command():
    df = frame({"Q4-Base": [0.7, 0.71, 0.72, 0.73]})
    with pytest.raises(A.Missing) as e:
        A.fold_values(df, "Q4-Base", "major", "predefined")
    assert "4/5 folds" in e.value.what
    assert e.value.command == "python -m qmoe train --task major --protocol predefined --variant Q4-Base"
    df = frame({"Q4-Base": [0.7, 0.71, 0.72, 0.73, 0.74]})
    assert A.fold_values(df, "Q4-Base", "major", "predefined").tolist() == [0.7, 0.71, 0.72, 0.73, 0.74]


def test_select_ignores_leaky_selection_and_option_runs():
    df = pd.concat([frame({"FP32-Base": [0.1] * 5}), frame({"FP32-Base": [0.9] * 5}).assign(selection="reported-fold"),
                    frame({"FP32-Base": [0.5] * 5}).assign(options="alpha=0.1")])
    assert A.fold_values(df, "FP32-Base", "major", "predefined").tolist() == [0.1] * 5


def test_bitwidth_table_on_the_real_cache_matches_a_hand_computation():
    df = results_frame()
    sel = df[(df.task == "major") & (df.protocol == "predefined") & (df.seed == 0) & (df.options == "")
             & (df.selection == "validation")]
    if not {"Q4-Base", "Q16-Base"} <= set(sel.variant):
        pytest.fail("the repo's results/ must hold the single-model runs (python -m qmoe reproduce)")
    t = A.bitwidth_table(df, "major", "predefined").set_index("variant")
    for v in ("Q4-Base", "Q16-Base"):
        f1 = sel[sel.variant == v].f1_macro
        assert t.loc[v, "f1_mean"] == pytest.approx(f1.mean())
        assert t.loc[v, "f1_std"] == pytest.approx(f1.std(ddof=1))
        assert t.loc[v, "latency_ms_fold_std"] == pytest.approx(sel[sel.variant == v].latency_ms_mean.std(ddof=1))
    assert t.loc["Q4-Base", "pct_of_16bit"] == pytest.approx(100 * t.loc["Q4-Base", "f1_mean"] / t.loc["Q16-Base", "f1_mean"])
    assert t.loc["Q16-Base", "pct_of_16bit"] == pytest.approx(100)
    assert t.loc["Q4-Base", "f1_per_mj"] == pytest.approx(t.loc["Q4-Base", "f1_mean"] / t.loc["Q4-Base", "energy_mj"])
    assert A.bitwidth_table(df, "major", "no-such-protocol").empty


def test_paired_family_is_bonferroni_corrected_over_the_available_comparisons():
    q16 = [0.80, 0.82, 0.79, 0.81, 0.83]
    q2 = [0.76, 0.79, 0.77, 0.76, 0.78]
    q4 = [0.81, 0.81, 0.80, 0.80, 0.84]
    df = frame({"Q16-Base": q16, "Q2-Base": q2, "Q4-Base": q4})  # Q1 and Q8 missing
    results, missing = A.paired_family(df, "F1: bit-width vs 16-bit", "major", "predefined")
    assert {m.what.split(" ")[0] for m in missing} == {"Q1-Base", "Q8-Base"}
    by = {r.comparison: r for r in results}
    p2 = sps.ttest_rel(q2, q16).pvalue
    assert by["Q2-Base vs Q16-Base"].p == pytest.approx(p2)
    assert by["Q2-Base vs Q16-Base"].p_corrected == pytest.approx(min(1, 2 * p2))
    assert by["Q2-Base vs Q16-Base"].n == 5 and by["Q2-Base vs Q16-Base"].correction == "Bonferroni x2"


def test_variance_test_is_across_seeds():
    rng = np.random.default_rng(0)
    base = {s: list(0.78 + 0.03 * rng.standard_normal(5)) for s in range(5)}
    cand = {s: list(0.78 + 0.008 * rng.standard_normal(5)) for s in range(5)}
    df = frame({"BitNet-Q4/8-QMoE-uniform": base, "BitNet-Q4/8-QMoE-C@0.2": cand}, family="moe")
    v = A.variance_test(df, "BitNet-Q4/8-QMoE-C@0.2", "BitNet-Q4/8-QMoE-uniform", "major", "predefined")
    b, c = np.array(list(base.values())), np.array(list(cand.values()))
    assert v["seeds"] == [0, 1, 2, 3, 4]
    assert v["across_seeds"].variance_reduction == pytest.approx(1 - c.var(1, ddof=1).mean() / b.var(1, ddof=1).mean())
    dev = lambda m: (m - m.mean(1, keepdims=True)).ravel()  # noqa: E731
    assert v["levene"].p == pytest.approx(sps.levene(dev(b), dev(c), center="median").pvalue)
    assert v["levene"].n == 25 and "across 5 seeds" in v["levene"].test
    assert v["single_run"].p == pytest.approx(sps.levene(b[0], c[0], center="median").pvalue)
    one_seed = frame({"BitNet-Q4/8-QMoE-uniform": [0.7] * 5, "BitNet-Q4/8-QMoE-C@0.2": [0.7] * 5})
    with pytest.raises(A.Missing, match="seeds"):
        A.variance_test(one_seed, "BitNet-Q4/8-QMoE-C@0.2", "BitNet-Q4/8-QMoE-uniform", "major", "predefined")


def _store_with_moe(store, variant, chosen_per_fold, conf_per_fold, timings_per_fold):
    rows = []
    for fold, (ch, cf, tm) in enumerate(zip(chosen_per_fold, conf_per_fold, timings_per_fold), start=1):
        key = f"{variant.replace('/', '_')}-{fold}"
        store.put(key, {"expert_names": ["BitNet-Base", "Q4-Base", "Q8-Base"]},
                  {"routing__chosen_expert": np.asarray(ch), "routing__confidence": np.asarray(cf, np.float32),
                   "latency_timings_ms": np.asarray(tm)})
        row = dict.fromkeys(COLUMNS)
        row.update(dataset="esc50", task="major", protocol="predefined", variant=variant, fold=fold, seed=0,
                   selection="validation", options="", family="moe", key=key, runtime="torch-eager", latency_ms_mean=float(np.mean(tm)),
                   f1_macro=0.7)
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def test_routing_confidence_splits_by_the_highest_precision_expert(store):
    rng = np.random.default_rng(1)
    chosen = [rng.integers(0, 3, 40) for _ in range(5)]
    conf = [np.where(c == 2, 0.55, 0.75) + 0.05 * rng.standard_normal(40) for c in chosen]
    df = _store_with_moe(store, A.CONFIDENCE_VARIANT, chosen, conf, [np.ones((3, 10))] * 5)
    r = A.routing_confidence(store, df, "major", "predefined")
    ch, cf = np.concatenate(chosen), np.concatenate(conf).astype(np.float32)
    assert r["high_precision"] == "Q8-Base" and r["n"] == 200
    assert r["shares"]["Q8-Base"] == pytest.approx(np.mean(ch == 2))
    expected = sps.ttest_ind(cf[ch == 2], cf[ch != 2], equal_var=False)
    assert r["test"].p == pytest.approx(expected.pvalue, rel=1e-6)
    assert r["test"].extra["relative_difference"] < 0


def test_latency_variance_pools_the_timed_calls(store):
    rng = np.random.default_rng(2)
    moe = [rng.normal(5, 1.0, (3, 20)) for _ in range(5)]
    moec = [rng.normal(6, 0.2, (3, 20)) for _ in range(5)]
    df = pd.concat([_store_with_moe(store, "BitNet-Q4/8/16-QMoE", [[0]] * 5, [[0.5]] * 5, moe),
                    _store_with_moe(store, "BitNet-Q4/8/16-QMoE-C@0.3", [[0]] * 5, [[0.5]] * 5, moec)])
    t = A.latency_variance(store, df, "major", "predefined", pairs=(A.MOE_PAIRS[0],))
    a, b = np.concatenate([m.ravel() for m in moe]), np.concatenate([m.ravel() for m in moec])
    row = t.iloc[0]
    assert row["moe_latency_ms_std"] == pytest.approx(a.std(ddof=1))
    assert row["moe_c_latency_ms_std"] == pytest.approx(b.std(ddof=1))
    assert row["p"] == pytest.approx(sps.levene(a, b, center="median").pvalue)
    assert row["n"] == 300
    assert A.latency_variance(store, df, "major", "predefined", pairs=(A.MOE_PAIRS[1],)).empty  # not cached


def test_deployment_table_hand_computed():
    eff = pd.DataFrame([{"variant": "FP32-Base", "energy_mj": 2.0, "train_co2_ug": 1000.0}])
    d = A.deployment_table(eff, inferences_per_day=1000, days=10).iloc[0]
    kwh = 2.0 * 1000 * 10 / 3.6e9
    assert d["deployment_kwh"] == pytest.approx(kwh)
    assert d["deployment_co2_g"] == pytest.approx(kwh * 367)
    assert d["deployment_over_training"] == pytest.approx(kwh * 367 / 1e-3)


def test_rank_stability_is_spearman_over_common_variants():
    a = {"FP32-Base": [0.8] * 5, "Q4-Base": [0.7] * 5, "Q2-Base": [0.6] * 5, "Q1-Base": [0.5] * 5}
    b = {"FP32-Base": [0.6] * 5, "Q4-Base": [0.5] * 5, "Q2-Base": [0.3] * 5, "Q1-Base": [0.4] * 5}
    df = pd.concat([frame(a), frame(b, task="class")])
    r = A.rank_stability(df, ("major", "predefined"), ("class", "predefined"))
    assert r.n == 4 and r.statistic == pytest.approx(sps.spearmanr([0.8, 0.7, 0.6, 0.5], [0.6, 0.5, 0.3, 0.4])[0])
    assert r.warning  # n=4 is flagged as too small


def test_significance_table_on_the_real_cache_names_test_and_n():
    from qmoe.experiments.store import ResultStore

    t, missing = A.significance_table(results_frame(), ResultStore(), "major", "predefined")
    assert not t.empty
    assert t["test"].str.len().gt(0).all() and (t["n"] >= 2).all()
    assert all(m.command.startswith("python -m qmoe train") for m in missing)
