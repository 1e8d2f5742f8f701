"""Reading Wyoming events with the limits the `wyoming` package does not set.

An event is a JSON header line, then `data_length` bytes of JSON, then `payload_length`
bytes of audio. The package's reader trusts both lengths (a client could make it
allocate gigabytes) and turns every malformed event into a silent end of stream. Here
the package reads each event through a check: the header line is bounded, and its type
and lengths are checked before the package reads a byte of what it announces; a bad
event is an error the client is told about, never the end of the stream. So edge frames
events exactly as Home Assistant does. Writing is the package's own.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from wyoming.event import Event, async_read_event, async_write_event

from edge.errors import WyomingError

__all__ = ["Event", "Limits", "read_event", "async_write_event"]


@dataclass(frozen=True)
class Limits:
    header_bytes: int = 8 * 1024
    """Longest header line, bytes (Home Assistant's are under 200)."""
    data_bytes: int = 64 * 1024
    """Longest data section, bytes."""
    payload_bytes: int = 1 << 20
    """Longest payload, bytes: over a second of 48 kHz 8-channel 16-bit audio."""


async def read_event(reader: asyncio.StreamReader, limits: Limits) -> Event | None:
    """The next event, None at a clean end of stream; WyomingError for anything malformed.
    `reader` must have been made with `limit=limits.header_bytes`."""
    checked = _CheckedReader(reader, limits)
    try:
        event = await async_read_event(checked)  # type: ignore[arg-type]
    except (TypeError, AttributeError, RecursionError):  # data the package cannot merge (a list, a string), or nested too deep
        raise WyomingError("an event's data is not a JSON object", "bad-frame") from None
    except asyncio.IncompleteReadError:
        raise WyomingError("the connection ended inside an event", "bad-frame") from None
    if event is None and checked.header is not None:  # the package's word for "malformed"
        raise WyomingError("an event's data is not a JSON object", "bad-frame")
    return event


class _CheckedReader:
    """What the package reads through: the header line bounded and checked (type, lengths
    within limits) before the package reads a byte of what it announces."""

    def __init__(self, reader: asyncio.StreamReader, limits: Limits) -> None:
        self._reader = reader
        self._limits = limits
        self.header: dict[str, Any] | None = None

    async def readline(self) -> bytes:
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return b""  # a clean end of stream
            raise WyomingError("the connection ended inside an event header", "bad-frame") from None
        except asyncio.LimitOverrunError:
            raise WyomingError(f"an event header is longer than {self._limits.header_bytes} bytes", "too-large") from None
        self.header = _header(line)
        _length(self.header, "data_length", self._limits.data_bytes)
        _length(self.header, "payload_length", self._limits.payload_bytes)
        return line

    async def readexactly(self, count: int) -> bytes:
        return await self._reader.readexactly(count)  # never more than the header announced, checked above


def _header(line: bytes) -> dict[str, Any]:
    header = _json(line, "header")
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise WyomingError('an event header is not a JSON object with a "type"', "bad-frame")
    if not isinstance(header.get("data", {}), dict):
        raise WyomingError("an event's data is not a JSON object", "bad-frame")
    return header


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
        raise WyomingError(f"an event {what} is not JSON", "bad-frame") from None


def _length(header: dict[str, Any], key: str, cap: int) -> None:
    value = header.get(key)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise WyomingError(f"{key} is not a whole number of bytes", "bad-frame")
    if value > cap:
        raise WyomingError(f"{key} = {value} is more than the {cap} bytes edge accepts", "too-large")
