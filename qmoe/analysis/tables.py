"""The paper's result tables and significance tests, computed from the results cache.

Pure functions of the results DataFrame (`qmoe.experiments.results.results_frame()`) and, where per-sample
arrays are needed (routing confidences, latency timings), of the `ResultStore`. Pages and the claims
ledger call these; nothing here trains or measures.

Conventions: one table is for one task and protocol (say which when showing it); a configuration is
(variant, options, seed, selection); "fold std" is the sample std (ddof=1) over its folds. A run set
that is incomplete (fewer folds or seeds than asked) is `Missing`, never silently used.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..core.errors import DataError
from ..measure.energy import PAPER_G_PER_KWH, deployment_projection, f1_per_mj
from . import stats

FOLDS = (1, 2, 3, 4, 5)
SINGLE_ORDER = ("FP32-Base", "Q16-Base", "Q8-Base", "Q4-Base", "Q2-Base", "Q1-Base", "BitNet-Base", "Q8-Base-PTQ",
                "Popcount-Base")
BIT_SWEEP = ("Q1-Base", "Q2-Base", "Q4-Base", "Q8-Base", "Q16-Base")  # Table 2's BitLinear k-bit family


def is_bitlinear(variant: str) -> bool:
    """A BitLinear k-bit QAT single model, any k (`Q3-Base`, ...): the points of a bit-width curve."""
    return re.fullmatch(r"Q\d+-Base", variant) is not None


UNIFORM = "BitNet-Q4/8-QMoE-uniform"
CURIOUS = {0.2: "BitNet-Q4/8-QMoE-C@0.2", 0.3: "BitNet-Q4/8-QMoE-C@0.3"}
# MoE (learned router) -> its MoE-C twin with the same experts (alpha 0.3, the paper's Table 1/3 rows)
MOE_PAIRS = (("BitNet-Q4/8/16-QMoE", "BitNet-Q4/8/16-QMoE-C@0.3"),
             ("BitNet-Q8/16-PTQ-QMoE", "BitNet-Q8/16-PTQ-QMoE-C@0.3"),
             ("BitNet-Q8PTQ-QMoE", "BitNet-Q8PTQ-QMoE-C@0.3"),
             (UNIFORM, "BitNet-Q4/8-QMoE-C@0.3"))

# Table 6 and Sec. 5.5, as data: family -> [(a, b)], metric compared fold by fold with a paired t-test.
PAIRED_FAMILIES = {
    "F1: bit-width vs 16-bit": ("f1_macro", [("Q1-Base", "Q16-Base"), ("Q2-Base", "Q16-Base"),
                                             ("Q4-Base", "Q16-Base"), ("Q8-Base", "Q16-Base")]),
    "F1: vs FP32": ("f1_macro", [("Q16-Base", "FP32-Base"), ("Q8-Base", "FP32-Base"), ("Q4-Base", "FP32-Base"),
                                 ("Q8-Base-PTQ", "FP32-Base"), ("BitNet-Q8/16-PTQ-QMoE-C@0.3", "FP32-Base")]),
    "F1: curiosity vs uniform routing": ("f1_macro", [(CURIOUS[0.2], UNIFORM), (CURIOUS[0.3], UNIFORM)]),
    "Latency: MoE overhead and 1-bit speedup": ("latency_ms_mean", [
        ("BitNet-Q4/8/16-QMoE-C@0.3", "Q8-Base"), ("BitNet-Q4/8-QMoE-C@0.3", "Q8-Base"), ("Q1-Base", "FP32-Base")]),
}
# Variance claims (Table 4/6): candidate vs baseline, tested across seeds
VARIANCE_PAIRS = ((CURIOUS[0.2], UNIFORM), (CURIOUS[0.3], UNIFORM), ("Q8-Base", "Q16-Base"))
CONFIDENCE_VARIANT = CURIOUS[0.2]  # Figure 2: alpha = 0.2, all folds pooled (N = 2000 on ESC-50)


@dataclass
class Missing(Exception):
    """Runs a result needs that are not in the cache (yet), with the command that would make them."""

    what: str
    command: str

    def __str__(self) -> str:
        return f"{self.what} not in the cache yet; run: {self.command}"


def train_command(variants, task: str, protocol: str, seeds=(0,)) -> str:
    vs = " ".join(f"--variant {v}" for v in dict.fromkeys(variants))
    seeds = ",".join(str(s) for s in seeds)
    return f"python -m qmoe train --task {task} --protocol {protocol} {vs}" + (f" --seeds {seeds}" if seeds != "0" else "")


# ---------------------------------------------------------------------------------------------
# Selecting runs


def select(df: pd.DataFrame, task: str | None = None, protocol: str | None = None, seed: int | None = 0,
           options: str = "", selection: str = "validation", dataset: str | None = None) -> pd.DataFrame:
    """Rows of one task/protocol with the default options and leak-free model selection.

    Callers hand in one dataset's rows (the pages' dataset picker, the ledger's ESC-50 filter); `dataset`
    narrows further when a frame mixes several."""
    return df[_mask(df, task, protocol, seed, options, selection, dataset)]


def _mask(df: pd.DataFrame, task=None, protocol=None, seed=0, options: str = "", selection: str = "validation",
          dataset=None, variant=None) -> np.ndarray:
    """`select`'s rows (and `variant`'s) as a boolean array: the ledger asks hundreds of times, and taking a few
    columns of the matching rows costs a fraction of taking all of them."""
    m = (df["options"].fillna("") == options).to_numpy() & (df["selection"] == selection).to_numpy()
    for column, value in (("dataset", dataset), ("task", task), ("protocol", protocol), ("seed", seed),
                          ("variant", variant)):
        if value is not None:
            m &= (df[column] == value).to_numpy()
    return m


def fold_values(df: pd.DataFrame, variant: str, task: str, protocol: str, metric: str = "f1_macro", seed: int = 0,
                folds=FOLDS) -> pd.Series:
    """One value per fold (index: fold) of one configuration; `Missing` unless every fold is cached."""
    m = _mask(df, task, protocol, seed, variant=variant)
    fold, value = df["fold"].to_numpy()[m], df[metric].to_numpy()[m]
    fold, first = np.unique(fold, return_index=True)  # each fold once (its first row), in fold order
    s = pd.Series(value[first], index=pd.Index(fold, name="fold"), name=metric)
    s = s[s.index.isin(folds)]
    if len(s) < len(folds) or s.isna().any():
        raise Missing(f"{variant} ({task}, {protocol}, seed {seed}): {int(s.notna().sum())}/{len(folds)} folds",
                      train_command([variant], task, protocol, (seed,)))
    return s


def seed_matrix(df: pd.DataFrame, variant: str, task: str, protocol: str, seeds, metric: str = "f1_macro",
                folds=FOLDS) -> np.ndarray:
    """(seeds x folds) scores of one variant; `Missing` unless every seed has every fold."""
    rows, missing = [], []
    for s in seeds:
        try:
            rows.append(fold_values(df, variant, task, protocol, metric, s, folds).to_numpy())
        except Missing:
            missing.append(s)
    if missing:
        raise Missing(f"{variant} ({task}, {protocol}): seeds {missing} incomplete",
                      train_command([variant], task, protocol, seeds))
    return np.asarray(rows)


def seeds_available(df: pd.DataFrame, variant: str, task: str, protocol: str, folds=FOLDS) -> list[int]:
    """Seeds for which every fold of `variant` is cached."""
    sel = df.loc[_mask(df, task, protocol, seed=None, variant=variant), ["seed", "fold"]]
    counts = sel.groupby("seed")["fold"].nunique()
    return sorted(int(s) for s, n in counts.items() if n >= len(folds))


# ---------------------------------------------------------------------------------------------
# Tables

BITWIDTH_COLUMNS = ["task", "protocol", "variant", "bits", "folds", "f1_mean", "f1_std", "pct_of_16bit", "params",
                    "model_bytes", "bytes_vs_fp32", "onnx_bytes", "latency_ms_mean", "latency_ms_std", "latency_ms_fold_std",
                    "latency_ms_p50", "latency_ms_p99", "batch_latency_ms_mean", "peak_rss_mb", "energy_mj", "co2_ug",
                    "f1_per_mj", "train_energy_mj", "train_co2_ug", "energy_method", "cpu"]
EFFICIENCY_COLUMNS = ["task", "protocol", "variant", "family", "folds", "f1_mean", "f1_std", "params", "model_bytes",
                      "onnx_bytes",
                      "latency_ms_mean", "latency_ms_std", "latency_cv", "latency_ms_fold_std", "latency_ms_p50",
                      "latency_ms_p99", "batch_latency_ms_mean", "peak_rss_mb", "energy_mj", "energy_mj_std",
                      "co2_ug", "f1_per_mj", "train_energy_mj", "train_co2_ug", "load_average_max", "energy_method",
                      "cpu"]


def _per_variant(sel: pd.DataFrame) -> pd.DataFrame:
    g = sel.groupby("variant")
    out = g.agg(family=("family", "first"), bits=("bits", "first"), folds=("fold", "nunique"),
                f1_mean=("f1_macro", "mean"), f1_std=("f1_macro", "std"), accuracy_mean=("accuracy", "mean"),
                params=("params", "first"), model_bytes=("model_bytes", "first"), onnx_bytes=("onnx_bytes", "max"),
                latency_ms_mean=("latency_ms_mean", "mean"), latency_ms_std=("latency_ms_std", "mean"),
                latency_ms_fold_std=("latency_ms_mean", "std"), latency_ms_p50=("latency_ms_p50", "mean"),
                latency_ms_p99=("latency_ms_p99", "mean"), batch_latency_ms_mean=("batch_latency_ms_mean", "mean"),
                peak_rss_mb=("peak_rss_mb", "max"), energy_mj=("energy_mj", "mean"), energy_mj_std=("energy_mj", "std"),
                co2_ug=("co2_ug", "mean"), train_energy_mj=("train_energy_mj", "mean"),
                train_co2_ug=("train_co2_ug", "mean"), energy_method=("energy_method", "first"),
                load_average_max=("load_average_1min", "max"),  # timings taken on a busy machine are noisier
                cpu=("cpu", lambda c: " + ".join(sorted(set(c.dropna())))))  # ... and on another CPU, not comparable
    out["f1_per_mj"] = [f1_per_mj(f, e) for f, e in zip(out["f1_mean"], out["energy_mj"])]
    return out.reset_index()


def bitwidth_table(df: pd.DataFrame, task: str, protocol: str, seed: int = 0) -> pd.DataFrame:
    """Table 2 for one task/protocol: every single-model variant, F1 mean +- fold std, % of 16-bit, bytes, latency,
    RAM, energy. latency_ms_std is the per-sample std within a run (mean over folds); latency_ms_fold_std the std
    of the per-run mean over folds (what the paper's "+-" is)."""
    sel = select(df, task, protocol, seed)
    sel = sel[sel["family"] == "single"]
    if sel.empty:
        return pd.DataFrame(columns=BITWIDTH_COLUMNS)
    out = _per_variant(sel)
    ref = out.set_index("variant")
    q16 = ref["f1_mean"].get("Q16-Base", np.nan)
    fp32 = ref["model_bytes"].get("FP32-Base", np.nan)
    out["pct_of_16bit"] = 100 * out["f1_mean"] / q16
    out["bytes_vs_fp32"] = out["model_bytes"] / fp32
    out.insert(0, "task", task)
    out.insert(1, "protocol", protocol)
    order = {v: i for i, v in enumerate(SINGLE_ORDER)}  # FP32, BitLinear by bits (any k) from 16 down, the others
    rank = out["variant"].map(lambda v: (1, -int(v[1:-5])) if is_bitlinear(v) else (2 * (v != "FP32-Base"),
                                                                                    order.get(v, 99)))
    out = out.iloc[sorted(range(len(out)), key=lambda i: rank.iloc[i])].reset_index(drop=True)
    return out[BITWIDTH_COLUMNS]


def efficiency_table(df: pd.DataFrame, task: str, protocol: str, seed: int = 0) -> pd.DataFrame:
    """Tables 3, 5, 7 for one task/protocol: every variant (single and MoE), efficiency and latency columns."""
    sel = select(df, task, protocol, seed)
    if sel.empty:
        return pd.DataFrame(columns=EFFICIENCY_COLUMNS)
    out = _per_variant(sel)
    out.insert(0, "task", task)
    out.insert(1, "protocol", protocol)
    out["latency_cv"] = out["latency_ms_std"] / out["latency_ms_mean"]
    return out.sort_values(["family", "f1_mean"], ascending=[False, False])[EFFICIENCY_COLUMNS].reset_index(drop=True)


def latency_timings(store, df: pd.DataFrame, variant: str, task: str, protocol: str, seed: int = 0) -> np.ndarray:
    """Every per-sample latency call (ms) of a configuration, pooled over its folds (rounds x samples x folds)."""
    sel = select(df, task, protocol, seed)
    keys = sel[sel["variant"] == variant].sort_values("fold")["key"]
    if len(keys) < len(FOLDS):
        raise Missing(f"{variant} ({task}, {protocol}, seed {seed}): {len(keys)}/{len(FOLDS)} folds",
                      train_command([variant], task, protocol, (seed,)))
    runtimes = sel[sel["variant"] == variant].sort_values("fold")["runtime"]
    parts = [_timings(store, k, rt) for k, rt in zip(keys, runtimes)]
    if any(p is None for p in parts):
        raise DataError(f"latency timings of {variant} on {runtimes.iloc[0]} are missing from the cached arrays")
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])


