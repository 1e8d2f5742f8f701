"""Crypto-shredding: destroy the keys, ratchet the root, delete the ciphertext.

Order, always under the data-folder lock:
  1. the keystore drops the buckets' identities and the root is ratcheted
     (from then on no key on the device opens that data, nor any old copy of it);
  2. the ciphertext files of what was shredded are deleted by name (hygiene);
  3. the caller records the event.
Each step is idempotent and a crash between steps is finished by the next sweep: a
marker (layout.FILES_CLEAN) is removed before step 1 and made again after step 2, so a
folder without it gets one full scan that deletes every file no live session refers to.
A sweep in a clean folder deletes by name and lists neither folder (100,000 sessions are
200,000 files), but for a purge of most transcripts, which lists theirs once for temporary copies.

Forgetting some sessions of a bucket (but not all) re-keys the bucket: its files
get headers for a fresh identity, then the old identity is destroyed with a
ratchet, so a copy of a forgotten file recovered from flash opens with nothing.

A forget is write-ahead, like a shred: its sessions leave the keystore in the same
save that records the request (which buckets die, which are re-keyed), and only then
are keys destroyed. A crash anywhere after that save is finished by the next sweep
or forget; the request is fulfilled (and logged so) exactly when nothing it named
can be opened any more.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from edge.config import Config
from edge.crypto.age import Recipient, rekey_in_place
from edge.disk import layout, reserve
from edge.disk.files import (
    LOCKED,
    create_in,
    exists_in,
    files_in,
    folder_fd,
    names_in,
    open_in,
    size_in,
    sync_folder_in,
    unlink_durably_in,
    unlink_each_in,
    unlink_in,
)
from edge.errors import AgeError, StorageError, UsageError
from edge.events import (
    AuditEvent,
    Cleanup,
    ClockImpossible,
    ClockRanAhead,
    ClockSetBack,
    ForgetFulfilled,
    ForgetRequested,
    Shred,
    VoiceForgotten,
)
from edge.faults import crash_point
from edge.progress import Progress
from edge.retention.clock import SET_BACK_TOLERANCE, Reading, TrustedClock
from edge.retention.forecast import due, voice_expires
from edge.retention.rewind import adopt
from edge.sink import AuditSink
from edge.store.keystore import Keystore
from edge.store.records import PendingForget, SessionEntry
from edge.store.tables import KeystoreData
from edge.values import DataKind, ShredReason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShreddedBucket:
    bucket: str
    profile: str
    kind: DataKind
    expires: datetime
    sessions: tuple[str, ...]
    """Sessions whose data of this kind died with the bucket."""
    reason: ShredReason
    late: timedelta
    """How long after its expiry the bucket was shredded (negative: early, e.g. forget)."""


@dataclass
class ShredReport:
    reading: Reading
    """The trusted time of the run, whether the clock was synced, and any set-back."""
    buckets: list[ShreddedBucket] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    """Sessions removed by a forget request."""
    rekeyed: list[str] = field(default_factory=list)
    """Buckets given a new key because some (not all) of their sessions were forgotten."""
    voices: list[str] = field(default_factory=list)
    """Profiles whose voiceprint was shredded (forgotten, or the profile went inactive)."""
    resumed: list[str] = field(default_factory=list)
    """Forget requests a crash had interrupted, finished by this run."""
    files_deleted: int = 0
    backstop: bool = False
    """Run by `purge --overdue`, the installed timer's second path: its shreds say so in the log."""

    @property
    def empty(self) -> bool:
        return not (self.buckets or self.forgotten or self.rekeyed or self.voices or self.files_deleted)

    def lines(self) -> list[str]:
        """What the run did, one line per bucket. No key material, no transcript text."""
        out = []
        for item in self.buckets:
            seconds = item.late.total_seconds()
            timing = "on time" if 0 <= seconds < 1 else (f"late by {seconds:.0f}s" if seconds > 0 else "ahead of expiry")
            out.append(f"shredded {item.kind} bucket {item.bucket}: {len(item.sessions)} session(s), {item.reason}, {timing}")
        out += [f"re-keyed bucket {b}: its remaining sessions now open only with a new key" for b in self.rekeyed]
        if self.forgotten:
            out.append(f"forgot {len(self.forgotten)} session(s)")
        out += [f"shredded the voiceprint of {profile}" for profile in self.voices]
        if self.files_deleted:
            out.append(f"deleted {self.files_deleted} ciphertext file(s)")
        if not self.empty:
            note = "" if self.reading.synced else " (clock not NTP-synced)"
            behind = self.reading.set_back.total_seconds()
            if self.reading.ran_ahead:
                note += f" (the trusted clock ran {behind:.0f}s ahead of the NTP-synced wall clock: `edge-agent clock rewind`)"
            elif behind > SET_BACK_TOLERANCE.total_seconds():
                note += f" (wall clock is {behind:.0f}s behind the trusted clock: set back?)"
            out.append(f"at {self.reading.now.isoformat(timespec='seconds')}{note}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.reading.now.isoformat(timespec="seconds"),
            "buckets": [
                {
                    "bucket": b.bucket,
                    "kind": b.kind,
                    "sessions": len(b.sessions),
                    "reason": b.reason,
                    "late_seconds": round(b.late.total_seconds(), 3),
                }
                for b in self.buckets
            ],
            "forgotten": len(self.forgotten),
            "rekeyed": list(self.rekeyed),
            "voices": list(self.voices),
            "files_deleted": self.files_deleted,
        }


