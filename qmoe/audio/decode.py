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
and what to do, so the app can show it as is. `load_array` gives samples already in memory the same
checks. What is accepted (README, "Audio input"):

* native rates of 2 kHz to 768 kHz (`MIN_SAMPLE_RATE`, `MAX_SAMPLE_RATE`): from sensor and telephone
  recordings to the fastest audio converters; anything else is no microphone's recording;
* a clip with sound in it: not silent (peak below -80 dBFS) and not DC only (a constant offset whose
  swing is below -80 dBFS), because the figure of either is noise the model still answers;
* finite samples within +-1e12 (`MAX_PEAK`), so down-mixing, resampling and the figure stay finite;
* 0.1 s to `max_seconds` (60 s; longer is trimmed and flagged, or refused). Decoding streams the
  file in blocks and stops after `max_seconds`, so memory stays near 8 bytes per native-rate frame
  of `max_seconds` (under 400 MB at 768 kHz) whatever the channels, the real length or what the
  header claims; `max_seconds` may be 1 to 120 s, and files over 50 MB are refused unread.
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

from qmoe.core.errors import AudioError, ConfigError

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
MIN_SAMPLE_RATE = 2_000        # native rates accepted: below telephony's 8 kHz for sensor recorders,
MAX_SAMPLE_RATE = 768_000      # up to the fastest audio converters
MAX_PEAK = 1e12                # |sample| above this is no recording (full scale is 1; floats holding
                               # int32 values reach 2.1e9); below it everything downstream stays finite
