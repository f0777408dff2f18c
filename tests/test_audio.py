"""The audio front end on real ESC-50 fold-4 clips: good files decode like librosa.load at 44.1 kHz
(ESC-50's own rate: its clips pass unchanged), bad ones fail with an AudioError that says what is
wrong, and any clip becomes 5 s training windows."""
import io

import librosa
import numpy as np
import pytest
import soundfile as sf

from qmoe.audio.decode import MAX_SECONDS, SAMPLE_RATE, WINDOW_SAMPLES, AudioClip, load_audio, training_windows
from qmoe.core.errors import AudioError, ConfigError
from qmoe.core.paths import SHARED_DIR

AUDIO_DIR = SHARED_DIR / "datasets" / "esc50" / "audio"
FIVE_SECONDS = 5 * 44100


@pytest.fixture(scope="module")
def flac():
    return sorted(AUDIO_DIR.glob("*.flac"))[0]


@pytest.fixture(scope="module")
def clip44k(flac):
    samples, sr = sf.read(flac, dtype="float32")
    return samples, sr


def write(path, samples, sr, **kw):
    sf.write(path, samples, sr, **kw)
    return path


def assert_audio_error(source, phrase, **kw):
    with pytest.raises(AudioError, match=phrase):
        load_audio(source, **kw)


# good input --------------------------------------------------------------------------------

def test_flac_decodes_exactly_like_librosa_load(flac, clip44k):
    clip = load_audio(flac)
    assert isinstance(clip, AudioClip) and SAMPLE_RATE == 44100
    assert clip.samples.dtype == np.float32 and clip.samples.shape == (FIVE_SECONDS,)
    assert (clip.sr, clip.original_sr, clip.channels, clip.trimmed) == (44100, 44100, 1, False)
    assert clip.duration_s == pytest.approx(5.0) and clip.source == flac.name
    np.testing.assert_array_equal(clip.samples, librosa.load(flac, sr=44100)[0])
    np.testing.assert_array_equal(clip.samples, clip44k[0])      # native 44.1 kHz: unchanged


def test_22050_hz_is_still_available_on_request(flac):
    clip = load_audio(flac, sr=22050)
    assert (clip.sr, clip.original_sr, clip.samples.shape) == (22050, 44100, (5 * 22050,))
    np.testing.assert_array_equal(clip.samples, librosa.load(flac, sr=22050)[0])


def test_bytes_and_file_like_give_the_same_samples(flac):
    from_path = load_audio(flac).samples
    np.testing.assert_array_equal(load_audio(flac.read_bytes()).samples, from_path)
    upload = io.BytesIO(flac.read_bytes())
    upload.name = "my clip.flac"
    upload.read(10)                                  # a half-read upload is rewound
    clip = load_audio(upload)
    np.testing.assert_array_equal(clip.samples, from_path)
    assert clip.source == "my clip.flac"


@pytest.mark.parametrize("fmt,subtype,ext", [("WAV", "PCM_16", "wav"), ("OGG", "VORBIS", "ogg"),
                                             ("MP3", "MPEG_LAYER_III", "mp3")])
def test_other_formats_decode_like_librosa_load(tmp_path, clip44k, fmt, subtype, ext):
    path = write(tmp_path / f"clip.{ext}", *clip44k, format=fmt, subtype=subtype)
    clip = load_audio(path)
    assert clip.samples.shape == (FIVE_SECONDS,)
    np.testing.assert_array_equal(clip.samples, librosa.load(path, sr=44100)[0])


def test_stereo_48k_is_downmixed_and_resampled(tmp_path, clip44k):
    samples, sr = clip44k
    left = librosa.resample(samples, orig_sr=sr, target_sr=48000)[: 5 * 48000]
    path = write(tmp_path / "stereo.wav", np.stack([left, 0.5 * left[::-1]], 1), 48000, subtype="FLOAT")
    clip = load_audio(path)
    assert (clip.channels, clip.original_sr, clip.samples.shape) == (2, 48000, (FIVE_SECONDS,))
    np.testing.assert_array_equal(clip.samples, librosa.load(path, sr=44100)[0])


