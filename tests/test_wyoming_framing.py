"""edge's Wyoming framing (the hostile-client boundary) on random and mutated streams, against
the `wyoming` package's own reader and the rules of docs/FORMATS.md section 7a.

Every event edge reads must be the event the package reads from the same bytes; every stream
edge refuses must break one of the rules, refused with that rule's code; and nothing else may
happen: no other exception, no wait on bytes that are already there, no wait for bytes beyond
a limit (a frame that announces too much is refused before any of it arrives). Each stream is
read twice: all of it at once and then the end of the stream, and in random pieces with no end
(a client that stops mid-frame: edge waits, as the connection's idle timeout expects).
Deterministic (one seed), a second or two.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import random

from wyoming.event import Event, async_read_event, write_event

from edge.errors import WyomingError
from edge.wyoming.framing import EventReader, Limits

LIMITS = Limits(header_bytes=256, data_bytes=512, payload_bytes=4096)
"""Small, so that streams meet every limit often."""
SEED = 20261207
CASES = 1500
WAITS = "waits"
"""The outcome of a stream that ends mid-frame with the connection still open."""
END = "end"
"""The outcome of a stream that ends cleanly (after whole events)."""
ODD = [None, True, False, 0, 1, -1, -(2**63), 2**63, 10**30, 1.0, 0.5, "3", "", [], [1], {}, {"a": 1}, [["rate", 16000]], "x" * 300]
"""Values that a field of a header or the data section should not hold, or might."""


def expected(stream: bytes, eof: bool) -> tuple[int, str]:
    """How many events a reader with LIMITS must read from `stream`, and how it must end (END,
    WAITS, or the error code): docs/FORMATS.md 7a, written out independently of edge's reader."""
    position, count = 0, 0
    while True:
        rest = stream[position:]
        newline = rest.find(b"\n")
        if newline == -1:
            if len(rest) > LIMITS.header_bytes:
                return count, "too-large"
            return count, (WAITS if not eof else END if not rest else "bad-frame")
        if newline > LIMITS.header_bytes:
            return count, "too-large"
        try:
            header = json.loads(rest[: newline + 1])
        except (ValueError, RecursionError):
            return count, "bad-frame"
        if not isinstance(header, dict) or not isinstance(header.get("type"), str) or not isinstance(header.get("data", {}), dict):
            return count, "bad-frame"
        lengths = []
        for key, cap in (("data_length", LIMITS.data_bytes), ("payload_length", LIMITS.payload_bytes)):
            value = header.get(key)
            value = 0 if value is None else value
            if type(value) is not int or value < 0:
                return count, "bad-frame"
            if value > cap:
                return count, "too-large"
            lengths.append(value)
        data_length, payload_length = lengths
        body = rest[newline + 1 :]
        if len(body) < data_length:
            return count, WAITS if not eof else "bad-frame"
        if data_length:
            try:
                data = json.loads(body[:data_length])
            except (ValueError, RecursionError):
                return count, "bad-frame"
            if not isinstance(data, dict):
                return count, "bad-frame"
        if len(body) < data_length + payload_length:
            return count, WAITS if not eof else "bad-frame"
        position += newline + 1 + data_length + payload_length
        count += 1


async def read_by_edge(stream: bytes, pieces: list[int], eof: bool) -> tuple[list[Event], str]:
    """Events edge reads from `stream` fed in `pieces` (then the end, if `eof`), and how it ended."""
    reader = asyncio.StreamReader(limit=LIMITS.header_bytes)
    events: list[Event] = []
    framing = EventReader(reader, LIMITS)

    async def read_all() -> str:
        while (event := await framing.read()) is not None:
            events.append(scribbled(event))
        return END

    task = asyncio.ensure_future(read_all())
    start = 0
    for size in pieces:
        reader.feed_data(stream[start : start + size])
        start += size
        await asyncio.sleep(0)
    reader.feed_data(stream[start:])
    if eof:
        reader.feed_eof()
    for _ in range(10):  # every byte is there: nothing real to wait for
        if task.done():
            break
        await asyncio.sleep(0)
    if not task.done():
        task.cancel()
        return events, WAITS
    try:
        return events, task.result()  # any exception but WyomingError fails the test
    except WyomingError as exc:
        return events, exc.code


