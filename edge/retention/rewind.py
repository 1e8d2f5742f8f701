"""Bringing a trusted clock that ran ahead back to the synchronised wall clock
(`edge-agent clock rewind`), without keeping anything longer.

The trusted clock never goes back by itself: that is what keeps a clock set back from
lengthening retention. So a forward jump that was wrong (a broken real-time clock, a bad
time source) leaves it ahead for good, and every expiry with it. When NTP says the wall
clock is right, a rewind moves the trusted clock back by the difference, rounded up to
whole seconds, and every instant the keystore holds back by the same amount: each retained
bucket keeps exactly the time it had left (a fraction of a second less), so nothing is
kept longer. What the jump shredded stays shredded.

A bucket's id names its expiry, so a rewind renames buckets; their rows, handles and keys
stay, and every session row is sealed again with the new ids and times. One commit does it,
with the rewind recorded in the state row and under a new root (the ratchet), so no copy of
the keystore with the later expiries opens afterwards. Only then does the clock's mark move
back. A crash in between leaves earlier expiries and a clock still ahead (data can only go
early), and the next purge, forget or agent start finishes the rewind from the record before
it reads the clock. The record stays afterwards: a process that read the clock before the
rewind (an agent starting meanwhile) takes the rewind up at its next sweep instead of
writing its old mark back.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import replace
from datetime import datetime, timedelta

from edge.errors import ClockError, KeystoreError, StorageError
from edge.events import ClockRewound
from edge.faults import crash_point
from edge.progress import Progress
from edge.retention.clock import Mark, TrustedClock
from edge.sink import AuditSink
from edge.store.buckets import bucket_id
from edge.store.keystore import Keystore
from edge.store.records import ClockRewind, SessionEntry
from edge.store.tables import KeystoreData

log = logging.getLogger(__name__)

CHUNK = 2000
"""Sessions sealed again between two writes into the transaction (and reports of progress)."""


def rewind(keystore: Keystore, clock: TrustedClock, audit: AuditSink, progress: Progress | None = None) -> ClockRewind | None:
    """Bring `clock` back to the wall clock and the keystore's instants back by as much.
    None when the trusted clock has not run ahead (see Reading.ran_ahead). ClockError when
    the wall clock is not NTP-synchronised (then edge cannot tell a trusted clock that ran
    ahead from a wall clock set back) or a forget is unfinished; nothing is changed then."""
    with keystore.transaction() as data:
        adopt(data, clock, audit, required=True)  # an earlier rewind that a crash interrupted
        reading = clock.read()
        if not reading.synced:
            raise ClockError(
                "the wall clock is not NTP-synchronised, so edge cannot tell whether the trusted clock ran ahead or "
                "the wall clock was set back; nothing was changed. Synchronise it first (systemctl enable --now "
                "systemd-timesyncd; `timedatectl` then says 'System clock synchronized: yes') and run this again"
            )
        if not reading.ran_ahead:
            return None
        if data.forgets or any(b.retiring_identity is not None for b in data.buckets.values()):
            raise ClockError("a forget is not finished yet; nothing was changed. Run `edge-agent purge`, then this again")
        before, mark = clock.now(), clock.mark_now()
        seconds = math.ceil((before - mark.wall).total_seconds())
        shift = timedelta(seconds=seconds)
        buckets, sessions = _redate(data, shift, progress)
        data.rewind = ClockRewind(
            os.urandom(6).hex(), seconds, before, before - shift, mark.monotonic, mark.boot, mark.uptime, buckets, sessions
        )
        keystore.ratchet(data)  # commits: the new instants and the record, under a new root
        crash_point("rewind.dated")
        adopt(data, clock, audit, resumed=False, required=True)
        return data.rewind


def adopt(data: KeystoreData, clock: TrustedClock, audit: AuditSink, *, resumed: bool = True, required: bool = False) -> None:
    """Make `clock` follow the keystore's latest rewind (inside a transaction, before the
    clock is read for anything retention decides): finish one that a crash interrupted (log
    it, move the clock's mark back), or take up one made since this clock was read. Unless
    `required`, a mark that cannot be written is only logged: the clock in memory follows
    the rewind anyway, and shredding must not wait on that file."""
    done = data.rewind
    if done is None or (done.finished and clock.rewind == done.request):
        return
    if clock.rewind != done.request:
        clock.reload()
    if clock.rewind != done.request:  # not moved back yet (cut short, or written over by a process that read it before)
        if not done.finished:  # logged before the mark is moved: a mark that follows the rewind means it is logged
            audit.append(  # signed in its write
                ClockRewound(
                    request=done.request,
                    seconds=done.seconds,
                    from_=done.before.isoformat(),
                    to=done.to.isoformat(),
                    buckets=done.buckets,
                    sessions=done.sessions,
                    resumed=resumed,
                )
            )
        try:
            clock.rewind_to(Mark(done.to, done.monotonic, done.boot, done.uptime, done.request))
        except StorageError as exc:
            if required:
                raise
            log.warning("the clock's rewind is not written yet (retried by the next command): %s", exc)
            return
        crash_point("rewind.marked")
    if not done.finished:
        data.rewind = replace(done, finished=True)


def _redate(data: KeystoreData, shift: timedelta, progress: Progress | None) -> tuple[int, int]:
    """Move every instant in the keystore back by `shift`: (buckets, sessions) re-dated."""
    renamed: dict[str, str] = {}
    for bucket in sorted(data.buckets.values(), key=lambda b: b.expires):  # earliest first: see BucketTable.rename
        expires = bucket.expires - shift
        moved = replace(bucket, id=bucket_id(bucket.profile, bucket.kind, expires), expires=expires)
        data.buckets.rename(bucket.id, moved)
        renamed[bucket.id] = moved.id
    sessions = list(data.sessions)
    for index, session_id in enumerate(sessions, 1):
        data.sessions[session_id] = _moved(data.sessions[session_id], shift, renamed)
        if index % CHUNK == 0 or index == len(sessions):
            data.sessions.forget_cache()  # written into the transaction; not all held in memory
            if progress is not None:
                progress(index, len(sessions))
    data.last_seen = {profile: heard - shift for profile, heard in data.last_seen.items()}
    data.voices = {p: replace(v, enrolled=v.enrolled - shift, heard=v.heard - shift) for p, v in data.voices.items()}
    if data.last_forget is not None:
        data.last_forget -= shift
    return len(renamed), len(sessions)


def _moved(entry: SessionEntry, shift: timedelta, renamed: dict[str, str]) -> SessionEntry:
    def bucket(old: str | None) -> str | None:
        if old is None:
            return None
        if old not in renamed:
            raise KeystoreError(
                f"session {entry.id}: its bucket {old} is missing (keystore damaged); nothing was changed", session=entry.id
            )
        return renamed[old]

    def earlier(instant: datetime | None) -> datetime | None:
        return instant - shift if instant is not None else None

    return replace(
        entry,
        created=entry.created - shift,
        audio_expires=earlier(entry.audio_expires),
        transcript_expires=earlier(entry.transcript_expires),
        audio_bucket=bucket(entry.audio_bucket),
        transcript_bucket=bucket(entry.transcript_bucket),
        audio_shredded=earlier(entry.audio_shredded),
        transcript_shredded=earlier(entry.transcript_shredded),
    )
