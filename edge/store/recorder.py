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
import struct
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from edge.audio import PIPELINE_RATE
from edge.crypto.age import Recipient, StreamWriter, encrypt
from edge.store.buckets import bucket_id, expiry_for
from edge.store.files import atomic_write, create_private_file
from edge.store.keystore import Keystore, KeystoreData, SessionEntry
from edge.stt.recognizer import Transcript
from edge.tagging import Tag

RECORDINGS = "recordings"
TRANSCRIPTS = "transcripts"
UNKNOWN_SIZE = 0xFFFFFFFF
"""RIFF and data sizes in a sealed recording: the length is unknown while streaming."""


def recording_path(data_dir: Path, session_id: str) -> Path:
    return data_dir / RECORDINGS / f"{session_id}.wav.age"


def transcript_path(data_dir: Path, session_id: str) -> Path:
    return data_dir / TRANSCRIPTS / f"{session_id}.json.age"


def wav_header(data_bytes: int = UNKNOWN_SIZE) -> bytes:
    """A 44-byte header for 16 kHz mono int16 PCM; UNKNOWN_SIZE marks a streaming WAV."""
    riff = UNKNOWN_SIZE if data_bytes == UNKNOWN_SIZE else 36 + data_bytes
    fmt = struct.pack("<HHIIHH", 1, 1, PIPELINE_RATE, PIPELINE_RATE * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes)


@dataclass(frozen=True)
class Kept:
    """What a session keeps and until when (UTC); None = not kept."""

    audio_expires: datetime | None
    transcript_expires: datetime | None


class Recorder:
    """Makes a SealedSession for each session whose profile keeps something."""

    def __init__(self, keystore: Keystore, clock: Callable[[], datetime]) -> None:
        self.keystore = keystore
        self.clock = clock

    def begin(self, session_id: str, tag: Tag) -> SealedSession:
        profile, now = tag.profile, self.clock()
        with self.keystore.transaction() as data:
            audio = self._bucket(data, profile.name, "audio", now, profile.keep_audio)
            transcript = self._bucket(data, profile.name, "transcript", now, profile.keep_transcript)
            entry = SessionEntry(
                id=session_id,
                profile=profile.name,
                rule=tag.rule,
                child=profile.is_child,
                created=now,
                audio_expires=audio[1] if audio else None,
                transcript_expires=transcript[1] if transcript else None,
                audio_bucket=audio[0] if audio else None,
                transcript_bucket=transcript[0] if transcript else None,
            )
            if audio or transcript:
                data.sessions[session_id] = entry
        return SealedSession(
            self.keystore,
            entry,
            audio_recipient=Recipient.parse(audio[2]) if audio else None,
            transcript_recipient=Recipient.parse(transcript[2]) if transcript else None,
        )

    def _bucket(
        self, data: KeystoreData, profile: str, kind: str, now: datetime, keep: timedelta
    ) -> tuple[str, datetime, str] | None:
        """(bucket id, expiry, recipient) for data kept `keep` from `now`; None if not kept."""
        if keep <= timedelta(0):
            return None
        expires = expiry_for(now, keep)
        identifier = bucket_id(profile, kind, expires)
        bucket = data.buckets.get(identifier) or self.keystore.new_bucket(data, identifier, profile, kind, expires)
        return identifier, bucket.expires, bucket.recipient


class SealedSession:
    """One session's sealed outputs. Audio is encrypted before any byte reaches disk."""

    def __init__(
        self,
        keystore: Keystore,
        entry: SessionEntry,
        audio_recipient: Recipient | None,
        transcript_recipient: Recipient | None,
    ) -> None:
        self._keystore = keystore
        self.entry = entry
        self._transcript_recipient = transcript_recipient
        self._file = None
        self._writer: StreamWriter | None = None
        self._bytes = 0
        if audio_recipient is not None:
            self._file = create_private_file(recording_path(keystore.data_dir, entry.id))
            self._writer = StreamWriter(self._file, audio_recipient)
            self._writer.write(wav_header())

    def write(self, pcm: bytes) -> None:
        if self._writer is not None:
            self._writer.write(pcm)
            self._bytes += len(pcm)

    def finish(self, transcript: Transcript) -> None:
        """Seal the last audio chunk and the transcript; mark the session complete."""
        if self._writer is not None and self._file is not None:
            self._writer.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        if self._transcript_recipient is not None:
            document = {"session": self.entry.id, **transcript.to_json()}
            sealed = encrypt(json.dumps(document, ensure_ascii=False).encode(), self._transcript_recipient)
            atomic_write(transcript_path(self._keystore.data_dir, self.entry.id), sealed)
        if self._writer is None and self._transcript_recipient is None:
            return
        with self._keystore.transaction() as data:
            if self.entry.id in data.sessions:  # unless it was forgotten meanwhile
                data.sessions[self.entry.id] = replace(
                    data.sessions[self.entry.id], state="complete", seconds=round(self._bytes / (2 * PIPELINE_RATE), 3)
                )
