"""Routing decisions in plain words, and inference-time routing recomputed from a run's cached arrays.

A cached MoE run stores, per test sample, the router's probabilities before curiosity (the MC-dropout
mean for Bayesian variants) and every expert's class distribution (`routing__*` arrays, see
`QuantizedMoE.routing_record`). That is all Eq. 8 and Eq. 6 need at inference time, so routing can be
recomputed for any alpha, temperature or top-k without touching a model (`reroute`). It is a
recomputation, not a new run: the router and experts stay the ones trained at the run's own alpha.

Why the recomputed predictions are exact: Eq. 6 sums weighted expert *logits*, and log q_i differs
from expert i's logits by a per-expert constant (its log-sum-exp), which cancels in the softmax and
argmax over classes. Temperature is the one approximation for Bayesian routers: the cache holds the
mean of the MC passes' softmaxes, and re-tempering that mean (p^(1/T), renormalised) is exact only
for a single deterministic pass. Newer cache entries store probabilities at float16, so recomputed
numbers match the cached ones to about 3 significant digits.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..core.errors import ConfigError, DataError
from ..models import routing as R
from ..models.registry import get_variant

PREFIX = "routing__"
RECOMPUTED = ("Recomputed on the fly from the run's cached router probabilities and expert outputs "
              "(inference-time routing only: the router and experts are those trained at the run's own alpha).")


# -- reading cached routing ---------------------------------------------------------------------------
def routing_arrays(arrays: dict) -> dict[str, np.ndarray]:
    """The `routing__*` arrays of a cached run, prefix stripped; DataError for a single-model run."""
    out = {k[len(PREFIX):]: v for k, v in arrays.items() if k.startswith(PREFIX)}
    if not out:
        raise DataError("this run has no routing record: only Mixture-of-Experts runs route samples")
    return out


def sample_routing(arrays: dict, i: int) -> dict[str, np.ndarray]:
    """Routing record of the i-th test sample of a cached run (same layout as Prediction.routing)."""
    rec = routing_arrays(arrays)
    n = len(rec["chosen_expert"])
    if not 0 <= i < n:
        raise ConfigError(f"sample index must be in [0, {n}); got {i}")
    return {k: v[i] for k, v in rec.items()}


def run_alpha(record: dict) -> float:
    """The curiosity strength a cached run was trained and evaluated with (0 without curiosity)."""
    spec = get_variant(record["variant"])
    options = {**spec.options, **(record.get("options") or {})}
    return float(options.get("alpha", 0.0))


def bits_label(expert: str) -> str:
    """'Q8-Base' -> '8-bit', 'BitNet-Base' -> 'ternary (1.58-bit)', 'Q8-Base-PTQ' -> 'int8 PTQ'."""
    bits = get_variant(expert).bits
    if "PTQ" in expert:
        return "int8 PTQ"
    if bits is None:
        return "FP32"
    if abs(bits - 1.58) < 0.01:
        return "ternary (1.58-bit)"
    return f"{bits:g}-bit"


def expert_bits(expert: str) -> float:
    """Weight bit-width used to rank experts by precision (FP32 = 32)."""
    bits = get_variant(expert).bits
    return 32.0 if bits is None else float(bits)


# -- one decision in plain words ----------------------------------------------------------------------
@dataclass(frozen=True)
class Explanation:
    expert: str  # the expert that handled the sample (top-1)
    bits: str
    prediction: str
    confidence: float
    mutual_information: float  # nats: the router's epistemic uncertainty (BALD over MC passes)
    predictive_entropy: float
    expected_entropy: float
    mi_percentile: float | None  # share of the reference samples with lower mutual information (0-100)
    why: str
    table: pd.DataFrame = field(repr=False)  # one row per expert

    @property
    def headline(self) -> str:
        return f"Handled by expert: {self.expert} ({self.bits})"


def explain(routing: dict, expert_names, class_names, reference_mi=None) -> Explanation:
    """Explain one routing record (`Prediction.routing` or `sample_routing(...)`).

    reference_mi: mutual information of the samples of a cached run, to say whether this sample's
    epistemic uncertainty is low or high compared with them.
    """
    names = list(expert_names)
    before = np.asarray(routing["router_probs"], dtype=float)
    after = np.asarray(routing["curious_probs"], dtype=float)
    if before.shape != (len(names),) or after.shape != before.shape:
        raise ConfigError(f"routing record has {before.shape} probabilities for {len(names)} experts")
    q = np.asarray(routing["expert_probs"], dtype=float)
    kl = np.asarray(routing["expert_kl"], dtype=float)
    chosen = int(routing["chosen_expert"])
    mi = float(routing["mutual_information"])
    pct = None
    if reference_mi is not None and len(reference_mi):
        pct = float(100 * np.mean(np.asarray(reference_mi) < mi))
    table = pd.DataFrame({
        "expert": names, "bits": [bits_label(n) for n in names],
        "routing_before": before, "routing_after": after, "mc_std": np.asarray(routing["mc_std"], dtype=float),
        "kl_to_mean": kl, "top_class": [class_names[int(c)] for c in q.argmax(1)], "top_prob": q.max(1),
        "chosen": [i == chosen for i in range(len(names))],
    })
    prediction = class_names[int(routing["prediction"])]
    return Explanation(names[chosen], bits_label(names[chosen]), prediction, float(routing["confidence"]), mi,
                       float(routing["predictive_entropy"]), float(routing["expected_entropy"]), pct,
                       _why(table, chosen, mi, pct), table)


def _why(t: pd.DataFrame, chosen: int, mi: float, pct: float | None) -> str:
    name, b, a, kl = t.expert[chosen], t.routing_before, t.routing_after, t.kl_to_mean
    preferred = int(np.argmax(b))
    if np.allclose(a, b, atol=1e-6):
        first = f"The router gave {name} the highest routing probability ({a[chosen]:.0%}); no curiosity term applies."
    elif preferred != chosen:
        first = (f"The router preferred {t.expert[preferred]} ({b[preferred]:.0%}), but the curiosity term (Eq. 8) "
                 f"handed the sample to {name} ({b[chosen]:.0%} -> {a[chosen]:.0%}): its prediction "
                 f"({t.top_class[chosen]}) disagrees more with the experts' consensus "
                 f"(KL {kl[chosen]:.3f} vs {kl[preferred]:.3f} nats).")
    elif abs(a[chosen] - b[chosen]) < 0.005:
        first = (f"The router preferred {name} ({b[chosen]:.1%}); the curiosity term (Eq. 8) barely changed that "
                 f"({a[chosen]:.1%} after it): the experts' disagreement is too small to move the decision.")
    else:
        verb = "raised" if a[chosen] > b[chosen] else "lowered"
        first = (f"The router preferred {name} ({b[chosen]:.0%}); the curiosity term (Eq. 8) {verb} it to "
                 f"{a[chosen]:.0%}, its prediction ({t.top_class[chosen]}) being KL {kl[chosen]:.3f} nats "
                 f"from the experts' consensus.")
    spread = float(t.mc_std[chosen])
    if mi < 1e-6:
        second = (f"All MC-dropout passes of the router agree (spread ±{spread:.2f} on {name}): no epistemic "
                  "uncertainty about this decision (mutual information 0).")
    else:
        level = "" if pct is None else f", higher than for {pct:.0f}% of the cached test samples"
        second = (f"The router's MC-dropout passes vary by ±{spread:.2f} on {name}; the epistemic uncertainty "
                  f"(mutual information) is {mi:.4f} nats{level}.")
    return f"{first} {second}"


# -- the explorer's table and Figure 2 ----------------------------------------------------------------
def routing_table(arrays: dict, expert_names, class_names) -> pd.DataFrame:
    """One row per test sample of a cached MoE run: truth, prediction, chosen expert, confidences, uncertainty."""
    r = routing_arrays(arrays)
    names = np.asarray(list(expert_names), dtype=object)
    classes = np.asarray(list(class_names), dtype=object)
    chosen = r["chosen_expert"].astype(int)
    rows = np.arange(len(chosen))
    df = pd.DataFrame({
        "sample": rows, "dataset_index": arrays.get("test_idx", rows),
        "true_class": classes[arrays["y_true"]], "predicted": classes[r["prediction"]],
        "correct": arrays["y_true"] == r["prediction"],
        "expert": names[chosen], "confidence": r["confidence"].astype(float),
        "expert_confidence": r["expert_probs"][rows, chosen].max(-1).astype(float),
        "mutual_information": r["mutual_information"].astype(float),
        "routing_entropy": r["routing_entropy"].astype(float),
        "mc_std_chosen": r["mc_std"][rows, chosen].astype(float),
    })
    for j, n in enumerate(names):
        df[f"before:{n}"] = r["router_probs"][:, j].astype(float)
        df[f"after:{n}"] = r["curious_probs"][:, j].astype(float)
    return df


def filter_routing(table: pd.DataFrame, experts=None, classes=None, confidence=(0.0, 1.0),
                   column: str = "confidence") -> pd.DataFrame:
    """Rows routed to any of `experts`, of true class in `classes`, with `column` inside `confidence`."""
    keep = table[column].between(*confidence)
    if experts:
        keep &= table["expert"].isin(list(experts))
    if classes:
        keep &= table["true_class"].isin(list(classes))
    return table[keep]


def confidence_by_expert(table: pd.DataFrame, expert_names, column: str = "confidence"):
    """Figure 2: samples per chosen expert and their confidence; Welch t-test of the highest-precision one.

    Returns (summary DataFrame, TestResult or None). The test compares the confidence of the samples
    sent to the highest-bit expert against all others (the paper: Q8 vs BitNet/Q4, Sec. 5.4); None
    when either group is empty.
    """
    from .stats import welch_ttest

    names = list(expert_names)
    g = table.groupby("expert")[column]
    summary = pd.DataFrame({
        "expert": names, "bits": [bits_label(n) for n in names],
        "samples": [int(g.size().get(n, 0)) for n in names],
        "confidence_mean": [float(g.mean().get(n, np.nan)) for n in names],
        "confidence_std": [float(g.std().get(n, np.nan)) for n in names],
    })
    summary["share"] = summary["samples"] / max(1, len(table))
    top = max(names, key=expert_bits)
    a, b = table.loc[table.expert == top, column], table.loc[table.expert != top, column]
    test = None
    if len(a) >= 2 and len(b) >= 2:
        test = welch_ttest(a, b, f"{column} of samples routed to {top} vs the other experts")
    return summary, test


# -- inference-time rerouting for any alpha -----------------------------------------------------------
@dataclass(frozen=True)
class Reroute:
    alpha: float
    temperature: float
    top_k: int
    curious_probs: np.ndarray  # (n, N)
    chosen: np.ndarray  # (n,) top-1 expert
    predictions: np.ndarray  # (n,)
    f1_macro: float
    accuracy: float
    shares: np.ndarray  # (N,) fraction of samples whose top-1 expert is i
    routing_entropy: float  # mean over samples, nats
    note: str = RECOMPUTED


def reroute(arrays: dict, alpha: float, temperature: float = 1.0, top_k: int = 1) -> Reroute:
    """Eq. 5 (temperature), 8 (curiosity alpha) and 6 (top-k) re-applied to a run's cached arrays."""
    from sklearn.metrics import accuracy_score, f1_score

    r = routing_arrays(arrays)
    p = torch.as_tensor(r["router_probs"], dtype=torch.float64)
    q = torch.as_tensor(r["expert_probs"], dtype=torch.float64)
    n_experts = p.shape[1]
    if not alpha >= 0:
        raise ConfigError(f"curiosity strength alpha must be >= 0; got {alpha!r}")
    if not temperature > 0:
        raise ConfigError(f"routing temperature T must be > 0; got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= n_experts:
        raise ConfigError(f"top_k must be an integer between 1 and the number of experts ({n_experts}); got {top_k!r}")
    if temperature != 1.0:
        p = torch.softmax(p.clamp_min(1e-12).log() / temperature, -1)
    p_cur, _ = R.curious(p, q, float(alpha)) if alpha > 0 else (p, None)
    weights = R.top_k_weights(p_cur, int(top_k))
    pred = R.combine(weights, q.clamp_min(1e-12).log()).argmax(-1).numpy()
    chosen = p_cur.argmax(-1).numpy()
    y = arrays["y_true"]
    return Reroute(float(alpha), float(temperature), int(top_k), p_cur.numpy(), chosen, pred,
                   float(f1_score(y, pred, average="macro")), float(accuracy_score(y, pred)),
                   np.bincount(chosen, minlength=n_experts) / len(chosen), float(R.entropy(p_cur).mean()))


# -- the cached alpha sweep ---------------------------------------------------------------------------
def sweep_table(df: pd.DataFrame, store=None, task: str = "major", protocol: str = "predefined",
                seed: int = 0) -> pd.DataFrame:
    """The 'alpha sweep' stage as cached: per alpha, folds, F1 mean and fold std, latency std, routing shares.

    Rows come from `qmoe.experiments.reproduce.sweep_config` runs (BitNet-Q4/8-QMoE-C with alpha overridden, or the
    registered @0.2/@0.3 variants). Levene's test compares each alpha's fold F1 with the uniform
    baseline's (same task/protocol/seed) where both have >= 3 folds.
    """
    from ..experiments.reproduce import SWEEP_ALPHAS, sweep_config
    from ..experiments.store import ResultStore
    from ..models.moe import UNIFORM_BASELINE

    store = store or ResultStore()
    sel = df[(df.task == task) & (df.protocol == protocol) & (df.seed == seed) & (df.selection == "validation")]
    base = sel[(sel.variant == UNIFORM_BASELINE) & (sel.options == "")]["f1_macro"].to_numpy()
    rows = []
    for alpha in SWEEP_ALPHAS:
        cfg = sweep_config(alpha, seed, task, protocol)
        opts = ",".join(f"{k}={v}" for k, v in sorted(cfg.options.items()))
        runs = sel[(sel.variant == cfg.variant) & (sel.options == opts)]
        if runs.empty:
            continue
        rows.append({"alpha": alpha, "variant": cfg.variant, "options": opts, "folds": len(runs),
                     "f1_mean": runs.f1_macro.mean(), "f1_fold_std": runs.f1_macro.std(),
                     "latency_ms_std": runs.latency_ms_std.mean(),
                     **_versus_uniform(base, runs.f1_macro.to_numpy(), f"alpha={alpha}"),
                     **routing_shares(store, runs.key)})
    return pd.DataFrame(rows)


def routing_shares(store, keys) -> dict[str, float]:
    """`share:<expert>`: the fraction of the runs' test samples (pooled) whose top-1 expert it is."""
    counts, names = None, None
    for key in keys:
        chosen = routing_arrays(store.arrays(key))["chosen_expert"]
        names = store.get(key)["expert_names"]
        c = np.bincount(chosen, minlength=len(names))
        counts = c if counts is None else counts + c
    return {} if counts is None else {f"share:{n}": float(c) for n, c in zip(names, counts / counts.sum())}


def _versus_uniform(base: np.ndarray, f1: np.ndarray, label: str) -> dict[str, float]:
    """Levene's test of fold-F1 variance against the uniform-routing baseline (both need >= 3 folds)."""
    from ..models.moe import UNIFORM_BASELINE
    from .stats import levene

    if len(f1) < 3 or len(base) < 3:
        return {"levene_p_vs_uniform": np.nan, "variance_reduction_vs_uniform": np.nan}
    t = levene(base, f1, f"{label} vs {UNIFORM_BASELINE}")
    return {"levene_p_vs_uniform": t.p, "variance_reduction_vs_uniform": t.effect_size}


SWEEP_GROUP = ["base", "variant", "options", "dataset", "task", "protocol", "seed", "selection", "family", "bits",
               "experts", "alpha", "temperature", "top_k", "mc_samples", "bayesian", "curiosity_mode",
               "curiosity_in_training"]


def sweep_curve(points: pd.DataFrame, store=None) -> pd.DataFrame:
    """A sweep's points (`qmoe.experiments.sweep.points_frame` / `run_sweep`) as the curves a page draws: one row per
    setting, over its cached folds: F1 mean and fold std, latency mean and within-run std (mean over folds), energy, bytes,
    `new` (some fold was computed by the sweep), and for MoE rows the routing shares and Levene's test of the fold
    F1 variance against the uniform-routing baseline (BitNet-Q4/8-QMoE-uniform, same task/protocol/seed/folds)."""
    from ..experiments.store import ResultStore
    from ..experiments.sweep import Sweep, points_frame
    from ..models.moe import UNIFORM_BASELINE

    store = store or ResultStore()
    done = points[points["cached"]]
    rows, baselines = [], {}
    for values, runs in done.groupby(SWEEP_GROUP, dropna=False, sort=False):
        row = dict(zip(SWEEP_GROUP, values))
        row.update(folds=runs["fold"].nunique(), f1_mean=runs["f1_macro"].mean(), f1_std=runs["f1_macro"].std(),
                   latency_ms_mean=runs["latency_ms_mean"].mean(), latency_ms_std=runs["latency_ms_std"].mean(),
                   energy_mj=runs["energy_mj"].mean(), model_bytes=runs["model_bytes"].iloc[0],
                   new=bool(runs["new"].any()))
        if row["family"] == "moe":
            where = (row["dataset"], row["task"], row["protocol"], int(row["seed"]), row["selection"])
            if where not in baselines:
                base = points_frame(Sweep((UNIFORM_BASELINE,), dataset=where[0], tasks=(where[1],),
                                          protocols=(where[2],), seeds=(where[3],), selection=where[4]), store)
                baselines[where] = base[base["cached"]].set_index("fold")["f1_macro"]
            base = baselines[where].reindex(runs["fold"]).dropna().to_numpy()
            label = row["variant"] + (f" [{row['options']}]" if row["options"] else "")
            row.update(_versus_uniform(base, runs["f1_macro"].to_numpy(), label), **routing_shares(store, runs["key"]))
        rows.append(row)
    return pd.DataFrame(rows)


# -- Learn: Eqs. 5-9 step by step on one embedding ----------------------------------------------------
@torch.no_grad()
def walkthrough(model, x, temperature: float = 1.0, top_k: int = 1, alpha: float = 0.3, mc_samples: int = 10,
                seed: int = 0, expert_cost_ms=None) -> dict:
    """Every intermediate number of the routing of one standardized (D,) embedding `x` by a QuantizedMoE.

    Uses the model's own router and experts with the given settings (not the model's defaults).
    expert_cost_ms: per-expert cost C(S) for Eq. 9 (e.g. measured latency); defaults to bits.
    Returns a dict of numpy arrays / floats, named after the paper's symbols.
    """
    n = len(model.experts)
    if not temperature > 0:
        raise ConfigError(f"routing temperature T must be > 0; got {temperature!r}")
    if not alpha >= 0:
        raise ConfigError(f"curiosity strength alpha must be >= 0; got {alpha!r}")
    if not 1 <= int(top_k) <= n:
        raise ConfigError(f"top_k must be between 1 and the number of experts ({n}); got {top_k!r}")
    if int(mc_samples) < 1:
        raise ConfigError(f"mc_samples must be >= 1; got {mc_samples!r}")
    model.eval()
    x = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(1, -1)
    logits_e = model.expert_logits(x)  # (1, N, C)
    q = torch.softmax(logits_e, -1)
    det = R.routing_probs(model.router(x), temperature)  # one deterministic pass (dropout off)
    mc = R.routing_probs(model.router.mc_logits(x, int(mc_samples), seed), temperature)  # (S, 1, N)
    p = mc.mean(0)
    p_bar = q.mean(1)  # (1, C)
    kl = R.expert_kl(q)
    p_cur = R.curious(p, q, alpha)[0] if alpha > 0 else p
    w = R.top_k_weights(p_cur, int(top_k))
    y = torch.softmax(R.combine(w, logits_e), -1)
    mc_cur = R.curious(mc, q, alpha)[0] if alpha > 0 else mc
    mc_y = torch.softmax(R.combine(R.top_k_weights(mc_cur, int(top_k)), logits_e), -1)
    predictive, expected, mi = R.bald(mc_y)
    chosen_per_pass = mc_cur.argmax(-1)[:, 0].numpy()
    cost = np.asarray(expert_cost_ms if expert_cost_ms is not None
                      else [expert_bits(e) for e in model.expert_names], dtype=float)
    pass_cost = cost[chosen_per_pass]
    modal = np.bincount(chosen_per_pass, minlength=n).argmax()
    return {
        "deterministic_probs": det[0].numpy(), "mc_probs": mc[:, 0].numpy(), "p": p[0].numpy(),
        "p_std": mc.std(0, correction=0)[0].numpy(), "expert_probs": q[0].numpy(), "p_bar": p_bar[0].numpy(),
        "H": float(R.entropy(p_bar)[0]), "kl": kl[0].numpy(), "bonus": np.exp(alpha * kl[0].numpy()),
        "p_curious": p_cur[0].numpy(), "weights": w[0].numpy(), "y": y[0].numpy(),
        "routing_entropy_before": float(R.entropy(p)[0]), "routing_entropy_after": float(R.entropy(p_cur)[0]),
        "predictive_entropy": float(predictive[0]), "expected_entropy": float(expected[0]),
        "mutual_information": float(mi[0]), "chosen_per_pass": chosen_per_pass,
        "cost": cost, "var_cost": float(pass_cost.var()), "switch_rate": float(np.mean(chosen_per_pass != modal)),
    }


def expert_costs_ms(model, x, repeats: int = 30) -> np.ndarray:
    """Median wall time (ms) of each expert on one embedding: the C(S) of Eq. 9, measured here."""
    from ..measure.timing import latency

    x = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(1, -1)
    return np.asarray([latency(e, x, rounds=repeats, warmup=1).p50_ms for e in model.experts])