def _timings(store, key: str, runtime: str):
    """The per-call timings of run `key` on `runtime` (the runtime measured first stores them unsuffixed)."""
    arrays = store.arrays(key)
    if f"latency_timings_ms__{runtime}" in arrays:
        return arrays[f"latency_timings_ms__{runtime}"]
    first = (store.get(key) or {}).get("runtime", "torch-eager")
    return arrays.get("latency_timings_ms") if first == runtime else None


def latency_variance(store, df: pd.DataFrame, task: str, protocol: str, pairs=MOE_PAIRS, seed: int = 0) -> pd.DataFrame:
    """MoE vs MoE-C latency spread (Eq. 9): per-sample latency std over all folds' calls, the fold std of the mean
    latency, and a Levene test (median-centred) on the per-sample calls. Pairs whose runs are missing are skipped."""
    rows = []
    for moe, moec in pairs:
        try:
            a, b = (latency_timings(store, df, v, task, protocol, seed) for v in (moe, moec))
            fa, fb = (fold_values(df, v, task, protocol, "latency_ms_mean", seed) for v in (moe, moec))
        except (Missing, DataError):
            continue
        t = stats.levene(a, b, f"per-sample latency: {moec} vs {moe}")
        rows.append({"task": task, "protocol": protocol, "moe": moe, "moe_c": moec,
                     "moe_latency_ms_mean": a.mean(), "moe_c_latency_ms_mean": b.mean(),
                     "moe_latency_ms_std": a.std(ddof=1), "moe_c_latency_ms_std": b.std(ddof=1),
                     "moe_p99_over_p50": np.percentile(a, 99) / np.median(a),
                     "moe_c_p99_over_p50": np.percentile(b, 99) / np.median(b),
                     "moe_fold_std_ms": fa.std(ddof=1), "moe_c_fold_std_ms": fb.std(ddof=1),
                     "latency_variance_reduction": t.effect_size, "test": t.test, "n": t.n, "p": t.p,
                     "warning": t.warning})
    return pd.DataFrame(rows)


