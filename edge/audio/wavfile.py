"""WAV file source: any PCM or float WAV, streamed as pipeline PCM.

libsndfile (via soundfile) decodes; we add the checks it lacks: a WAV whose header
promises more audio than the file holds is an error, not a quietly shorter clip.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import soundfile

from edge.audio.convert import PipelineConverter
from edge.errors import AudioError

_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streaming writers leave these; libsndfile then reads to EOF


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

    @property
    def seconds(self) -> float:
        return self.frames / self.rate


def open_wav(path: Path) -> WavInfo:
    """Check that `path` is a readable, complete, non-empty WAV; raise AudioError otherwise."""
    if not path.exists():
        raise AudioError(f"{path}: audio file not found")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not a WAV file")
    try:
        with path.open("rb") as handle:
            header = handle.read(12)
            _check_riff(path, handle, header)
    except OSError as exc:
        raise AudioError(f"{path}: cannot read the audio file: {exc.strerror}") from None
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: is not a readable WAV file ({_reason(exc)})") from None
    if info.format not in ("WAV", "WAVEX"):
        raise AudioError(f"{path}: is a {info.format} file; edge reads WAV files only")
    if info.frames == 0:
        raise AudioError(f"{path}: the WAV file contains no audio")
    return WavInfo(path, info.samplerate, info.channels, info.frames, info.subtype)


def read_pipeline_chunks(info: WavInfo, block_seconds: float = 0.5) -> Iterator[bytes]:
    """Yield the file's audio as pipeline PCM, block by block (memory stays bounded)."""
    converter = PipelineConverter(info.rate)
    block_frames = max(1, int(info.rate * block_seconds))
    try:
        with soundfile.SoundFile(str(info.path)) as sound:
            for block in sound.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                pcm = converter.convert(block)
                if pcm:
                    yield pcm
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{info.path}: the WAV file could not be read to the end ({_reason(exc)})") from None
    tail = converter.flush()
    if tail:
        yield tail


def _check_riff(path: Path, handle: BinaryIO, header: bytes) -> None:
    """Walk the RIFF chunks up to `data` and compare its declared size with the file's."""
    if len(header) < 12 or header[:4] not in (b"RIFF", b"RF64") or header[8:12] != b"WAVE":
        raise AudioError(f"{path}: is not a WAV file (no RIFF/WAVE header)")
    if header[:4] == b"RF64":
        return  # sizes live in the ds64 chunk; libsndfile validates those
    file_size = path.stat().st_size
    offset = 12
    while offset + 8 <= file_size:
        handle.seek(offset)
        chunk_id, size = struct.unpack("<4sI", handle.read(8))
        if chunk_id == b"data":
            available = file_size - offset - 8
            if size not in _UNKNOWN_SIZES and size > available:
                raise AudioError(
                    f"{path}: the WAV file is truncated: its header promises {size} bytes of audio but only {available} are there"
                )
            return
        offset += 8 + size + (size & 1)
    raise AudioError(f"{path}: the WAV file has no audio data chunk")


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 1)[-1] if ": " in text else text