def test_long_clip_is_trimmed_and_flagged(tmp_path, clip44k):
    samples, sr = clip44k
    path = write(tmp_path / "long.flac", np.tile(samples, 14), sr)          # 70 s
    clip = load_audio(path)
    assert clip.trimmed and clip.duration_s == pytest.approx(MAX_SECONDS)
    assert clip.samples.shape == (int(MAX_SECONDS * 44100),)
    assert not load_audio(path, max_seconds=80).trimmed


# bad input ---------------------------------------------------------------------------------

def test_long_clip_is_refused_on_request(tmp_path, clip44k):
    samples, sr = clip44k
    path = write(tmp_path / "long.flac", np.tile(samples, 14), sr)
    assert_audio_error(path, "70.0 s long, over the 60 s limit", on_long="refuse")


def test_empty_input(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    assert_audio_error(tmp_path / "empty.wav", "empty")
    assert_audio_error(b"", "empty")


def test_text_named_wav_is_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not a recording\n" * 50)
    assert_audio_error(path, "not an audio file")


def test_png_named_flac_is_not_audio(tmp_path, flac):
    png = SHARED_DIR / "datasets" / "esc50" / "mel-png" / f"{flac.stem}.png"
    path = tmp_path / "picture.flac"
    path.write_bytes(png.read_bytes())
    assert_audio_error(path, "not an audio file")


@pytest.mark.parametrize("ext,fmt,subtype,phrase", [
    ("flac", "FLAC", "PCM_16", "corrupt or truncated"),
    ("wav", "WAV", "PCM_16", "truncated"),
    ("ogg", "OGG", "VORBIS", "truncated"),
    ("mp3", "MP3", "MPEG_LAYER_III", "truncated"),
])
def test_truncated_file(tmp_path, clip44k, ext, fmt, subtype, phrase):
    data = write(tmp_path / f"whole.{ext}", *clip44k, format=fmt, subtype=subtype).read_bytes()
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(data[: int(len(data) * 0.9)])
    assert_audio_error(path, phrase)


def test_file_without_samples(tmp_path):
    path = write(tmp_path / "nothing.wav", np.zeros(0, np.float32), 44100)
    assert_audio_error(path, "no audio samples")


def test_too_short(tmp_path, clip44k):
    samples, sr = clip44k
    assert_audio_error(write(tmp_path / "blip.wav", samples[:1000], sr), "too short")


def test_silence(tmp_path, clip44k):
    samples, sr = clip44k
    assert_audio_error(write(tmp_path / "quiet.flac", np.zeros_like(samples), sr), "silent")
    faint = write(tmp_path / "faint.wav", samples * 1e-5, sr, subtype="FLOAT")
    assert_audio_error(faint, "silent")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_samples(tmp_path, clip44k, bad):
    samples, sr = clip44k
    samples = samples.copy()
    samples[1234] = bad
    assert_audio_error(write(tmp_path / "broken.wav", samples, sr, subtype="FLOAT"), "NaN or infinite")


def test_size_cap_is_checked_before_decoding(tmp_path, flac):
    # Not audio at all, yet refused for its size: the cap comes first.
    assert_audio_error(b"x" * 2000, "larger than the 0.001 MB limit", max_bytes=1000)
    assert_audio_error(flac, "larger than", max_bytes=1000)

    class Upload(io.BytesIO):
        name, size = "big.wav", 10**9
    assert_audio_error(Upload(b"not read"), "big.wav is larger than")


def test_invalid_arguments(flac):
    with pytest.raises(ConfigError, match="on_long"):
        load_audio(flac, on_long="drop")
    with pytest.raises(TypeError, match="path, bytes"):
        load_audio(12345)
    assert_audio_error(flac.with_name("missing.flac"), "not found")


# training windows ----------------------------------------------------------------------------

def synthetic(seconds, sr, seed=0):
    """A real-ish sound: a rising chirp under noise bursts, non-zero up to its last sample."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    chirp = 0.3 * np.sin(2 * np.pi * (200 * t + 150 * t ** 2))
    bursts = rng.normal(0, 0.2, len(t)) * (np.sin(2 * np.pi * 1.7 * t) > 0.3)
    return (chirp + bursts + 0.01).astype(np.float32)


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("seconds,starts", [(1, [0.0]), (5, [0.0]),
                                            (20, [0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0])])
def test_any_rate_and_length_becomes_44k_five_second_windows(tmp_path, sr, seconds, starts):
    path = write(tmp_path / f"clip-{sr}.wav", synthetic(seconds, sr), sr, subtype="FLOAT")
    clip = load_audio(path)
    assert (clip.sr, clip.original_sr) == (44100, sr) and len(clip.samples) == seconds * 44100
    windows, window_starts = training_windows(clip)
    assert WINDOW_SAMPLES == 220500
    assert windows.dtype == np.float32 and windows.shape == (len(starts), 220500)
    np.testing.assert_array_equal(window_starts, starts)
    for window, start in zip(windows, window_starts):
        i = int(start * 44100)
        part = clip.samples[i:i + WINDOW_SAMPLES]
        np.testing.assert_array_equal(window[:len(part)], part)      # the clip, unchanged
        assert (window[len(part):] == 0).all()                       # then digital silence
        assert np.abs(window[:len(part)]).max() > 0.1
    if seconds < 5:                                                   # padded at the end, not spread
        assert windows[0, len(clip.samples) - 1] != 0 and (windows[0, len(clip.samples):] == 0).all()


def test_real_clip_at_another_rate_gives_one_padded_window(tmp_path, clip44k):
    samples, sr = clip44k
    short = librosa.resample(samples[: 3 * sr], orig_sr=sr, target_sr=16000)   # 3 s at 16 kHz
    clip = load_audio(write(tmp_path / "short.flac", short, 16000))
    windows, starts = training_windows(clip)
    assert windows.shape == (1, 220500) and list(starts) == [0.0]
    assert (windows[0, 3 * 44100:] == 0).all() and np.abs(windows[0, :3 * 44100]).max() > 0.01


def test_partial_last_window_is_padded_and_every_sample_is_covered():
    samples = synthetic(7.3, 44100)                                    # 321,930 samples
    windows, starts = training_windows(samples, sr=44100)
    np.testing.assert_array_equal(starts, [0.0, 2.5])                  # 1 + ceil(2.3 / 2.5)
    np.testing.assert_array_equal(windows[1, : len(samples) - 110250], samples[110250:])
    assert (windows[1, len(samples) - 110250:] == 0).all()             # 0.2 s of silence
    rounding = synthetic(5.0 + 1 / 44100, 44100)                      # a 48 kHz 5 s clip resampled by librosa
    assert training_windows(rounding, sr=44100)[0].shape == (1, 220500)
    just_over = synthetic(5.0 + 442 / 44100, 44100)                    # 1 sample past the 10 ms slack
    assert training_windows(just_over, sr=44100)[0].shape == (2, 220500)
    exactly = synthetic(5.0, 44100)
    windows, _ = training_windows(exactly, sr=44100)
    assert windows.shape == (1, 220500) and (windows[0] == exactly).all()


def test_training_windows_refuse_other_rates_and_bad_input(flac):
    with pytest.raises(ConfigError, match="44100 Hz"):
        training_windows(load_audio(flac, sr=22050))
    with pytest.raises(ConfigError, match="44100 Hz"):
        training_windows(np.ones(1000, np.float32), sr=16000)
    with pytest.raises(ConfigError, match="leave sr out"):
        training_windows(load_audio(flac), sr=22050)
    with pytest.raises(AudioError, match="mono"):
        training_windows(np.zeros((2, 1000), np.float32))