def deployment_table(eff: pd.DataFrame, inferences_per_day: float, days: float = 365,
                     g_per_kwh: float = PAPER_G_PER_KWH) -> pd.DataFrame:
    """Appendix A.1: serving `inferences_per_day` for `days` vs training once (one fold's training run)."""
    rows = []
    for r in eff.itertuples():
        if not (np.isfinite(r.energy_mj) and r.energy_mj >= 0):
            continue
        d = deployment_projection(float(r.energy_mj), inferences_per_day, days, g_per_kwh)
        train_g = r.train_co2_ug * 1e-6 * g_per_kwh / PAPER_G_PER_KWH  # records use the paper's 367 g/kWh
        rows.append({"variant": r.variant, "energy_per_inference_mj": r.energy_mj,
                     "deployment_kwh": d["energy_kwh"], "deployment_co2_g": d["co2_g"],
                     "training_co2_g": train_g,
                     "deployment_over_training": d["co2_g"] / train_g if train_g > 0 else np.nan})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Significance (Table 6, Sec. 5.5)


def _row(r: stats.TestResult, family: str, task: str, protocol: str, **kw) -> dict:
    d = r.to_dict()
    return {"family": family, "task": task, "protocol": protocol, "comparison": d.pop("comparison"),
            "test": d.pop("test"), "n": d.pop("n"), "statistic": d.pop("statistic"), "p": d.pop("p"),
            "p_corrected": d.pop("p_corrected"), "correction": d.pop("correction"),
            "effect_size": d.pop("effect_size"), "effect_name": d.pop("effect_name"), "warning": d.pop("warning"),
            **kw, "details": ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())}


