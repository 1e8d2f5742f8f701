"""The audio a Wyoming client declares in `audio-start`, checked and turned into pipeline PCM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.audio.convert import PipelineConverter
from edge.errors import WyomingError
from edge.pcm import PIPELINE_RATE, SAMPLE_BYTES

RATES = (8000, 96000)
"""Lowest and highest sample rate accepted, Hz."""
WIDTHS = {2: "<i2", 4: "<i4"}
"""Bytes per sample accepted (signed little-endian PCM), and their numpy types."""
MAX_CHANNELS = 8
"""Most channels accepted (an 8-channel microphone array)."""


@dataclass(frozen=True)
class WireFormat:
    rate: int
    """Samples per second per channel, Hz."""
    width: int
    """Bytes per sample: 2 or 4."""
    channels: int

    @classmethod
    def checked(cls, data: dict[str, Any]) -> WireFormat:
        """From an audio-start or audio-chunk event's data; WyomingError names what is wrong."""
        values = {key: data.get(key) for key in ("rate", "width", "channels")}
        for key, value in values.items():
            if not isinstance(value, int) or isinstance(value, bool):  # what it is, not what it says: logs stay clean
                raise WyomingError(f"audio {key} is {type(value).__name__}, not a whole number", "bad-audio-format")
        wire = cls(**values)  # type: ignore[arg-type]
        if not RATES[0] <= wire.rate <= RATES[1]:
            raise WyomingError(f"audio rate = {wire.rate} is not allowed; use {RATES[0]} to {RATES[1]} Hz", "bad-audio-format")
        if wire.width not in WIDTHS:
            raise WyomingError(f"audio width = {wire.width} is not allowed; use 2 or 4 bytes per sample", "bad-audio-format")
        if not 1 <= wire.channels <= MAX_CHANNELS:
            raise WyomingError(f"audio channels = {wire.channels} is not allowed; use 1 to {MAX_CHANNELS}", "bad-audio-format")
        return wire

    @property
    def frame_bytes(self) -> int:
        """Bytes per sample frame (one sample of every channel)."""
        return self.width * self.channels

    @property
    def is_pipeline(self) -> bool:
        return (self.rate, self.width, self.channels) == (PIPELINE_RATE, SAMPLE_BYTES, 1)


class WireConverter:
    """Streaming: this format's PCM -> 16 kHz mono int16 (pipeline PCM passes untouched)."""

    def __init__(self, wire: WireFormat) -> None:
        self._wire = wire
        self._pipeline = None if wire.is_pipeline else PipelineConverter(wire.rate)
        self._scale = float(1 << (8 * wire.width - 1))

    def convert(self, raw: bytes) -> bytes:
        if len(raw) % self._wire.frame_bytes:
            raise WyomingError(f"an audio chunk of {len(raw)} bytes is not whole {self._wire.frame_bytes}-byte frames", "bad-audio-format")
        if self._pipeline is None:
            return raw
        samples = np.frombuffer(raw, dtype=WIDTHS[self._wire.width]).reshape(-1, self._wire.channels)
        return self._pipeline.convert(samples.astype(np.float32) / self._scale)

    def flush(self) -> bytes:
        return self._pipeline.flush() if self._pipeline is not None else b""
