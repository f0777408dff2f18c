"""How long `python -m qmoe classify <clip>` takes from a fresh process (the issue's budget: 5 s wall).

    python bench/cold_start.py [--clip 4-182395-A-0.flac] [--model "esc50 / major / FP32-Base"] [--runs 3]

One untimed run first: it makes the ONNX exports if they are not cached yet (after a code or weights change; it is
reported apart). Then `--runs` fresh processes on the example clip as is (its embedding may be cached, as it is for a
user classifying it again), and `--runs` on never-seen audio (the clip at another gain, each run new: decode, render,
backbone and model all run). Prints the median of each and its ratio to the budget, and the load average: on a busy
machine every time is longer.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "qmoe", "classify", *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"classify failed ({run.returncode}):\n{run.stderr}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default="4-182395-A-0.flac", help="a file in data/examples")
    ap.add_argument("--model", default="esc50 / major / FP32-Base")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--budget", type=float, default=5.0, help="seconds of wall time")
    a = ap.parse_args()
    import numpy as np
    import soundfile as sf

    clip = ROOT / "data" / "examples" / a.clip
    model = ["--model", a.model]
    print(f"load average at start {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores); budget {a.budget} s")
    print(f"first run (exports what is not cached yet): {timed([str(clip), *model]):.2f} s")
    as_is = [timed([str(clip), *model]) for _ in range(a.runs)]
    y, sr = sf.read(clip, dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        fresh = []
        for i in range(a.runs):
            new = Path(tmp) / f"never-seen-{i}.wav"
            gain = 0.5 + 0.4 * np.random.default_rng().random()  # new samples: no cached embedding
            sf.write(new, (y * gain).astype(np.float32), sr, subtype="FLOAT")
            fresh.append(timed([str(new), *model]))
    for label, times in ((f"{a.clip}", as_is), ("never-seen audio", fresh)):
        m = median(times)
        print(f"{label:<22} median {m:5.2f} s of {', '.join(f'{t:.2f}' for t in times)}  "
              f"= {m / a.budget:.2f} x the {a.budget} s budget ({'within' if m <= a.budget else 'OVER'})")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
