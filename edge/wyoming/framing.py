"""Reading Wyoming events with the limits the `wyoming` package does not set.

An event is a JSON header line, then `data_length` bytes of JSON, then `payload_length`
bytes of audio. The package's reader trusts both lengths (a client could make it
allocate gigabytes) and turns every malformed event into a silent end of stream. Here
each event is read as the package reads it (data merged into the header's, then the
payload), but the header line is bounded, and its type and lengths are checked before a
byte of what it announces is read; a bad event is an error the client is told about, never
the end of the stream. So edge frames events exactly as Home Assistant does (held to the
package's reader by tests/test_wyoming_framing.py, on random and mutated streams). Writing is
the package's own.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from wyoming.event import Event, async_write_event

from edge.errors import WyomingError

__all__ = ["Event", "EventReader", "Limits", "async_write_event"]


@dataclass(frozen=True)
class Limits:
    header_bytes: int = 8 * 1024
    """Longest header line, bytes (Home Assistant's are under 200)."""
    data_bytes: int = 64 * 1024
    """Longest data section, bytes."""
    payload_bytes: int = 1 << 20
    """Longest payload, bytes: over a second of 48 kHz 8-channel 16-bit audio."""


class EventReader:
    """One connection's events, read as the package reads them (header line, data merged into
    the header's, payload), each part parsed once. A client's audio chunks (hundreds per
    utterance, one per 10 ms) repeat their header line and data byte for byte, so the last
    ones parsed and checked are kept: the same bytes again are the same event, not parsed
    again. Only small ones, and only data of plain values (every event gets its own copy)."""

    def __init__(self, reader: asyncio.StreamReader, limits: Limits) -> None:
        """`reader` must have been made with `limit=limits.header_bytes`."""
        self._reader = reader
        self._limits = limits
        self._line = b""
        self._header = _Header("", 0, 0, {})
        self._raw_data = b""
        self._data: dict[str, Any] = {}

    async def read(self) -> Event | None:
        """The next event, None at a clean end of stream; WyomingError for anything malformed."""
        line = await _header_line(self._reader, self._limits)
        if not line:
            return None  # a clean end of stream
        if line == self._line:
            header = self._header
        else:
            header = _checked(line, self._limits)
            if len(line) <= _KEPT_BYTES and _plain(header.data):
                self._line, self._header = line, header
        data = dict(header.data)
        try:
            if header.data_length:
                raw = await self._reader.readexactly(header.data_length)
                data.update(self._data if raw == self._raw_data else self._parsed_data(raw))
            payload = await self._reader.readexactly(header.payload_length) if header.payload_length else None
        except asyncio.IncompleteReadError:
            raise WyomingError("the connection ended inside an event", "bad-frame") from None
        return Event(type=header.type, data=data, payload=payload)

    def _parsed_data(self, raw: bytes) -> dict[str, Any]:
        more = _json(raw, "data")
        if not isinstance(more, dict):
            raise WyomingError("an event's data is not a JSON object", "bad-frame")
        if len(raw) <= _KEPT_BYTES and _plain(more):
            self._raw_data, self._data = raw, more
        return more


_KEPT_BYTES = 512
"""Longest header line or data section kept for the next event (a chunk's are under 100)."""


@dataclass(frozen=True)
class _Header:
    """A header line, parsed and checked: what it announces."""

    type: str
    data_length: int
    payload_length: int
    data: dict[str, Any]
    """The header's own data (the data section is merged into a copy of it)."""


def _checked(line: bytes, limits: Limits) -> _Header:
    """The header `line` announces, its lengths checked before a byte of them is read."""
    header = _header(line)
    data_length = _length(header, "data_length", limits.data_bytes)
    payload_length = _length(header, "payload_length", limits.payload_bytes)
    return _Header(header["type"], data_length, payload_length, header.get("data", {}))


def _plain(data: dict[str, Any]) -> bool:
    """Whether every value is a str, number, bool or null: a copy of the dict shares nothing mutable."""
    return all(value is None or isinstance(value, (str, int, float)) for value in data.values())


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
