"""Rendering parity: fold-4 audio through our recipe must land on the shared ESC-50 figures, and the
fast renderer must give exactly the matplotlib renderer's pixels."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from qmoe.audio import load_audio
from qmoe.errors import AudioError, ConfigError
from qmoe.paths import SHARED_DIR
from qmoe.spectrogram import (RECIPES, render, render_figure, render_figure_matplotlib,
                              render_logmel)

ESC50 = SHARED_DIR / "datasets" / "esc50"
CLIPS = sorted((ESC50 / "audio").glob("*.flac"))[::17][:24]      # 24 clips spread over fold 4
MAX_MEAN_ABS_DIFF = 0.01   # measured: 0 on most clips, <= 3e-5 on the rest (one pixel off by 1-3)


@pytest.fixture(scope="module")
def samples():
    return {path.stem: load_audio(path).samples for path in CLIPS}


@pytest.fixture(scope="module")
def figures(samples):
    return {name: render_figure_matplotlib(y) for name, y in samples.items()}


def test_matplotlib_render_matches_the_shared_figures(figures):
    diffs = []
    for name, image in figures.items():
        assert image.dtype == np.uint8 and image.shape == (240, 320, 3)
        reference = np.asarray(Image.open(ESC50 / "mel-png" / f"{name}.png").convert("RGB"))
        diffs.append(np.abs(image.astype(int) - reference).mean())
        print(f"{name}: mean abs pixel diff {diffs[-1]:.2e}")
    print(f"{len(diffs)} clips: mean {np.mean(diffs):.2e}, max {np.max(diffs):.2e}")
    assert max(diffs) < MAX_MEAN_ABS_DIFF


def test_fast_renderer_is_pixel_exact(samples, figures):
    for name, y in samples.items():
        np.testing.assert_array_equal(render_figure(y), figures[name], err_msg=name)


@pytest.mark.parametrize("seconds", [1.3, 12.0])
def test_fast_renderer_is_exact_for_other_lengths(samples, seconds):
    y = np.tile(next(iter(samples.values())), 3)[: int(seconds * 22050)]
    np.testing.assert_array_equal(render_figure(y), render_figure_matplotlib(y))


def test_concurrent_renders_do_not_interfere(samples, figures):
    names = list(samples)[:6] * 2
    with ThreadPoolExecutor(4) as pool:
        fast = list(pool.map(lambda n: render_figure(samples[n]), names))
        slow = list(pool.map(lambda n: render_figure_matplotlib(samples[n]), names[:4]))
    for name, image in zip(names, fast + slow):
        np.testing.assert_array_equal(image, figures[name], err_msg=name)


def test_logmel_is_full_bleed_with_low_frequencies_at_the_bottom():
    t = np.arange(5 * 22050) / 22050
    image = render_logmel(np.sin(2 * np.pi * 200 * t).astype(np.float32))
    assert image.dtype == np.uint8 and image.shape == (128, 216, 3)
    brightness = image.astype(int).sum(axis=(1, 2))
    assert brightness[-20:].mean() > 2 * brightness[:20].mean()


def test_render_dispatches_by_recipe(samples):
    y = next(iter(samples.values()))
    assert set(RECIPES) == {"esc50-figure", "logmel"}
    assert all("librosa" in text and "matplotlib" in text for text in RECIPES.values())
    np.testing.assert_array_equal(render(y, 22050), render_figure(y))
    np.testing.assert_array_equal(render(y, 22050, "logmel"), render_logmel(y))
    with pytest.raises(ConfigError, match="Unknown spectrogram recipe"):
        render(y, 22050, "cqt")
    with pytest.raises(ConfigError, match="expects audio at 22050 Hz"):
        render(y, 44100)


def test_renderers_reject_bad_samples():
    with pytest.raises(AudioError, match="NaN or infinite"):
        render_figure(np.array([0.1, np.nan] * 5000, np.float32))
    with pytest.raises(AudioError, match="mono"):
        render_figure(np.zeros((2, 22050), np.float32))