def scribbled(event: Event) -> Event:
    """A copy of `event` to compare, and `event` itself scribbled on, as a careless handler
    might: a reader that shares anything between events makes a later one wrong."""
    kept = copy.deepcopy(event)
    for value in event.data.values():
        if isinstance(value, list | dict):
            value.clear()
    event.data["scribbled"] = True
    return kept


async def read_by_package(stream: bytes, most: int) -> list[Event | None]:
    """Up to `most` events as the `wyoming` package reads them (None: its end of stream)."""
    reader = asyncio.StreamReader(limit=LIMITS.header_bytes)
    reader.feed_data(stream)
    reader.feed_eof()
    events: list[Event | None] = []
    while len(events) < most:
        try:
            event = await async_read_event(reader)
        except Exception:  # noqa: BLE001 - the package's way of failing, whatever it is
            break
        events.append(event)
        if event is None:
            break
    return events


def valid_event(rng: random.Random) -> Event:
    kind = rng.randrange(7)
    if kind == 0:
        return Event("audio-chunk", {"rate": 16000, "width": 2, "channels": 1}, rng.randbytes(rng.choice([0, 2, 320, 3200, 4096, 4097])))
    if kind == 1:
        return Event("audio-start", {"rate": rng.choice([8000, 16000]), "width": 2, "channels": 1, "timestamp": rng.randrange(10**6)})
    if kind == 2:
        return Event("transcribe", {"language": rng.choice(["ko", "ko-KR", "en", "한국어"]), "name": "x" * rng.choice([0, 10, 600])})
    if kind == 3:
        return Event(rng.choice(["describe", "audio-stop", "ping", "", "unknown-type"]), {})
    if kind == 4:
        return Event("ping", {"text": rng.choice(["", "안녕", "\n", "\u2028", '"}{'])})
    if kind == 5:
        return Event("audio-chunk", {"rate": 16000, "shape": rng.choice([[1, 2], {"a": []}, "flat"])}, rng.randbytes(rng.randrange(1, 64)))
    return Event("audio-chunk", {}, rng.randbytes(rng.randrange(1, 64)))


def written(event: Event) -> bytes:
    """The event as the package writes it (header line, data, payload)."""
    out = io.BytesIO()
    write_event(event, out)
    return out.getvalue()


def mutated(frame: bytes, rng: random.Random) -> bytes:
    """`frame` with its header, data or lengths changed: the hostile client's moves."""
    line, _, rest = frame.partition(b"\n")
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict):  # mutated already
        return varied(frame, rng)
    move = rng.randrange(9)
    if move == 0:
        edges = [LIMITS.data_bytes, LIMITS.data_bytes + 1, LIMITS.payload_bytes, LIMITS.payload_bytes + 1, len(rest) + rng.choice([-1, 1])]
        header[rng.choice(["data_length", "payload_length"])] = rng.choice([*ODD, *edges])
    elif move == 1:
        header["type"] = rng.choice(ODD)
    elif move == 2:
        header["data"] = rng.choice(ODD)
    elif move == 3:
        header = rng.choice([[header], "header", 5, None, [["type", "ping"]]])
    elif move == 4:  # the data section replaced, its length told truly
        data = rng.choice([b"[1]", b'[["rate", 16000]]', b'"ab"', b"5", b"null", b"{{{", b"\xff\xfe{}", b"[" * 600, b'{"a": 1} x', b"{}"])
        rest = data + rest[header.get("data_length", 0) :]
        header["data_length"] = len(data)
    elif move == 5:  # the header padded to its limit, or just past it
        text = json.dumps(header)
        return text.encode() + b" " * (LIMITS.header_bytes - len(text) + rng.choice([-1, 0, 1, 2])) + b"\n" + rest
    elif move == 6:
        header.pop(rng.choice(["type", "data_length", "payload_length", "data", "version"]), None)
    elif move == 7:
        return line[: rng.randrange(len(line) + 1)] + rng.choice([b"", b"\n", b"\r\n"]) + rest
    else:
        header["data"] = {"nested": [[[]]] * rng.randrange(3), "text": "\ud800" if rng.random() < 0.5 else "\u00e9", "deeper": {"a": [1]}}
    return json.dumps(header).encode() + b"\n" + rest


