"""The audio front end under property-based tests (issue 15, item 3).

Any array (int8/16/32, uint8, float16/32/64; NaN, inf, denormals, huge values), 1-16 channels in either
layout, any sample rate from 1 Hz to 768 kHz, any length up to 20 minutes, and WAV/FLAC files cut anywhere
or with lying headers: each gives a valid clip or an AudioError whose message is true for that input (the
numbers in it are checked against the input), never another exception; memory stays bounded. Hypothesis
runs a fixed, bounded set of examples (derandomize=True), so CI sees the same ones every time.
"""
import io
import re
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qmoe.audio.decode import (MAX_PEAK, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, MIN_SECONDS, SILENCE_PEAK, WINDOW_SAMPLES,
                               load_array, load_audio, training_windows)
from qmoe.audio.spectrogram import MAX_PEAK as RENDER_MAX_PEAK
from qmoe.audio.spectrogram import mel_db, render_figure, render_logmel
from qmoe.core.errors import AudioError

BOUNDED = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = [np.int8, np.int16, np.int32, np.uint8, np.float16, np.float32, np.float64]
KINDS = ["noise", "noise", "tone", "tone", "dc", "silence", "denormal", "huge", "nan", "inf"]   # sound, twice as often
EDGE_RATES = [1, 2, MIN_SAMPLE_RATE - 1, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, MAX_SAMPLE_RATE + 1]
COMMON_RATES = [8000, 11025, 16000, 22050, 44100, 48000, 96000, 192000, 384000, 768000]
RATES = st.one_of(st.sampled_from(COMMON_RATES), st.integers(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE),   # 3 in 5 in range
                  st.sampled_from(COMMON_RATES), st.sampled_from(EDGE_RATES), st.integers(1, MAX_SAMPLE_RATE + 1000))
SECONDS = st.one_of(st.floats(0.1, 3), st.floats(0, 1200), st.floats(0.1, 3))   # up to 20 min, often near the limits
REAL_SAMPLES = 150_000          # beyond this many samples an array is a zero-stride constant view (cheap at 20 min)
FILE_SAMPLES = 60_000           # files stay small: their long cases are the deterministic tests below
NUMBER = r"(-?[\d.]+(?:e[+-]\d+)?)"


# --- what the input is, computed here independently of qmoe.audio.decode ------------------------------------------

def full_scale(a: np.ndarray) -> np.ndarray:
    """float64 samples at full scale 1: integers as PCM decoders scale them (int16 / 32768, uint8 around 128)."""
    if a.dtype.kind == "f":
        return a.astype(np.float64)
    half = 2.0 ** (8 * a.dtype.itemsize - 1)
    return (a.astype(np.float64) - (half if a.dtype.kind == "u" else 0)) / half