MAX_SECONDS_LIMIT = 120.0      # max_seconds may be raised this far: it bounds decoding's memory
DECODE_BLOCK_SAMPLES = 1 << 20 # decoding reads blocks of this many samples (all channels together)
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

    Raises AudioError for empty, oversized, non-audio, truncated/corrupt, sample-less, NaN/inf or
    out-of-range samples, a native rate outside 2-768 kHz, silent or DC-only, too short, or (with
    ``on_long="refuse"``) too long input.
    """
    _check_options(sr, max_seconds, on_long)
    data, name = _read_bytes(source, max_bytes)
    mono, native_sr, channels, trimmed = _decode(data, name, max_seconds, on_long)
    return _clip(mono, native_sr, channels, trimmed, name, sr)


def load_array(samples, native_sr: int, sr: int = SAMPLE_RATE, max_seconds: float = MAX_SECONDS,
               on_long: str = "trim", name: str = "the array") -> AudioClip:
    """Samples already in memory (another decoder's output, a recorder's buffer) as `load_audio` gives a file.

    `samples` is 1-D, or 2-D as (frames, channels) like soundfile or (channels, frames) like librosa:
    the shorter axis is the channels. Integers are scaled to full scale +-1 as PCM files are (int16 /
    32768, uint8 centred on 128); floats are taken as they are. Same checks, errors and limits as
    `load_audio`; an over-long array is trimmed through a view, never copied whole.
    """
    _check_options(sr, max_seconds, on_long)
    if not isinstance(native_sr, (int, np.integer)):
        raise ConfigError(f"native_sr must be an integer sample rate in Hz, got {native_sr!r}.")
    frames = _as_frames(samples, name)
    native_sr = _check_rate(int(native_sr), name)
    limit = int(max_seconds * native_sr)
    if len(frames) > limit and on_long == "refuse":
        raise _too_long(name, len(frames) / native_sr, max_seconds)
    if frames.size == 0:
        raise AudioError(f"{name} contains no audio samples; choose a clip with sound in it.")
    mono = _downmix(_array_blocks(frames[:limit]), name)
    return _clip(mono, native_sr, frames.shape[1], len(frames) > limit, name, sr)


def _check_options(sr, max_seconds, on_long) -> None:
    if on_long not in ("trim", "refuse"):
        raise ConfigError(f"on_long must be 'trim' or 'refuse', got {on_long!r}.")
    if not (isinstance(sr, (int, np.integer)) and MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE):
        raise ConfigError(f"sr must be an integer sample rate of {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz, "
                          f"got {sr!r}.")
    if not 1 <= max_seconds <= MAX_SECONDS_LIMIT:
        raise ConfigError(f"max_seconds must be 1 to {MAX_SECONDS_LIMIT:g} s (it bounds decoding's memory), "
                          f"got {max_seconds!r}.")


def _clip(mono: np.ndarray, native_sr: int, channels: int, trimmed: bool, name: str, sr: int) -> AudioClip:
    """Native-rate mono checked for length and sound, then resampled to `sr` (librosa.load's soxr_hq)."""
    if len(mono) < MIN_SECONDS * native_sr:
        raise AudioError(f"{name} is too short ({_shown(len(mono) / native_sr, MIN_SECONDS, '.3f')} s); "
                         f"give a clip of at least {MIN_SECONDS} s.")
    scope = [f"its first {len(mono) / native_sr:g} s"] * trimmed + ["mixed to mono"] * (channels > 1)
    _check_audible(mono, f"{name} ({', '.join(scope)})" if scope else name)   # what the verdict is about
    # resample only when there is something to do: importing librosa.core takes ~2 s (scipy, numba),
    # and same-rate audio comes back from librosa.resample as is
    y = mono if native_sr == int(sr) else librosa.resample(mono, orig_sr=native_sr, target_sr=int(sr),
                                                           res_type="soxr_hq")
    y = np.ascontiguousarray(y, dtype=np.float32)
    y.flags.writeable = False                    # a clip is a value: safe to cache and share
    return AudioClip(samples=y, sr=int(sr), duration_s=len(y) / sr, original_sr=native_sr,
                     channels=channels, trimmed=trimmed, source=name)


def _check_audible(mono: np.ndarray, name: str) -> None:
    """Refuse a clip with nothing to hear: its figure would be noise, which the model answers anyway."""
    low, high = float(mono.min()), float(mono.max())
    peak, swing = max(abs(low), abs(high)), (high - low) / 2
    if peak < SILENCE_PEAK:
        raise AudioError(f"{name} is silent (peak amplitude {_shown(peak, SILENCE_PEAK, '.1e')}, below "
                         f"{SILENCE_PEAK:g} = -80 dBFS); record or choose a clip with audible sound.")
    if swing < SILENCE_PEAK:
        raise AudioError(f"{name} is DC only: a constant offset of {(high + low) / 2:+.3g} with no sound on it "
                         f"(its samples stay within {_shown(swing, SILENCE_PEAK, '.1e')} of it, below "
                         f"{SILENCE_PEAK:g} = -80 dBFS); record or choose a clip with audible sound.")


def _check_rate(rate: int, name: str) -> int:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{name} is sampled at {rate} Hz, outside the {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz "
                         f"that microphones and recorders use; resample it to 44100 or 48000 Hz.")
    return rate


def _as_frames(samples, name: str) -> np.ndarray:
    """A (frames, channels) view of 1-D or 2-D samples: the shorter axis of a 2-D array is the channels."""
    a = np.asarray(samples)
    if a.dtype.kind not in "iuf":
        raise AudioError(f"{name} holds {a.dtype} values; audio samples are integers or floats.")
    if a.ndim == 1:
        return a[:, None]
    if a.ndim != 2:
        raise AudioError(f"{name} has shape {a.shape}; give 1-D samples, or 2-D (frames, channels) "
                         f"or (channels, frames).")
    return a if a.shape[0] >= a.shape[1] else a.T


def _array_blocks(frames: np.ndarray):
    """float64 blocks of a (frames, channels) array, integers scaled to +-1 as PCM decoders scale them."""
    step = max(1, DECODE_BLOCK_SAMPLES // frames.shape[1])
    scale = 1.0 if frames.dtype.kind == "f" else 2.0 ** (8 * frames.dtype.itemsize - 1)
    offset = scale if frames.dtype.kind == "u" else 0.0
    for start in range(0, len(frames), step):
        yield (frames[start:start + step].astype(np.float64) - offset) / scale


def _file_blocks(f: sf.SoundFile, max_frames: int):
    """float64 blocks of an open file, at most max_frames frames in all: never more is decoded."""
    step = max(1, DECODE_BLOCK_SAMPLES // f.channels)
    while max_frames > 0:
        block = f.read(frames=min(step, max_frames), dtype="float64", always_2d=True)
        if len(block) == 0:
            return
        max_frames -= len(block)
        yield block


def _downmix(blocks, name: str) -> np.ndarray:
    """float32 mono of float64 (frames, channels) blocks, mixed as librosa.load mixes (checked first)."""
    parts = [np.zeros(0, np.float32)]
    for block in blocks:
        _check_values(block, name)
        block = block.astype(np.float32)
        parts.append(block[:, 0] if block.shape[1] == 1 else np.mean(block.T, axis=0))   # librosa.to_mono
    return np.concatenate(parts)


def _check_values(block: np.ndarray, name: str) -> None:
    if not np.isfinite(block).all():
        raise AudioError(f"{name} contains NaN or infinite sample values; "
                         f"re-export it as 16-bit PCM (wav or flac).")
    peak = float(np.abs(block).max(initial=0.0))
    if peak > MAX_PEAK:
        raise AudioError(f"{name} has a sample of magnitude {_shown(peak, MAX_PEAK, '.1e')}, beyond the "
                         f"{MAX_PEAK:g} accepted (full scale is 1); normalise it or re-export it as 16-bit PCM.")


def _shown(value: float, limit: float, spec: str) -> str:
    """`value` formatted by `spec`, or in full where it would print as `limit`, which it is not."""
    text = format(value, spec)
    return repr(float(value)) if text == format(limit, spec) else text


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
    if samples.dtype.kind not in "iuf" or not np.isfinite(samples).all() or (
            samples.dtype.kind == "f" and np.abs(samples).max() > np.finfo(np.float32).max):
        raise AudioError(f"Expected finite real samples that fit float32 (|x| <= 3.4e38), got {samples.dtype} "
                         f"values outside that; decode the file with load_audio, which refuses such audio.")
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
    """(float32 mono at the native rate, native rate, channels, trimmed), as librosa.load decodes.

    At most max_seconds (+1 frame, to tell a longer file) are decoded, block by block, whatever the
    header announces; the truncation checks compare what it announces with what was found.
    """
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            native_sr, channels = _check_rate(f.samplerate, name), f.channels
            limit = int(max_seconds * native_sr)
            mono = _downmix(_file_blocks(f, limit + 1), name)
            announced, fmt, log = f.frames, f.format, f.extra_info
    except sf.LibsndfileError as e:
        if "not recognised" in str(e).lower():
            raise AudioError(f"{name} is not an audio file this app can read (format not recognised); "
                             f"upload {FORMATS_HINT}.") from None
        raise AudioError(f"{name} is corrupt or truncated ({e.error_string}); "
                         f"re-export or re-download the file.") from None
    except RuntimeError as e:   # other soundfile failures: still the file's fault
        raise AudioError(f"{name} could not be decoded ({e}); re-export it as {FORMATS_HINT}.") from None

    if len(mono) > limit:       # more than max_seconds are there, whatever the header says
        if on_long == "refuse":
            raise _too_long(name, announced / native_sr if announced > limit else None, max_seconds, True)
        return mono[:limit], native_sr, channels, True
    reason = _truncation(len(mono), announced, fmt, log)
    if reason:
        raise AudioError(f"{name} is truncated: {reason}; re-export or re-download the file.")
    if len(mono) == 0:
        raise AudioError(f"{name} contains no audio samples; choose a clip with sound in it.")
    return mono, native_sr, channels, False


def _truncation(found: int, announced: int, fmt: str, log: str) -> str | None:
    """How a decoded file shows it was cut short (libsndfile decodes cut files quietly), or None."""
    tolerance = MP3_FRAME_TOLERANCE * announced if fmt == "MP3" else 0
    if found < announced - tolerance:
        return f"{found} of the {announced} frames it announces are present"
    # WAV-like: the data chunk announces more bytes than the file holds ("data : N (should be M)");
    # streaming writers leave 0 or 0xFFFFFFFF placeholders, which are not truncation.
    for size, present in re.findall(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)", log):
        if int(present) < int(size) < 0xFFFFFF00 and _missing_data(found, int(size), int(present), log):
            return _missing_data(found, int(size), int(present), log)
    if "lacks an end-of-stream bit" in log:
        return f"its Ogg stream stops without an end-of-stream mark ({found} frames present)"
    return None


def _missing_data(found: int, size: int, present: int, log: str) -> str | None:
    """A data chunk announcing more bytes than are present, in frames where the header gives the frame size."""
    block = re.search(r"Block Align\s*:\s*(\d+)", log)
    if not block or int(block.group(1)) == 0:
        return f"its data chunk announces {size} bytes, {present} are present"
    announced = size // int(block.group(1))
    if announced <= found:      # only a partial frame's bytes are missing: every frame is there
        return None
    return f"{found} of the {announced} frames its header announces are present"


def _too_long(name: str, seconds: float | None, max_seconds: float, header: bool = False) -> AudioError:
    """seconds: the length an array has or a header announces (only max_seconds are read to check it);
    None where a header understates what follows."""
    length = (f"is {_shown(seconds, max_seconds, '.1f')} s long" if seconds is not None
              else f"holds more than {max_seconds:g} s of audio, more than its header announces")
    found = f" (as its header announces; more than {max_seconds:g} s of audio were found)" if seconds and header else ""
    return AudioError(f"{name} {length}, over the {max_seconds:g} s limit{found}; "
                      f"cut it to at most {max_seconds:g} s (or let the app trim it).")
