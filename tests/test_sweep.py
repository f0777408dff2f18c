"""Sweeps (issue 13): parametric names round-trip through the registry, every option is in the cache key, a sweep
computes only what is not cached, the work it shares changes no result, and a cancelled sweep leaves whole runs only.

Runs are kept short with small experts (`options={"hidden": [16]}`), seed 1 (seed 0 is also timed on torch eager)
and folds other than 1 (fold 1 also measures peak RAM in fresh processes)."""
import json
import time
from datetime import datetime, timezone

import numpy as np
import pytest
import torch

from qmoe.core.errors import ConfigError
from qmoe.experiments import jobs
from qmoe.experiments.executors import expected_keys, share_training
from qmoe.experiments.experiment import DataCache, RunConfig, fit_fold, fit_shared, full_config, run_key
from qmoe.experiments.reproduce import sweep_config
from qmoe.experiments.store import ResultStore
from qmoe.experiments.sweep import Sweep, points_frame, run_sweep, summary
from qmoe.models.moe import MOE_PART_DEFAULTS, moe_name
from qmoe.models.quantizers import BitLinear
from qmoe.models.registry import create_model, get_variant

TINY = {"hidden": [16]}  # a small expert: a run takes seconds
PARTS = dict(alpha=0.25, temperature=0.5, top_k=2, mc_samples=3, bayesian=True, curiosity_mode="reference-rebuttal",
             curiosity_in_training=False)


@pytest.mark.parametrize("bits", range(1, 17))
def test_every_bit_width_has_a_qk_base_name(bits):
    name = f"Q{bits}-Base"
    spec = get_variant(name)
    assert spec.name == name and spec.bits == bits and spec.family == "single"
    model = create_model(name, 24, 5)
    assert [m.bits for m in model.modules() if isinstance(m, BitLinear)] == [bits, bits]


@pytest.mark.parametrize("name, reason", [("Q0-Base", "from 1 to 16"), ("Q17-Base", "from 1 to 16"),
                                          ("Q03-Base", "write it as 'Q3-Base'")])
def test_bad_bit_widths_say_why(name, reason):
    with pytest.raises(ConfigError, match=reason):
        get_variant(name)
    with pytest.raises(ConfigError, match="bits=6 use Q6-Base"):
        create_model("Q3-Base", 24, 5, bits=6)


def test_moe_names_round_trip_through_the_registry():
    name = moe_name(["BitNet-Base", "Q3-Base", "Q6-Base"], **PARTS)
    assert name == ("MoE(BitNet-Base, Q3-Base, Q6-Base | alpha=0.25, T=0.5, top_k=2, mc=3, bayesian=yes, "
                    "curiosity=reference-rebuttal, in_training=no)")
    spec = get_variant(name)
    assert spec.name == name and spec.family == "moe"
    assert spec.options == {"experts": ("BitNet-Base", "Q3-Base", "Q6-Base"), **PARTS}
    parts = {k: v for k, v in spec.options.items() if k != "experts"}
    assert moe_name(spec.options["experts"], **parts) == name
    model = create_model(name, 24, 5)
    built = (model.expert_names, model.alpha, model.temperature, model.top_k, model.mc_samples, model.bayesian,
             model.curiosity_mode, model.curiosity_in_training)
    assert built == (("BitNet-Base", "Q3-Base", "Q6-Base"), *PARTS.values())
    assert [e.body[0].bits for e in model.experts[1:]] == [3, 6]
    # unnamed parts take the MoE defaults; the name always lists every part
    assert get_variant(moe_name(["Q4-Base"])).options == {"experts": ("Q4-Base",), **MOE_PART_DEFAULTS}


