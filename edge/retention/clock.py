"""The trusted clock: time that never goes back.

A Pi has no real-time clock and boots with a stale time until NTP syncs, and
anyone can set the clock. Retention must never be extended by either, so "now"
is the later of the wall clock and the last trusted instant plus the monotonic
time elapsed since it (when still in the same boot). The last trusted instant
is persisted (DATA_DIR/clock) as a high-water mark. A forward jump is taken at
face value: data only expires earlier.
"""

from __future__ import annotations

import ctypes
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edge.boot import boot_id
from edge.disk.files import read_in, write_atomic_in
from edge.disk.layout import CLOCK
from edge.errors import StorageError

CLOCK_VERSION = 1
SET_BACK_TOLERANCE = timedelta(seconds=2)
"""A wall clock this far behind the trusted time counts as set back (an anomaly)."""


@dataclass(frozen=True)
class Mark:
    wall: datetime
    """The trusted instant (UTC)."""
    monotonic: float
    """time.monotonic() at that instant."""
    boot: str


@dataclass(frozen=True)
class Reading:
    now: datetime
    """The trusted time (UTC)."""
    wall: datetime
    """What the wall clock said."""
    set_back: timedelta
    """How far the wall clock is behind the trusted time (0 when it is not)."""
    synced: bool
    """Whether the kernel says the clock is synchronised (NTP)."""
    drift: float
    """Wall minus monotonic seconds, from this reading's wall time: constant until
    someone (or NTP) steps the clock."""


class TrustedClock:
    """`now()` for everything retention decides. Inject `wall` and `monotonic` in tests."""

    def __init__(
        self,
        data_dir: Path,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        boot: Callable[[], str] = boot_id,
    ) -> None:
        self.data_dir = data_dir
        self.path = data_dir / CLOCK
        self._wall, self._monotonic, self._boot = wall, monotonic, boot
        self._mark = self._load()

    def read(self) -> Reading:
        """The trusted time with what a shred event records about the clock."""
        seconds, monotonic = self._wall(), self._monotonic()
        wall = datetime.fromtimestamp(seconds, timezone.utc)
        trusted = self._trusted(wall)
        return Reading(now=trusted, wall=wall, set_back=max(timedelta(0), trusted - wall), synced=clock_synced(), drift=seconds - monotonic)

    def now(self) -> datetime:
        return self._trusted(datetime.fromtimestamp(self._wall(), timezone.utc))

    def _trusted(self, wall: datetime) -> datetime:
        if self._mark is None:
            return wall
        floor = self._mark.wall
        if self._mark.boot == self._boot():
            floor += timedelta(seconds=max(0.0, self._monotonic() - self._mark.monotonic))
        return max(wall, floor)

    def persist(self) -> Reading:
        """Move the high-water mark up to now (call at start, at each sweep and shred)."""
        reading = self.read()
        self._mark = Mark(reading.now, self._monotonic(), self._boot())
        document = {"version": CLOCK_VERSION, "wall": reading.now.isoformat(), "monotonic": self._mark.monotonic, "boot": self._mark.boot}
        try:
            write_atomic_in(self.data_dir, CLOCK, json.dumps(document).encode())
        except StorageError:
            pass  # e.g. a full disk: the mark in memory still holds; shredding must not wait on it
        return reading

    def _load(self) -> Mark | None:
        raw = read_in(self.data_dir, CLOCK)  # StorageError names the file when it cannot be read
        if raw is None:
            return None
        try:
            document = json.loads(raw)
            version = document.get("version")
        except (ValueError, AttributeError):
            return None  # a damaged mark only loses protection against a set-back, it never extends retention
        if version != CLOCK_VERSION:
            raise StorageError(
                f"{self.path}: the clock's high-water mark is version {version!r}; this edge reads version "
                f"{CLOCK_VERSION} (written by a newer edge? update edge, or remove the file to lose only the "
                "protection against a clock set back)"
            )
        try:
            return Mark(datetime.fromisoformat(document["wall"]), float(document["monotonic"]), str(document["boot"]))
        except (ValueError, KeyError, TypeError):
            return None


class _Timex(ctypes.Structure):
    # The leading fields of struct timex (linux/timex.h); the rest is padding.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)  # already loaded: no search; once per process (the watch asks every second)


def clock_synced() -> bool:
    """Whether an NTP daemon has synchronised the kernel clock (adjtimex, read-only)."""
    try:
        timex = _Timex()
        state = _libc().adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return False
    return state not in (-1, _TIME_ERROR) and not timex.status & _STA_UNSYNC
