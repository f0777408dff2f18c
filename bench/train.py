"""Training speed of one fold per variant: seconds, epochs, seconds per epoch and the test macro-F1.

    python bench/train.py [--variants FP32-Base Q4-Base ...] [--fold 1] [--seed 0] [--repeats 1]

Each run is `qmoe.experiments.experiment.fit_fold` (esc50 / major / predefined, validation-split early stopping), the very
call the result grid makes, so `seconds` is the run's recorded `train_seconds` (the `fit` call inside the energy
tracker, with QMOE_THREADS torch threads). The F1 is the trained (deployable) model's on the test fold. With
`--repeats N` each variant trains N times, interleaved, and the median time is printed (the machine is shared,
timings are noisy). A one-epoch FP32-Base fit runs first, so one-time costs of a fresh process (torch.optim's
import of torch._dynamo, the energy tracker's hardware probe) are printed apart ("warm-up") and not charged to the
first variant. To time another copy of the engine, put it first on PYTHONPATH: the repo root is only appended to
the path.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402

import qmoe  # noqa: E402
from qmoe.experiments.experiment import THREADS, RunConfig, fit_fold  # noqa: E402
from qmoe.measure.timing import torch_threads  # noqa: E402

VARIANTS = ("FP32-Base", "Q4-Base", "BitNet-Base", "Q8-Base-PTQ", "BitNet-Q4/8-QMoE-uniform",
            "BitNet-Q4/8-QMoE-C@0.3")


def one_run(variant: str, fold: int, seed: int) -> dict:
    f = fit_fold(RunConfig("esc50", "major", "predefined", variant, fold, seed))
    with torch_threads(THREADS), torch.no_grad():
        pred = f.model(torch.as_tensor(f.X[f.test_idx])).argmax(1).numpy()
    return {"seconds": f.train_seconds, "epochs": f.history["epochs"], "best_epoch": f.history["best_epoch"],
            "f1": f1_score(f.y[f.test_idx], pred, average="macro")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--fold", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="train each variant this many times (median time)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    fit_fold(RunConfig("esc50", "major", "predefined", "FP32-Base", args.fold, args.seed),
             train_overrides={"max_epochs": 1})
    print(f"engine: {Path(qmoe.__file__).parent}  threads: {THREADS}  fold {args.fold}  seed {args.seed}  "
          f"warm-up (one epoch + one-time costs): {time.perf_counter() - t0:.2f} s  load: {os.getloadavg()[0]:.2f}")
    runs = {v: [] for v in args.variants}
    for _ in range(args.repeats):  # interleaved, so a busy spell of the machine hits every variant alike
        for v in args.variants:
            runs[v].append(one_run(v, args.fold, args.seed))
    print(f"{'variant':<28} {'seconds':>8} {'epochs':>6} {'best':>5} {'s/epoch':>8} {'macro-F1':>8}  all seconds")
    for v, rs in runs.items():
        sec = statistics.median(r["seconds"] for r in rs)
        r = rs[0]
        print(f"{v:<28} {sec:8.2f} {r['epochs']:6d} {r['best_epoch']:5d} {sec / r['epochs']:8.3f} {r['f1']:8.4f}  "
              + " ".join(f"{x['seconds']:.2f}" for x in rs))
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (2 cores; above ~1 other work shares the CPU)")


if __name__ == "__main__":
    main()