def paired_family(df: pd.DataFrame, family: str, task: str, protocol: str, seed: int = 0) -> tuple[list, list]:
    """(Bonferroni-corrected TestResults, Missing) of one family of PAIRED_FAMILIES; m = comparisons available."""
    metric, pairs = PAIRED_FAMILIES[family]
    data, missing = {}, []
    for a, b in pairs:
        try:
            va, vb = (fold_values(df, v, task, protocol, metric, seed) for v in (a, b))
        except Missing as e:
            missing.append(e)
            continue
        data[f"{a} vs {b}"] = (va.to_numpy(), vb.loc[va.index].to_numpy())
    return stats.paired_ttests(data), missing


def variance_test(df: pd.DataFrame, candidate: str, baseline: str, task: str, protocol: str,
                  seeds=None, min_seeds: int = 2) -> dict:
    """Fold-F1 variance of candidate vs baseline, ACROSS SEEDS (issue 5): never one run's folds.

    Two tests on the (seeds x folds) F1 matrices: Levene's test (median-centred) on every fold score's deviation
    from its own seed's mean (n = seeds x folds per group; deviations within a seed are not independent, so
    the p is approximate) and `stats.across_seeds` (Welch t-test on the per-seed fold stds, the unit of
    evidence being one run). Also the single-run (seed 0) Levene the paper would have reported, for contrast.
    """
    seeds = seeds if seeds is not None else sorted(set(seeds_available(df, candidate, task, protocol))
                                                   & set(seeds_available(df, baseline, task, protocol)))
    if len(seeds) < min_seeds:
        from ..experiments.reproduce import SEEDS
        raise Missing(f"{candidate} and {baseline} ({task}, {protocol}) over >= {min_seeds} seeds "
                      f"(have {len(seeds)})", train_command([candidate, baseline], task, protocol, SEEDS))
    b = seed_matrix(df, baseline, task, protocol, seeds)
    c = seed_matrix(df, candidate, task, protocol, seeds)
    comparison = f"{candidate} vs {baseline}"
    lev = stats.levene((b - b.mean(1, keepdims=True)).ravel(), (c - c.mean(1, keepdims=True)).ravel(),
                       f"fold-F1 deviations from each seed's mean: {comparison}")
    lev = replace(lev, test=lev.test + f" across {len(seeds)} seeds")
    acr = stats.across_seeds(b, c, comparison, alternative="less")
    one = stats.levene(b[0], c[0], f"one run (seed {seeds[0]}): {comparison}")
    return {"seeds": list(seeds), "levene": lev, "across_seeds": acr, "single_run": one,
            "f1_candidate": float(c.mean()), "f1_baseline": float(b.mean()),
            "std_candidate": float(c.std(axis=1, ddof=1).mean()), "std_baseline": float(b.std(axis=1, ddof=1).mean())}


