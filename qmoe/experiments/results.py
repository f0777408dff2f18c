"""Every cached run as one table: the project's public export (`python -m qmoe results --csv`).

Column names are a contract relied on by later checks: add columns, never rename or drop them.
`runtime` names the runtime every efficiency figure of the row was measured on (ONNX Runtime by default;
`results_frame(runtime="torch-eager")` gives the comparison runtime's figures where they were measured).
Runs cached before runtimes were recorded were timed on the engine's torch path: they read "torch-eager".
"""
from __future__ import annotations

import pandas as pd

from .store import ResultStore

COLUMNS = ["dataset", "task", "protocol", "variant", "fold", "seed", "selection", "f1_macro", "accuracy",
           "params", "model_bytes", "latency_ms_mean", "latency_ms_std", "latency_ms_p50", "latency_ms_p99",
           "batch_latency_ms_mean", "peak_rss_mb", "energy_mj", "co2_ug", "train_energy_mj", "train_co2_ug",
           "energy_method", "load_average_1min", "cpu", "options", "leaky", "family", "bits", "best_epoch", "epochs", "train_seconds",
           "code_version", "created", "key", "runtime", "onnx_bytes", "onnx_agreement"]
RUNTIME_COLUMNS = ["latency_ms_mean", "latency_ms_std", "latency_ms_p50", "latency_ms_p99", "batch_latency_ms_mean",
                   "peak_rss_mb", "energy_mj", "co2_ug", "energy_method", "load_average_1min", "onnx_bytes"]
KEYS = ["dataset", "task", "protocol", "variant", "selection", "options"]


def runtime_view(record: dict, runtime: str | None = None) -> dict:
    """The record with its efficiency figures taken on `runtime` (None: the runtime it was measured on first);
    figures a runtime never measured are None."""
    measured_on = record.get("runtime", "torch-eager")
    if runtime is None or runtime == measured_on:
        return {**record, "runtime": measured_on}
    other = (record.get("by_runtime") or {}).get(runtime, {})
    return {**record, **{c: other.get(c) for c in RUNTIME_COLUMNS}, "runtime": runtime}


def results_frame(store: ResultStore | None = None, runtime: str | None = None) -> pd.DataFrame:
    rows = []
    for r in (store or ResultStore()).records():
        r = runtime_view(r, runtime)
        row = {c: r.get(c) for c in COLUMNS}
        row["options"] = ",".join(f"{k}={v}" for k, v in sorted((r.get("options") or {}).items()))
        cv = r.get("code_version") or {}
        row["code_version"] = cv.get("git_commit") or cv.get("source_sha256")
        row["cpu"] = (r.get("machine") or {}).get("cpu_model")  # timings compare only on one CPU model
        rows.append(row)
    df = pd.DataFrame(rows, columns=COLUMNS)
    for c in RUNTIME_COLUMNS:  # a runtime that measured nothing leaves None: keep the figures numeric (NaN)
        if c not in ("energy_method",):
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df.sort_values(["dataset", "task", "protocol", "variant", "options", "seed", "fold"], ignore_index=True)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean +- std over folds (and seeds) per configuration."""
    if df.empty:
        return pd.DataFrame(columns=KEYS + ["runs", "f1_mean", "f1_std", "accuracy_mean", "params", "model_bytes"])
    agg = df.groupby(KEYS, dropna=False).agg(
        runs=("fold", "size"), f1_mean=("f1_macro", "mean"), f1_std=("f1_macro", "std"),
        accuracy_mean=("accuracy", "mean"), params=("params", "first"), model_bytes=("model_bytes", "first"),
        latency_ms_mean=("latency_ms_mean", "mean"), latency_ms_std=("latency_ms_std", "mean"),
    )
    return agg.reset_index()


HEADLINE_VARIANTS = ("FP32-Base", "Q16-Base", "Q4-Base", "Q2-Base", "BitNet-Base", "BitNet-Q4/8-QMoE-uniform",
                     "BitNet-Q4/8-QMoE-C@0.2", "BitNet-Q4/8-QMoE-C@0.3")


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """The few rows a newcomer wants first, per task and protocol (seed 0, leak-free selection)."""
    sel = df[(df["selection"] == "validation") & (df["seed"] == 0) & (df["options"] == "")
             & df["variant"].isin(HEADLINE_VARIANTS)]
    if sel.empty:
        return pd.DataFrame(columns=["dataset", "task", "protocol", "variant", "folds", "F1 (macro)", "model_bytes",
                                     "latency_ms_mean"])
    g = sel.groupby(["dataset", "task", "protocol", "variant"])
    out = g.agg(folds=("fold", "nunique"), f1=("f1_macro", "mean"), sd=("f1_macro", "std"),
                model_bytes=("model_bytes", "first"), latency_ms_mean=("latency_ms_mean", "mean")).reset_index()
    out["F1 (macro)"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(out.pop("f1"), out.pop("sd").fillna(0))]
    order = {v: i for i, v in enumerate(HEADLINE_VARIANTS)}
    first = {"variant": order, "dataset": {"esc50": 0}}  # the shipped ESC-50 grid, then other datasets
    out = out.sort_values(["dataset", "task", "protocol", "variant"],
                          key=lambda c: c.map(first[c.name]).fillna(len(order)) if c.name in first else c)
    return out[["dataset", "task", "protocol", "variant", "folds", "F1 (macro)", "model_bytes", "latency_ms_mean"]]