def varied(frame: bytes, rng: random.Random) -> bytes:
    """`frame` with one byte after its header line changed: the same header, other data."""
    line, _, rest = frame.partition(b"\n")
    if not rest:
        return frame
    at = rng.randrange(min(len(rest), 60))
    return line + b"\n" + rest[:at] + bytes([rng.choice(b'0123456789 {}[]"a,:')]) + rest[at + 1 :]


def damaged(stream: bytes, rng: random.Random) -> bytes:
    """`stream` with bytes flipped, inserted, cut or repeated anywhere."""
    data = bytearray(stream)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(data) + 1)
        move = rng.randrange(5)
        if move == 0 and at < len(data):
            data[at] ^= 1 << rng.randrange(8)
        elif move == 1:
            data[at:at] = rng.choice([b"\n", b"{", b"}", b'"', b"0", b"-", rng.randbytes(rng.randrange(1, 8))])
        elif move == 2:
            del data[at : at + rng.randrange(1, 40)]
        elif move == 3:
            data[at:at] = data[at : at + rng.randrange(1, 200)]
        else:
            del data[at:]
    return bytes(data)


def a_stream(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return rng.randbytes(rng.randrange(0, 600))
    frames = [written(valid_event(rng)) for _ in range(rng.randrange(1, 4))]
    if roll < 0.75:
        which = rng.randrange(len(frames))
        frames[which] = mutated(frames[which], rng)
    if rng.random() < 0.5:  # one frame again (a chunk's header and data repeat): as it was, or changed
        which = rng.randrange(len(frames))
        again = frames[which]
        if rng.random() < 0.5:
            again = mutated(again, rng) if rng.random() < 0.5 else varied(again, rng)
        frames.insert(which + rng.choice([1, len(frames) - which]), again)
    stream = b"".join(frames)
    return damaged(stream, rng) if rng.random() < 0.3 else stream


def pieces_of(stream: bytes, rng: random.Random) -> list[int]:
    """Random piece sizes: a client that sends a frame a few bytes at a time."""
    sizes: list[int] = []
    left = len(stream)
    while left > 0 and len(sizes) < 40:
        size = rng.randrange(1, max(2, left // 3))
        sizes.append(size)
        left -= size
    return sizes


def test_edge_reads_what_the_package_reads_and_refuses_only_what_the_format_refuses():
    rng = random.Random(SEED)
    seen: dict[str, int] = {}

    async def every_case() -> None:
        for case in range(CASES):
            stream = a_stream(rng)
            for eof, pieces in ((True, []), (False, pieces_of(stream, rng))):
                events, outcome = await read_by_edge(stream, pieces, eof)
                what = f"case {case}, {'then the end' if eof else 'in pieces, no end'}: {stream[:400]!r}"
                assert (len(events), outcome) == expected(stream, eof), what
                package = await read_by_package(stream, len(events) + 1)
                assert package[: len(events)] == events, what
                if outcome == END:
                    assert package == [*events, None], what
                seen[outcome] = seen.get(outcome, 0) + 1

    asyncio.run(every_case())
    assert set(seen) == {END, WAITS, "too-large", "bad-frame"}, seen  # the streams met every outcome
    assert min(seen.values()) > CASES // 20, seen
