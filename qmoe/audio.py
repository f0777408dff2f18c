"""Audio front end: any common audio file -> float32 mono samples at the recipe's rate.

`load_audio` decodes at the file's native rate and resamples to 44,100 Hz, the rate of the ESC-50
figures the models were trained on (dataset README, recipe step 1: native 44.1 kHz audio, no
resampling; ESC-50 clips therefore pass through unchanged). It reproduces
``librosa.load(path, sr=44100)`` sample for sample (soundfile/libsndfile decode,
``librosa.to_mono``, ``librosa.resample(res_type="soxr_hq")``, which returns same-rate audio as
is). Formats are what libsndfile decodes: wav, flac, ogg (vorbis, opus), mp3, aiff, ... (no
ffmpeg fallback). ``load_audio(..., sr=22050)`` still serves recipes at that rate (``logmel``).

`training_windows` then brings a decoded clip to the training conditions: 5 s windows at 44.1 kHz
(every ESC-50 clip is 5 s; shorter ones were padded with digital silence).

Every way an upload can be unusable ends in an ``AudioError`` whose message says what is wrong
and what to do, so the app can show it as is.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from qmoe.errors import AudioError, ConfigError

SAMPLE_RATE = 44100            # the esc50-figure recipe's rate: ESC-50's native rate (README, step 1)
WINDOW_SECONDS = 5.0           # every ESC-50 clip, hence every training figure
WINDOW_SAMPLES = 220_500       # 5 s at 44.1 kHz
WINDOW_HOP_SECONDS = 2.5       # longer clips: 5 s windows every 2.5 s (50 % overlap)
MAX_SECONDS = 60.0             # longer clips are trimmed (flagged) or refused
MIN_SECONDS = 0.1              # shorter than this there is no spectrogram to speak of
MAX_BYTES = 50_000_000         # checked before decoding: 60 s of 48 kHz stereo float WAV is 23 MB
SILENCE_PEAK = 1e-4            # peak |sample| below this (-80 dBFS) counts as silent;
                               # the quietest ESC-50 fold-4 clip peaks at 0.022 (-33 dBFS)
MP3_FRAME_TOLERANCE = 0.01     # libsndfile's MP3 frame count can be an estimate
FORMATS_HINT = "wav, flac, ogg or mp3"


@dataclass(frozen=True, eq=False)
class AudioClip:
    """Decoded audio, ready for rendering, plus what the user should know about it."""

    samples: np.ndarray = field(repr=False)   # float32, mono, at `sr`, read-only
    sr: int
    duration_s: float
    original_sr: int
    channels: int
    trimmed: bool                              # True if cut to max_seconds
    source: str                                # file name, for messages and display


def load_audio(source, sr: int = SAMPLE_RATE, max_seconds: float = MAX_SECONDS,
               on_long: str = "trim", max_bytes: int = MAX_BYTES) -> AudioClip:
    """Decode `source` (path, bytes, or binary file-like such as Streamlit's UploadedFile).

    Samples come at the native rate resampled to `sr` (default 44,100 Hz, the esc50-figure
    recipe's; ESC-50 clips are natively 44.1 kHz and pass unchanged); `training_windows` then cuts
    or pads them to the 5 s of a training figure.

    Raises AudioError for empty, oversized, non-audio, truncated/corrupt, sample-less,
    NaN/inf, silent, too short, or (with ``on_long="refuse"``) too long input.
    """
    if on_long not in ("trim", "refuse"):
        raise ConfigError(f"on_long must be 'trim' or 'refuse', got {on_long!r}.")
    if not (isinstance(sr, (int, np.integer)) and sr > 0):
        raise ConfigError(f"sr must be a positive integer sample rate, got {sr!r}.")
    if not max_seconds > 0:
        raise ConfigError(f"max_seconds must be positive, got {max_seconds!r}.")

    data, name = _read_bytes(source, max_bytes)
    raw, native_sr, channels, trimmed = _decode(data, name, max_seconds, on_long)

    y = raw[:, 0] if channels == 1 else librosa.to_mono(raw.T)
    y = librosa.resample(y, orig_sr=native_sr, target_sr=int(sr), res_type="soxr_hq")
    y = np.ascontiguousarray(y, dtype=np.float32)
    y.flags.writeable = False                    # a clip is a value: safe to cache and share

    if len(y) < MIN_SECONDS * sr:
        raise AudioError(f"{name} is too short ({len(raw) / native_sr:.3f} s); "
                         f"give a clip of at least {MIN_SECONDS} s.")
    peak = float(np.abs(y).max())
    if peak < SILENCE_PEAK:
        raise AudioError(f"{name} is silent (peak amplitude {peak:.1e}, below {SILENCE_PEAK:g} "
                         f"= -80 dBFS); record or choose a clip with audible sound.")
    return AudioClip(samples=y, sr=int(sr), duration_s=len(y) / sr, original_sr=native_sr,
                     channels=channels, trimmed=trimmed, source=name)


WINDOW_SLACK_SECONDS = 0.01  # audio past a window's end that is only resampling's rounding, not another window


def training_windows(clip, sr: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bring a decoded clip to the training conditions: 5 s windows at 44.1 kHz.

    `clip` is an `AudioClip` from ``load_audio`` (at its default 44,100 Hz) or 1-D samples with
    ``sr=44100``. Returns ``(windows, starts)``: float32 windows of shape (n, 220500) and their
    start times in seconds (float64, (n,)).

    * A clip of at most 5 s gives one window: the clip followed by digital silence (zeros, at the
      end, as ESC-50 padded its shorter recordings) up to exactly 5 s.
    * A longer clip is cut into 5 s windows starting every 2.5 s (`WINDOW_HOP_SECONDS`, 50 %
      overlap): starts 0, 2.5, 5, ... up to the first window that reaches the end of the clip;
      that last window, if partial, is padded with silence at the end (it still holds more than
      2.5 s of the clip). So n = 1 + ceil((duration - 5 s - 10 ms) / 2.5 s): every sample is in a window, except
      up to 10 ms (`WINDOW_SLACK_SECONDS`) past the last window's end, which resampling rounds on (a 5 s clip at
      48 kHz resampled by librosa is 5 s + 1 sample; it is one window, not two).
    """
    if isinstance(clip, AudioClip):
        samples, rate = clip.samples, clip.sr
        if sr is not None and sr != rate:
            raise ConfigError(f"sr={sr} given for an AudioClip at {rate} Hz; leave sr out.")
    else:
        samples, rate = np.asarray(clip), SAMPLE_RATE if sr is None else sr
    if rate != SAMPLE_RATE:
        raise ConfigError(f"Training windows are at {SAMPLE_RATE} Hz, the clip is at {rate} Hz; "
                          f"decode it with load_audio(..., sr={SAMPLE_RATE}).")
    if samples.ndim != 1 or samples.size == 0:
        raise AudioError(f"Expected non-empty mono samples (1-D), got shape {samples.shape}; "
                         f"decode the file with load_audio first.")
    hop = int(round(WINDOW_HOP_SECONDS * SAMPLE_RATE))
    slack = int(round(WINDOW_SLACK_SECONDS * SAMPLE_RATE))
    n = 1 + max(0, -(-(len(samples) - WINDOW_SAMPLES - slack) // hop))       # ceil division
    starts = np.arange(n) * hop
    windows = np.zeros((n, WINDOW_SAMPLES), np.float32)
    for window, start in zip(windows, starts):
        part = samples[start:start + WINDOW_SAMPLES]
        window[:len(part)] = part
    return windows, starts / SAMPLE_RATE


def _read_bytes(source, max_bytes: int) -> tuple[bytes, str]:
    """All input bytes, refusing oversized input before anything is decoded."""
    too_big = (f"is larger than the {max_bytes / 1e6:g} MB limit; "
               f"upload a shorter clip (at most {MAX_SECONDS:g} s are used anyway).")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"Audio file not found: {path}.")
        if path.stat().st_size > max_bytes:
            raise AudioError(f"{path.name} {too_big}")
        data, name = path.read_bytes(), path.name
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > max_bytes:
            raise AudioError(f"The audio {too_big}")
        data, name = bytes(source), "uploaded audio"
    elif hasattr(source, "read"):
        name = Path(str(getattr(source, "name", "") or "uploaded audio")).name
        size = getattr(source, "size", None)
        if isinstance(size, int) and size > max_bytes:
            raise AudioError(f"{name} {too_big}")
        if hasattr(source, "seek"):
            source.seek(0)
        data = source.read(max_bytes + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"{name} must be opened in binary mode.")
        if len(data) > max_bytes:
            raise AudioError(f"{name} {too_big}")
    else:
        raise TypeError(f"load_audio takes a path, bytes or a binary file-like, "
                        f"not {type(source).__name__}.")
    if len(data) == 0:
        raise AudioError(f"{name} is empty (0 bytes); choose a {FORMATS_HINT} file with sound in it.")
    return bytes(data), name


def _decode(data: bytes, name: str, max_seconds: float, on_long: str):
    """(frames x channels float32, native rate, channels, trimmed), as librosa.load decodes."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            native_sr, channels, declared = f.samplerate, f.channels, f.frames
            fmt, log = f.format, f.extra_info
            limit = int(max_seconds * native_sr)
            if declared > limit and on_long == "refuse":
                raise _too_long(name, declared / native_sr, max_seconds)
            raw = f.read(frames=limit if declared > limit else -1, dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        if "not recognised" in str(e).lower():
            raise AudioError(f"{name} is not an audio file this app can read (format not recognised); "
                             f"upload {FORMATS_HINT}.") from None
        raise AudioError(f"{name} is corrupt or truncated ({e.error_string}); "
                         f"re-export or re-download the file.") from None
    except RuntimeError as e:   # other soundfile failures: still the file's fault
        raise AudioError(f"{name} could not be decoded ({e}); re-export it as {FORMATS_HINT}.") from None

    trimmed = declared > limit
    if len(raw) > limit:        # the header understated the length
        if on_long == "refuse":
            raise _too_long(name, len(raw) / native_sr, max_seconds)
        raw, trimmed = raw[:limit], True
    if not trimmed and _looks_truncated(len(raw), declared, fmt, log):
        raise AudioError(f"{name} is truncated: it ends before the length its header announces "
                         f"({len(raw)} of {declared} frames); re-export or re-download the file.")
    if len(raw) == 0:
        raise AudioError(f"{name} contains no audio samples; choose a clip with sound in it.")
    if not np.isfinite(raw).all():
        raise AudioError(f"{name} contains NaN or infinite sample values; "
                         f"re-export it as 16-bit PCM (wav or flac).")
    return raw, native_sr, channels, trimmed


def _looks_truncated(n_read: int, declared: int, fmt: str, log: str) -> bool:
    """libsndfile decodes cut files quietly; these are the traces it leaves."""
    tolerance = MP3_FRAME_TOLERANCE * declared if fmt == "MP3" else 0
    if n_read < declared - tolerance:
        return True
    # WAV-like: the data chunk announces more bytes than the file holds ("data : N (should be M)");
    # streaming writers leave 0 or 0xFFFFFFFF placeholders, which are not truncation.
    for announced, actual in re.findall(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)", log):
        if int(actual) < int(announced) < 0xFFFFFF00:
            return True
    return "lacks an end-of-stream bit" in log   # Ogg cut between pages


def _too_long(name: str, seconds: float, max_seconds: float) -> AudioError:
    return AudioError(f"{name} is {seconds:.1f} s long, over the {max_seconds:g} s limit; "
                      f"cut it to at most {max_seconds:g} s (or let the app trim it).")
