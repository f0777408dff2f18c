"""Per-clip cost of the ESC-50 figure: matplotlib (reference) renderer vs the fast renderer, in one run.

    python bench/render.py [--clips 20]

Clips take the upload path: load_audio (44.1 kHz) -> training_windows (5 s) -> renderer. Times
are from the 5 s window's samples to the RGB image (mel spectrogram included in both), after one
warm-up call each (the fast renderer builds its cached frame on first use); checks that the two
renderers gave identical pixels on every clip timed.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qmoe.audio.decode import load_audio, training_windows  # noqa: E402
from qmoe.audio.spectrogram import mel_db, render_figure, render_figure_matplotlib  # noqa: E402
from qmoe.core.paths import SHARED_DIR  # noqa: E402


def per_clip_seconds(fn, clips):
    fn(clips[0])                                    # warm-up: imports, cached frame
    start = time.perf_counter()
    images = [fn(y) for y in clips]
    return (time.perf_counter() - start) / len(clips), images


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20)
    args = parser.parse_args()
    paths = sorted((SHARED_DIR / "datasets" / "esc50" / "audio").glob("*.flac"))
    picked = paths[:: max(1, len(paths) // args.clips)][: args.clips]
    clips = [training_windows(load_audio(p))[0][0] for p in picked]

    t_mel, _ = per_clip_seconds(mel_db, clips)
    t_slow, slow = per_clip_seconds(render_figure_matplotlib, clips)
    t_fast, fast = per_clip_seconds(render_figure, clips)
    exact = sum(np.array_equal(a, b) for a, b in zip(slow, fast))

    print(f"clips timed:             {len(clips)} (5 s ESC-50 fold 4, 44.1 kHz)")
    print(f"mel spectrogram alone:   {t_mel * 1e3:7.1f} ms/clip (inside both timings below)")
    print(f"matplotlib renderer:     {t_slow * 1e3:7.1f} ms/clip")
    print(f"fast renderer:           {t_fast * 1e3:7.1f} ms/clip")
    print(f"speed-up:                {t_slow / t_fast:7.1f}x "
          f"(drawing only: {(t_slow - t_mel) / (t_fast - t_mel):.1f}x)")
    print(f"pixel-identical images:  {exact}/{len(clips)}")


if __name__ == "__main__":
    main()
