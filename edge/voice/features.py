"""What the speaker encoder hears: pipeline PCM prepared exactly as resemblyzer 0.1.4
prepares a wav (its audio.py and hparams.py), so the pretrained weights see the input
they were trained on.

1. Volume raised (never lowered) to -30 dBFS RMS.
2. Long silences trimmed: WebRTC VAD (mode 3) on 30 ms windows, smoothed by a moving
   average of 8 windows, then each voiced window widened by 3 windows on both sides
   (so pauses of up to 6 windows, 180 ms, stay whole); the other windows are dropped.
3. A power (not log) mel spectrogram as librosa >= 0.9 computes it: 25 ms periodic Hann
   window, 10 ms hop, centred frames zero-padded at both ends (librosa 0.9 changed its
   default from reflect padding), 40 mel bands on the Slaney scale with Slaney
   (area) normalisation, 0 Hz to 8 kHz.

One deliberate difference: resemblyzer converts the louder wav back to int16 for the
VAD without clipping, so a sample pushed past full scale wraps around; here it clips.
"""

from __future__ import annotations

import functools

import numpy as np
import webrtcvad
from numpy.typing import NDArray

from edge.errors import AudioError
from edge.pcm import PIPELINE_RATE, SAMPLE_BYTES

TARGET_DBFS = -30.0
"""Loudness (RMS, dB below full scale) quieter audio is raised to."""
VAD_WINDOW = 480
"""Samples per VAD decision (30 ms)."""
VAD_MODE = 3
"""WebRTC VAD aggressiveness: 3, the strictest, as resemblyzer uses."""
VAD_AVERAGE = 8
"""VAD decisions averaged into one (a moving average over 240 ms)."""
VAD_MAX_SILENCE = 6
"""The longest pause (in VAD windows, 180 ms) kept whole: voiced windows are widened by
half of it on each side."""
N_FFT = 400
"""Samples per spectrogram frame (25 ms)."""
HOP = 160
"""Samples between frames (10 ms): one mel frame per 160 samples."""
N_MELS = 40
"""Mel bands per frame: the encoder's input width."""
_INT16_MAX = 2**15 - 1


def samples(pcm: bytes) -> NDArray[np.float32]:
    """Pipeline PCM as floats in [-1, 1), as librosa/soundfile read an int16 WAV."""
    if len(pcm) % SAMPLE_BYTES:
        raise AudioError(f"speech for the speaker encoder must be whole 16-bit samples; got {len(pcm)} bytes")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / np.float32(32768)


def normalize_volume(wav: NDArray[np.float32], target_dbfs: float = TARGET_DBFS) -> NDArray[np.float32]:
    """Raise the RMS level to `target_dbfs`; louder audio is left as it is. Silence (no
    signal at all) has no level to raise: refused."""
    rms = np.sqrt(np.mean((wav * np.float32(_INT16_MAX)) ** 2)) if len(wav) else np.float32(0)
    if not rms > 0:
        raise AudioError("the utterance is silent (every sample is zero): there is no voice to recognise")
    change = np.float32(target_dbfs) - 20 * np.log10(rms / np.float32(_INT16_MAX))
    if change < 0:
        return wav
    louder: NDArray[np.float32] = (wav * (10 ** (change / 20))).astype(np.float32)
    return louder


def trim_long_silences(wav: NDArray[np.float32]) -> NDArray[np.float32]:
    """Drop what the VAD, smoothed and widened, calls silence (see the module docstring).
    A trailing part shorter than one VAD window is dropped too."""
    wav = wav[: len(wav) - len(wav) % VAD_WINDOW]
    if not len(wav):
        return wav
    pcm = np.clip(np.round(wav * np.float32(_INT16_MAX)), -32768, _INT16_MAX).astype("<i2").tobytes()
    vad = webrtcvad.Vad(VAD_MODE)
    step = VAD_WINDOW * SAMPLE_BYTES
    voiced = np.array([vad.is_speech(pcm[i : i + step], PIPELINE_RATE) for i in range(0, len(pcm), step)], dtype=float)
    smoothed = np.round(_moving_average(voiced, VAD_AVERAGE)).astype(bool)
    reach = (VAD_MAX_SILENCE + 1) // 2  # scipy's binary_dilation with a centred structure of 7 ones
    keep = np.lib.stride_tricks.sliding_window_view(np.pad(smoothed, reach), 2 * reach + 1).any(axis=1)
    kept: NDArray[np.float32] = wav[np.repeat(keep, VAD_WINDOW)]
    return kept


def _moving_average(values: NDArray[np.float64], width: int) -> NDArray[np.float64]:
    """resemblyzer's: centred, zeros beyond the ends, as many outputs as inputs."""
    padded = np.concatenate((np.zeros((width - 1) // 2), values, np.zeros(width // 2)))
    sums = np.cumsum(padded, dtype=float)
    sums[width:] = sums[width:] - sums[:-width]
    return sums[width - 1 :] / width


def preprocess(pcm: bytes) -> NDArray[np.float32]:
    """Pipeline PCM to the wav resemblyzer's preprocess_wav would make of it."""
    return trim_long_silences(normalize_volume(samples(pcm)))


@functools.cache
def mel_filters() -> NDArray[np.float32]:
    """librosa.filters.mel(sr=16000, n_fft=400, n_mels=40) (htk=False, norm="slaney"):
    (40, 201) triangles on the Slaney mel scale, each scaled to unit area in Hz."""
    fft_freqs = np.fft.rfftfreq(N_FFT, 1 / PIPELINE_RATE)
    mel_edges = np.linspace(_hz_to_mel(0.0), _hz_to_mel(PIPELINE_RATE / 2), N_MELS + 2)
    hz_edges = _mel_to_hz(mel_edges)
    widths = np.diff(hz_edges)
    ramps = hz_edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    result = weights.astype(np.float32)
    result.flags.writeable = False
    return result


_F_SP = 200.0 / 3
"""Slaney scale: Hz per mel below 1 kHz (linear there)."""
_MIN_LOG_MEL = 1000.0 / _F_SP
_LOG_STEP = np.log(6.4) / 27.0
"""Slaney scale: log-Hz per mel above 1 kHz."""


def _hz_to_mel(hz: float) -> float:
    return hz / _F_SP if hz < 1000.0 else float(_MIN_LOG_MEL + np.log(hz / 1000.0) / _LOG_STEP)


def _mel_to_hz(mels: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.where(mels >= _MIN_LOG_MEL, 1000.0 * np.exp(_LOG_STEP * (mels - _MIN_LOG_MEL)), _F_SP * mels)


@functools.cache
def _window() -> NDArray[np.float64]:
    """Periodic Hann (scipy.signal.get_window("hann", 400, fftbins=True))."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)


def mel_spectrogram(wav: NDArray[np.float32]) -> NDArray[np.float32]:
    """(frames, 40) power mel spectrogram, frame i centred on sample 160 i; there are
    1 + len(wav) // 160 frames."""
    padded = np.pad(wav.astype(np.float64), N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    spectrum = np.fft.rfft(frames * _window(), axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    return power @ mel_filters().T
