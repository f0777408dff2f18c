"""Every variant on ONNX Runtime (the deployment runtime) against the engine's torch path, in one run.

    python bench/runtime.py [--rounds 5] [--json]

Models: each registered variant trained as the grid's esc50/major/predefined fold-4 run (folds 1, 2, 3, 5; seed 0;
checkpoints cached under the qmoe cache, so a second run does not retrain), and the shipped models. Inputs: the
400 fold-4 embeddings, standardized by each model's own statistics. Per model and runtime: batch-1 median and p99
over every clip (`rounds` interleaved passes: each round times every model once, so slow spells of a shared
machine hit all models alike; through `qmoe.measure.timing.latency`, the harness the grid uses), batch-400 time per
sample, the ratio to FP32-Base on the same runtime, and parity (share of clips where ONNX Runtime predicts the
engine's class; max |probability difference|). MoE rows add the ratio to their slowest expert on ONNX Runtime.
Ratios are what matter: other work on the machine slows every row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import qmoe  # noqa: E402,F401  (fixes thread counts before numpy/torch)
import numpy as np  # noqa: E402

from qmoe.app.inference import SHIP_FOLD, model_file_stem, shipped_models  # noqa: E402
from qmoe.core import paths  # noqa: E402
from qmoe.datasets import get_dataset  # noqa: E402
from qmoe.deploy.runtime import RUNTIMES, load, parity  # noqa: E402
from qmoe.experiments.experiment import RunConfig, fit_fold  # noqa: E402
from qmoe.experiments.reproduce import MOE, SINGLE  # noqa: E402
from qmoe.measure.timing import latency  # noqa: E402
from qmoe.models import checkpoint  # noqa: E402


def fold4_model(variant: str) -> checkpoint.TrainedModel:
    """The grid's esc50/major/predefined fold-4 model of `variant` (trained once, then read from the cache)."""
    cfg = RunConfig("esc50", "major", "predefined", variant, SHIP_FOLD, 0)
    from qmoe.experiments.experiment import run_key

    path = paths.CACHE_DIR / "bench-models" / f"{run_key(cfg)}-{model_file_stem('esc50', 'major', variant)}"
    if not path.with_suffix(".safetensors").exists():
        print(f"training {variant} (fold {SHIP_FOLD} held out)...", file=sys.stderr, flush=True)
        fit_fold(cfg, save_model_to=path)
    return checkpoint.load(path)


class Timed:
    """One model on one runtime, timed in interleaved rounds (every model once per round, so a slow spell of the
    machine hits all of them alike rather than whichever was being timed)."""

    def __init__(self, model, x: np.ndarray):
        self.model, self.x, self.b1, self.b400 = model, x, [], []

    def round(self) -> None:
        self.b1.append(latency(self.model, self.x, batch_size=1, rounds=1, warmup=20).timings_ms.ravel())
        self.b400.append(latency(self.model, self.x, batch_size=len(self.x), rounds=1, warmup=1).timings_ms.ravel())

    def summary(self) -> dict:
        b1 = np.concatenate(self.b1)
        return {"b1_median_ms": float(np.median(b1)), "b1_p99_ms": float(np.percentile(b1, 99)),
                "b400_per_sample_ms": float(np.median(np.concatenate(self.b400))) / len(self.x)}


def prepare(name: str, tm: checkpoint.TrainedModel, X: np.ndarray) -> dict:
    x = tm.standardize(X)
    onnx_model = load(tm.model, "onnxruntime")
    row = {"variant": name, "parity": parity(tm.model, x, onnx_model),
           "timed": {rt: Timed(onnx_model if rt == "onnxruntime" else load(tm.model, rt), x) for rt in RUNTIMES}}
    if hasattr(tm.model, "experts"):
        row["expert_timed"] = [Timed(load(e, "onnxruntime"), x) for e in tm.model.experts]
    return row


def measure(rows: list[dict], rounds: int) -> None:
    for _ in range(rounds):
        for r in rows:
            for t in [*r["timed"].values(), *r.get("expert_timed", [])]:
                t.round()
    for r in rows:
        r.update({rt: t.summary() for rt, t in r.pop("timed").items()})
        if "expert_timed" in r:
            r["expert_b1_median_ms"] = [t.summary()["b1_median_ms"] for t in r.pop("expert_timed")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved passes over the 400 clips per model")
    ap.add_argument("--json", action="store_true", help="one JSON object per line instead of the table")
    ap.add_argument("--variants", default=None, help="comma-separated subset (default: every variant)")
    a = ap.parse_args()
    ds = get_dataset("esc50")
    X = ds.X[ds.folds == SHIP_FOLD]
    variants = a.variants.split(",") if a.variants else [*SINGLE, *MOE]
    if "FP32-Base" not in variants:
        variants.insert(0, "FP32-Base")
    rows = [prepare(v, fold4_model(v), X) for v in variants]
    rows += [prepare(f"shipped: {n}", checkpoint.load(p), X) for n, p in shipped_models().items()]
    measure(rows, a.rounds)
    fp32 = {rt: rows[variants.index("FP32-Base")][rt]["b1_median_ms"] for rt in RUNTIMES}

    if a.json:
        for r in rows:
            for rt in RUNTIMES:
                print(json.dumps({"variant": r["variant"], "runtime": rt, "b1_median_ms": r[rt]["b1_median_ms"],
                                  "b1_p99_ms": r[rt]["b1_p99_ms"], "b400_per_sample_ms": r[rt]["b400_per_sample_ms"],
                                  "ratio_vs_fp32": r[rt]["b1_median_ms"] / fp32[rt],
                                  "parity": r["parity"]["agreement"] if rt == "onnxruntime" else 1.0}))
        return
    print(f"esc50 fold 4 ({len(X)} clips), 1 thread; FP32-Base batch-1 median: ONNX Runtime "
          f"{1000 * fp32['onnxruntime']:.0f} us, torch eager {1000 * fp32['torch-eager']:.0f} us; "
          f"load average now {os.getloadavg()[0]:.1f}")
    head = (f"{'model':<46}{'ORT b1 us':>10}{'p99':>7}{'/FP32':>7}{'b400 us':>9}{'torch b1 us':>12}{'/FP32':>7}"
            f"{'torch/ORT':>10}{'parity':>8}{'max|dp|':>9}{'/slowest expert':>16}")
    print(head)
    print("-" * len(head))
    for r in rows:
        o, t = r["onnxruntime"], r["torch-eager"]
        slowest = f"{o['b1_median_ms'] / max(r['expert_b1_median_ms']):.2f}" if "expert_b1_median_ms" in r else "-"
        print(f"{r['variant'][:45]:<46}{1000 * o['b1_median_ms']:>10.0f}{1000 * o['b1_p99_ms']:>7.0f}"
              f"{o['b1_median_ms'] / fp32['onnxruntime']:>7.2f}{1000 * o['b400_per_sample_ms']:>9.1f}"
              f"{1000 * t['b1_median_ms']:>12.0f}{t['b1_median_ms'] / fp32['torch-eager']:>7.2f}"
              f"{t['b1_median_ms'] / o['b1_median_ms']:>10.1f}{r['parity']['agreement']:>8.4f}"
              f"{r['parity']['max_prob_diff']:>9.1e}{slowest:>16}")
    print("/FP32: batch-1 median over FP32-Base's on the same runtime. parity: share of the 400 clips where ONNX "
          "Runtime predicts the engine's class. /slowest expert: the MoE's ORT batch-1 median over its slowest "
          "expert's.")


if __name__ == "__main__":
    main()
