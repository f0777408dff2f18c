"""Packed vs fake-quant experts: bytes and latency, every single variant, measured in one run.

    python bench/quant.py [--threads 1] [--repeats 200]

Per variant: packed bytes / FP32-Base bytes (whole model, and the quantized layers' weights alone),
and the median latency of the packed forward over that of the fake-quant (training-form) forward,
at batch 1 and batch 400, after warm-up, with a fixed thread count. Inputs are the ESC-50 fold-4
embeddings (standardized on folds 1, 2, 3, 5); models are freshly initialized (seed 0), since
neither bytes nor latency depend on the trained values. For Q8-Base-PTQ the "fake-quant" model is
the FP32 network it is quantized from.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qmoe.datasets import get_dataset  # noqa: E402
from qmoe.experiments.experiment import _scaler  # noqa: E402
from qmoe.models.registry import create_model, list_variants  # noqa: E402

BATCHES = (1, 400)


def fold4_embeddings() -> torch.Tensor:
    ds = get_dataset("esc50")
    train, test = ds.split("major", "predefined", 4)
    mean, scale = _scaler(ds.X[train])
    return torch.from_numpy((ds.X[test] - mean) / scale).float()


@torch.inference_mode()
def median_ms(model, x: torch.Tensor, repeats: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (fixed for every measurement)")
    ap.add_argument("--repeats", type=int, default=200, help="timed calls at batch 1 (batch 400: a tenth)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    X = fold4_embeddings()
    n_classes = 5

    rows = []
    variants = [(v, {}) for v in list_variants("single")] + [("Q8-Base-PTQ", {"per_sample": False})]
    for name, options in variants:
        torch.manual_seed(0)
        fake = create_model(name, X.shape[1], n_classes, **options).eval()
        packed = fake.packed()
        with torch.inference_mode():
            diff = (packed(X) - fake(X)).abs().max().item()
        lat = {b: (median_ms(packed, X[:b], args.repeats if b == 1 else max(5, args.repeats // 10)),
                   median_ms(fake, X[:b], args.repeats if b == 1 else max(5, args.repeats // 10))) for b in BATCHES}
        q = getattr(packed, "quantized_nbytes", 0)
        qf = getattr(packed, "quantized_fp32_nbytes", 0)
        label = name + (" (batched)" if options.get("per_sample") is False else "")
        rows.append((label, packed.nbytes, q / qf if qf else None, diff, lat))

    fp32 = rows[0][1]
    print(f"torch {torch.__version__}, threads={args.threads}, inputs: ESC-50 fold 4 ({len(X)} x {X.shape[1]}), "
          f"FP32-Base = {fp32:,} bytes")
    head = (f"{'variant':<25}{'bytes':>10}{'/FP32':>8}{'qlayers/FP32':>14}{'max|diff|':>11}"
            + "".join(f"{f'b{b} packed ms':>15}{f'b{b} fake ms':>13}{'ratio':>7}" for b in BATCHES))
    print(head)
    print("-" * len(head))
    for label, nbytes, qratio, diff, lat in rows:
        line = (f"{label:<25}{nbytes:>10,}{f'1/{fp32 / nbytes:.1f}':>8}"
                f"{(f'1/{1 / qratio:.1f}' if qratio else '-'):>14}{diff:>11.1e}")
        for b in BATCHES:
            p, f = lat[b]
            line += f"{p:>15.3f}{f:>13.3f}{p / f:>7.2f}"
        print(line)
    print("bytes: every stored tensor of the packed model; qlayers: the quantized hidden layers' weights (codes +"
          " scales)\nagainst the same weights in FP32. Biases, LayerNorms and the classifier stay FP32 (PTQ: int8"
          " classifier).\nratio = packed / fake-quant median latency (< 1: the packed form is faster).")


if __name__ == "__main__":
    main()