def from_full_scale(x: np.ndarray, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            return x.astype(dtype)
    half = 2.0 ** (8 * dtype.itemsize - 1)
    q = np.round(np.clip(np.nan_to_num(x, nan=0.0), -2, 2) * half) + (half if dtype.kind == "u" else 0)
    return np.clip(q, np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)


class Facts:
    """The truth about what the front end reads of an input (x: its first `limit` frames, float64 at full scale 1)."""

    def __init__(self, x: np.ndarray, rate: int, total_frames: int, limit: int, known: bool = True):
        self.rate, self.total, self.limit, self.known = rate, total_frames, limit, known   # known: frames read
        self.channels = x.shape[1]
        self.x = x                                            # float64 (frames read, channels)
        self.finite = bool(np.isfinite(x).all())
        self.peak = float(np.abs(x).max(initial=0.0)) if self.finite else np.inf
        self.low = self.high = 0.0
        if self.finite and self.peak <= MAX_PEAK and x.size:
            mono = x.astype(np.float32).mean(axis=1, dtype=np.float32)
            self.low, self.high = float(mono.min()), float(mono.max())


def array_facts(a: np.ndarray, rate: int, max_seconds: float) -> Facts:
    frames = a[:, None] if a.ndim == 1 else (a if a.shape[0] >= a.shape[1] else a.T)   # the documented layout rule
    limit = int(max_seconds * rate)
    return Facts(full_scale(frames[:limit]), rate, len(frames), limit)


def close(shown: str, value: float, rel: float = 0.06) -> bool:
    return abs(float(shown) - value) <= rel * abs(value) + 1e-300


# --- the verdicts ---------------------------------------------------------------------------------------

def assert_true_message(message: str, f: Facts, name: str, on_long: str = "trim", file: dict | None = None):
    """Every AudioError the front end can give, with what must hold of the input for it to be true."""
    file = file or {}
    if m := re.search(r"sampled at (\d+) Hz, outside the (\d+)-(\d+) Hz", message):
        assert int(m[1]) == f.rate and (int(m[2]), int(m[3])) == (MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)
        assert not MIN_SAMPLE_RATE <= f.rate <= MAX_SAMPLE_RATE, message
    elif "contains NaN or infinite sample values" in message:
        assert not f.finite, message
    elif m := re.search(rf"has a sample of magnitude {NUMBER}, beyond the 1e\+12", message):
        assert float(m[1]) > MAX_PEAK and np.isclose(np.abs(f.x), float(m[1]), rtol=0.06).any(), message
    elif m := re.search(r"is truncated: (\d+) of the (\d+) frames", message):
        found, announced = int(m[1]), int(m[2])
        assert found < announced, message
        assert announced == file["announced"], (message, file)
        if file.get("present") is not None:
            assert found == file["present"], (message, file)
    elif m := re.search(r"its data chunk announces (\d+) bytes, (\d+) are present", message):
        assert int(m[2]) < int(m[1]), message
    elif re.search(r"is corrupt or truncated \(|is not an audio file|could not be decoded", message):
        assert file.get("damaged"), (message, file)
    elif "is empty (0 bytes)" in message:
        assert file.get("size") == 0, message
    elif "contains no audio samples" in message:
        assert f.x.size == 0 and file.get("present") in (0, None), message
    elif m := re.search(rf"is too short \({NUMBER} s\); give a clip of at least 0.1 s", message):
        seconds = len(f.x) / f.rate
        assert float(m[1]) < MIN_SECONDS and (not f.known or abs(float(m[1]) - seconds) <= 0.0005), (message, seconds)
    elif m := re.search(rf"is silent \(peak amplitude {NUMBER}, below 0.0001 = -80 dBFS\)", message):
        peak = max(abs(f.low), abs(f.high))
        assert float(m[1]) < SILENCE_PEAK, message
        assert close(m[1], peak) if f.known else float(m[1]) <= peak * 1.06, (message, peak)
        assert_scope(message, f)
    elif m := re.search(rf"is DC only: a constant offset of \+?{NUMBER} .* stay within {NUMBER} of it", message):
        swing, offset = (f.high - f.low) / 2, (f.high + f.low) / 2
        assert float(m[2]) < SILENCE_PEAK, message
        if f.known:
            assert swing < SILENCE_PEAK * (1 + 1e-6) <= max(abs(f.low), abs(f.high)) * (1 + 1e-6), message
            assert close(m[1], offset, 0.006) and close(m[2], swing), (message, offset, swing)
        assert_scope(message, f)
    elif m := re.search(rf"is {NUMBER} s long, over the {NUMBER} s limit", message):
        assert on_long == "refuse" and float(m[1]) > float(m[2]), message
        lengths = [file["announced"], file["present"]] if file else [f.total]   # libsndfile fixes WAV headers up
        assert any(abs(float(m[1]) - n / f.rate) <= 0.05 + 1e-9 for n in lengths if n is not None), (message, file)
        assert ("as its header announces" in message) == bool(file), message
    elif re.search(r"holds more than .* s of audio, more than its header announces", message):
        assert on_long == "refuse" and file.get("announced", 0) <= f.limit, message
    else:
        pytest.fail(f"an AudioError no rule here vouches for: {message}")
    assert name in message


def assert_scope(message: str, f: Facts):
    """A verdict on the sound says when it is about the mix of several channels, or the first part of a long input."""
    assert ("mixed to mono" in message) == (f.channels > 1), message
    if f.known:
        assert ("its first" in message) == (f.total > f.limit), message


def assert_valid_clip(clip, f: Facts, on_long: str = "trim"):
    """A clip is returned only for input every rule accepts, and it is that input, resampled to 44.1 kHz."""
    frames = min(len(f.x), f.limit)
    if not f.known:                   # a cut FLAC the decoder read in part: in range, the rest unknowable
        assert MIN_SAMPLE_RATE <= f.rate <= MAX_SAMPLE_RATE and len(clip.samples) <= frames * 44100 / f.rate + 1
        return
    assert MIN_SAMPLE_RATE <= f.rate <= MAX_SAMPLE_RATE and f.finite and f.peak <= MAX_PEAK
    assert frames >= MIN_SECONDS * f.rate
    assert max(abs(f.low), abs(f.high)) >= SILENCE_PEAK * (1 - 1e-6)
    assert (f.high - f.low) / 2 >= SILENCE_PEAK * (1 - 1e-6)
    assert (clip.sr, clip.original_sr, clip.channels) == (44100, f.rate, f.channels)
    assert clip.trimmed == (f.total > f.limit) and not (clip.trimmed and on_long == "refuse")
    y = clip.samples
    assert y.dtype == np.float32 and y.ndim == 1 and not y.flags.writeable and np.isfinite(y).all()
    assert abs(len(y) - frames * 44100 / f.rate) <= 1 and clip.duration_s == len(y) / 44100
    windows, starts = training_windows(clip)
    assert windows.shape[1] == WINDOW_SAMPLES and len(windows) == len(starts) >= 1
    assert render_figure(windows[0]).shape == (240, 320, 3)


def outcome(call, *args, **kwargs):
    try:
        result = call(*args, **kwargs)
        event(f"{call.__name__}: valid")
        return result, None
    except AudioError as e:           # anything else propagates: that is the failure this file hunts
        event(f"{call.__name__}: " + re.sub(r"^(uploaded audio|the array)( \([^)]*\))? |[(:;,].*$", "", str(e)))
        return None, str(e)


# --- arrays -------------------------------------------------------------------------------------------

def content(kind: str, n: int, channels: int, rng: np.random.Generator, dtype) -> np.ndarray:
    """n x channels float64 samples at full scale 1 of one kind, before conversion to dtype."""
    t = np.arange(n)[:, None]
    tiny = np.finfo(dtype).smallest_subnormal if np.dtype(dtype).kind == "f" else 0
    return {
        "noise": lambda: rng.normal(0, 10 ** rng.uniform(-6, 0), (n, channels)),
        "tone": lambda: 0.5 * np.sin(2 * np.pi * rng.uniform(20, 4000) / 44100 * t + np.arange(channels)),
        "dc": lambda: np.full((n, channels), rng.uniform(-1, 1)),
        "silence": lambda: np.zeros((n, channels)),
        "denormal": lambda: rng.integers(-3, 4, (n, channels)) * max(float(tiny), 1e-310),
        "huge": lambda: rng.normal(0, 1, (n, channels)) * 10.0 ** rng.uniform(8, 307),
        "nan": lambda: _sprinkle(rng.normal(0, 0.3, (n, channels)), np.nan, rng),
        "inf": lambda: _sprinkle(rng.normal(0, 0.3, (n, channels)), -np.inf, rng),
    }[kind]()


def _sprinkle(x, value, rng):
    if x.size:
        x.flat[rng.integers(0, x.size, 1 + x.size // 1000)] = value
    return x


@st.composite
def arrays(draw):
    """(array, its rate): any dtype, 1-16 channels in either layout, 0 to 20 minutes at 1 Hz to 768 kHz."""
    dtype = draw(st.sampled_from(DTYPES))
    channels = draw(st.integers(1, 16))
    rate = draw(RATES)
    n = int(draw(SECONDS) * rate)
    kind = draw(st.sampled_from(KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if n * channels <= REAL_SAMPLES:
        a = from_full_scale(content(kind, n, channels, rng, dtype), dtype)
    else:                             # minutes at high rates: one row repeated by a zero stride, no memory
        row = from_full_scale(content(kind, 1, channels, rng, dtype), dtype)
        a = np.broadcast_to(row, (n, channels))
    if channels > 1 and draw(st.booleans()):
        a = a.T                       # librosa's (channels, frames)
    elif channels == 1 and draw(st.booleans()):
        a = a[:, 0]
    return a, rate


@BOUNDED
@given(arrays(), st.floats(1.0, 1.2), st.sampled_from(["trim", "refuse"]))
def test_any_array_gives_a_clip_or_a_true_error(array_rate, max_seconds, on_long):
    a, rate = array_rate
    f = array_facts(a, rate, max_seconds)
    clip, message = outcome(load_array, a, rate, max_seconds=max_seconds, on_long=on_long, name="the array")
    if clip is None:
        assert_true_message(message, f, "the array", on_long)
    else:
        assert_valid_clip(clip, f, on_long)


def test_int_arrays_give_what_their_pcm_file_gives():
    """Integer arrays are scaled as PCM decoders scale them: the same clip as the WAV file of those samples."""
    rng = np.random.default_rng(0)
    for dtype, subtype in [(np.int16, "PCM_16"), (np.int32, "PCM_32"), (np.uint8, "PCM_U8")]:
        a = from_full_scale(rng.normal(0, 0.2, (30_000, 3)), dtype)
        wav = io.BytesIO()
        sf.write(wav, full_scale(a), 48000, format="WAV", subtype=subtype)
        from_file, from_array = load_audio(wav.getvalue()), load_array(a, 48000)
        np.testing.assert_array_equal(from_array.samples, from_file.samples, err_msg=subtype)
        np.testing.assert_array_equal(load_array(a.T, 48000).samples, from_file.samples)   # (channels, frames)


def test_arrays_of_no_audio_type_or_shape_are_refused():
    for bad, phrase in [(np.ones(5000, complex), "holds complex128 values"), (np.ones(5000, bool), "holds bool"),
                        (np.ones((3, 3, 3000)), r"has shape \(3, 3, 3000\)"), (np.zeros((0, 2)), "no audio samples")]:
        with pytest.raises(AudioError, match=phrase):
            load_array(bad, 44100)


# --- files: valid, cut anywhere, header only, lying headers --------------------------------------------

def chunk(data: bytes, tag: bytes) -> int:
    """Offset of a RIFF chunk's body."""
    return data.index(tag) + 8


@st.composite
def files(draw):
    """(file bytes, what is true of it): WAV or FLAC, 1-16 channels, any rate, maybe cut or lying."""
    fmt, subtype = draw(st.sampled_from([("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "FLOAT"),
                                         ("WAV", "PCM_U8"), ("FLAC", "PCM_16"), ("FLAC", "PCM_24")]))
    flac = fmt == "FLAC"
    channels = draw(st.integers(1, 8 if flac else 16))
    rate = draw(st.one_of(st.sampled_from([r for r in COMMON_RATES + EDGE_RATES if not flac or r <= 655350]),
                          st.integers(MIN_SAMPLE_RATE, 655350 if flac else MAX_SAMPLE_RATE),
                          st.integers(1, 655350 if flac else MAX_SAMPLE_RATE + 1000)))
    if flac and rate > 65535:
        rate -= rate % 10             # FLAC stores rates above 65535 Hz in tens of Hz
    n = min(int(draw(SECONDS) * rate), FILE_SAMPLES // channels)
    kinds = ["noise", "tone", "dc", "silence"] + ([] if subtype != "FLOAT" else ["huge", "nan", "inf"])
    kind = draw(st.sampled_from(kinds))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = content(kind, n, channels, rng, np.float32)
    if kind == "huge":
        x = np.clip(x, -3e38, 3e38)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32) if subtype == "FLOAT" else np.clip(x, -1, 1), rate, format=fmt, subtype=subtype)
    data = buf.getvalue()
    decoded = (sf.read(io.BytesIO(data), dtype="float64", always_2d=True)[0] if data   # what it holds, by soundfile
               else np.zeros((0, channels)))                                        # (an empty FLAC is 0 bytes)
    truth = {"announced": n, "present": n, "rate": rate, "damaged": False, "cut": False, "decoded": decoded}
    damage = draw(st.sampled_from(["none", "cut", "header only", "announce more", "announce less", "rate"]))
    if damage == "cut":
        data = data[:draw(st.integers(0, len(data)))]
    elif damage == "header only":
        data = data[:chunk(data, b"data")] if not flac else data[:42]
    elif damage == "announce more" and not flac:
        pos, extra = chunk(data, b"data") - 4, draw(st.integers(1, 10**6))
        data = data[:pos] + (len(data) - pos - 4 + extra).to_bytes(4, "little") + data[pos + 4:]
        truth["announced"] = (len(data) - pos - 4 + extra) // _block_align(data)
    elif damage == "announce more":      # FLAC STREAMINFO: 36-bit total samples at bytes 21.5-25
        total = n + draw(st.integers(1, 10**6))
        head = int.from_bytes(data[21:26], "big") & ~((1 << 36) - 1) | total
        data = data[:21] + head.to_bytes(5, "big") + data[26:]
        truth["announced"] = total
    elif damage == "announce less" and not flac and n > 1:
        keep = draw(st.integers(0, n - 1))
        pos = chunk(data, b"data") - 4
        data = data[:pos] + (keep * _block_align(data)).to_bytes(4, "little") + data[pos + 4:]
        truth["announced"] = truth["present"] = keep
    elif damage == "rate" and not flac:
        new = draw(st.one_of(st.sampled_from([0, 1, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE + 1, 2**32 - 1]),
                             st.integers(0, 2**32 - 1)))
        pos = chunk(data, b"fmt ") + 4
        data = data[:pos] + new.to_bytes(4, "little") + data[pos + 4:]
        truth["rate"] = new
    else:
        damage = "none"
    whole = buf.getvalue()
    if flac and damage in ("cut", "header only"):
        truth["present"] = None               # whatever the decoder recovers
    elif not flac and damage in ("cut", "header only", "announce more"):
        start, align = chunk(whole, b"data"), _block_align(whole)
        in_file = max(0, len(data) - start) // align          # frames whose bytes are there (a pad byte too)
        truth["present"] = min(truth["announced"], in_file)
        truth["decoded"] = _decoded(data, decoded)            # once announced, a pad byte is a sample
    known = truth["present"] is not None
    truth["cut"] = truth["present"] < truth["announced"] if known else len(data) < len(whole)
    truth["damaged"] = len(data) < len(whole) or damage in ("announce more", "rate")
    truth["size"] = len(data)
    return data, truth


def _decoded(data: bytes, otherwise: np.ndarray) -> np.ndarray:
    try:
        return sf.read(io.BytesIO(data), dtype="float64", always_2d=True)[0]
    except sf.LibsndfileError:                # no header left to read: no content claims either
        return otherwise


def _block_align(wav: bytes) -> int:
    fmt = chunk(wav, b"fmt ")
    return int.from_bytes(wav[fmt + 12:fmt + 14], "little")


@settings(BOUNDED, max_examples=150)     # small files: cheap examples, so more of them
@given(files(), st.floats(1.0, 2.0), st.sampled_from(["trim", "refuse"]))
def test_any_file_gives_a_clip_or_a_true_error(file, max_seconds, on_long):
    data, truth = file
    rate, present, limit = truth["rate"], truth["present"], int(max_seconds * truth["rate"])
    held = truth["decoded"] if present is None else truth["decoded"][:present]
    f = Facts(held[:limit], rate, len(held), limit, known=present is not None)
    clip, message = outcome(load_audio, data, max_seconds=max_seconds, on_long=on_long)
    if clip is None:
        assert_true_message(message, f, "uploaded audio", on_long, truth)
    else:
        if truth["cut"] and f.known:  # a cut or over-announcing file passes only where the cut lies past the limit
            assert clip.trimmed, truth
        assert_valid_clip(clip, f, on_long)


# --- the messages, held to the truth ----------------------------------------------------------------

def wav_bytes(samples, rate=44100, subtype="PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def tone(n, rate=44100, channels=1):
    return np.tile(0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)[:, None], channels).astype(np.float32)


@pytest.mark.parametrize("channels,subtype", [(1, "PCM_16"), (2, "PCM_24"), (3, "FLOAT")])
def test_truncated_file_reports_announced_and_found_frames(channels, subtype):
    data = wav_bytes(tone(73485, channels=channels), subtype=subtype)
    start, align = chunk(data, b"data"), _block_align(data)
    for cut in (len(data) - 1, start + (len(data) - start) * 2 // 3, start + 1, start):
        found = (cut - start) // align
        with pytest.raises(AudioError, match=rf"is truncated: {found} of the 73485 frames its header announces"):
            load_audio(data[:cut])


def test_header_only_file_reports_zero_of_the_announced_frames():
    data = wav_bytes(tone(73485))
    with pytest.raises(AudioError, match=r"truncated: 0 of the 73485 frames its header announces are present"):
        load_audio(data[:chunk(data, b"data")])
    with pytest.raises(AudioError, match="contains no audio samples"):        # a real empty recording
        load_audio(wav_bytes(np.zeros((0, 1), np.float32)))


def test_cut_or_over_announcing_flac_is_corrupt_or_truncated_with_the_decoders_reason():
    buf = io.BytesIO()
    sf.write(buf, tone(20000), 44100, format="FLAC")
    data = bytearray(buf.getvalue())
    head = int.from_bytes(data[21:26], "big") & ~((1 << 36) - 1) | 50000     # STREAMINFO: 50000 frames
    data[21:26] = head.to_bytes(5, "big")
    for lying in (bytes(data), buf.getvalue()[:len(data) // 2]):
        with pytest.raises(AudioError, match=r"is corrupt or truncated \(.*(fseek|lost sync).*\)"):
            load_audio(lying)


@pytest.mark.parametrize("rate", [1, 100, MIN_SAMPLE_RATE - 1, MAX_SAMPLE_RATE + 1, 1_000_000])
def test_rates_no_microphone_records_are_refused_with_the_rate_and_the_range(rate):
    message = rf"sampled at {rate} Hz, outside the 2000-768000 Hz that microphones and recorders use"
    with pytest.raises(AudioError, match=message):
        load_audio(wav_bytes(tone(max(rate, 10), rate), rate))
    with pytest.raises(AudioError, match=message):
        load_array(tone(max(rate, 10), rate), rate)
    for ok in (MIN_SAMPLE_RATE, MAX_SAMPLE_RATE):
        assert load_array(tone(ok), ok).original_sr == ok


def test_dc_only_and_silence_are_refused_with_the_measured_level():
    rng = np.random.default_rng(0)
    dc = (0.3 + rng.normal(0, 1e-6, 44100)).astype(np.float32)
    with pytest.raises(AudioError, match=r"is DC only: a constant offset of \+0.3 .* stay within [0-9.]+e-0[56] of "
                                         r"it, below 0.0001 = -80 dBFS"):
        load_audio(wav_bytes(dc, subtype="FLOAT"))
    with pytest.raises(AudioError, match=r"the array \(mixed to mono\) is DC only: a constant offset of -0.5"):
        load_array(np.full((2, 44100), -0.5, np.float32), 44100)
    with pytest.raises(AudioError, match=r"\(mixed to mono\) is silent \(peak amplitude 0.0e\+00"):
        load_array(np.stack([tone(44100)[:, 0], -tone(44100)[:, 0]], 1), 44100)   # channels cancel
    with pytest.raises(AudioError, match=r"is silent \(peak amplitude 5.0e-05, below 0.0001"):
        load_audio(wav_bytes(tone(44100) * 1e-4, subtype="FLOAT"))
    # a step is a click, something to hear: not DC only
    assert load_array(np.r_[np.zeros(22050), np.full(22050, 0.5)].astype(np.float32), 44100)


def test_numbers_never_print_as_the_limit_they_miss():
    with pytest.raises(AudioError, match=r"peak amplitude 9.99\d*e-05, below 0.0001"):
        load_array(tone(44100) * np.float32(0.99999 * 2e-4), 44100)
    with pytest.raises(AudioError, match=r"too short \(0.0999\d* s\); give a clip of at least 0.1 s"):
        load_array(tone(4409), 44100)


# --- extreme magnitudes: the renderer's IndexError -------------------------------------------------------

def test_extreme_float_wav_is_refused_with_its_peak_not_an_index_error():
    y = tone(44100 * 2) * np.float32(1e30)          # the corpus file: a valid float WAV, samples ~1e30
    with pytest.raises(AudioError, match=r"has a sample of magnitude 5.0e\+29, beyond the 1e\+12 accepted"):
        load_audio(wav_bytes(y, subtype="FLOAT"))
    with pytest.raises(AudioError, match=r"has a sample of magnitude 5.0e\+299"):
        load_audio(wav_bytes(tone(44100).astype(np.float64) * 1e300, subtype="DOUBLE"))
    for render, n in ((render_logmel, 44100), (render_figure, 220500)):
        with pytest.raises(AudioError, match=r"The samples reach 5.00e\+29, beyond the \+-1e\+15"):
            render(np.resize(y, n))             # was: IndexError (logmel), an all-black figure (esc50-figure)


def test_the_largest_accepted_magnitudes_render_the_figure_of_the_sound():
    y = tone(220500) + np.random.default_rng(0).normal(0, 0.05, (220500, 1)).astype(np.float32)
    clip = load_array(y * np.float32(MAX_PEAK), 44100)
    normal = render_figure(load_array(y, 44100).samples)
    loud = render_figure(training_windows(clip)[0][0])
    assert (loud == normal).all(axis=2).mean() > 0.99 and len(np.unique(loud.reshape(-1, 3), axis=0)) > 50
    huge = render_figure(y[:, 0] * np.float32(RENDER_MAX_PEAK))
    assert (huge == normal).all(axis=2).mean() > 0.99


@st.composite
def sample_vectors(draw):
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(KINDS))
    n = draw(st.one_of(st.sampled_from([0, 1, 1024, 1025]), st.integers(0, 60_000)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return from_full_scale(content(kind, n, 1, rng, dtype), dtype)[:, 0]


@pytest.mark.filterwarnings("ignore:n_fft=.*too large:UserWarning")   # librosa pads short logmel input
@BOUNDED
@given(sample_vectors())
def test_renderers_and_windows_take_any_samples_or_say_why_not(y):
    x = y.astype(np.float64)
    finite = bool(np.isfinite(x).all())
    for call in (mel_db, render_logmel):
        image, message = outcome(call, y)
        if image is not None:             # logmel pads short input (librosa warns); the figure recipe needs a frame
            assert finite and np.abs(x).max() <= RENDER_MAX_PEAK and np.isfinite(image).all()
            assert len(y) > 1024 or call is render_logmel
        elif "Expected non-empty mono" in message:
            assert y.size == 0
        elif "NaN or infinite" in message:
            assert not finite
        elif m := re.search(rf"The samples reach {NUMBER}, beyond the \+-1e\+15", message):
            assert finite and float(m[1]) > RENDER_MAX_PEAK and close(m[1], np.abs(x).max(), 0.01)
        else:
            assert re.search(rf"too short to render \({len(y)} samples\)", message) and len(y) <= 1024, message
    windows, message = outcome(training_windows, y, sr=44100)
    if windows is None:
        assert y.size == 0 or not finite or np.abs(x).max() > np.finfo(np.float32).max, message
    else:
        np.testing.assert_array_equal(windows[0][0][:len(y)], y.astype(np.float32)[:WINDOW_SAMPLES])


# --- length and memory ------------------------------------------------------------------------------------

def test_twenty_minutes_are_trimmed_or_refused_by_the_limit():
    rng = np.random.default_rng(1)
    y = (0.3 * rng.standard_normal((20 * 60 * 2000, 1))).astype(np.float32)       # 20 min at 2 kHz
    buf = io.BytesIO()
    sf.write(buf, y, 2000, format="FLAC")
    clip = load_audio(buf.getvalue())
    assert clip.trimmed and clip.duration_s == 60.0
    with pytest.raises(AudioError, match=r"is 1200.0 s long, over the 60 s limit"):
        load_audio(buf.getvalue(), on_long="refuse")
    with pytest.raises(AudioError, match=r"is 1200.0 s long, over the 60 s limit"):
        load_array(y, 2000, on_long="refuse")
    pcm = sf.read(io.BytesIO(buf.getvalue()), dtype="int16")[0]                     # what the FLAC holds
    np.testing.assert_array_equal(load_array(pcm, 2000).samples, clip.samples)


def traced_peak(call, *args, **kwargs) -> int:
    tracemalloc.start()
    try:
        call(*args, **kwargs)
    except AudioError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_memory_is_bounded_by_the_limit_not_the_input():
    """20 minutes of 16 channels at 768 kHz (14.7 G samples, a zero-stride view): only the first 60 s are
    read, in blocks; memory stays near 8 bytes per frame of those 60 s, whatever the channel count."""
    sixty = 60 * MAX_SAMPLE_RATE
    row = np.array([[1000, -1000] * 8], np.int16)
    long = np.broadcast_to(row, (20 * sixty, 16))
    peak = traced_peak(load_array, long, MAX_SAMPLE_RATE)
    assert peak < 8 * sixty + 64e6, f"{peak / 1e6:.0f} MB"
    ten = 10 * MAX_SAMPLE_RATE                                                 # real sound, resampled too
    peak = traced_peak(load_array, (0.5 * np.sin(np.arange(ten) * 0.01)).astype(np.float32), MAX_SAMPLE_RATE)
    assert peak < 8 * ten + 32e6, f"{peak / 1e6:.0f} MB"
    # a file's length is what its header claims, too: a long file costs what a short one does
    buf = io.BytesIO()
    sf.write(buf, tone(8000 * 180, 8000), 8000, format="FLAC")                  # 3 minutes
    assert traced_peak(load_audio, buf.getvalue(), max_seconds=1.0) < 40e6
