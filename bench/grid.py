"""Wall time of `reproduce` (worker pool, dataset and registry loaded once per worker) vs a naive loop of one fresh
`python -m qmoe train` process per config, on the same small sub-grid, each into its own empty temporary store.

    python bench/grid.py [--variants FP32-Base,Q8-Base-PTQ] [--folds 1,2] [--workers 2]

Prints both wall times and their ratio (one run). Other work on the machine (e.g. a running reproduce) slows both
sides; the ratio is what matters. `python -m qmoe reproduce` prints its own wall time.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import qmoe  # noqa: E402,F401  (fixes thread counts before numpy/torch)
from qmoe import reproduce as R  # noqa: E402
from qmoe.experiment import RunConfig  # noqa: E402
from qmoe.store import ResultStore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="FP32-Base,Q8-Base-PTQ")
    ap.add_argument("--folds", default="1,2")
    ap.add_argument("--task", default="major")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    variants, folds = a.variants.split(","), [int(f) for f in a.folds.split(",")]
    grid = [RunConfig("esc50", a.task, "predefined", v, f) for v in variants for f in folds]
    print(f"sub-grid: {len(grid)} configs ({', '.join(variants)} x folds {folds}, {a.task}, predefined)")

    with tempfile.TemporaryDirectory(prefix="qmoe-bench-") as tmp:
        t0 = time.perf_counter()
        n = R.reproduce(ResultStore(Path(tmp) / "reproduce"), workers=a.workers, configs=grid)
        t_reproduce = time.perf_counter() - t0
        assert n == len(grid), f"reproduce computed {n} of {len(grid)} runs"

        env = {**os.environ, "QMOE_RESULTS": str(Path(tmp) / "naive")}
        t0 = time.perf_counter()
        for c in grid:
            subprocess.run([sys.executable, "-m", "qmoe", "train", "--task", c.task, "--protocol", c.protocol,
                            "--variant", c.variant, "--folds", str(c.fold)], cwd=ROOT, env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_naive = time.perf_counter() - t0
        naive_runs = len(ResultStore(Path(tmp) / "naive").records())
        assert naive_runs == len(grid), f"the naive loop cached {naive_runs} of {len(grid)} runs"

    print(f"reproduce ({a.workers} workers): {t_reproduce:7.1f} s  ({t_reproduce / len(grid):.1f} s/config)")
    print(f"naive loop (1 process/config): {t_naive:7.1f} s  ({t_naive / len(grid):.1f} s/config)")
    print(f"naive / reproduce wall-time ratio: {t_naive / t_reproduce:.2f}x  (cpu_count={os.cpu_count()}; "
          f"load avg {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
