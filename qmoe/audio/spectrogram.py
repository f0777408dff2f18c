"""Samples -> spectrogram images, by named recipes.

``esc50-figure`` is the recipe of the ESC-50 mel figures the models were trained on (dataset
README, "The rendering recipe of the figures (corrected)"): librosa 0.8.0 + matplotlib 3.3.4 on
native 44.1 kHz audio. It is reproduced here on current librosa/matplotlib, nothing pinned:

* Numbers (`mel_db`): the STFT, mel and dB steps are computed the way that stack computed them
  (numpy 1.23 on an AVX2 CPU, its OpenBLAS 0.3.21, glibc), because a cell whose dB value sits within
  a float32 rounding of a colour step changes colour otherwise (about one clip in seven with librosa
  0.11 as is): float64 FFT stored as complex64, ``|X|`` as glibc ``hypotf``, squared in float32; the
  128 Slaney mel bands summed in float32 by fused multiply-adds in the order OpenBLAS's threaded
  Haswell/Zen sgemm sums them (blocks of FFT bins, some cells in two interleaved chains: `K_BLOCKS`,
  `_split_cells`); ``power_to_db(ref=np.max)`` with numpy 1.x float32 arithmetic and glibc's
  ``log10f`` (emulated below, bit for bit). Centred frames with reflect padding (librosa >= 0.10 pads
  zeros). Each step is emulated in numpy, so the figures come out the same on any CPU.
* Layout (`mesh_edges`, `_specshow`): what librosa 0.8.0's ``specshow`` drew and current versions
  do not: the mel axis with fmax fixed at 11,025 Hz whatever the rate (cell edges: the centres of
  ``mel_frequencies(128, fmin=0, fmax=11025)`` moved down by half the gap to their predecessor,
  11,025 on top), time edges ``frames_to_time(arange(n + 1), sr=44100, hop_length=512)``, flat
  shading; and matplotlib 3.3.4's Agg drew that rasterised mesh half a pixel left and down of where
  current matplotlib draws it (translated by (-0.5, -0.5) px here).
* Frame: outside `DATA_BOX` (rows 29-213 x columns 40-287, the pixels the data can touch: the
  README's plot area, rows 30-213 x columns 41-288, less the right spine's column, plus the top and
  left spines' row and column, where the spines blend with cells) a figure depends only on the clip
  length. For 5 s clips it is taken from a public figure, shipped as ``data/esc50/figure-frame.png``
  (current FreeType draws tick labels a little differently from the training figures'); for other
  lengths (other time ticks) matplotlib draws it.

Fidelity, measured on the 400 fold-4 clips against ``mel-png/4-*.png`` (tests/test_spectrogram.py):
all 400 figures equal pixel for pixel. The mel sum order decided the last 3: a plain bin-by-bin FMA
chain (OpenBLAS's one-thread or AVX-512 order) puts one cell of each a colour step off.
``bench/legacy_stack.py`` checks the emulation against that stack, installed beside this one.

Two renderers produce the recipe, pixel for pixel the same:

* ``render_figure_matplotlib``: the reference: specshow/pcolormesh in a default-size figure,
  savefig at dpi 50, PNG read back as RGB, the frame pasted around `DATA_BOX`.
* ``render_figure`` (fast): the same pixels. Outside `DATA_BOX` nothing depends on the data, and
  inside it the non-antialiased QuadMesh paints each pixel with the colour of exactly one data cell
  (or not at all) regardless of the colours. So per geometry (number of frames) we render once: the
  frame, and an "index image" whose unique colours say which cell paints which pixel. Per clip we
  look up the cell colours, scatter them through the index image, and let matplotlib's own Agg
  renderer draw the few antialiased artists that overlap `DATA_BOX` (the spines) on top, so their
  blending is exact by construction.

Both use ``Figure`` + ``FigureCanvasAgg``, never pyplot's global state, so Streamlit sessions
can render concurrently. Renders assume matplotlib's default rcParams, as the recipe did.

``logmel`` is a plain full-bleed log-mel image (no axes) at 22,050 Hz for datasets without a
figure recipe; it is its own recipe and keeps librosa's current numerics.
"""
from __future__ import annotations

import io
import math
import threading
from functools import lru_cache

import librosa
import librosa.display
import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, NoNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.transforms import Affine2D
from PIL import Image

