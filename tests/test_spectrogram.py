"""Rendering parity: fold-4 audio through the upload path must land on the shared ESC-50 training
figures, and the fast renderer must give exactly the matplotlib (reference) renderer's pixels."""
import ctypes
import ctypes.util
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import librosa
import matplotlib
import numpy as np
import pytest
from PIL import Image

from qmoe.audio.decode import load_audio, training_windows
from qmoe.audio.spectrogram import (DATA_BOX, FIGURE_FRAMES, K_BLOCKS, PLOT_AREA, RECIPES, _log10f, _mel_power,
                                    _power_spectrum, _split_cells,
                                    mel_db, public_frame, render, render_figure, render_figure_matplotlib,
                                    render_logmel)
from qmoe.core.errors import AudioError, ConfigError
from qmoe.core.paths import DATA_DIR, SHARED_DIR

ESC50 = SHARED_DIR / "datasets" / "esc50"
FOLD4 = sorted((ESC50 / "audio").glob("4-*.flac"))
SPREAD = FOLD4[::20]                                          # 20 clips spread over fold 4
MAGMA = np.floor(matplotlib.colormaps["magma"](np.arange(256))[:, :3] * 255 + 0.5).astype(int)


def reference_png(path):
    return np.asarray(Image.open(ESC50 / "mel-png" / f"{path.stem}.png").convert("RGB"))


def magma_index(pixels):
    return np.array([np.flatnonzero((MAGMA == p).all(1))[0] for p in pixels])


@pytest.fixture(scope="module")
def windows():
    """5 s windows of the spread clips, through the upload path."""
    return {p.stem: training_windows(load_audio(p))[0][0] for p in SPREAD}


def test_fold4_upload_path_reproduces_the_training_figures():
    """THE issue-12 check: load_audio(FLAC) -> training_windows -> render_figure, all 400 clips."""
    assert len(FOLD4) == 400

    def check(path):
        clip = load_audio(path)
        wins, starts = training_windows(clip)
        assert clip.sr == 44100 and wins.shape == (1, 220500) and list(starts) == [0.0]
        image = render_figure(wins[0])
        reference = reference_png(path)
        assert image.dtype == np.uint8 and image.shape == reference.shape == (240, 320, 3)
        differs = (image != reference).any(axis=2)
        inside = int(differs[PLOT_AREA].sum())
        steps = np.abs(magma_index(image[PLOT_AREA][differs[PLOT_AREA]])
                       - magma_index(reference[PLOT_AREA][differs[PLOT_AREA]]))
        return path.stem, inside, int(differs.sum()) - inside, steps

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(check, FOLD4))
    exact = [name for name, inside, _, _ in results if inside == 0]
    outside = sum(out for _, _, out, _ in results)
    print(f"\nplot area (rows 30-213, cols 41-288) equal to mel-png: {len(exact)}/400 clips")
    for name, inside, _, steps in results:
        if inside:
            print(f"  {name}: {inside} pixel(s) differ, by {sorted(set(steps.tolist()))} colour step(s)")
    print(f"pixels differing outside the plot area, all 400 figures: {outside}")
    assert outside == 0
    assert len(exact) == 400


def test_reference_and_fast_renderers_agree(windows):
    for name, y in windows.items():
        np.testing.assert_array_equal(render_figure(y), render_figure_matplotlib(y), err_msg=name)
    # windows of short uploads are mostly digital silence; an all-silent window renders too
    short = training_windows(next(iter(windows.values()))[:30000], sr=44100)[0][0]
    for y in (short, np.zeros(220500, np.float32)):
        np.testing.assert_array_equal(render_figure(y), render_figure_matplotlib(y))


@pytest.mark.parametrize("seconds", [0.1, 1.3, 7.7, 12.0])
def test_renderers_agree_on_other_lengths(windows, seconds):
    y = np.resize(next(iter(windows.values())), int(seconds * 44100))
    fast = render_figure(y)
    np.testing.assert_array_equal(fast, render_figure_matplotlib(y))
    # another time axis, so matplotlib draws the frame; the data area is still the mesh's
    assert 1 + len(y) // 512 != FIGURE_FRAMES
    assert not np.array_equal(fast, render_figure(np.resize(y, 220500)))


def test_concurrent_renders_do_not_interfere(windows):
    names = list(windows)[:6] * 2
    serial = {name: render_figure(windows[name]) for name in names}
    with ThreadPoolExecutor(4) as pool:
        fast = list(pool.map(lambda n: render_figure(windows[n]), names))
        slow = list(pool.map(lambda n: render_figure_matplotlib(windows[n]), names[:4]))
    for name, image in zip(names + names[:4], fast + slow):
        np.testing.assert_array_equal(image, serial[name], err_msg=name)


def test_shipped_frame_is_the_public_figures_frame():
    frame = public_frame()
    assert frame.shape == (240, 320, 3) and (frame[DATA_BOX] == 255).all()
    assert (DATA_DIR / "esc50" / "figure-frame.png").is_file()
    outside = np.ones((240, 320), bool)
    outside[DATA_BOX] = False
    for name in ["1-100032-A-0", "2-102414-A-17", "3-100018-A-18", "5-103415-A-2"]:
        figure = np.asarray(Image.open(ESC50 / "mel-png" / f"{name}.png").convert("RGB"))
        np.testing.assert_array_equal(figure[outside], frame[outside], err_msg=name)
    # and the data area is what varies: the plot area plus the spine row/column above/left of it
    assert (DATA_BOX[0].start, DATA_BOX[1].start) == (PLOT_AREA[0].start - 1, PLOT_AREA[1].start - 1)