@pytest.mark.parametrize("name, message", [
    ("MoE(Q4-Base, Q8-Base | alpha=0.3)", "write it as 'MoE(Q4-Base, Q8-Base | alpha=0.3, T=1, top_k=1, mc=10, "
                                          "bayesian=no, curiosity=paper, in_training=yes)'"),
    ("MoE(Q4-Base, Q8-Base | alpha=0.30, T=1, top_k=1, mc=10, bayesian=no, curiosity=paper, in_training=yes)",
     "not in canonical form"),
    ("MoE(Q4-Base | alpha=0.3, top_k=2)", "top_k must be an integer between 1 and the number of experts"),
    ("MoE(Q4-Base | alpha=-1)", "alpha must be >= 0"),
    ("MoE(Q4-Base | beta=1)", "'beta=1' is not one of alpha="),
    ("MoE(Q4-Base | bayesian=true)", "bayesian is yes or no"),
    ("MoE(Q4-Base | alpha=0.1, alpha=0.2)", "given twice"),
    ("MoE(BitNet-Q4/8-QMoE-uniform | alpha=0)", "not a single model"),
    ("MoE(Q4-Base, Q99-Base | alpha=0)", "from 1 to 16"),
])
def test_bad_moe_names_say_why(name, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
        get_variant(name)


def test_the_cache_key_covers_every_option():
    base = dict(experts=("BitNet-Base", "Q4-Base", "Q8-Base"), **PARTS)
    names = {moe_name(**base)}
    for part, other in dict(alpha=0.5, temperature=1.0, top_k=1, mc_samples=10, bayesian=False,
                            curiosity_mode="paper", curiosity_in_training=True).items():
        names.add(moe_name(**{**base, part: other}))
    names.add(moe_name(**{**base, "experts": ("BitNet-Base", "Q3-Base", "Q8-Base")}))
    cfgs = [RunConfig(variant=n) for n in sorted(names)] + [RunConfig(variant=f"Q{k}-Base") for k in range(1, 17)]
    keys = expected_keys(cfgs)
    assert len(set(keys)) == len(cfgs) == 9 + 16
    model = full_config(cfgs[0], DataCache().dataset("esc50"))["model"]
    assert set(model) == {"experts", *MOE_PART_DEFAULTS}  # the full options, defaults included


def test_an_alpha_sweep_of_the_paper_moe_reads_the_grids_runs():
    sweep = Sweep(["BitNet-Q4/8-QMoE-C"], alphas=[0.02, 0.2, 0.5], folds=[1, 3])
    cfgs = sweep.configs()
    assert cfgs == [sweep_config(a, 0, fold=f) for a in (0.02, 0.2, 0.5) for f in (1, 3)]
    assert [c.variant for c in cfgs[2:4]] == ["BitNet-Q4/8-QMoE-C@0.2"] * 2 and cfgs[0].options == {"alpha": 0.02}
    grid = Sweep(["BitNet-Q4/8-QMoE-C@0.3"], alphas=[0.3], moe={"top_k": [1, 2]}, experts=[["Q3-Base", "Q6-Base"]],
                 bits=[3, 5], folds=[2])
    names = [(c.variant, c.options) for c in grid.configs()]
    assert names == [("BitNet-Q4/8-QMoE-C@0.3", {"top_k": 1}), ("BitNet-Q4/8-QMoE-C@0.3", {"top_k": 2}),
                     ("Q3-Base", {}), ("Q5-Base", {}),
                     (moe_name(["Q3-Base", "Q6-Base"], alpha=0.3, bayesian=True, top_k=1), {}),
                     (moe_name(["Q3-Base", "Q6-Base"], alpha=0.3, bayesian=True, top_k=2), {})]
    assert Sweep.from_dict(json.loads(json.dumps(grid.to_dict()))) == grid


@pytest.mark.parametrize("kw, message", [
    (dict(variants=["BitNet-Q4/8-QMoE-C"]), "give alphas"),
    (dict(variants=["FP32-Base"], alphas=[0.1]), "apply to MoE variants"),
    (dict(variants=["BitNet-Q4/8-QMoE-C"], alphas=[-0.1]), "finite number >= 0"),
    (dict(bits=[17]), "from 1 to 16"),
    (dict(variants=["No-Such-Base"]), "unknown variant"),
    (dict(experts=[["Q4-Base"]], moe={"top_k": [2]}), "top_k must be an integer between 1 and the number"),
    (dict(experts=[["Q4-Base"]], moe={"alpha": [0.1]}), "alpha: give alphas"),
    (dict(), "something to run"),
])
def test_bad_sweeps_are_refused_before_anything_runs(kw, message):
    with pytest.raises(ConfigError, match=message):
        Sweep(**kw).points()


def test_bad_folds_and_tasks_are_refused():
    with pytest.raises(ConfigError, match=r"fold\(s\) \[9\] do not exist"):
        Sweep(bits=[3], folds=[9]).points()
    with pytest.raises(ConfigError, match="has no task"):
        Sweep(bits=[3], tasks=["nope"]).points()


def test_shared_folds_and_one_expert_pass_change_no_result():
    """A worker's DataCache (splits and z-scoring reused across runs) and the dense MoE-C forward read off the routing
    record give exactly what a fresh computation gives."""
    moe = RunConfig("esc50", "major", "predefined", "BitNet-Q4/8-QMoE-C@0.3", 2, 1, options={"expert_options": TINY})
    single = RunConfig("esc50", "major", "predefined", "Q3-Base", 2, 1, options=TINY)
    shared, trained = DataCache(), {}
    for cfg in (moe, single):
        a = fit_fold(cfg, train_overrides={"max_epochs": 2}, data=shared)
        b = fit_fold(cfg, train_overrides={"max_epochs": 2})
        assert np.array_equal(a.X, b.X) and np.array_equal(a.val_idx, b.val_idx)
        x = torch.as_tensor(a.X[a.test_idx])
        with torch.no_grad():
            assert torch.equal(a.model(x), b.model(x))
        trained[cfg.variant] = a.model, x
    assert len(shared._folds) == 1  # both runs used one prepared fold
    model, x = trained[moe.variant]
    assert model.runs_every_expert
    with torch.no_grad():
        forward = torch.softmax(model(x), -1).numpy()
    np.testing.assert_array_equal(model.routing_record(x)["class_probs"], forward)


def test_points_that_differ_at_inference_only_share_one_training():
    """Alpha with curiosity at inference only, and the Bayesian router's MC passes, change nothing in training: such
    points train once, each picks its own best epoch, and each gets exactly what its own training would give."""
    experts = ["BitNet-Base", "Q4-Base"]
    tiny = {"expert_options": TINY}
    cfgs = [RunConfig("esc50", "major", "predefined", moe_name(experts, alpha=a, bayesian=b, mc_samples=m,
                                                               curiosity_in_training=False), 2, 1, options=tiny)
            for a, b, m in ((0, True, 10), (0.5, True, 3), (2.0, False, 10))]
    curious = RunConfig("esc50", "major", "predefined", moe_name(experts, alpha=0.5), 2, 1, options=tiny)
    assert share_training(cfgs + [curious]) == [[0, 1, 2], [3]]  # curiosity in training: a training of its own
    quick = {"max_epochs": 8, "patience": 2}
    data = DataCache()
    for cfg, f in zip(cfgs, fit_shared(cfgs, train_overrides=quick, data=data)):
        alone = fit_fold(cfg, train_overrides=quick, data=data)
        assert f.history == alone.history and f.key == alone.key == run_key(cfg) and f.shared == 3
        x = torch.as_tensor(f.X[f.test_idx])
        with torch.no_grad():
            assert torch.equal(f.model(x), alone.model(x))
    with pytest.raises(ConfigError, match="do not train alike"):
        fit_shared([cfgs[0], curious])


@pytest.fixture(scope="module")
def tiny_sweep():
    return Sweep(bits=[3, 6], folds=[2], seeds=[1], options=TINY)


def test_a_sweep_computes_what_is_missing_then_reads_it_back(tmp_path, tiny_sweep, monkeypatch):
    store = ResultStore(tmp_path)
    assert not points_frame(tiny_sweep, store)["cached"].any()
    reports, started = [], datetime.now(timezone.utc).isoformat(timespec="seconds")
    df = run_sweep(tiny_sweep, store, progress=False, report=reports.append)
    assert list(df["variant"]) == ["Q3-Base", "Q6-Base"] and df["new"].all() and df["cached"].all()
    assert list(df["bits"]) == [3, 6] and (df["f1_macro"] > 0.4).all()
    assert reports[0]["eta_s"] is None and reports[-1]["done"] == 2 and reports[-1]["eta_s"] == 0
    assert reports[1]["run_seconds"] > 0 and reports[1]["eta_s"] > 0
    assert {p.stem for p in store.runs.glob("*.json")} == set(df["key"]) == {p.stem for p in store.runs.glob("*.npz")}

    import qmoe.experiments.executors

    monkeypatch.setattr(qmoe.experiments.executors, "get_executor", lambda *a, **k: pytest.fail("a cached sweep started workers"))
    again = run_sweep(tiny_sweep, store, progress=False)
    assert not again["new"].any() and again["cached"].all()
    assert again.drop(columns="new").equals(df.drop(columns="new"))
    assert points_frame(tiny_sweep, store, since=started)["new"].all()  # what a job added since it started
    assert not points_frame(tiny_sweep, store, since="9999")["new"].any()
    table = summary(again)
    assert list(table["folds"]) == [1, 1] and list(table["new"]) == [0, 0]


def _whole_runs_only(store: ResultStore) -> set:
    json_keys = {p.stem for p in store.runs.glob("*.json")}
    assert json_keys == {p.stem for p in store.runs.glob("*.npz")}, "a record without its arrays, or arrays alone"
    assert not list(store.root.rglob(".tmp-*")) and not (store.root / "quarantine").exists()
    for k in json_keys:
        assert store.get(k)["key"] == k and "y_pred" in store.arrays(k)
    return json_keys


def test_a_cancelled_sweep_job_leaves_only_whole_runs(tmp_path):
    import psutil

    def leftovers():  # the job and its workers (forked: the same command line)
        return [q for q in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(q.info["cmdline"] or [])]

    sweep = Sweep(bits=[2, 3, 5, 6, 7, 9], folds=[2, 3], seeds=[1], options=TINY)  # 12 runs
    info = jobs.start_sweep(sweep, tmp_path)
    try:
        assert info["total"] == 12 and info["what"].startswith("sweep esc50")
        with pytest.raises(jobs.RunInProgress, match="sweep esc50"):
            jobs.start_sweep(sweep, tmp_path)
        deadline = time.monotonic() + 600
        while (p := jobs.progress(tmp_path)) is None or p.get("new_done", 0) < 1:
            assert time.monotonic() < deadline and jobs.last_run(tmp_path) is None, (tmp_path / "run.log").read_text()
            time.sleep(0.2)
        assert 0 < p["fraction"] < 1 and p["eta_s"] > 0 and p["run_seconds"] > 0 and p["status"] == "running"
        assert jobs.latest(tmp_path)["spec"]["sweep"] == sweep.to_dict()  # what the pages draw from
        assert jobs.cancel(tmp_path)["status"] == "cancelling"
        last = jobs.wait(tmp_path, timeout=120)
    finally:  # never leave a job running behind a failed test
        if jobs.current_run(tmp_path) is not None:
            jobs.cancel(tmp_path)
            jobs.wait(tmp_path, timeout=120)
    assert last["status"] == "cancelled", (tmp_path / "run.log").read_text()[-2000:]
    assert jobs.progress(tmp_path) is None and jobs.cancel(tmp_path) is None and jobs.latest(tmp_path) == last
    keys = _whole_runs_only(ResultStore(tmp_path))
    assert 1 <= len(keys) == last["runs"] < 12
    deadline = time.monotonic() + 120
    while leftovers() and time.monotonic() < deadline:  # the job releases its lock just before it exits
        time.sleep(0.5)
    assert not leftovers()
    cached = points_frame(sweep, ResultStore(tmp_path))
    assert set(cached.loc[cached["cached"], "key"]) == keys


@pytest.mark.parametrize("argv, message", [
    (["sweep"], "something to run"),
    (["sweep", "--variant", "FP32-Base", "--alpha", "0.1"], "apply to MoE variants"),
    (["sweep", "--bits", "17"], "from 1 to 16"),
    (["sweep", "--alpha", "0.1", "--folds", "9"], r"fold\(s\) \[9\] do not exist"),
    (["sweep", "--experts", "Q4-Base", "--top-k", "2"], "top_k must be an integer between 1 and the number"),
])
def test_the_sweep_command_refuses_bad_sweeps(argv, message, capsys):
    from qmoe.__main__ import main

    assert main(argv) == 2
    assert __import__("re").search(message, capsys.readouterr().err)


def test_a_sweeps_curve_is_the_grids_alpha_stage_where_they_meet():
    """sweep_curve (what the sweep pages draw) on the cached 'alpha sweep' points equals the stage's own table."""
    from qmoe.analysis.explain import sweep_curve, sweep_table
    from qmoe.experiments.results import results_frame

    curve = sweep_curve(points_frame(Sweep(["BitNet-Q4/8-QMoE-C"], alphas=[0.02, 0.2, 0.3, 0.5])))
    stage = sweep_table(results_frame()).set_index("alpha").loc[[0.02, 0.2, 0.3, 0.5]]
    assert list(curve["alpha"]) == [0.02, 0.2, 0.3, 0.5] and (curve["folds"] == 5).all() and not curve["new"].any()
    for column in ("f1_mean", "levene_p_vs_uniform", "share:Q4-Base", "latency_ms_std"):
        np.testing.assert_allclose(curve[column], stage[column if column != "f1_std" else "f1_fold_std"])
    np.testing.assert_allclose(curve["f1_std"], stage["f1_fold_std"])
    bits = sweep_curve(points_frame(Sweep(bits=[3, 5, 6])))
    assert list(bits["variant"]) == ["Q3-Base", "Q5-Base", "Q6-Base"] and (bits["folds"] == 5).all()
    assert "levene_p_vs_uniform" not in bits or bits["levene_p_vs_uniform"].isna().all()  # no routing: no test


def test_sweep_inputs_are_read_and_refused_with_the_bad_entry_named():
    from qmoe.app.sweeps import parse_values

    assert parse_values("0.05, 0.5 0.7,0.5", float, "alphas") == [0.05, 0.5, 0.7]
    assert parse_values("3 5,6", int, "bits") == [3, 5, 6] and parse_values(" ", int) == []
    with pytest.raises(ConfigError, match="alphas: 'x' is not a number"):
        parse_values("0.1, x", float, "alphas")
    with pytest.raises(ConfigError, match="seeds: '1.5' is not an integer"):
        parse_values("1.5", int, "seeds")
    with pytest.raises(ConfigError, match="not a finite number"):
        parse_values("nan", float, "alphas")


def test_a_bit_width_sweep_is_one_line_and_an_alpha_sweep_one_line_per_other_setting():
    import pandas as pd

    from qmoe.app.sweeps import series_label

    bits = pd.DataFrame({"base": ["Q3-Base", "Q5-Base", "FP32-Base"], "bits": [3, 5, 32], "task": ["major"] * 3})
    assert list(series_label(bits, "bits")) == ["BitLinear k-bit", "BitLinear k-bit", "FP32-Base"]
    alphas = pd.DataFrame({"base": ["BitNet-Q4/8-QMoE-C"] * 4, "alpha": [0.1, 0.5, 0.1, 0.5],
                           "top_k": [1, 1, 2, 2], "task": ["major"] * 4})
    assert list(series_label(alphas, "alpha")) == ["BitNet-Q4/8-QMoE-C top_k=1"] * 2 + ["BitNet-Q4/8-QMoE-C top_k=2"] * 2
