"""Sealing sessions as they are heard.

The recorder registers each kept session in the keystore when it begins (so a
crash mid-session still leaves a record that expires on time), then seals the
audio chunk by chunk into DATA_DIR/recordings/ID.wav.age and, at the end, the
transcript into DATA_DIR/transcripts/ID.json.age. It only ever uses bucket
*public* keys: nothing it holds can open a past recording.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from edge.crypto.age import Recipient, StreamWriter, encrypt
from edge.disk import layout
from edge.disk.files import LOCKED, create_in, unlink_in, why, write_atomic_in
from edge.disk.layout import recording_path
from edge.disk.lock import DataLock
from edge.errors import StorageError
from edge.events import SessionCreated, SessionSealed
from edge.faults import crash_point
from edge.instants import iso_utc
from edge.pcm import PIPELINE_RATE, SAMPLE_BYTES
from edge.policy import Tag
from edge.sink import AuditSink
from edge.store.buckets import bucket_id, expiry_for
from edge.store.details import DETAILS, new_key, seal
from edge.store.keystore import Keystore
from edge.store.records import Bucket, SessionEntry
from edge.store.tables import KeystoreData
from edge.transcript import Transcript
from edge.values import DataKind


class Recorder:
    """Makes a SealedSession for each session whose profile keeps something."""

    def __init__(
        self,
        keystore: Keystore,
        clock: Callable[[], datetime],
        audit: AuditSink,
        on_new_bucket: Callable[[Bucket], None] | None = None,
        policy: str | None = None,
    ) -> None:
        self.keystore = keystore
        self.clock = clock
        self.audit = audit
        self.on_new_bucket = on_new_bucket
        """Called for each new bucket (the scheduler adds its expiry job)."""
        self.policy = policy
        """The version of the written policy sessions are taken under (adopted in the log first)."""

    def begin(self, session_id: str, tag: Tag) -> SealedSession:
        """Register the session and open its sealed recording, under the data-folder lock, so
        a forget or a re-key running in another process always sees the file's header."""
        sealed = self._begin(session_id, tag, None)
        assert sealed is not None  # only a held session can have been forgotten already
        return sealed

    def begin_held(self, session_id: str, tag: Tag, started: datetime) -> SealedSession | None:
        """`begin` for a session held in memory since `started` until its voice was judged (its
        retention counts from then). None when a forget ran meanwhile: whatever it named, the
        session, spoken before it, is not kept (fail closed)."""
        return self._begin(session_id, tag, started)

    def _begin(self, session_id: str, tag: Tag, started: datetime | None) -> SealedSession | None:
        profile, now = tag.profile, min(started, self.clock()) if started is not None else self.clock()
        with DataLock(self.keystore.data_dir):
            with self.keystore.transaction() as data:
                if started is not None and data.last_forget is not None and data.last_forget >= started:
                    return None
                if data.last_seen.get(profile.name, now) <= now:  # a held session may have begun before a later one
                    data.last_seen[profile.name] = now
                voice = data.voices.get(profile.name)
                if voice is not None and voice.heard < now:
                    data.voices[profile.name] = replace(voice, heard=now)
                audio = self._bucket(data, profile.name, DataKind.AUDIO, now, profile.keep_audio)
                transcript = self._bucket(data, profile.name, DataKind.TRANSCRIPT, now, profile.keep_transcript)
                entry = SessionEntry(
                    id=session_id,
                    profile=profile.name,
                    rule=tag.rule,
                    child=profile.is_child,
                    created=now,
                    audio_expires=audio.expires if audio else None,
                    transcript_expires=transcript.expires if transcript else None,
                    audio_bucket=audio.id if audio else None,
                    transcript_bucket=transcript.id if transcript else None,
                    details=new_key() if audio or transcript else None,
                )
                if audio or transcript:
                    data.sessions[session_id] = entry
            # Logged after the keystore holds it: a crash in between leaves a session the log
            # learns of when it is shredded, never a logged session that could not be shredded.
            # Its start is sealed under its own details key (forgotten with its last data); a
            # session that keeps nothing logs no start at all.
            sealed = seal({"created": iso_utc(now)}, entry.details, session_id, SessionCreated.event_type) if entry.details else None
            self.audit.append(  # keeping nothing, the session logs nothing more: then signed in its write
                SessionCreated(
                    session=session_id,
                    profile=profile.name,
                    rule=tag.rule,
                    child=profile.is_child,
                    audio_expires=iso_utc(entry.audio_expires),
                    transcript_expires=iso_utc(entry.transcript_expires),
                    audio_bucket=entry.audio_bucket,
                    transcript_bucket=entry.transcript_bucket,
                    policy=self.policy,
                    details=DETAILS if sealed is not None else None,
                    sealed=sealed,
                )
            )
            return SealedSession(self.keystore, self.audit, entry, Recipient.parse(audio.recipient) if audio else None)

    def _bucket(self, data: KeystoreData, profile: str, kind: DataKind, now: datetime, keep: timedelta) -> Bucket | None:
        """The bucket for data kept `keep` from `now` (created if new); None if not kept."""
        if keep <= timedelta(0):
            return None
        expires = expiry_for(now, keep)
        identifier = bucket_id(profile, kind, expires)
        bucket = data.buckets.get(identifier)
        if bucket is None:
            bucket = self.keystore.new_bucket(data, identifier, profile, kind, expires)
            if self.on_new_bucket is not None:
                self.on_new_bucket(bucket)
        return bucket