def test_mel_db_follows_the_recipe_numbers(windows):
    y = next(iter(windows.values()))
    S_db = mel_db(y)
    assert S_db.dtype == np.float32 and S_db.shape == (128, FIGURE_FRAMES)
    assert S_db.min() >= S_db.max() - 80 and abs(S_db.max()) < 1e-5
    # within float32 roundings of librosa's own computation (reflect padding, ref=max, top_db 80)
    S = librosa.feature.melspectrogram(y=y, sr=44100, pad_mode="reflect")
    np.testing.assert_allclose(S_db, librosa.power_to_db(S, ref=np.max), atol=2e-3)
    # the zero padding of librosa >= 0.10 is not the recipe: the edge frames differ
    S0 = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=44100), ref=np.max)
    assert np.abs(S0[:, 0] - S_db[:, 0]).max() > 0.1


def test_mel_bands_are_summed_in_openblas_order(windows):
    """Exact arithmetic (fractions) against the emulation: per bin block an fma chain from zero, or an even
    and an odd chain added, in the cells the threaded OpenBLAS kernel split; blocks added in float32."""
    power = _power_spectrum(next(iter(windows.values())))
    S = _mel_power(power)
    basis = librosa.filters.mel(sr=44100, n_fft=2048)
    split = np.zeros(S.shape, bool)
    for bands, frames in _split_cells(FIGURE_FRAMES):
        split[np.ix_(bands, frames)] = True
    assert 0.1 < split.mean() < 0.2
    rng = np.random.default_rng(0)
    cells = list(zip(rng.integers(0, 128, 150), rng.integers(0, FIGURE_FRAMES, 150)))
    cells += [tuple(c) for c in np.argwhere(split)[rng.choice(int(split.sum()), 150, replace=False)]]

    def chain(band, frame, bins):
        acc = np.float32(0)
        for k in bins:                           # exact fma: one rounding of acc + w * p
            exact = Fraction(float(basis[band, k])) * Fraction(float(power[frame, k])) + Fraction(float(acc))
            acc = _round_to_float32(exact)
        return acc

    for band, frame in cells:
        out = np.float32(0)
        for lo, hi in zip(K_BLOCKS[:-1], K_BLOCKS[1:]):
            bins = [k for k in np.flatnonzero(basis[band]) if lo <= k < hi]
            if split[band, frame]:
                part = chain(band, frame, [k for k in bins if k % 2 == 0]) + chain(
                    band, frame, [k for k in bins if k % 2 == 1])
            else:
                part = chain(band, frame, bins)
            out = np.float32(out + part)
        assert S[band, frame] == out, (band, frame)
    # blocks and splits matter: a plain bin-by-bin chain differs in some cells
    plain = np.stack([[chain(b, f, np.flatnonzero(basis[b])) for b in range(128)] for f in range(8)], 1)
    assert (plain != S[:, :8]).any()


def _round_to_float32(x: Fraction) -> np.float32:
    f = np.float32(float(x))
    candidates = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - x), int(np.float32(c).view(np.uint32)) & 1))


def test_log10f_is_glibcs():
    path = ctypes.util.find_library("m")
    if path is None or "libm.so.6" not in path:
        pytest.skip("glibc's libm is not available here")
    libm = ctypes.CDLL(path)
    libm.log10f.restype, libm.log10f.argtypes = ctypes.c_float, [ctypes.c_float]
    x = (10 ** np.random.default_rng(1).uniform(-10, 6, 20000)).astype(np.float32)
    expected = np.array([libm.log10f(float(v)) for v in x], np.float32)
    np.testing.assert_array_equal(_log10f(x), expected)


def test_logmel_is_full_bleed_with_low_frequencies_at_the_bottom():
    t = np.arange(5 * 22050) / 22050
    image = render_logmel(np.sin(2 * np.pi * 200 * t).astype(np.float32))
    assert image.dtype == np.uint8 and image.shape == (128, 216, 3)
    brightness = image.astype(int).sum(axis=(1, 2))
    assert brightness[-20:].mean() > 2 * brightness[:20].mean()


def test_render_dispatches_by_recipe(windows):
    y = next(iter(windows.values()))
    assert set(RECIPES) == {"esc50-figure", "logmel"}
    assert all("librosa" in text and "matplotlib" in text for text in RECIPES.values())
    assert "44100 Hz" in RECIPES["esc50-figure"] and "sr 22050" not in RECIPES["esc50-figure"]
    assert "11025" in RECIPES["esc50-figure"] and "-0.5" in RECIPES["esc50-figure"]
    np.testing.assert_array_equal(render(y, 44100), render_figure(y))
    y22 = librosa.resample(y, orig_sr=44100, target_sr=22050)
    np.testing.assert_array_equal(render(y22, 22050, "logmel"), render_logmel(y22))
    with pytest.raises(ConfigError, match="Unknown spectrogram recipe"):
        render(y, 44100, "cqt")
    with pytest.raises(ConfigError, match="expects audio at 44100 Hz"):
        render(y22, 22050)
    with pytest.raises(ConfigError, match="expects audio at 22050 Hz"):
        render(y, 44100, "logmel")
    with pytest.raises(ConfigError, match="44100 Hz"):
        render_figure(y22, 22050)


def test_renderers_reject_bad_samples():
    with pytest.raises(AudioError, match="NaN or infinite"):
        render_figure(np.array([0.1, np.nan] * 5000, np.float32))
    with pytest.raises(AudioError, match="mono"):
        render_figure(np.zeros((2, 44100), np.float32))
    with pytest.raises(AudioError, match="too short"):
        render_figure(np.ones(1000, np.float32))
