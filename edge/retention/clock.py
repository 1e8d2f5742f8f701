"""The trusted clock: time that never goes back, and never jumps on a clock that lies.

A Pi has no real-time clock and boots with a stale time until NTP syncs, and
anyone can set the clock. Retention must never be extended by either, so "now"
is the later of the wall clock and the last trusted instant plus the monotonic
time elapsed since it (when still in the same boot). The last trusted instant
is persisted (DATA_DIR/clock) as a high-water mark. A forward jump of the wall
clock is taken at face value: data only expires earlier.

The monotonic clock is checked against the kernel's uptime (/proc/uptime, CLOCK_BOOTTIME),
which libfaketime and friends cannot fake: more monotonic time since the mark than the
kernel counted is impossible, so that reading is refused and the kernel's count is used
instead. (Trusting it moved a household 57 years ahead for good: Debian's libfaketime
fakes CLOCK_MONOTONIC to the faked epoch.) Where /proc/uptime cannot be read, the
monotonic clock is trusted as before: a lie there can only make data expire early.

A trusted clock that ran ahead never comes back by itself (that is what keeps a clock set
back from lengthening retention); edge.retention.rewind brings it back, with the
keystore's expiries, when NTP says the wall clock is right.
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edge.boot import boot_id
from edge.disk.files import read_in, write_atomic_in
from edge.disk.layout import CLOCK
from edge.disk.versioned import CLOCK_MARK, decode
from edge.durations import human
from edge.errors import StorageError

SET_BACK_TOLERANCE = timedelta(seconds=2)
"""A wall clock this far behind the trusted time counts as set back (an anomaly)."""
RAN_AHEAD = timedelta(minutes=1)
"""A trusted clock this far ahead of an NTP-synchronised wall clock ran ahead: status, doctor
and the report say so, and `edge-agent clock rewind` may bring it back."""
UPTIME_SLACK = 1.0
"""Seconds by which the monotonic clock may seem to outrun the kernel's uptime (/proc/uptime
counts in 10 ms steps, and the two are read one after the other)."""
UPTIME = Path("/proc/uptime")


def read_uptime(path: Path = UPTIME) -> float | None:
    """Seconds since boot by the kernel (CLOCK_BOOTTIME), or None when it cannot be read."""
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Mark:
    wall: datetime
    """The trusted instant (UTC)."""
    monotonic: float
    """time.monotonic() at that instant."""
    boot: str
    uptime: float | None = None
    """The kernel's uptime at that instant (None in marks written before edge kept it)."""
    rewind: str | None = None
    """The latest `clock rewind` this mark follows (its request id), if any."""


@dataclass(frozen=True)
class Impossible:
    """A monotonic reading the kernel contradicts: it was not trusted."""

    claimed: float
    """Seconds the monotonic clock said had passed since the mark (negative: it went back)."""
    allowed: float
    """Seconds the kernel's uptime allows (since the mark, or since boot for an older mark)."""

    def describe(self) -> str:
        allowed = human(timedelta(seconds=max(0.0, self.allowed)))
        if self.claimed < 0:
            return (
                f"the clock's mark holds a monotonic time {human(timedelta(seconds=-self.claimed))} ahead of this "
                f"process's (written under a faked clock?): it is not trusted (the kernel's uptime allows {allowed} since)"
            )
        return (
            f"the monotonic clock claims {human(timedelta(seconds=self.claimed))} since the clock's mark, but the "
            f"kernel's uptime allows {allowed}: it is not trusted (faked? libfaketime fakes it unless "
            "FAKETIME_DONT_FAKE_MONOTONIC=1)"
        )


@dataclass(frozen=True)
class Reading:
    now: datetime
    """The trusted time (UTC)."""
    wall: datetime
    """What the wall clock said."""
    set_back: timedelta
    """How far the wall clock is behind the trusted time (0 when it is not): it was set back,
    or (when `synced` says the wall clock is right) the trusted clock ran ahead."""
    synced: bool
    """Whether the kernel says the clock is synchronised (NTP)."""
    drift: float
    """Wall minus monotonic seconds, from this reading's wall time: constant until
    someone (or NTP) steps the clock."""
    impossible: Impossible | None = None
    """A monotonic reading refused in this reading (None: none, or nothing to check)."""
    uptime_known: bool = True
    """Whether /proc/uptime could be read (else a lying monotonic clock goes unnoticed)."""

    @property
    def ran_ahead(self) -> bool:
        """The trusted clock is far ahead of a wall clock NTP vouches for."""
        return self.synced and self.set_back >= RAN_AHEAD

    def notes(self) -> list[str]:
        """What is wrong with the clock, in sentences (status and doctor print them)."""
        notes = []
        ahead = human(self.set_back)
        if self.ran_ahead:
            notes.append(
                f"the trusted clock ran ahead: it is {ahead} ahead of the NTP-synchronised wall clock (a forward "
                "jump of the clock, or a time source that lied). Retention counts from it, so nothing is kept longer, "
                f"but every expiry is shown {ahead} late; `edge-agent clock rewind` brings it back, and each retained "
                "session keeps the time it has left"
            )
        elif self.set_back > SET_BACK_TOLERANCE and not self.synced:
            notes.append(
                f"the wall clock is {ahead} behind the trusted clock (set back, or not synchronised yet): "
                "retention counts from the trusted clock, which never goes back"
            )
        if self.impossible is not None:
            notes.append(self.impossible.describe())
        if not self.uptime_known:
            notes.append(
                f"{UPTIME} cannot be read, so a faked or broken monotonic clock cannot be caught (it could only make data expire early)"
            )
        return notes