@dataclass(frozen=True)
class Overdue:
    """What should have been gone more than a margin ago: what a running agent would have
    shredded long before (`purge --overdue` acts only on this)."""

    buckets: tuple[str, ...] = ()
    voices: tuple[str, ...] = ()
    """Profiles whose voiceprint outlived their inactive_after."""
    forgets: tuple[str, ...] = ()
    """Forget requests a crash left unfinished."""

    @property
    def empty(self) -> bool:
        return not (self.buckets or self.voices or self.forgets)

    def left_in(self, report: ShredReport) -> Overdue:
        """What of this a sweep did shred (the rest was done by someone else meanwhile)."""
        shredded = {item.bucket for item in report.buckets}
        return Overdue(
            tuple(b for b in self.buckets if b in shredded),
            tuple(v for v in self.voices if v in report.voices),
            tuple(f for f in self.forgets if f in report.resumed),
        )

    def describe(self) -> str:
        parts = [f"{len(self.buckets)} bucket(s)"] if self.buckets else []
        parts += [f"the voiceprint of {profile}" for profile in self.voices]
        parts += [f"{len(self.forgets)} interrupted forget request(s)"] if self.forgets else []
        return ", ".join(parts)


@dataclass(frozen=True)
class ForgetRequest:
    """Exactly one of the selectors is set. A profile's voiceprint goes with `profile` and
    `everything`, and alone with `voice`; `session` and `before` leave voiceprints alone."""

    session: str | None = None
    profile: str | None = None
    everything: bool = False
    before: datetime | None = None
    voice: str | None = None
    """Only this profile's voiceprint (`voices forget`): no session."""
    since: datetime | None = None
    """With `profile`: only its sessions created at or after this instant ("forget today" by
    voice); its voiceprint and its older sessions stay."""
    identified: bool | None = None
    """With `profile` (a spoken forget): only its sessions whose tag named who spoke (True),
    or only those that fell to the strictest policy or guest mode (False): an unknown voice
    never reaches a known speaker's sessions of the same profile, nor the other way round.
    Its voiceprint stays."""

    def matches(self, entry: SessionEntry) -> bool:
        if self.voice is not None:
            return False
        if self.everything:
            return True
        if self.session is not None:
            return entry.id == self.session
        if self.profile is not None:
            return (
                entry.profile == self.profile
                and (self.since is None or entry.created >= self.since)
                and (self.identified is None or entry.rule.identifies == self.identified)
            )
        return self.before is not None and entry.created < self.before

    @classmethod
    def checked(
        cls,
        config: Config,
        data: KeystoreData,
        session: str | None = None,
        profile: str | None = None,
        everything: bool = False,
        before: datetime | None = None,
        voice: str | None = None,
    ) -> ForgetRequest:
        """A request with exactly one selector, naming a session, profile or voiceprint that exists."""
        if sum((session is not None, profile is not None, everything, before is not None, voice is not None)) != 1:
            raise UsageError("forget needs exactly one of: a session, a profile, all, or a date (before)")
        if voice is not None and voice not in data.voices:
            enrolled = ", ".join(sorted(data.voices)) or "none"
            raise UsageError(f"no voice is enrolled for {voice!r} (enrolled: {enrolled}); `edge-agent voices list` shows them")
        if session is not None and session not in data.sessions:
            raise UsageError(f"there is no retained session {session!r}; `edge-agent status` lists them")
        known = {p.name for p in config.profiles} | {b.profile for b in data.buckets.values()} | set(data.voices)
        if profile is not None and profile not in known:
            raise UsageError(f"there is no profile {profile!r}; the profiles are: {', '.join(sorted(known))}")
        return cls(session=session, profile=profile, everything=everything, before=before, voice=voice)

    def voices(self, data: KeystoreData) -> list[str]:
        """The profiles whose voiceprint this request forgets."""
        if self.everything:
            return sorted(data.voices)
        chosen = self.voice if self.voice is not None else self.profile if self.whole_profile else None
        return [chosen] if chosen is not None and chosen in data.voices else []

    @property
    def whole_profile(self) -> bool:
        """Every session of `profile` and its voiceprint (its buckets go whole)."""
        return self.profile is not None and self.since is None and self.identified is None

    def describe(self) -> str:
        if self.voice is not None:
            return f"the voiceprint of {self.voice}"
        if self.everything:
            return "everything"
        if self.session is not None:
            return f"session {self.session}"
        if self.profile is not None:
            since = f" since {self.since.isoformat()}" if self.since is not None else ""
            who = {None: "", True: ", identified speakers", False: ", unidentified speakers"}[self.identified]
            return f"profile {self.profile}{since}{who}"
        return f"everything before {self.before.isoformat() if self.before else '?'}"


