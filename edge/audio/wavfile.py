"""Audio file source: any PCM or float WAV, or what libsndfile decodes (FLAC, Ogg Vorbis
or Opus, MP3), streamed as pipeline PCM.

A WAV that already holds pipeline PCM (16 kHz mono 16-bit, WAVE_FORMAT_PCM) is read
as it is; anything else is decoded by libsndfile (via soundfile) and converted. The
plain path keeps numpy, libsndfile and the resampler out of the process (numpy's
import alone costs ~0.1 s of CPU). We add the checks libsndfile lacks: a WAV whose
header promises more audio than the file holds is an error, not a quietly shorter clip.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edge.errors import AudioError
from edge.pcm import PIPELINE_RATE, SAMPLE_BYTES

_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streaming writers leave these; libsndfile then reads to EOF
_WAVE_FORMAT_PCM = 1
_PIPELINE_FMT = (_WAVE_FORMAT_PCM, 1, PIPELINE_RATE, PIPELINE_RATE * SAMPLE_BYTES, SAMPLE_BYTES, 8 * SAMPLE_BYTES)
"""The fmt chunk of pipeline PCM: format tag, channels, rate, byte rate, block align, bits."""


@dataclass(frozen=True)
class _Samples:
    """Where a WAV's sample bytes are: the data chunk."""

    offset: int
    size: int


@dataclass(frozen=True)
class WavInfo:
    path: Path
    rate: int
    """Samples per second in the file."""
    channels: int
    frames: int
    """Samples per channel."""
    subtype: str
    """libsndfile's sample format name, e.g. PCM_16, PCM_24, FLOAT."""
    pipeline_pcm: _Samples | None = None
    """Where the samples are when the file holds pipeline PCM (read as they are); else None."""

    @property
    def seconds(self) -> float:
        return self.frames / self.rate


def open_wav(path: Path) -> WavInfo:
    """Check that `path` is a readable, complete, non-empty audio file (a WAV, checked chunk
    by chunk; or anything libsndfile decodes: FLAC, Ogg Vorbis or Opus, MP3, ...); raise
    AudioError otherwise."""
    if not path.exists():
        raise AudioError(f"{path}: audio file not found")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    try:
        with path.open("rb") as handle:
            header = handle.read(12)
            fmt, samples = _check_riff(path, handle, header) if _is_wav(header) else (b"", None)
    except OSError as exc:
        raise AudioError(f"{path}: cannot read the audio file: {exc.strerror}") from None
    if samples is not None and _is_pipeline_pcm(fmt):
        info = WavInfo(path, PIPELINE_RATE, 1, samples.size // SAMPLE_BYTES, "PCM_16", samples)
    else:
        info = _decoded_info(path)
    if info.frames == 0:
        raise AudioError(f"{path}: the audio file contains no audio")
    return info


def _is_wav(header: bytes) -> bool:
    return len(header) >= 12 and header[:4] in (b"RIFF", b"RF64") and header[8:12] == b"WAVE"


CONVERT = "convert it first, e.g. `ffmpeg -i INPUT -ar 16000 -ac 1 OUTPUT.wav`"
"""What to do with audio libsndfile cannot read."""


def read_pipeline_chunks(info: WavInfo, block_seconds: float = 0.5) -> Iterator[bytes]:
    """Yield the file's audio as pipeline PCM, block by block (memory stays bounded)."""
    if info.pipeline_pcm is not None:
        yield from _read_samples(info.path, info.pipeline_pcm, max(1, int(PIPELINE_RATE * block_seconds)) * SAMPLE_BYTES)
    else:
        yield from _read_decoded(info, block_seconds)


def _is_pipeline_pcm(fmt: bytes) -> bool:
    return len(fmt) >= 16 and struct.unpack("<HHIIHH", fmt[:16]) == _PIPELINE_FMT


def _read_samples(path: Path, samples: _Samples, block_bytes: int) -> Iterator[bytes]:
    left = samples.size - samples.size % SAMPLE_BYTES
    try:
        with path.open("rb") as handle:
            handle.seek(samples.offset)
            while left > 0:
                block = handle.read(min(block_bytes, left))
                if not block:
                    raise AudioError(f"{path}: the WAV file could not be read to the end (it ended early)")
                left -= len(block)
                yield block
    except OSError as exc:
        raise AudioError(f"{path}: the WAV file could not be read to the end ({exc.strerror})") from None


def _decoded_info(path: Path) -> WavInfo:
    import soundfile  # only files that need decoding pay for libsndfile and numpy

    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioError(
            f"{path}: is not an audio file edge can read ({_reason(exc)}); edge reads WAV, FLAC, Ogg (Vorbis or Opus) and MP3: {CONVERT}"
        ) from None
    return WavInfo(path, info.samplerate, info.channels, info.frames, info.subtype)


def _read_decoded(info: WavInfo, block_seconds: float) -> Iterator[bytes]:
    import soundfile

    from edge.audio.convert import PipelineConverter

    converter = PipelineConverter(info.rate)
    block_frames = max(1, int(info.rate * block_seconds))
    try:
        with soundfile.SoundFile(str(info.path)) as sound:
            for block in sound.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                pcm = converter.convert(block)
                if pcm:
                    yield pcm
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{info.path}: the audio file could not be read to the end ({_reason(exc)})") from None
    tail = converter.flush()
    if tail:
        yield tail


def _check_riff(path: Path, handle: BinaryIO, header: bytes) -> tuple[bytes, _Samples | None]:
    """Walk the RIFF chunks up to `data` and compare its declared size with the file's.
    Returns the fmt chunk seen before it and where the samples are (None for RF64)."""
    if len(header) < 12 or header[:4] not in (b"RIFF", b"RF64") or header[8:12] != b"WAVE":
        raise AudioError(f"{path}: is not a WAV file (no RIFF/WAVE header)")
    if header[:4] == b"RF64":
        return b"", None  # sizes live in the ds64 chunk; libsndfile validates those
    file_size = path.stat().st_size
    offset, fmt = 12, b""
    while offset + 8 <= file_size:
        handle.seek(offset)
        chunk_id, size = struct.unpack("<4sI", handle.read(8))
        available = file_size - offset - 8
        if chunk_id == b"fmt ":
            fmt = handle.read(min(size, 40))
        if chunk_id == b"data":
            if size not in _UNKNOWN_SIZES and size > available:
                raise AudioError(
                    f"{path}: the WAV file is truncated: its header promises {size} bytes of audio but only {available} are there"
                )
            return fmt, _Samples(offset + 8, available if size in _UNKNOWN_SIZES else size)
        offset += 8 + size + (size & 1)
    raise AudioError(f"{path}: the WAV file has no audio data chunk")


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 1)[-1] if ": " in text else text