class TrustedClock:
    """`now()` for everything retention decides. Inject `wall`, `monotonic` and `uptime` in tests."""

    def __init__(
        self,
        data_dir: Path,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        boot: Callable[[], str] = boot_id,
        uptime: Callable[[], float | None] = read_uptime,
    ) -> None:
        self.data_dir = data_dir
        self.path = data_dir / CLOCK
        self._wall, self._monotonic, self._boot, self._uptime = wall, monotonic, boot, uptime
        self._mark = self._load()

    @property
    def rewind(self) -> str | None:
        """The latest rewind this clock's mark follows."""
        return self._mark.rewind if self._mark is not None else None

    def read(self) -> Reading:
        """The trusted time with what a shred event records about the clock."""
        seconds, monotonic = self._wall(), self._monotonic()
        wall = datetime.fromtimestamp(seconds, timezone.utc)
        trusted, impossible, known = self._trusted(wall)
        return Reading(
            now=trusted,
            wall=wall,
            set_back=max(timedelta(0), trusted - wall),
            synced=clock_synced(),
            drift=seconds - monotonic,
            impossible=impossible,
            uptime_known=known,
        )

    def now(self) -> datetime:
        return self._trusted(datetime.fromtimestamp(self._wall(), timezone.utc))[0]

    def _trusted(self, wall: datetime) -> tuple[datetime, Impossible | None, bool]:
        if self._mark is None:
            return wall, None, True
        floor, impossible, known = self._mark.wall, None, True
        if self._mark.boot == self._boot():
            elapsed, impossible, known = self._elapsed(self._mark)
            floor += timedelta(seconds=elapsed)
        return max(wall, floor), impossible, known

    def _elapsed(self, mark: Mark) -> tuple[float, Impossible | None, bool]:
        """Seconds since `mark` (same boot): the monotonic clock's, unless the kernel's uptime
        says that much time cannot have passed; then the kernel's own count since the mark
        (nothing, for a mark without one: never a jump)."""
        claimed, uptime = self._monotonic() - mark.monotonic, self._uptime()
        if uptime is None:
            return max(0.0, claimed), None, False
        allowed = uptime - mark.uptime if mark.uptime is not None else uptime
        if -UPTIME_SLACK <= claimed <= allowed + UPTIME_SLACK:
            return max(0.0, claimed), None, True
        return (max(0.0, allowed) if mark.uptime is not None else 0.0), Impossible(claimed, allowed), True

    def persist(self) -> Reading:
        """Move the high-water mark up to now (call at start, at each sweep and shred)."""
        reading = self.read()
        self._write(Mark(reading.now, self._monotonic(), self._boot(), self._uptime(), self.rewind), required=False)
        return reading

    def at_least(self, instant: datetime | None) -> None:
        """Never read earlier than `instant`, a trusted time already seen (the start of the latest
        retained session): a lost or damaged mark must not let retention run from a clock that is
        behind the keystore's own times (after a jump ahead, by years)."""
        if instant is not None and self.now() < instant:
            self._mark = Mark(instant, self._monotonic(), self._boot(), self._uptime(), self.rewind)

    def mark_now(self) -> Mark:
        """A mark of the wall clock as it reads now (what a rewind brings the trusted clock back to)."""
        return Mark(datetime.fromtimestamp(self._wall(), timezone.utc), self._monotonic(), self._boot(), self._uptime())

    def rewind_to(self, mark: Mark) -> None:
        """Replace the high-water mark with an earlier one (only a rewind may: the keystore's
        expiries moved back first). StorageError when it cannot be written: the rewind is
        then unfinished, and the next purge, forget or agent start tries again."""
        self._write(mark, required=True)

    def reload(self) -> None:
        """Read the mark again (another process may have rewound it)."""
        self._mark = self._load()

    def _write(self, mark: Mark, required: bool) -> None:
        self._mark = mark
        document: dict[str, object] = {
            "wall": mark.wall.isoformat(),
            "monotonic": mark.monotonic,
            "boot": mark.boot,
        }
        if mark.uptime is not None:
            document["uptime"] = mark.uptime
        if mark.rewind is not None:
            document["rewind"] = mark.rewind
        try:
            write_atomic_in(self.data_dir, CLOCK, CLOCK_MARK.dump(document))
        except StorageError:
            if required:
                raise
            # e.g. a full disk: the mark in memory still holds; shredding must not wait on it

    def _load(self) -> Mark | None:
        raw = read_in(self.data_dir, CLOCK)  # StorageError names the file when it cannot be read
        if raw is None:
            return None
        document = decode(raw)
        if document is None:
            return None  # a damaged mark only loses protection against a set-back (see FORMATS section 8)
        CLOCK_MARK.check(document, self.path)
        try:
            uptime, rewind = document.get("uptime"), document.get("rewind")
            return Mark(
                datetime.fromisoformat(document["wall"]),
                float(document["monotonic"]),
                str(document["boot"]),
                float(uptime) if uptime is not None else None,
                str(rewind) if rewind is not None else None,
            )
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
