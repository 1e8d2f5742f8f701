"""The household's only way back to retained audio: a purpose-bound export.

Training is refused for any child session and for any profile without
`allow_training = true`; expired sessions are refused even if the shredder has
not reached them yet (fail closed). The output file is written only after every
chunk verified, so a damaged recording never yields a partial WAV.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edge.audit.log import AuditLog
from edge.config import Config
from edge.crypto.age import AgeError, Identity, decrypt_stream
from edge.errors import PolicyError, UsageError
from edge.store.files import fsync_dir, write_output
from edge.store.keystore import Keystore, KeystoreData, SessionEntry
from edge.store.recorder import recording_path, wav_header

PURPOSES = ("playback", "review", "training")


@dataclass(frozen=True)
class Exported:
    session: str
    profile: str
    purpose: str
    path: Path
    seconds: float


def find_session(data: KeystoreData, session_id: str) -> SessionEntry:
    entry = data.sessions.get(session_id)
    if entry is None:
        raise UsageError(f"there is no retained session {session_id!r}; `edge-agent status` lists them")
    return entry


def check_purpose(config: Config, entry: SessionEntry, purpose: str) -> None:
    if purpose not in PURPOSES:
        raise UsageError(f"--purpose {purpose!r} is not allowed; use one of: {', '.join(PURPOSES)}")
    if purpose != "training":
        return
    profile = next((p for p in config.profiles if p.name == entry.profile), None)
    if entry.child or profile is None or profile.is_child:
        raise PolicyError(
            f"session {entry.id} belongs to a child profile ({entry.profile}): never exported for training", "child"
        )
    if not profile.allow_training:
        raise PolicyError(
            f"session {entry.id}: profile {entry.profile!r} has not consented to training "
            "(allow_training = false); refused",
            "no consent",
        )


def export_audio(
    keystore: Keystore, audit: AuditLog, config: Config, session_id: str, out: Path, purpose: str, now: datetime
) -> Exported:
    """Every export is audited with its purpose; every refusal too."""
    with keystore.transaction() as data:
        entry = find_session(data, session_id)
        try:
            check_purpose(config, entry, purpose)
        except PolicyError as refusal:
            audit.append("export.refused", session=session_id, purpose=purpose, reason=refusal.reason)
            raise
        if entry.audio_expires is None or entry.audio_bucket is None:
            raise UsageError(f"session {session_id}: its profile ({entry.profile}) does not keep audio")
        if now >= entry.audio_expires:
            raise PolicyError(f"session {session_id}: its audio expired at {entry.audio_expires.isoformat()}; refused")
        identities = keystore.identities(data.buckets[entry.audio_bucket])
        seconds = _write_wav(recording_path(keystore.data_dir, session_id), identities, out, session_id)
        audit.append("export", session=session_id, purpose=purpose, seconds=round(seconds, 3))
    return Exported(session_id, entry.profile, purpose, out, seconds)


def export_identity(
    keystore: Keystore, audit: AuditLog, session_id: str, out: Path, now: datetime
) -> tuple[str, int, datetime]:
    """Write the age identity of the session's audio bucket; returns (bucket, sessions in it, expiry)."""
    with keystore.transaction() as data:
        entry = find_session(data, session_id)
        if entry.audio_bucket is None or entry.audio_expires is None:
            raise UsageError(f"session {session_id}: its profile ({entry.profile}) does not keep audio")
        if now >= entry.audio_expires:
            raise PolicyError(f"session {session_id}: its audio expired at {entry.audio_expires.isoformat()}; refused")
        bucket = data.buckets[entry.audio_bucket]
        identity = keystore.identity(bucket)
        members = sum(1 for s in data.sessions.values() if s.audio_bucket == bucket.id)
        audit.append("identity.exported", session=session_id, bucket=bucket.id, sessions=members)
    text = (
        f"# edge bucket {bucket.id}: opens every recording in it until {bucket.expires.isoformat()}\n"
        f"# public key: {bucket.recipient}\n{identity.encode()}\n"
    )
    write_output(out, text.encode())
    return bucket.id, members, bucket.expires


def _remove_stale_partials(out: Path) -> None:
    """Plaintext left by an export that was killed mid-write (same name, a process now gone)."""
    for leftover in out.parent.glob(f".{glob.escape(out.name)}.*.partial"):
        pid = leftover.name[len(out.name) + 2 : -len(".partial")]
        if pid.isdigit() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_wav(sealed: Path, identities: list[Identity], out: Path, session_id: str) -> float:
    _remove_stale_partials(out)
    temp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        with sealed.open("rb") as source, os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as sink:
            for chunk in decrypt_stream(source, identities):
                sink.write(chunk)
            size = sink.tell() - 44
            sink.seek(0)
            sink.write(wav_header(size))
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temp, out)
        fsync_dir(out.parent)
    except FileNotFoundError as exc:
        temp.unlink(missing_ok=True)
        if exc.filename == str(sealed):
            raise AgeError(f"session {session_id}: its recording file is missing ({sealed})") from None
        raise UsageError(f"{out}: cannot write there: {exc.strerror}") from None
    except AgeError:
        temp.unlink(missing_ok=True)
        raise AgeError(
            f"session {session_id}: the recording is damaged or incomplete (for example the agent stopped "
            "mid-session); nothing was exported"
        ) from None
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise UsageError(f"{out}: cannot write there: {exc.strerror}") from None
    return size / 32000
