"""The esc50-figure numbers against the stack that drew the training figures, run beside this one.

    python3 -m venv /tmp/legacy && /tmp/legacy/bin/pip install "numpy==1.23.5" "numba==0.57.1" \\
        "scipy<1.12" "librosa==0.8.0" soundfile
    python bench/legacy_stack.py --python /tmp/legacy/bin/python [--clips 400]

In that interpreter librosa 0.8.0 computes melspectrogram + power_to_db(ref=np.max) of the fold-4 clips
on numpy 1.23.5 and its OpenBLAS 0.3.21, with numpy's AVX-512 loops off (NPY_DISABLE_CPU_FEATURES: an AVX2
machine) and OpenBLAS's kernel and thread count set per row below. Per row it prints the share of dB cells
equal bit for bit to qmoe's `mel_db`, and how many figures painted from those numbers have the plot area
of `mel-png/4-*.png`. It also probes where that sgemm splits a cell's sum into even and odd chains (a 2**24
among ones: a chain loses the ones after it, two chains keep half) and compares with `_split_cells`.
Not timed: it measures fidelity, the one thing qmoe's emulation of that stack must get right.
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qmoe.audio.decode import load_audio, training_windows  # noqa: E402
from qmoe.audio.spectrogram import FIGURE_FRAMES, PLOT_AREA, _geometry, _split_cells, mel_db  # noqa: E402
from qmoe.core.paths import SHARED_DIR  # noqa: E402

ESC50 = SHARED_DIR / "datasets" / "esc50"
NO_AVX512 = "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL"
ROWS = [("Haswell", 2), ("Haswell", 1), ("Zen", 4), ("SkylakeX", 2)]   # OpenBLAS kernel, threads

LEGACY = r"""
import sys, numpy as np, warnings
warnings.filterwarnings("ignore")
out, mode, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
if mode == "probe":
    S = np.ones((1025, FRAMES), np.float32, order="F")
    S[0] = 2.0 ** 24
    lost = 1024 - (np.dot(np.ones((128, 1025), np.float32), S).astype(np.float64) - 2 ** 24)
    np.save(out, lost < 240)          # one chain over bins 0..319 loses 319 ones, two chains about 160
else:
    import librosa
    dbs = []
    for p in paths:
        y, sr = librosa.load(p, sr=None)
        dbs.append(librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr), ref=np.max))
    np.save(out, np.stack(dbs))
""".replace("FRAMES", str(FIGURE_FRAMES))


def legacy(python: str, kernel: str, threads: int, mode: str, paths: list[Path]) -> np.ndarray:
    env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=NO_AVX512, OPENBLAS_CORETYPE=kernel,
               OPENBLAS_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.npy"
        subprocess.run([python, "-c", LEGACY, str(out), mode, *map(str, paths)], env=env, check=True)
        return np.load(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="interpreter with numpy 1.23.5 + librosa 0.8.0")
    parser.add_argument("--clips", type=int, default=400)
    args = parser.parse_args()
    paths = sorted((ESC50 / "audio").glob("4-*.flac"))[: args.clips]
    ours = np.stack([mel_db(training_windows(load_audio(p))[0][0]) for p in paths])
    references = [np.asarray(Image.open(ESC50 / "mel-png" / f"{p.stem}.png").convert("RGB"))[PLOT_AREA]
                  for p in paths]
    painter = _geometry(FIGURE_FRAMES)
    split = np.zeros(ours.shape[1:], bool)
    for bands, frames in _split_cells(FIGURE_FRAMES):
        split[np.ix_(bands, frames)] = True

    print(f"{'OpenBLAS kernel':16s} {'threads':>7s}  {'dB cells = qmoe':>15s}  {'figures = mel-png':>17s}  "
          f"split cells = qmoe's")
    for kernel, threads in ROWS:
        theirs = legacy(args.python, kernel, threads, "db", paths)
        same = (theirs == ours).mean()
        exact = sum(bool((painter.paint(db)[PLOT_AREA] == ref).all()) for db, ref in zip(theirs, references))
        probed = legacy(args.python, kernel, threads, "probe", [])
        print(f"{kernel:16s} {threads:7d}  {same:15.6f}  {exact:>9d}/{len(paths):<7d}  "
              f"{(probed == split).all()} ({int(probed.sum())} cells, qmoe {int(split.sum())})")


if __name__ == "__main__":
    main()