from qmoe.core import paths
from qmoe.core.errors import AudioError, ConfigError, DataError

FIGURE_SR = 44100                     # the recipe's rate: ESC-50's native rate, no resampling
FIGURE_SECONDS = 5.0
FIGURE_SAMPLES = 220_500              # 5 s at 44.1 kHz: every training figure
N_FFT, HOP, N_MELS = 2048, 512, 128   # librosa 0.8.0 melspectrogram defaults
FIGURE_FRAMES = 1 + FIGURE_SAMPLES // HOP   # 431 frames across 248 pixel columns
AXIS_FMAX = 11025.0                   # librosa 0.8.0 specshow's mel axis, whatever the rate
FIGURE_SHAPE = (240, 320, 3)
PLOT_AREA = np.s_[30:214, 41:289]     # the README's plot area: rows 30..213, columns 41..288
DATA_BOX = np.s_[29:214, 40:288]      # every pixel the data can change (spine rows blend with cells)
MESH_SHIFT_PX = (-0.5, -0.5)          # matplotlib 3.3.4 Agg vs current, display pixels
FRAME_FILE = "figure-frame.png"       # in data/esc50/: a public ESC-50 figure, DATA_BOX blanked
FRAME_SOURCE = "1-100032-A-0"         # the public figure (mel-png/) it was cut from, fold 1
LOGMEL_SR = 22050
MAX_PEAK = 1e15                       # |sample| the renderers take: |STFT| <= 1024 x peak (Hann sum), so the float32
                                      # power stays below 1.1e36; a constant past ~1.8e16 overflows it (3.4e38), and
                                      # dB re an infinite maximum is -inf or NaN (a black figure, or an IndexError)
LOGMEL = dict(n_fft=2048, hop_length=512, n_mels=128, top_db=80.0, cmap="magma")

_VERSIONS = f"librosa {librosa.__version__}, matplotlib {matplotlib.__version__}"
RECIPES = {
    "esc50-figure": (
        "ESC-50 figure recipe of librosa 0.8.0 + matplotlib 3.3.4 (corrected, dataset README), "
        "reproduced: mono at 44100 Hz (native, no resampling); centred STFT n_fft 2048 hop 512 hann, "
        "reflect padding, float64 FFT stored complex64, |X| as hypotf, squared in float32; 128 Slaney "
        "mel bands (fmin 0, fmax 22050) summed in float32 with FMA as OpenBLAS 0.3.21's threaded "
        "Haswell sgemm orders it (bin blocks 0/320/640/833/1025, split cells); power_to_db(ref=max, "
        "top_db 80) in float32 with glibc log10f; specshow(x_axis='time', y_axis='mel') as 0.8.0 drew "
        "it: mel axis fmax 11025 Hz whatever the rate (edges: centres of mel_frequencies(128, 0, "
        "11025) minus half the gap, 11025 on top), time edges frames_to_time(0..n, 44100, 512), flat "
        "shading, magma, Normalize in float32 as matplotlib 3.3.4, mesh translated (-0.5, -0.5) px as matplotlib 3.3.4's Agg "
        "drew it; default 6.4x4.8 in figure, savefig dpi 50, Agg; RGB uint8 240x320; outside rows "
        f"29-213 x cols 40-287 the frame of public figure {FRAME_SOURCE} (data/esc50/{FRAME_FILE}) "
        "for 5 s clips, matplotlib's own for other lengths; " + _VERSIONS),
    "logmel": (
        "sr 22050 mono; melspectrogram (n_fft 2048, hop 512, 128 mels, power 2); "
        "power_to_db(ref=np.max, top_db 80); [-80, 0] dB -> magma, 8-bit rounded; "
        "low frequencies at the bottom, one pixel per frame and band, no axes; "
        "RGB uint8 128 x n_frames; " + _VERSIONS),
}
RECIPE_SR = {"esc50-figure": FIGURE_SR, "logmel": LOGMEL_SR}


# --- step 2-3 of the recipe: the numbers ----------------------------------------------------------

