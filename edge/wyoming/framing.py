"""Reading Wyoming events with the limits the `wyoming` package does not set.

An event is a JSON header line, then `data_length` bytes of JSON, then `payload_length`
bytes of audio. The package's reader trusts both lengths (a client could make it
allocate gigabytes) and turns every malformed event into a silent end of stream. Here
each event is read as the package reads it (data merged into the header's, then the
payload), but the header line is bounded, and its type and lengths are checked before a
byte of what it announces is read; a bad event is an error the client is told about, never
the end of the stream. So edge frames events exactly as Home Assistant does. Writing is the
package's own.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from wyoming.event import Event, async_write_event

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
    `reader` must have been made with `limit=limits.header_bytes`. Read as the package reads
    it (header line, data merged into the header's, payload), but each part parsed once: an
    utterance is hundreds of 10 ms chunks, and the package's reader would parse every header
    a second time after the check."""
    line = await _header_line(reader, limits)
    if not line:
        return None  # a clean end of stream
    header = _header(line)
    data_length = _length(header, "data_length", limits.data_bytes)
    payload_length = _length(header, "payload_length", limits.payload_bytes)
    data: dict[str, Any] = header.get("data", {})
    try:
        if data_length:
            more = _json(await reader.readexactly(data_length), "data")
            if not isinstance(more, dict):
                raise WyomingError("an event's data is not a JSON object", "bad-frame")
            data.update(more)
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        raise WyomingError("the connection ended inside an event", "bad-frame") from None
    return Event(type=header["type"], data=data, payload=payload)


async def _header_line(reader: asyncio.StreamReader, limits: Limits) -> bytes:
    """The header line, bounded; b"" at a clean end of stream."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return b""
        raise WyomingError("the connection ended inside an event header", "bad-frame") from None
    except asyncio.LimitOverrunError:
        raise WyomingError(f"an event header is longer than {limits.header_bytes} bytes", "too-large") from None


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


def _length(header: dict[str, Any], key: str, cap: int) -> int:
    """The length `key` announces (0 if none), checked before a byte of it is read."""
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise WyomingError(f"{key} is not a whole number of bytes", "bad-frame")
    if value > cap:
        raise WyomingError(f"{key} = {value} is more than the {cap} bytes edge accepts", "too-large")
    return value
