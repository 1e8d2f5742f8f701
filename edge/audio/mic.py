"""Microphone source: a sounddevice input stream feeding a bounded queue.

The PortAudio callback only copies the block into the queue. If decoding falls
behind and the queue is full, the block is dropped and counted: memory stays
bounded and the loss is reported, never hidden.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edge.audio.convert import PipelineConverter, pcm16_to_float
from edge.errors import AudioError
from edge.invocation import python
from edge.pcm import PIPELINE_RATE

BLOCK_SECONDS = 0.03
"""Audio per callback block (30 ms)."""
QUEUE_SECONDS = 10.0
"""Audio the queue may hold before blocks are dropped."""


@dataclass
class MicStats:
    blocks: int = 0
    """Blocks captured."""
    dropped_blocks: int = 0
    """Blocks dropped because the queue was full (decoding fell behind)."""
    input_overflows: int = 0
    """Times PortAudio itself reported lost input."""


class MicSource:
    """Open with `with MicSource(...) as mic:` then iterate `mic.chunks(stop)`."""

    def __init__(self, sample_rate: int, device: str | None = None, queue_seconds: float = QUEUE_SECONDS) -> None:
        self.sample_rate = sample_rate
        self.device = int(device) if device is not None and device.isdigit() else device
        self.stats = MicStats()
        self._block_frames = max(1, int(sample_rate * BLOCK_SECONDS))
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=max(1, int(queue_seconds / BLOCK_SECONDS)))
        self._stream: Any = None
        """The sounddevice.RawInputStream while open."""

    def __enter__(self) -> MicSource:
        sd = import_sounddevice()
        try:
            self._stream = sd.RawInputStream(
                samplerate=self.sample_rate,
                blocksize=self._block_frames,
                device=self.device,
                channels=1,
                dtype="int16",
                callback=self._callback,
            )
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            self._stream = None
            where = f"input device {self.device!r}" if self.device is not None else "the default input device"
            raise AudioError(
                f"cannot open {where} at {self.sample_rate} Hz: {exc}. "
                f"List devices with `{python()} -m sounddevice`; set [device] input_device and sample_rate."
            ) from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:  # PortAudio thread: copy only
        self.stats.blocks += 1
        if status.input_overflow:
            self.stats.input_overflows += 1
        try:
            self._queue.put_nowait(bytes(indata))
        except queue.Full:
            self.stats.dropped_blocks += 1

    def chunks(self, stop: threading.Event) -> Iterator[bytes]:
        """Pipeline PCM until `stop` is set; the queued tail is drained first."""
        converter = PipelineConverter(self.sample_rate)
        while not stop.is_set():
            try:
                block = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            yield from self._convert(converter, block)
        while True:  # drain what was already heard before the stop
            try:
                block = self._queue.get_nowait()
            except queue.Empty:
                break
            yield from self._convert(converter, block)
        tail = converter.flush()
        if tail:
            yield tail

    def _convert(self, converter: PipelineConverter, block: bytes) -> Iterator[bytes]:
        pcm = block if self.sample_rate == PIPELINE_RATE else converter.convert(pcm16_to_float(block))
        if pcm:
            yield pcm


def import_sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as exc:  # raised when the PortAudio library is missing
        raise AudioError(
            f"the microphone needs PortAudio, which is not installed ({exc}); install it with `sudo apt-get install libportaudio2`"
        ) from None
    return sounddevice
