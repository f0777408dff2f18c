"""Upload-to-answer time of the Classify page for 5 s clips, against the 0.15 s budget (issues 6 and 11).

    python bench/upload.py [--clips 10]

What is timed, per clip: `qmoe.app.inference.classify` on the clip's FLAC bytes with the shipped MoE-C
model, i.e. decode, render the ESC-50 figure, embed it with the backbone, and the MoE with its
10 Monte Carlo router passes (fixed dropout masks), run on ONNX Runtime (1 intra-op thread) in one pass whose
routing outputs give the prediction and the routing record Classify draws. The model and the backbone are warm (loaded once, as st.cache_resource keeps them in the app); the embedding cache is cold (a
fresh temporary directory, so every clip is really embedded). Clips: ESC-50 fold 4, which the
shipped models never saw.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["QMOE_CACHE"] = tempfile.mkdtemp(prefix="qmoe-bench-cache-")  # before qmoe reads it
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from qmoe.app.inference import classify, load_model, shipped_models  # noqa: E402
from qmoe.audio.backbones import get_backbone  # noqa: E402
from qmoe.core.paths import SHARED_DIR  # noqa: E402

BUDGET_S = 0.15


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=10)
    args = parser.parse_args()
    name, path = next((n, p) for n, p in shipped_models().items() if "QMoE-C" in n)
    tm = load_model(str(path))
    get_backbone(tm.info["config"]["backbone"])
    files = sorted((SHARED_DIR / "datasets" / "esc50" / "audio").glob("4-*.flac"))
    files = files[:: max(1, len(files) // (args.clips + 1))][: args.clips + 1]
    classify(files[0].read_bytes(), path)  # warm-up: imports, numba, the renderer's cached frame
    steps, totals = [], []
    for f in files[1:]:
        data = f.read_bytes()
        start = time.perf_counter()
        pred = classify(data, path)
        totals.append(time.perf_counter() - start)
        steps.append(pred.timings_ms)
        assert pred.routing is not None and pred.clip.duration_s == 5.0
    med = float(np.median(totals))
    print(f"model:                 {name} ({tm.model.mc_samples} MC passes, alpha {tm.model.alpha:g})")
    print(f"clips timed:           {len(totals)} x 5 s (ESC-50 fold 4), cold embedding cache, warm model/backbone")
    for step in steps[0]:
        print(f"  {step:<20} {np.median([s[step] for s in steps]):7.1f} ms (median)")
    print(f"upload-to-answer:      median {1000 * med:.0f} ms, max {1000 * max(totals):.0f} ms")
    print(f"ratio to the {BUDGET_S} s budget: {med / BUDGET_S:.2f} (<= 1 meets it)")
    print(f"cpu load average now:  {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