ROOM_NEEDED = 1 << 20
"""Free bytes (besides two keystore copies) below which a shred deletes the doomed ciphertext
before it writes anything."""
LIST_TEMPS_OVER = 16
"""A clean folder's leftover temporary copies are found by listing it once, rather than by
trying each name, when the transcripts dropped times this reach the files it held."""


class Shredder:
    """Runs sweeps and forget requests against the keystore."""

    def __init__(self, keystore: Keystore, clock: TrustedClock, config: Config, audit: AuditSink, deleting: Progress | None = None) -> None:
        self.keystore = keystore
        self.clock = clock
        self.config = config
        self.audit = audit
        self.deleting = deleting
        """Told (files deleted, files to delete) as the ciphertext of a shred goes: 200,000
        files take seconds here and longer on an SD card. The keys are destroyed by then."""
        self._logged_set_back = timedelta(0)
        self._logged_impossible = False

    def sweep(self, backstop: bool = False) -> ShredReport:
        """Shred every bucket that is due (or whose profile went inactive), finish any
        interrupted forget or re-key, delete orphaned ciphertext. `backstop`: run by
        `purge --overdue` because the agent had left something overdue (logged with each shred)."""

        def due_now(data: KeystoreData) -> Callable[[SessionEntry, str], bool]:
            due = self._due(data, self.clock.read().now)
            return lambda session, bucket_id: bucket_id in due

        freed = self._make_room(due_now)  # by the clock as it reads: a rewind not yet taken up only errs toward deletion
        with self.keystore.transaction() as data:
            clean = exists_in(self.keystore.data_dir, layout.FILES_CLEAN)
            self._trusted_floor(data)
            report = ShredReport(self.clock.persist(), backstop=backstop)
            report.files_deleted += freed
            self._resume_forgets(data, report)
            now = report.reading.now
            reasons = self._due(data, now)
            self._shred_stale_voices(data, now, report)
            self._destroy(data, reasons, now, report)
            if report.voices and not reasons:
                self.keystore.ratchet(data)  # the voiceprints' only ratchet (a shred's would have served)
            rekeyed = self._rekey_files(data, report)
            if rekeyed:
                self.keystore.finish_rekey(data, rekeyed)
            report.files_deleted += self._delete_files(data, report, clean)
            self._log(report)
        return report

    def _trusted_floor(self, data: KeystoreData) -> None:
        """Before the clock decides anything: follow a rewind of it (finish one a crash cut
        short, or one made since this process read the clock), and never read earlier than
        the latest retained session's start (the mark may have been lost)."""
        adopt(data, self.clock, self.audit)
        self.clock.at_least(max(data.last_seen.values(), default=None))

    def _due(self, data: KeystoreData, now: datetime) -> dict[str, ShredReason]:
        """The buckets to shred now: expired, or of a profile not heard for too long."""
        return due(self.config, data, now)

    def _stale_voices(self, data: KeystoreData, now: datetime) -> list[str]:
        """The profiles whose voiceprint is due: not heard for their inactive_after. A profile
        the config no longer has is held to the strictest policy's inactive_after: nothing can
        use its voiceprint, and nothing may keep it for ever."""
        return [profile for profile, voice in sorted(data.voices.items()) if voice_expires(self.config, profile, voice.heard) <= now]

    def _shred_stale_voices(self, data: KeystoreData, now: datetime, report: ShredReport) -> None:
        """Drop the due voiceprints (logged write-ahead; destroyed by the ratchet that follows
        in the same commit)."""
        for profile in self._stale_voices(data, now):
            heard = data.voices[profile].heard
            self.audit.append(VoiceForgotten(profile=profile, reason=ShredReason.INACTIVE, heard=heard.isoformat()))
            del data.voices[profile]
            report.voices.append(profile)

    def overdue(self, margin: timedelta) -> Overdue:
        """What is due since more than `margin` ago, by the trusted clock. With a read-only
        keystore and audit log (`wiring.open_store(config, Access.READ)`) this writes nothing
        at all, so a check that finds nothing leaves no trace."""
        data = self.keystore.read()
        then = self.clock.read().now - margin
        stuck = data.last_forget is None or data.last_forget <= then  # a forget is fulfilled in the same command
        return Overdue(
            tuple(sorted(self._due(data, then))),
            tuple(self._stale_voices(data, then)),
            tuple(sorted(data.forgets)) if stuck else (),
        )

    def matching(self, request: ForgetRequest) -> list[SessionEntry]:
        """The sessions a forget would remove now, oldest first (to ask before forgetting:
        read without holding the lock while a person decides)."""
        data = self.keystore.read()
        return sorted((s for s in data.sessions.entries() if request.matches(s)), key=lambda s: s.created)

    def forget(self, request: ForgetRequest, request_id: str | None = None) -> ShredReport:
        """Forget the matching sessions now (ask first: this does not). `request_id`: the id
        the request is logged under, when the caller logged it first (a spoken command)."""
        freed = self._make_room(lambda data: lambda s, bucket_id: request.matches(s))
        with self.keystore.transaction() as data:
            clean = exists_in(self.keystore.data_dir, layout.FILES_CLEAN)
            self._trusted_floor(data)
            report = ShredReport(self.clock.persist())
            report.files_deleted += freed
            self._resume_forgets(data, report)
            doomed: dict[str, SessionEntry] = {}
            latest: dict[str, datetime] = {}  # per profile, its latest session that stays
            for entry in data.sessions.entries():
                if request.matches(entry):
                    doomed[entry.id] = entry
                elif entry.created > latest.get(entry.profile, entry.created - timedelta(1)):
                    latest[entry.profile] = entry.created
            index = data.members_by_bucket()
            if request.everything:
                whole = set(data.buckets)
            else:
                whole = {b for b, members in index.items() if all(m in doomed for m in members)}
                if request.whole_profile:
                    whole |= {b.id for b in data.buckets.values() if b.profile == request.profile}
            partial = {
                bucket_id for entry in doomed.values() for bucket_id in entry.buckets() if bucket_id is not None and bucket_id not in whole
            }
            voices = request.voices(data)
            if doomed or whole or voices:
                self._owe_scan()
                pending = PendingForget(
                    request=request_id or os.urandom(6).hex(),
                    selector=request.describe(),
                    sessions=tuple(sorted(doomed)),
                    buckets={b: tuple(index.get(b, ())) for b in sorted(whole)},
                    rekeyed=tuple(sorted(partial)),
                    voices=tuple(voices),
                )
                for profile in voices:  # destroyed by the ratchet that fulfils the request
                    del data.voices[profile]
                data.last_forget = report.reading.now  # a session still held in memory is not kept
                for session_id in doomed:
                    del data.sessions[session_id]
                _forget_when_last_seen(data, {entry.profile for entry in doomed.values()}, latest)
                for bucket_id in pending.rekeyed:
                    self.keystore.start_rekey(data, bucket_id)
                data.forgets[pending.request] = pending
                self.keystore.save(data)  # write-ahead: the request and the new identities are durable first
                self._fulfil(data, pending, report, resumed=False)
            report.files_deleted += self._delete_files(data, report, clean)
            self._log(report)
        return report

    def _resume_forgets(self, data: KeystoreData, report: ShredReport) -> None:
        """Finish forget requests a crash interrupted (their sessions are already gone)."""
        for pending in list(data.forgets.values()):
            self._fulfil(data, pending, report, resumed=True)

    def _fulfil(self, data: KeystoreData, pending: PendingForget, report: ShredReport, resumed: bool) -> None:
        """Destroy what a forget named, re-key what it shares, ratchet once, log it fulfilled,
        then drop the request from the keystore (a crash before that only repeats the log lines)."""
        self.audit.append(
            ForgetRequested(request=pending.request, selector=pending.selector, sessions=len(pending.sessions), resumed=resumed)
        )
        report.forgotten.extend(pending.sessions)
        report.voices.extend(pending.voices)
        if resumed:
            report.resumed.append(pending.request)
        for profile in pending.voices:  # write-ahead: the ratchet below makes it true
            self.audit.append(VoiceForgotten(profile=profile, reason=ShredReason.FORGET, request=pending.request))
        alive = {b: members for b, members in pending.buckets.items() if b in data.buckets}
        for bucket_id, members in data.members_of(list(alive)).items():
            if set(members) - set(pending.sessions):  # joined after the request (a crash delayed it): re-key instead
                del alive[bucket_id]
                self.keystore.start_rekey(data, bucket_id)
        self._destroy(data, {b: ShredReason.FORGET for b in alive}, report.reading.now, report, alive, ratchet=False)
        rekeyed = self._rekey_files(data, report)
        self.audit.append(  # write-ahead, like a shred: the commit below makes it true (signed in its write)
            ForgetFulfilled(
                request=pending.request, sessions=list(pending.sessions), buckets=sorted(pending.buckets), rekeyed=list(pending.rekeyed)
            )
        )
        # The request names sessions and buckets (profiles, expiries): it leaves the keystore
        # in the same commit as the ratchet, so no copy of it opens with the new root.
        del data.forgets[pending.request]
        self.keystore.finish_rekey(data, rekeyed)

    def _log(self, report: ShredReport) -> None:
        """Audit the rest of what happened (shreds are logged before they happen), then sign
        the log's new head."""
        reading = report.reading
        events: list[AuditEvent] = []
        if reading.set_back <= SET_BACK_TOLERANCE:
            self._logged_set_back = timedelta(0)
        elif abs(reading.set_back - self._logged_set_back) > SET_BACK_TOLERANCE:
            self._logged_set_back = reading.set_back
            # NTP vouches for the wall clock: then it is the trusted clock that is wrong (it ran ahead)
            step = ClockRanAhead if reading.synced else ClockSetBack
            events.append(step(seconds=round(reading.set_back.total_seconds(), 3), wall=reading.wall.isoformat()))
        if reading.impossible is not None and not self._logged_impossible:  # once per process: said, not repeated
            self._logged_impossible = True
            log.warning("%s", reading.impossible.describe())
            claimed, allowed = reading.impossible.claimed, reading.impossible.allowed
            events.append(ClockImpossible(claimed_seconds=round(claimed, 3), allowed_seconds=round(allowed, 3)))
        if report.files_deleted and not report.buckets:
            events.append(Cleanup(files=report.files_deleted))
        if events or not report.empty:
            self.audit.append_many(events, checkpoint=True)

    def _log_shreds(self, items: list[ShreddedBucket], reading: Reading, backstop: bool = False) -> None:
        """Write-ahead, and signed in the same write: a crash after this and before the keys
        are gone leaves a log that claims a shred the next sweep finishes (and `audit verify`
        flags until then); the other order could leave a shred that happened but was never logged.
        `backstop`: `purge --overdue` shreds it, because the agent had not (a parent sees that)."""
        self.audit.append_many(
            [
                Shred(
                    bucket=item.bucket,
                    kind=item.kind,
                    profile=item.profile,
                    reason=item.reason,
                    sessions=list(item.sessions),
                    expires=item.expires.isoformat(),
                    late_seconds=round(item.late.total_seconds(), 3),
                    clock_synced=reading.synced,
                    set_back_seconds=round(reading.set_back.total_seconds(), 3),
                    backstop=backstop,
                )
                for item in items
            ],
            checkpoint=True,
        )

    # -- steps ---------------------------------------------------------------------

    def _destroy(
        self,
        data: KeystoreData,
        reasons: dict[str, ShredReason],
        now: datetime,
        report: ShredReport,
        members: Mapping[str, Sequence[str]] | None = None,
        ratchet: bool = True,
    ) -> None:
        """Log (write-ahead), then drop these buckets from every session and destroy their keys.
        `members`: who was in each bucket, when the sessions are already gone (a forget)."""
        if not reasons:
            return
        self._owe_scan()
        members = members if members is not None else data.members_of(reasons)
        items = [
            ShreddedBucket(b.id, b.profile, b.kind, b.expires, tuple(members.get(b.id, ())), reason, now - b.expires)
            for b, reason in ((data.buckets[i], r) for i, r in sorted(reasons.items()))
        ]
        self._log_shreds(items, report.reading, report.backstop)
        report.buckets.extend(items)
        heard = {b.profile for b in data.buckets.values() if b.id not in reasons}
        for profile in [p for p in data.last_seen if p not in heard]:  # nothing of it is left: gone in the ratchet's commit
            del data.last_seen[profile]
        if ratchet:
            self.keystore.destroy_buckets(data, sorted(reasons))
            crash_point("shred.keys")
        else:
            data.drop_buckets(sorted(reasons))  # the ratchet that follows is for both

    def _make_room(self, doomed_in: Callable[[KeystoreData], Callable[[SessionEntry, str], bool]]) -> int:
        """On a (nearly) full disk, delete the doomed ciphertext before anything is written:
        opening the keystore for writing (its WAL), re-sealing and logging need space, and that
        data is going anyway (this only errs toward deletion). It reads a copy of the keystore
        in memory, which needs no room on disk."""
        root = self.keystore.data_dir
        if shutil.disk_usage(root).free >= ROOM_NEEDED + 2 * sum(size_in(root, name) for name in layout.KEYSTORE_DB_FILES):
            return 0
        data = self.keystore.peek()
        doomed = doomed_in(data)
        reserve.release(root)  # the keystore's commit needs room too
        deleted = 0
        for session in data.sessions.entries():
            for bucket_id, name in (
                (session.audio_bucket, layout.recording(session.id)),
                (session.transcript_bucket, layout.transcript(session.id)),
            ):
                if bucket_id is not None and doomed(session, bucket_id) and unlink_in(root, name):
                    deleted += 1
        return deleted

    def _rekey_files(self, data: KeystoreData, report: ShredReport) -> list[str]:
        """Re-encrypt the files of buckets being re-keyed to their new identity; returns those
        buckets (the caller drops their retiring identities with a ratchet)."""
        if not data.buckets.may_be_rekeying():
            return []
        rekeying = [b for b in data.buckets.values() if b.retiring_identity is not None]
        if not rekeying:
            return []
        members = data.members_of(b.id for b in rekeying)
        for bucket in rekeying:
            identities = self.keystore.identities(bucket)
            recipient = Recipient.parse(bucket.recipient)
            name_of = layout.recording if bucket.kind == DataKind.AUDIO else layout.transcript
            for session_id in members.get(bucket.id, ()):
                try:
                    with os.fdopen(open_in(self.keystore.data_dir, name_of(session_id), os.O_RDWR), "r+b") as handle:
                        rekey_in_place(handle, identities, recipient)
                except FileNotFoundError:
                    continue
                except AgeError:
                    continue  # a damaged file: it opens with nothing either way
            report.rekeyed.append(bucket.id)
        return [b.id for b in rekeying]

    def _owe_scan(self) -> None:
        """Before a commit that drops sessions' data: should the deletions after it not all
        happen (a crash), the next sweep scans for what they left."""
        unlink_durably_in(self.keystore.data_dir, layout.FILES_CLEAN)

    def _delete_files(self, data: KeystoreData, report: ShredReport, clean: bool) -> int:
        """Delete the files of what this run shredded or forgot, by name; in a folder that was
        not clean when the run began, every file no live session refers to. Then mark it clean."""
        root = self.keystore.data_dir
        if clean and exists_in(root, layout.FILES_CLEAN):  # nothing was dropped: nothing to delete
            for folder in (layout.RECORDINGS, layout.TRANSCRIPTS):  # a folder swapped for a link is refused now
                with contextlib.suppress(FileNotFoundError), folder_fd(root, [folder]):
                    pass
            return 0
        if clean:
            named = self._named(report)
            deleted = self._unlink(named)
            deleted += unlink_each_in(root, layout.TRANSCRIPTS, self._leftover_temps(data, named[layout.TRANSCRIPTS]))
        else:
            deleted = self._unlink(self._orphans(data))
        for folder in (layout.RECORDINGS, layout.TRANSCRIPTS):
            sync_folder_in(root, folder)
        try:
            create_in(root, layout.FILES_CLEAN).close()
        except StorageError as exc:  # the shred stands; without the marker the next sweep scans again
            log.warning("%s", exc)
        return deleted

    def _leftover_temps(self, data: KeystoreData, transcripts: list[str]) -> list[str]:
        """The temporary copies a power cut may have left of these transcripts (".NAME.0.tmp":
        the recorder writes them under the data lock, so none is being written now). Tried by
        name; found by listing the folder once when LIST_TEMPS_OVER times the names reach the
        files it held: unlinking a name that is not there costs as much as listing ~16 names
        (100,000 of each: 0.95 s against 0.06 s)."""
        temps = [f".{name}.{LOCKED}.tmp" for name in transcripts]
        if len(temps) * LIST_TEMPS_OVER < data.sessions.count_kept("transcript") + len(temps):
            return temps
        doomed = set(temps)
        return [name for name in names_in(self.keystore.data_dir, layout.TRANSCRIPTS) if name in doomed]

    @staticmethod
    def _named(report: ShredReport) -> dict[str, list[str]]:
        """The file names of the data this run dropped, per folder."""
        forgotten = set(report.forgotten)
        audio = {s for b in report.buckets if b.kind == DataKind.AUDIO for s in b.sessions} | forgotten
        text = {s for b in report.buckets if b.kind == DataKind.TRANSCRIPT for s in b.sessions} | forgotten
        return {
            layout.RECORDINGS: [s + layout.RECORDING_SUFFIX for s in sorted(audio)],
            layout.TRANSCRIPTS: [s + layout.TRANSCRIPT_SUFFIX for s in sorted(text)],
        }

    def _orphans(self, data: KeystoreData) -> dict[str, list[str]]:
        """Ciphertext that no live session refers to (what a shred leaves, or a crash). Only
        files edge names (ID.wav.age, ID.json.age, their temporary copies) are touched: a
        folder or anything else someone put there is left alone."""
        root = self.keystore.data_dir
        live = {layout.RECORDINGS: data.sessions.kept("audio"), layout.TRANSCRIPTS: data.sessions.kept("transcript")}
        return {
            folder: [name for name in files_in(root, folder) if _orphan(name, suffix, live[folder])]
            for folder, suffix in ((layout.RECORDINGS, layout.RECORDING_SUFFIX), (layout.TRANSCRIPTS, layout.TRANSCRIPT_SUFFIX))
        }

    def _unlink(self, doomed: dict[str, list[str]]) -> int:
        root = self.keystore.data_dir
        total, done = sum(map(len, doomed.values())), 0

        def each() -> None:
            nonlocal done
            crash_point("shred.files")
            done += 1
            if self.deleting is not None:
                self.deleting(done, total)

        deleted = sum(unlink_each_in(root, folder, names, each) for folder, names in doomed.items())
        if self.deleting is not None and done < total:
            self.deleting(total, total)  # files someone else removed first count as done
        return deleted


