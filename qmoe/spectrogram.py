"""Samples -> spectrogram images, by named recipes.

``esc50-figure`` is the exact recipe of the ESC-50 mel figures (dataset README): the training
distribution, so an uploaded clip must go through it unchanged. Two renderers produce it:

* ``render_figure_matplotlib``: the recipe as written (librosa specshow in a default-size
  figure, savefig at dpi 50, PNG read back as RGB). ~120 ms per clip here (bench/render.py).
* ``render_figure`` (fast): the same pixels. Everything outside the plot area never depends on
  the data, and inside it the non-antialiased QuadMesh paints each pixel with the colour of
  exactly one data cell (or not at all) regardless of the colours. So per geometry we render
  once: the full frame, and an "index image" whose unique colours say which cell paints which
  pixel. Per clip we look up the cell colours, scatter them through the index image, and let
  matplotlib's own Agg renderer draw the few antialiased artists that overlap the plot area
  (tick marks, spines) on top, so their blending is exact by construction.

Both use ``Figure`` + ``FigureCanvasAgg``, never pyplot's global state, so Streamlit sessions
can render concurrently. Renders assume matplotlib's default rcParams, as the recipe did.

``logmel`` is a plain full-bleed log-mel image (no axes) for datasets without a figure recipe.
"""
from __future__ import annotations

import io
import threading
from functools import lru_cache

import librosa
import librosa.display
import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, NoNorm, Normalize
from matplotlib.figure import Figure
from PIL import Image

from qmoe.errors import AudioError, ConfigError

FIGURE_SR = 22050
LOGMEL = dict(n_fft=2048, hop_length=512, n_mels=128, top_db=80.0, cmap="magma")

_VERSIONS = f"librosa {librosa.__version__}, matplotlib {matplotlib.__version__}"
RECIPES = {
    "esc50-figure": (
        "sr 22050 mono; librosa.feature.melspectrogram defaults (n_fft 2048, hop 512, 128 mels, "
        "power 2); power_to_db(ref=np.max); specshow(x_axis='time', y_axis='mel', default cmap) "
        "in a default 6.4x4.8 in figure; savefig dpi 50, Agg; RGB uint8 240x320; " + _VERSIONS),
    "logmel": (
        "sr 22050 mono; melspectrogram (n_fft 2048, hop 512, 128 mels, power 2); "
        "power_to_db(ref=np.max, top_db 80); [-80, 0] dB -> magma, 8-bit rounded; "
        "low frequencies at the bottom, one pixel per frame and band, no axes; "
        "RGB uint8 128 x n_frames; " + _VERSIONS),
}
_RECIPE_SR = {"esc50-figure": FIGURE_SR, "logmel": FIGURE_SR}


def mel_db(samples: np.ndarray, sr: int = FIGURE_SR) -> np.ndarray:
    """Steps 2-3 of the recipe: librosa's default mel power spectrogram in dB re its maximum."""
    samples = _check_samples(samples)
    S = librosa.feature.melspectrogram(y=samples, sr=sr)
    return librosa.power_to_db(S, ref=np.max)


def render_figure_matplotlib(samples: np.ndarray, sr: int = FIGURE_SR) -> np.ndarray:
    """The ESC-50 figure exactly as the recipe makes it: uint8 RGB (240, 320, 3)."""
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    librosa.display.specshow(mel_db(samples, sr), sr=sr, x_axis="time", y_axis="mel", ax=ax)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=50)
    return np.asarray(Image.open(png).convert("RGB"))


def render_figure(samples: np.ndarray, sr: int = FIGURE_SR) -> np.ndarray:
    """The ESC-50 figure: the same pixels as `render_figure_matplotlib`, ~10-20x less drawing time."""
    S_db = mel_db(samples, sr)
    return _geometry(S_db.shape, sr).paint(S_db)


def render_logmel(samples: np.ndarray, sr: int = FIGURE_SR) -> np.ndarray:
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
    if sr != _RECIPE_SR[recipe]:
        raise ConfigError(f"Recipe {recipe!r} expects audio at {_RECIPE_SR[recipe]} Hz, got {sr} Hz; "
                          f"load it with load_audio(..., sr={_RECIPE_SR[recipe]}).")
    return _RENDERERS[recipe](samples, sr)


def _check_samples(samples) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim != 1 or samples.size == 0:
        raise AudioError(f"Expected non-empty mono samples (1-D), got shape {samples.shape}; "
                         f"decode the file with qmoe.audio.load_audio first.")
    if not np.isfinite(samples).all():
        raise AudioError("The samples contain NaN or infinite values; decode the file with "
                         "qmoe.audio.load_audio, which rejects such audio.")
    return samples.astype(np.float32, copy=False)


class _FigureGeometry:
    """Everything about one figure layout (mel bands x frames at a rate) that is not the data."""

    def __init__(self, shape: tuple[int, int], sr: int):
        fig = Figure()
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        mesh = librosa.display.specshow(np.zeros(shape, np.float32) - np.arange(shape[1]),
                                        sr=sr, x_axis="time", y_axis="mel", ax=ax)
        fig.set_dpi(50)                    # what savefig(dpi=50) does for the duration of the save
        canvas.draw()
        self.frame = np.asarray(canvas.buffer_rgba())[..., :3].copy()

        # The artists drawn after the mesh (Axes.draw: zorder order, axes 1.5, spines 2.5).
        ticks = [t for axis in (ax.xaxis, ax.yaxis) for t in axis._update_ticks()]
        self.overlays = [a for t in ticks for a in (t.gridline, t.tick1line, t.tick2line)
                         if a.get_visible()] + list(ax.spines.values())
        for a in self.overlays + [ax.xaxis, ax.yaxis]:
            a.set_visible(False)

        canvas.draw()                      # the mesh alone over the axes background
        self.base = np.asarray(canvas.buffer_rgba()).copy()

        n = shape[0] * shape[1]            # index image: cell i painted with colour i + 1
        code = np.arange(1, n + 1)
        mesh.set_cmap(ListedColormap(np.stack([code >> 16, (code >> 8) & 255, code & 255], 1) / 255))
        mesh.set_norm(NoNorm())
        mesh.set_array(np.arange(n).reshape(shape))
        canvas.draw()
        rgb = np.asarray(canvas.buffer_rgba())[..., :3].astype(np.int64)
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        painted = (code >= 1) & (code <= n)
        rows, cols = np.nonzero(painted)
        self.box = np.s_[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        self.pixels = np.nonzero(painted[self.box])
        self.cells = code[self.box][self.pixels] - 1

        for a in self.overlays:
            a.set_visible(True)
        self.renderer = canvas.get_renderer()
        self.lock = threading.Lock()       # the renderer's buffer is shared by all callers

    def paint(self, S_db: np.ndarray) -> np.ndarray:
        # Colours as QuadMesh.to_rgba computes them, rounded to 8 bits as Agg does.
        rgba = librosa.display.cmap(S_db)(Normalize()(np.ma.asarray(S_db)))
        colours = np.floor(rgba[..., :3].reshape(-1, 3) * 255 + 0.5).astype(np.uint8)
        area = self.base[self.box].copy()
        area[..., :3][self.pixels] = colours[self.cells]
        out = self.frame.copy()
        with self.lock:
            buffer = np.asarray(self.renderer.buffer_rgba())
            buffer[self.box] = area
            for artist in self.overlays:
                artist.draw(self.renderer)
            out[self.box] = buffer[self.box][..., :3]
        return out


@lru_cache(maxsize=8)
def _geometry(shape: tuple[int, int], sr: int) -> _FigureGeometry:
    return _FigureGeometry(shape, sr)