def mel_db(samples: np.ndarray, sr: int = FIGURE_SR) -> np.ndarray:
    """Steps 2-3 of the recipe: float32 (128, n_frames) mel power in dB re its maximum, top_db 80.

    The values librosa 0.8.0 computed on numpy 1.23 (see the module docstring; colour for colour on
    all 400 fold-4 clips), not merely close to them: the figure's colours are 256 steps of
    this array, and a value one float32 rounding off can change a step.
    """
    samples = _check_samples(samples)
    _check_rate(sr)
    return _power_to_db(_mel_power(_power_spectrum(samples)))


def _power_spectrum(y: np.ndarray) -> np.ndarray:
    """float32 (n_frames, 1 + n_fft/2): |STFT|^2 as librosa 0.8.0's stft + _spectrogram made it."""
    if len(y) <= N_FFT // 2:
        raise AudioError(f"The clip is too short to render ({len(y)} samples); "
                         f"give at least {N_FFT // 2 + 1} samples.")
    padded = np.pad(y, N_FFT // 2, mode="reflect")
    frames = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP])
    # float64 window x float32 frames -> float64 FFT, stored in librosa's complex64 matrix
    spec = np.fft.rfft(frames * _window(), axis=-1).astype(np.complex64)
    squares = spec.view(np.float32).astype(np.float64)       # re, im interleaved
    squares *= squares
    mag = np.sqrt(squares[:, 0::2] + squares[:, 1::2]).astype(np.float32)   # glibc hypotf: in double, rounded once
    return mag * mag                                          # ** 2.0 on float32: one float32 product


_TIE_BITS, _LOW_BITS = np.uint64(0x1000_0000), np.uint64(0x1FFF_FFFF)

# How OpenBLAS summed np.dot(mel_basis, S) for the figures: numpy 1.23's OpenBLAS 0.3.21, sgemm kernel of
# Haswell/Zen (AVX2, FMA), two or more threads (measured: that stack renders all 400 fold-4 figures exactly,
# one thread or the AVX-512 kernel miss 3). The K loop (FFT bins) runs in blocks; each block's sum starts
# at zero and is added to the output in float32. Within a block a cell is one fma chain, bin after bin,
# except in the cells `_split_cells` names, whose chain runs as two (even and odd bins) added at the end.
K_BLOCKS = (0, 320, 640, 833, 1025)   # GEMM_Q 320; the threaded driver halves the last 385 as (385 + 1) // 2


def _mel_power(power: np.ndarray) -> np.ndarray:
    """float32 (128, n_frames): np.dot(mel_basis, S) as that OpenBLAS sgemm summed it (see `K_BLOCKS`)."""
    p = power.T.astype(np.float64)                  # (bin, frame)
    parts = _fma_chains(p)                          # (block, band, frame)
    for bands, frames in _split_cells(p.shape[1]):
        even_odd = _fma_chains(p[:, frames], bands, step=2).reshape(len(parts), len(bands), 2, len(frames))
        parts[:, np.array(bands)[:, None], frames] = even_odd[:, :, 0] + even_odd[:, :, 1]
    out = parts[0]
    for part in parts[1:]:
        out = out + part                            # float32, block after block
    return out


_PANEL = np.arange(N_MELS) % 32                          # a band's place in its 32-band panel
_FIRST = tuple(np.flatnonzero((_PANEL < 6) | ((_PANEL >= 12) & (_PANEL < 18))))
_SECOND = tuple(np.flatnonzero(((_PANEL >= 6) & (_PANEL < 12)) | ((_PANEL >= 18) & (_PANEL < 24))))


def _split_cells(n_frames: int) -> list[tuple[tuple, np.ndarray]]:
    """(bands, frames) rectangles of the cells whose block sums ran as an even and an odd chain.

    Measured on that stack by probing (a 2**24 among ones in one bin: one chain loses every one after
    it, two chains keep half). The pattern follows the threaded driver's partition (bands in panels of
    32 = 12 + 12 + 8 kernel columns, frames in halves split at 216, kernel rows of 8 frames); probed
    for the recipe's 431 frames, every figure's. Other lengths are summed as plain chains.
    """
    if n_frames != FIGURE_FRAMES:
        return []
    return [(_FIRST, np.r_[0:8, 216:224, 416:424]), (_SECOND, np.r_[208:216]),
            (tuple(range(24, 32)) + tuple(range(56, 64)), np.r_[0:216]),
            (tuple(range(88, 96)) + tuple(range(120, 128)), np.r_[216:424])]


