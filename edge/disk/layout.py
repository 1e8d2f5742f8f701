"""The data folder's layout: every name edge keeps there, and the plaintext WAV header
sealed inside each recording, in one place.

Paths inside the data folder are written relative to it ("recordings/ID.wav.age") so
the file layer can open them one component at a time without following links.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from edge.pcm import PIPELINE_RATE, SAMPLE_BYTES

LOCK = "lock"
KEYSTORE = "keystore"
"""Keystore v1 (one sealed document): only read, to migrate it."""
KEYSTORE_DB = "keystore.db"
KEYSTORE_DB_FILES = (KEYSTORE_DB, f"{KEYSTORE_DB}-wal", f"{KEYSTORE_DB}-shm")
"""Keystore v2 (SQLite, WAL) and the files SQLite keeps beside it."""
VAULT_MARKER = "vault"
"""Which kernel key holds the root (the keyring vault)."""
TPM_MARKER = "tpm-vault"
"""Which TPM NV index holds the root, and its authorization (the TPM vault)."""
RESERVE = "reserve"
CLOCK = "clock"
AUDIT_LOG = "audit.jsonl"
AUDIT_KEY = "audit.key"
POLICY = "policy.json"
"""The written policy last adopted in the audit log (a cache: the log is the record)."""
CONTROL_SOCKET = "control.sock"
MODELS = "models"
RECORDINGS = "recordings"
TRANSCRIPTS = "transcripts"
FILES_CLEAN = "files-clean"
"""Present: every ciphertext file belongs to a kept session, so a sweep deletes what it shreds
by name. Removed (durably) before any commit that drops a session's data (a shred, a forget,
a lost root, a new keystore), made again once its files are gone: a folder without it (a
crash, an older edge) gets one full scan for orphans."""
KEYSTORE_AT_REST = "keystore-at-rest"
"""Present: the agent closed the keystore at rest (no WAL left, no other connection) after its
pages were checked at that agent's start, and nothing has written to it since, so the next
agent's start trusts its pages without `PRAGMA quick_check` (0.2-1.3 s at 100,000 sessions).
Removed (durably) under the lock before any writer's first transaction: a stop that is not
clean (a crash, a power cut, kill -9), of the agent or of any command, leaves none."""
RECORDING_SUFFIX = ".wav.age"
TRANSCRIPT_SUFFIX = ".json.age"

OWN_NAMES = frozenset(
    {
        LOCK,
        KEYSTORE,
        *KEYSTORE_DB_FILES,
        RESERVE,
        VAULT_MARKER,
        TPM_MARKER,
        CLOCK,
        AUDIT_LOG,
        AUDIT_KEY,
        POLICY,
        CONTROL_SOCKET,
        MODELS,
        RECORDINGS,
        TRANSCRIPTS,
        FILES_CLEAN,
        KEYSTORE_AT_REST,
        "lost+found",
    }
)
"""What edge itself may find at the top of its data folder (besides temporary files)."""
_OWN_PATTERN = re.compile(r"^(\.[^/]+\.\d+(\.[0-9a-f]+)?\.(tmp|partial)|keystore\..+)$")
"""Temporary files of an interrupted write, and keystores set aside (`keystore.damaged`)."""
SESSION_ID = re.compile(r"^[0-9a-f]{16}$")


def recording(session_id: str) -> str:
    return f"{RECORDINGS}/{session_id}{RECORDING_SUFFIX}"


def transcript(session_id: str) -> str:
    return f"{TRANSCRIPTS}/{session_id}{TRANSCRIPT_SUFFIX}"


def recording_path(data_dir: Path, session_id: str) -> Path:
    """For messages and tests; edge itself opens `recording(id)` under the data folder."""
    return data_dir / recording(session_id)


def transcript_path(data_dir: Path, session_id: str) -> Path:
    return data_dir / transcript(session_id)


def is_own_name(name: str, also: frozenset[str] = frozenset()) -> bool:
    """Whether `name` at the top of a data folder is one edge makes (`also`: e.g. the file
    vault's key when it lives inside the data folder)."""
    return name in OWN_NAMES or name in also or bool(_OWN_PATTERN.match(name))


def session_of(name: str, suffix: str) -> str | None:
    """The session id of a ciphertext file name, or None when edge did not name it."""
    if name.endswith(suffix) and SESSION_ID.match(name[: -len(suffix)]):
        return name[: -len(suffix)]
    return None


WAV_HEADER_BYTES = 44
UNKNOWN_SIZE = 0xFFFFFFFF
"""RIFF and data sizes in a sealed recording: the length is unknown while streaming."""


def wav_header(data_bytes: int = UNKNOWN_SIZE) -> bytes:
    """The plaintext's 44-byte header: 16 kHz mono int16 PCM; UNKNOWN_SIZE marks a streaming WAV."""
    riff = UNKNOWN_SIZE if data_bytes == UNKNOWN_SIZE else 36 + data_bytes
    fmt = struct.pack("<HHIIHH", 1, 1, PIPELINE_RATE, PIPELINE_RATE * SAMPLE_BYTES, SAMPLE_BYTES, 16)
    return b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes)
