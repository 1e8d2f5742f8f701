"""The household's only way back to retained audio: a purpose-bound export.

Training is refused for any child session and for any profile without
`allow_training = true`; expired sessions are refused even if the shredder has
not reached them yet (fail closed). The output file is written only after every
chunk verified, so a damaged recording never yields a partial WAV.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edge.config import Config
from edge.crypto.age import Identity, decrypt_stream
from edge.disk import layout
from edge.disk.files import reader_in
from edge.disk.outputs import check_output, output_file, write_secret
from edge.errors import AgeError, PolicyError, UsageError
from edge.events import Export, ExportRefused, IdentityExported
from edge.pcm import PIPELINE_RATE, SAMPLE_BYTES
from edge.sink import AuditSink
from edge.store.details import DETAILS, seal
from edge.store.keystore import Keystore
from edge.store.records import SessionEntry
from edge.store.tables import KeystoreData
from edge.values import Purpose


@dataclass(frozen=True)
class Exported:
    session: str
    profile: str
    purpose: Purpose
    path: Path
    seconds: float


def find_session(data: KeystoreData, session_id: str) -> SessionEntry:
    entry = data.sessions.get(session_id)
    if entry is None:
        raise UsageError(f"there is no retained session {session_id!r}; `edge-agent status` lists them", session=session_id)
    return entry


def check_purpose(config: Config, entry: SessionEntry, purpose: Purpose) -> None:
    if purpose != Purpose.TRAINING:
        return
    profile = next((p for p in config.profiles if p.name == entry.profile), None)
    if profile is None and not entry.child:
        raise PolicyError(
            f"session {entry.id}: its profile ({entry.profile}) is not in the config; refused", "no consent", session=entry.id
        )
    if entry.child or profile is None or profile.is_child:
        raise PolicyError(
            f"session {entry.id} belongs to a child profile or an unidentified speaker ({entry.profile}): never exported for training",
            "child",
            session=entry.id,
        )
    if not profile.allow_training:
        raise PolicyError(
            f"session {entry.id}: profile {entry.profile!r} has not consented to training (allow_training = false); refused",
            "no consent",
            session=entry.id,
        )


def check_available(entry: SessionEntry, now: datetime) -> None:
    """Refuse audio that is not kept, shredded, or past its expiry (even if the shredder has
    not reached it yet: fail closed)."""
    if entry.audio_shredded is not None:
        why = "when it expired" if entry.audio_shredded <= now else "before its expiry: its profile went unused for its inactive_after"
        raise PolicyError(
            f"session {entry.id}: its audio was shredded {why} (it was to be kept until {entry.audio_shredded.isoformat()}); "
            "`edge-agent audit show --type shred` says when",
            "shredded",
            session=entry.id,
        )
    if entry.audio_expires is None or entry.audio_bucket is None:
        raise PolicyError(f"session {entry.id}: its profile ({entry.profile}) does not keep audio", "not kept", session=entry.id)
    if now >= entry.audio_expires:
        raise PolicyError(
            f"session {entry.id}: its audio expired at {entry.audio_expires.isoformat()}; refused", "expired", session=entry.id
        )


def export_audio(
    keystore: Keystore, audit: AuditSink, config: Config, session_id: str, out: Path, purpose: Purpose, now: datetime
) -> Exported:
    """Every export is audited with its purpose; every refusal too."""
    check_output(out, keystore.data_dir)
    with keystore.transaction() as data:
        entry = find_session(data, session_id)
        try:
            check_purpose(config, entry, purpose)
            check_available(entry, now)
        except PolicyError as refusal:
            audit.append(ExportRefused(session=session_id, purpose=purpose, reason=refusal.reason))
            raise
        identities = keystore.identities(data.buckets[entry.audio_bucket])  # type: ignore[index]
        seconds = _write_wav(keystore.data_dir, session_id, identities, out)
        length = round(seconds, 3)  # the session's length: sealed under its details key, as its own lines hold it
        sealed = seal({"seconds": length}, entry.details, session_id, Export.event_type) if entry.details else None
        audit.append(
            Export(
                session=session_id, purpose=purpose, seconds=None if sealed else length, details=DETAILS if sealed else None, sealed=sealed
            )
        )
    return Exported(session_id, entry.profile, purpose, out, seconds)


def export_identity(keystore: Keystore, audit: AuditSink, session_id: str, out: Path, now: datetime) -> tuple[str, int, datetime]:
    """Write the age identity of the session's audio bucket; returns (bucket, sessions in it, expiry)."""
    check_output(out, keystore.data_dir)
    if out.exists():
        raise UsageError(f"{out} exists already; a secret key is only written to a new file: delete it or choose another name")
    with keystore.transaction() as data:
        entry = find_session(data, session_id)
        try:
            check_available(entry, now)
        except PolicyError as refusal:
            audit.append(ExportRefused(session=session_id, purpose="identity", reason=refusal.reason))
            raise
        bucket = data.buckets[entry.audio_bucket]  # type: ignore[index]
        identity = keystore.identity(bucket)
        members = len(data.members_of([bucket.id]).get(bucket.id, ()))
        audit.append(IdentityExported(session=session_id, bucket=bucket.id, sessions=members))
        text = (
            f"# edge bucket {bucket.id}: opens every recording in it until {bucket.expires.isoformat()}\n"
            f"# public key: {bucket.recipient}\n{identity.encode()}\n"
        )
        write_secret(out, text.encode(), keystore.data_dir)
    return bucket.id, members, bucket.expires


def _write_wav(data_dir: Path, session_id: str, identities: list[Identity], out: Path) -> float:
    """Decrypt into a temporary file beside `out`, renamed over it only after the final chunk verified."""
    try:
        source = reader_in(data_dir, layout.recording(session_id))
    except FileNotFoundError:
        raise AgeError(f"session {session_id}: its recording file is missing ({layout.recording_path(data_dir, session_id)})") from None
    with source, output_file(out, data_dir) as sink:
        try:
            for chunk in decrypt_stream(source, identities):
                sink.write(chunk)
        except AgeError:
            raise AgeError(
                f"session {session_id}: the recording is damaged or incomplete (for example the agent stopped "
                "mid-session); nothing was exported"
            ) from None
        size = sink.tell() - layout.WAV_HEADER_BYTES
        sink.seek(0)
        sink.write(layout.wav_header(size))
    return size / (PIPELINE_RATE * SAMPLE_BYTES)