def highest_precision_expert(expert_names) -> int:
    """Index of the expert with the most bits (the paper's "high-precision" expert; Q8 in BitNet/Q4/Q8)."""
    from ..models.registry import get_variant

    bits = [get_variant(n).bits or 0 for n in expert_names]
    return int(np.argmax(bits))


def routing_confidence(store, df: pd.DataFrame, task: str, protocol: str, variant: str = CONFIDENCE_VARIANT,
                       seed: int = 0) -> dict:
    """Figure 2: confidence of samples routed to the highest-precision expert vs the others, all folds pooled.

    Confidence = the MoE output's top class probability (routing__confidence). Welch t-test, two-sided.
    Also the routing share of every expert.
    """
    sel = select(df, task, protocol, seed)
    rows = sel[sel["variant"] == variant].sort_values("fold")
    if rows["fold"].nunique() < len(FOLDS):
        raise Missing(f"{variant} ({task}, {protocol}, seed {seed}): {rows['fold'].nunique()}/{len(FOLDS)} folds",
                      train_command([variant], task, protocol, (seed,)))
    chosen, conf, names = [], [], None
    for key in rows["key"]:
        arr = store.arrays(key)
        if "routing__chosen_expert" not in arr:
            raise DataError(f"run {key} of {variant} has no routing record")
        chosen.append(arr["routing__chosen_expert"].ravel())
        conf.append(arr["routing__confidence"].ravel())
        names = names or store.get(key)["expert_names"]
    chosen, conf = np.concatenate(chosen), np.concatenate(conf)
    hi = highest_precision_expert(names)
    shares = {n: float(np.mean(chosen == i)) for i, n in enumerate(names)}
    mean_conf = {n: float(conf[chosen == i].mean()) if np.any(chosen == i) else float("nan")
                 for i, n in enumerate(names)}
    a, b = conf[chosen == hi], conf[chosen != hi]
    test = None
    if a.size >= 2 and b.size >= 2:
        test = stats.welch_ttest(a, b, f"confidence routed to {names[hi]} vs the other experts ({variant})")
    return {"variant": variant, "expert_names": list(names), "high_precision": names[hi], "n": int(conf.size),
            "shares": shares, "mean_confidence": mean_conf, "test": test}