class SealedSession:
    """One session's sealed outputs. Audio is encrypted before any byte reaches disk."""

    def __init__(self, keystore: Keystore, audit: AuditSink, entry: SessionEntry, audio_recipient: Recipient | None) -> None:
        self._keystore = keystore
        self._audit = audit
        self.entry = entry
        self._file = None
        self._writer: StreamWriter | None = None
        self._bytes = 0
        if audio_recipient is not None:
            self._file = create_in(keystore.data_dir, layout.recording(entry.id))
            try:
                self._writer = StreamWriter(self._file, audio_recipient)
                self._writer.write(layout.wav_header())
            except OSError as exc:  # e.g. a full disk while writing the header: keep nothing half-made
                error = self._stopped(exc)
                unlink_in(keystore.data_dir, layout.recording(entry.id))
                raise error from None

    def write(self, pcm: bytes) -> None:
        if self._writer is not None:
            try:
                self._writer.write(pcm)
            except OSError as exc:
                raise self._stopped(exc) from None
            crash_point("audio.chunk")
            self._bytes += len(pcm)

    def _stopped(self, exc: OSError) -> StorageError:
        """What was sealed so far stays (and expires on time); nothing more is written."""
        path = recording_path(self._keystore.data_dir, self.entry.id)
        self._writer = None
        self._close()
        return StorageError(f"{path}: recording stopped: {why(exc)}")

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # a full disk again: the descriptor is released all the same
            self._file = None

    def finish(self, transcript: Transcript) -> None:
        """Seal the last audio chunk and the transcript; mark the session complete."""
        if self._writer is not None and self._file is not None:
            try:
                self._writer.close()
                crash_point("session.finish")
                os.fsync(self._file.fileno())
            except OSError as exc:
                raise self._stopped(exc) from None
        self._close()
        if self.entry.audio_bucket is None and self.entry.transcript_bucket is None:
            return
        with self._keystore.transaction() as data:
            entry = data.sessions.get(self.entry.id)
            if entry is None:
                return  # forgotten (or shredded) while it was being recorded: keep nothing
            bucket = data.buckets.get(entry.transcript_bucket) if entry.transcript_bucket else None
            if bucket is not None:  # sealed to the bucket's key as it is *now* (it may have been re-keyed)
                document = {"session": entry.id, **transcript.to_json()}
                sealed = encrypt(json.dumps(document, ensure_ascii=False).encode(), Recipient.parse(bucket.recipient))
                write_atomic_in(self._keystore.data_dir, layout.transcript(entry.id), sealed, writer=LOCKED)  # in the transaction's lock
            seconds = round(self._bytes / (SAMPLE_BYTES * PIPELINE_RATE), 3)
            data.sessions[entry.id] = replace(entry, state="complete", seconds=seconds)
            details = seal({"seconds": seconds}, entry.details, entry.id, SessionSealed.event_type) if entry.details else None
            self._audit.append(  # the session's end: signed in the same write (docs/FORMATS.md section 6)
                SessionSealed(
                    session=entry.id,
                    audio_sealed=self._writer is not None,
                    transcript_sealed=bucket is not None,
                    seconds=None if details is not None else seconds,
                    details=DETAILS if details is not None else None,
                    sealed=details,
                )
            )
