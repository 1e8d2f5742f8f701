"""Convert any rate and channel count to pipeline PCM with a real resampler (soxr)."""

from __future__ import annotations

import numpy as np
import soxr

from edge.pcm import PIPELINE_RATE


class PipelineConverter:
    """Streaming float32 (frames x channels) at `rate` -> 16 kHz mono int16 bytes.

    Stateful: feed consecutive blocks, then `flush()` once for the resampler's tail.
    """

    def __init__(self, rate: int) -> None:
        self._resampler = None if rate == PIPELINE_RATE else soxr.ResampleStream(rate, PIPELINE_RATE, 1, dtype="float32", quality="HQ")

    def convert(self, block: np.ndarray, last: bool = False) -> bytes:
        mono = block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block.astype(np.float32, copy=False)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=last)
        return float_to_pcm16(mono)

    def flush(self) -> bytes:
        return self.convert(np.zeros(0, dtype=np.float32), last=True) if self._resampler else b""


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """[-1, 1) floats to int16 little-endian; exact for audio that came from int16."""
    scaled = np.clip(np.rint(samples * 32768.0), -32768, 32767)
    return scaled.astype("<i2").tobytes()


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