def rank_stability(df: pd.DataFrame, a: tuple[str, str], b: tuple[str, str], seed: int = 0) -> stats.TestResult:
    """Spearman's rho between the variants' mean-F1 rankings in two (task, protocol) settings (variants cached in
    both with all folds)."""
    means = []
    for task, protocol in (a, b):
        sel = select(df, task, protocol, seed)
        counts = sel.groupby("variant")["fold"].nunique()
        full = counts[counts >= len(FOLDS)].index
        means.append(sel[sel["variant"].isin(full)].groupby("variant")["f1_macro"].mean())
    common = means[0].index.intersection(means[1].index)
    if len(common) < 3:
        raise Missing(f"variants with all folds in both {a} and {b} (have {len(common)})",
                      train_command(SINGLE_ORDER, b[0], b[1]))
    return stats.spearman(means[0][common].to_numpy(), means[1][common].to_numpy(),
                          f"variant ranking by mean F1: {a[0]}/{a[1]} vs {b[0]}/{b[1]} ({len(common)} variants)")


def significance_table(df: pd.DataFrame, store, task: str, protocol: str, seed: int = 0) -> tuple[pd.DataFrame, list]:
    """Every test of Table 6 / Sec. 5.5 that the cache allows, one row each; plus the `Missing` list."""
    rows, missing = [], []
    for family in PAIRED_FAMILIES:
        results, miss = paired_family(df, family, task, protocol, seed)
        rows += [_row(r, family, task, protocol) for r in results]
        missing += miss
    for cand, base in VARIANCE_PAIRS:
        try:
            v = variance_test(df, cand, base, task, protocol)
        except Missing as e:
            missing.append(e)
            continue
        fam = "Variance across seeds"
        rows.append(_row(v["levene"], fam, task, protocol, seeds=len(v["seeds"])))
        rows.append(_row(v["across_seeds"].test, fam, task, protocol, seeds=len(v["seeds"]),
                         variance_reduction=v["across_seeds"].variance_reduction))
        rows.append(_row(v["single_run"], "Variance, one run's folds (as the paper)", task, protocol, seeds=1))
    try:
        c = routing_confidence(store, df, task, protocol)
        if c["test"] is not None:
            rows.append(_row(c["test"], "Routing confidence (Figure 2)", task, protocol))
    except Missing as e:
        missing.append(e)
    other = "class" if task == "major" else "major"
    other_protocol = "paper" if protocol == "predefined" else "predefined"
    for a, b in (((task, protocol), (task, other_protocol)), ((task, protocol), (other, protocol))):
        try:
            rows.append(_row(rank_stability(df, a, b, seed), "Rank stability", task, protocol))
        except Missing as e:
            missing.append(e)
    return pd.DataFrame(rows), missing