def _fma_chains(p: np.ndarray, bands: tuple = tuple(range(N_MELS)), step: int = 1) -> np.ndarray:
    """float32 (len(K_BLOCKS) - 1, len(bands) * step, n_frames) from p (bin, frame): per block, band and phase,
    ``acc = fma(w, p, acc)`` in float32 from 0 over the band's bins k in the block of that phase, in bin
    order.

    Emulated exactly in float64: w * p is exact there, and the one rounding to float32 of acc + w * p
    is corrected when the float64 sum lands on a float32 tie.
    """
    bins, weights, active, resets, last, inverse = _chain_plan(bands, step)
    acc = np.zeros((len(inverse), p.shape[1]))
    parts = np.zeros((len(K_BLOCKS) - 1, len(inverse), p.shape[1]), np.float32)
    for d, n in enumerate(active):                  # bands sorted by chain length, longest first
        rows, block = resets[d]                     # bands whose d-th bin opens a new block
        if len(rows):
            parts[block, rows] = acc[rows]
            acc[rows] = 0
        a = acc[:n]
        prod = p[bins[:n, d]] * weights[:n, d, None]
        s = a + prod
        r = s.astype(np.float32)
        tie = (s.view(np.uint64) & _LOW_BITS) == _TIE_BITS
        if tie.any():
            b = s - a
            err = (a - (s - b)) + (prod - b)        # TwoSum: a + prod == s + err exactly
            up = tie & (err > 0) & (r < s)
            down = tie & (err < 0) & (r > s)
            r[up] = np.nextafter(r[up], np.float32(np.inf))
            r[down] = np.nextafter(r[down], np.float32(-np.inf))
        acc[:n] = r
    parts[last, np.arange(len(inverse))] = acc
    return parts[:, inverse]


def _power_to_db(S: np.ndarray) -> np.ndarray:
    """librosa 0.8.0 power_to_db(S, ref=np.max, amin=1e-10, top_db=80) under numpy 1.x casting."""
    log_spec = np.float32(10.0) * _log10f(np.maximum(np.float32(1e-10), S))
    log_spec -= np.float32(10.0 * math.log10(max(1e-10, float(S.max()))))   # float64 scalar -> float32
    return np.maximum(log_spec, np.float32(float(log_spec.max()) - 80.0))


# The window, mel basis and axis edges are computed here as scipy.signal.get_window("hann", fftbins=True),
# librosa.filters.mel, librosa.mel_frequencies and librosa.frames_to_time compute them (the same operations in
# the same order; tests/test_light_path.py checks them equal bit for bit): importing those modules
# (scipy.signal, numba) takes seconds, more than classifying a clip.

@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    """scipy.signal.get_window("hann", N_FFT, fftbins=True): the periodic Hann window."""
    fac = np.linspace(-np.pi, np.pi, N_FFT + 1, dtype=np.float64)
    w = np.zeros(N_FFT + 1, dtype=np.float64)
    for k, a in enumerate(np.asarray([0.5, 1.0 - 0.5], dtype=np.float64)):
        w += a * np.cos(k * fac)
    return w[:-1]