def _orphan(name: str, suffix: str, live: set[str]) -> bool:
    """Whether a file is edge's (a session's ciphertext or its temporary copy) and no live
    session refers to it."""
    owner = layout.session_of(name, suffix)
    if owner is not None:
        return owner not in live
    return _temp_session(name, suffix) is not None


def _temp_session(name: str, suffix: str) -> str | None:
    """The session of an atomic write's leftover (".ID.json.age.PID.tmp"), or None."""
    if name.startswith(".") and name.endswith(".tmp"):
        return layout.session_of(name[1:].rsplit(".", 2)[0], suffix)
    return None


def _forget_when_last_seen(data: KeystoreData, profiles: set[str], latest: dict[str, datetime]) -> None:
    """A forgotten session's start must not outlive it as a profile's "last heard": it falls
    back to the latest session that stays (or goes, if none does)."""
    for profile in profiles:
        if profile in latest and profile in data.last_seen:
            data.last_seen[profile] = min(data.last_seen[profile], latest[profile])
        else:
            data.last_seen.pop(profile, None)
        voice = data.voices.get(profile)  # its voiceprint's "heard" too (logged by voice.forgotten, profile.kept)
        if voice is not None:
            data.voices[profile] = replace(voice, heard=min(voice.heard, max(latest.get(profile, voice.enrolled), voice.enrolled)))