_MEL_F_SP, _MEL_MIN_LOG_HZ = 200.0 / 3, 1000.0   # Slaney's mel scale: linear below 1 kHz, log above
_MEL_MIN_LOG_MEL = _MEL_MIN_LOG_HZ / _MEL_F_SP
_MEL_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(f: float):
    """librosa.hz_to_mel(f) of one frequency (Slaney)."""
    f = np.asanyarray(f)
    mels = (f - 0.0) / _MEL_F_SP
    if f >= _MEL_MIN_LOG_HZ:
        mels = _MEL_MIN_LOG_MEL + np.log(f / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP
    return mels


def _mel_frequencies(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa.mel_frequencies(n_mels, fmin=fmin, fmax=fmax) (Slaney)."""
    mels = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels)
    freqs = 0.0 + _MEL_F_SP * mels
    log_t = mels >= _MEL_MIN_LOG_MEL
    freqs[log_t] = _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (mels[log_t] - _MEL_MIN_LOG_MEL))
    return freqs


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    """librosa.filters.mel(sr=44100, n_fft=2048, n_mels=128): float32 Slaney-normalised triangles, fmin 0, fmax sr/2."""
    weights = np.zeros((N_MELS, 1 + N_FFT // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=N_FFT, d=1.0 / FIGURE_SR)
    mel_f = _mel_frequencies(N_MELS + 2, fmin=0.0, fmax=float(FIGURE_SR) / 2)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(N_MELS):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:N_MELS + 2] - mel_f[:N_MELS])
    weights *= enorm[:, np.newaxis]
    weights.flags.writeable = False
    return weights


@lru_cache(maxsize=None)
def _chain_plan(bands: tuple, step: int):
    """Per chain (band and phase k % step; sorted by length, longest first) the non-zero mel weights' bins and
    weights, padded; how many chains have a d-th bin; at each d, the chains whose d-th bin opens a new
    `K_BLOCKS` block and the block closed; each chain's last block; the order back to (band, phase)."""
    basis = np.repeat(_mel_basis()[list(bands)], step, axis=0)   # = librosa 0.8.0's
    k = np.arange(basis.shape[1])
    keep = (basis != 0) & (k % step == np.arange(len(basis))[:, None] % step)
    count = keep.sum(axis=1)
    order = np.argsort(-count, kind="stable")
    bins = np.zeros((len(basis), max(1, count.max())), np.intp)
    weights = np.zeros(bins.shape)
    for row, band in enumerate(order):
        bins[row, :count[band]] = np.flatnonzero(keep[band])
        weights[row, :count[band]] = basis[band, keep[band]]
    block = np.searchsorted(K_BLOCKS, bins, side="right") - 1
    active = [int((count[order] > d).sum()) for d in range(count.max())]
    resets = [(np.array([], np.intp), np.array([], np.intp))]
    for d in range(1, len(active)):
        rows = np.flatnonzero(block[:active[d], d] != block[:active[d], d - 1])
        resets.append((rows, block[rows, d - 1]))
    last = block[np.arange(len(basis)), np.maximum(count[order] - 1, 0)]
    return bins, weights, active, resets, last, np.argsort(order)


# glibc's log10f (sysdeps/ieee754/flt-32/e_log10f.c) over its logf (ARM optimized-routines, 2017):
# numpy 1.x called these for float32 log10; numpy 2 has its own, and correctly rounded log10 differs
# too. Emulated in numpy (same operations, same roundings, no FMA contraction, as glibc's generic
# build), checked equal to glibc 2.36 on a million random floats.
_LOGF_TAB = np.array([float.fromhex(h) for h in (
    "0x1.661ec79f8f3bep+0", "-0x1.57bf7808caadep-2", "0x1.571ed4aaf883dp+0", "-0x1.2bef0a7c06ddbp-2",
    "0x1.49539f0f010bp+0", "-0x1.01eae7f513a67p-2", "0x1.3c995b0b80385p+0", "-0x1.b31d8a68224e9p-3",
    "0x1.30d190c8864a5p+0", "-0x1.6574f0ac07758p-3", "0x1.25e227b0b8eap+0", "-0x1.1aa2bc79c81p-3",
    "0x1.1bb4a4a1a343fp+0", "-0x1.a4e76ce8c0e5ep-4", "0x1.12358f08ae5bap+0", "-0x1.1973c5a611cccp-4",
    "0x1.0953f419900a7p+0", "-0x1.252f438e10c1ep-5", "0x1p+0", "0x0p+0",
    "0x1.e608cfd9a47acp-1", "0x1.aa5aa5df25984p-5", "0x1.ca4b31f026aap-1", "0x1.c5e53aa362eb4p-4",
    "0x1.b2036576afce6p-1", "0x1.526e57720db08p-3", "0x1.9c2d163a1aa2dp-1", "0x1.bc2860d22477p-3",
    "0x1.886e6037841edp-1", "0x1.1058bc8a07ee1p-2", "0x1.767dcf5534862p-1", "0x1.4043057b6ee09p-2")]
).reshape(16, 2)
_LOGF_LN2 = float.fromhex("0x1.62e42fefa39efp-1")
_LOGF_A = [float.fromhex(h) for h in ("-0x1.00ea348b88334p-2", "0x1.5575b0be00b6ap-2",
                                       "-0x1.ffffef20a4123p-2")]
_IVLN10, _LOG10_2HI, _LOG10_2LO = np.float32(4.3429449201e-01), np.float32(3.0102920532e-01), \
    np.float32(7.9034151668e-07)


def _logf(x: np.ndarray) -> np.ndarray:
    """glibc logf for positive normal float32 x."""
    ix = x.view(np.uint32).astype(np.int64)
    tmp = ix - 0x3F33_0000
    i = (tmp >> 19) % 16
    k = (tmp.astype(np.int32) >> 23).astype(np.float64)
    z = (ix - (tmp & (0x1FF << 23))).astype(np.uint32).view(np.float32).astype(np.float64)
    invc, logc = _LOGF_TAB[i, 0], _LOGF_TAB[i, 1]
    r = z * invc - 1
    y0 = logc + k * _LOGF_LN2
    r2 = r * r
    y = _LOGF_A[1] * r + _LOGF_A[2]
    y = _LOGF_A[0] * r2 + y
    y = y * r2 + (y0 + r)
    return y.astype(np.float32)


def _log10f(x: np.ndarray) -> np.ndarray:
    """glibc log10f for positive normal float32 x (the recipe's inputs are >= 1e-10)."""
    hx = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
    k = (hx >> 23) - 127
    neg = (k < 0).astype(np.int64)
    y = (k + neg).astype(np.float32)
    mantissa = ((hx & 0x007F_FFFF) | ((0x7F - neg) << 23)).astype(np.uint32).view(np.float32)
    z = y * _LOG10_2LO + _IVLN10 * _logf(mantissa)
    return (z + y * _LOG10_2HI).reshape(np.shape(x))


# --- steps 4-5: the figure ------------------------------------------------------------------------

class Float32Normalize(Normalize):
    """matplotlib 3.3.4's Normalize: vmin and vmax are the data's own float32 min and max, so (x - vmin) / (vmax - vmin)
    runs in float32. Current matplotlib turns them into Python floats first (float64 arithmetic), which puts a few
    cells one colour step away from the public figures (e.g. 4-186940-A-44, whose max is 2**-18 dB)."""

    def __call__(self, value, clip=None):
        a = np.ma.asarray(value).astype(np.float32)
        vmin, vmax = a.min(), a.max()
        out = np.zeros(a.shape, np.float32)
        if vmax > vmin:
            out = a.filled(vmin) - vmin
            out /= vmax - vmin
        return np.ma.array(out, mask=np.ma.getmaskarray(a))


def mesh_edges(n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(time edges (n_frames + 1,) s, mel cell edges (129,) Hz) as librosa 0.8.0's specshow laid them."""
    centres = _mel_frequencies(N_MELS, fmin=0.0, fmax=AXIS_FMAX)
    y_edges = centres.copy()
    y_edges[1:] -= 0.5 * np.diff(centres)
    y_edges = np.append(np.maximum(0.0, y_edges), AXIS_FMAX)
    x_edges = (np.arange(n_frames + 1) * HOP).astype(int) / float(FIGURE_SR)   # librosa.frames_to_time
    return x_edges, y_edges


def _specshow(ax, data: np.ndarray):
    """Step 4 on ax: librosa 0.8.0's specshow(data, sr=44100, x_axis='time', y_axis='mel')."""
    x_edges, y_edges = mesh_edges(data.shape[1])
    mesh = librosa.display.specshow(data, sr=FIGURE_SR, hop_length=HOP, x_axis="time", y_axis="mel",
                                    x_coords=x_edges, y_coords=y_edges, shading="flat",
                                    fmax=AXIS_FMAX, ax=ax, norm=Float32Normalize())
    mesh.set_transform(ax.transData + Affine2D().translate(*MESH_SHIFT_PX))
    return mesh


def render_figure_matplotlib(samples: np.ndarray, sr: int = FIGURE_SR) -> np.ndarray:
    """The ESC-50 figure drawn by matplotlib (the reference renderer): uint8 RGB (240, 320, 3)."""
    S_db = mel_db(samples, sr)
    fig = Figure()
    FigureCanvasAgg(fig)
    _specshow(fig.add_subplot(), S_db)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=50)
    image = np.asarray(Image.open(png).convert("RGB"))
    if S_db.shape[1] != FIGURE_FRAMES:
        return image
    out = public_frame().copy()
    out[DATA_BOX] = image[DATA_BOX]
    return out


def render_figure(samples: np.ndarray, sr: int = FIGURE_SR) -> np.ndarray:
    """The ESC-50 figure: the same pixels as `render_figure_matplotlib`, a fraction of the time."""
    S_db = mel_db(samples, sr)
    return _geometry(S_db.shape[1]).paint(S_db)


@lru_cache(maxsize=1)
def public_frame() -> np.ndarray:
    """The frame of the 5 s training figures (read-only uint8 RGB, `DATA_BOX` blank)."""
    path = paths.DATA_DIR / "esc50" / FRAME_FILE
    if not path.is_file():                 # QMOE_DATA moved elsewhere: the repository's copy
        path = paths.ROOT / "data" / "esc50" / FRAME_FILE
    try:
        frame = np.asarray(Image.open(path).convert("RGB"))
    except (OSError, ValueError) as e:
        raise DataError(f"The ESC-50 figure frame {path} is missing or unreadable ({e}); "
                        f"restore it from the repository.") from None
    if frame.shape != FIGURE_SHAPE:
        raise DataError(f"{path} is {frame.shape}, expected an RGB image {FIGURE_SHAPE}.")
    frame = frame.copy()
    frame.flags.writeable = False
    return frame


def render_logmel(samples: np.ndarray, sr: int = LOGMEL_SR) -> np.ndarray:
    """Full-bleed log-mel image, uint8 RGB (128, n_frames, 3), parameters in `LOGMEL`.

    A fixed [-80, 0] dB scale (not the clip's own min) so equal colours mean equal levels.
    """
    samples = _check_samples(samples)
    S = librosa.feature.melspectrogram(y=samples, sr=sr, n_fft=LOGMEL["n_fft"],
                                       hop_length=LOGMEL["hop_length"], n_mels=LOGMEL["n_mels"])
    S_db = librosa.power_to_db(S, ref=np.max, top_db=LOGMEL["top_db"])
    level = np.clip((S_db + LOGMEL["top_db"]) / LOGMEL["top_db"], 0.0, 1.0)
    lut = np.floor(matplotlib.colormaps[LOGMEL["cmap"]](np.arange(256))[:, :3] * 255 + 0.5)
    return lut.astype(np.uint8)[np.round(level * 255).astype(np.intp)][::-1].copy()


_RENDERERS = {"esc50-figure": render_figure, "logmel": render_logmel}


def render(samples: np.ndarray, sr: int, recipe: str = "esc50-figure") -> np.ndarray:
    """Render by recipe name (a key of `RECIPES`, which is what caches should key on)."""
    if recipe not in RECIPES:
        raise ConfigError(f"Unknown spectrogram recipe {recipe!r}; choose one of {sorted(RECIPES)}.")
    if sr != RECIPE_SR[recipe]:
        raise ConfigError(f"Recipe {recipe!r} expects audio at {RECIPE_SR[recipe]} Hz, got {sr} Hz; "
                          f"load it with load_audio(..., sr={RECIPE_SR[recipe]}).")
    return _RENDERERS[recipe](samples, sr)


def _check_rate(sr) -> None:
    if sr != FIGURE_SR:
        raise ConfigError(f"The esc50-figure recipe expects audio at {FIGURE_SR} Hz, got {sr} Hz; "
                          f"load it with load_audio(..., sr={FIGURE_SR}).")


def _check_samples(samples) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim != 1 or samples.size == 0:
        raise AudioError(f"Expected non-empty mono samples (1-D), got shape {samples.shape}; "
                         f"decode the file with qmoe.audio.decode.load_audio first.")
    if samples.dtype.kind not in "iuf":
        raise AudioError(f"Expected real samples (integers or floats), got {samples.dtype}.")
    if not np.isfinite(samples).all():
        raise AudioError("The samples contain NaN or infinite values; decode the file with "
                         "qmoe.audio.decode.load_audio, which rejects such audio.")
    peak = max(-float(samples.min()), float(samples.max()))
    if peak > MAX_PEAK:
        shown = f"{peak:.2e}" if f"{peak:.2e}" != f"{MAX_PEAK:.2e}" else repr(peak)
        raise AudioError(f"The samples reach {shown}, beyond the +-{MAX_PEAK:g} the renderers take (past "
                         f"about 1.8e16 the float32 power spectrum overflows); scale them to full scale +-1, "
                         f"as qmoe.audio.decode.load_audio delivers them.")
    return samples.astype(np.float32, copy=False)


# --- the fast renderer ----------------------------------------------------------------------------

class _FigureGeometry:
    """Everything about the figure of an n_frames clip that is not the data."""

    def __init__(self, n_frames: int):
        shape = (N_MELS, n_frames)
        fig = Figure()
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        mesh = _specshow(ax, np.zeros(shape, np.float32) - np.arange(n_frames, dtype=np.float32))
        fig.set_dpi(50)                    # what savefig(dpi=50) does for the duration of the save
        canvas.draw()
        drawn = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        if drawn.shape != FIGURE_SHAPE:
            raise RuntimeError(f"figure is {drawn.shape}, expected {FIGURE_SHAPE}; "
                               f"renders assume matplotlib's default rcParams")
        self.frame = public_frame().copy() if n_frames == FIGURE_FRAMES else drawn
        renderer = canvas.get_renderer()

        # The artists drawn after the mesh (Axes.draw: zorder order, axes 1.5, spines 2.5) that
        # reach into DATA_BOX, with a pixel to spare (Agg's antialiasing).
        ticks = [t for axis in (ax.xaxis, ax.yaxis) for t in axis._update_ticks()]
        after = [a for t in ticks for a in (t.gridline, t.tick1line, t.tick2line)
                 if a.get_visible()] + list(ax.spines.values())
        rows, cols = DATA_BOX
        self.overlays = [a for a in after if _reaches(a.get_window_extent(renderer), rows, cols)]
        for a in after + [ax.xaxis, ax.yaxis]:
            a.set_visible(False)

        canvas.draw()                      # the mesh alone over the axes background
        self.base = np.asarray(canvas.buffer_rgba())[DATA_BOX].copy()

        n = shape[0] * shape[1]            # index image: cell i painted with colour i + 1
        code = np.arange(1, n + 1)
        mesh.set_cmap(ListedColormap(np.stack([code >> 16, (code >> 8) & 255, code & 255], 1) / 255))
        mesh.set_norm(NoNorm())
        mesh.set_array(np.arange(n).reshape(shape))
        canvas.draw()
        rgb = np.asarray(canvas.buffer_rgba())[..., :3].astype(np.int64)
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        painted = (code >= 1) & (code <= n)
        outside = painted.copy()
        outside[DATA_BOX] = False
        if outside.any():
            raise RuntimeError("the mesh paints outside DATA_BOX; the frame premise does not hold")
        self.pixels = np.nonzero(painted[DATA_BOX])
        self.cells = code[DATA_BOX][self.pixels] - 1

        for a in self.overlays:
            a.set_visible(True)
        self.renderer = renderer
        self.lock = threading.Lock()       # the renderer's buffer is shared by all callers

    def paint(self, S_db: np.ndarray) -> np.ndarray:
        # Colours as QuadMesh.to_rgba computes them (specshow's colormap choice, matplotlib 3.3.4's
        # float32 normalisation over the data), rounded to 8 bits as Agg does.
        cmap = matplotlib.colormaps["magma"] if S_db.max() <= 0 else librosa.display.cmap(S_db)
        rgba = cmap(Float32Normalize()(np.ma.asarray(S_db)))
        colours = np.floor(rgba[..., :3].reshape(-1, 3) * 255 + 0.5).astype(np.uint8)
        area = self.base.copy()
        area[..., :3][self.pixels] = colours[self.cells]
        out = self.frame.copy()
        with self.lock:
            buffer = np.asarray(self.renderer.buffer_rgba())
            buffer[DATA_BOX] = area
            for artist in self.overlays:
                artist.draw(self.renderer)
            out[DATA_BOX] = buffer[DATA_BOX][..., :3]
        return out


def _reaches(bbox, rows: slice, cols: slice, margin: float = 2.0) -> bool:
    """Whether a display-space bbox (origin bottom left) comes within margin px of rows x cols."""
    height = FIGURE_SHAPE[0]
    top, bottom = height - bbox.y1, height - bbox.y0          # to image rows (origin top left)
    return (bbox.x1 + margin >= cols.start and bbox.x0 - margin <= cols.stop
            and bottom + margin >= rows.start and top - margin <= rows.stop)


@lru_cache(maxsize=8)
def _geometry(n_frames: int) -> _FigureGeometry:
    return _FigureGeometry(n_frames)
