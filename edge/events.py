"""Every event the audit log records, one frozen dataclass per type: its fields, whether it
is signed in the same write, how it is written (`to_fields`) and read back (`parse`).

This is the one place an event's shape is known: the writers build instances, and the log,
`audit verify`, the report and `status`'s history read them back through `parse`, which
raises one error, `EventError`, for a missing or ill-typed field (anyone can chain a line:
a malformed one is a problem named by its line, never a crash). A new event is one class
here, and a row in docs/FORMATS.md section 6 (a test holds the two together).

It lives in the ground layer, not in edge/audit/, because the parts that write events
(store, retention) may not import the audit log (see edge/sink.py).

Reading stays as lenient as the log's history needs: a field an older edge did not write
has a default here (`kept`, a root loss's `reason`), a field only written when it says
something (`resumed`, `backstop`) is left out when false or None, and a field this edge
does not know is ignored. A type this edge does not know is an `UnknownEvent` (see there).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, ClassVar, NamedTuple, Self

from edge.values import DataKind

_INSTANT = "an ISO 8601 instant with a zone"
Instant = Annotated[str, _INSTANT]
"""A string field that must read as an instant with a zone (it is compared with times)."""
_OMIT = "omit"
_KEY = "key"


def flag() -> Any:
    """A boolean written only when true (older lines lack it)."""
    return field(default=False, metadata={_OMIT: True})


def absent() -> Any:
    """A field written only when it has a value."""
    return field(default=None, metadata={_OMIT: True})


def named(key: str) -> Any:
    """A field whose name in the log is not a Python name (`from`)."""
    return field(metadata={_KEY: key})


DETAILS = 1
"""The `details` marker of an entry whose personal fields are in `sealed` (edge.store.details)."""


class EventError(ValueError):
    """A known event whose fields are missing or of the wrong type. Its message names the field
    (a missing one as `'name'`, as audit verify has always worded it)."""

    def __init__(self, event_type: str, field_name: str, problem: str) -> None:
        super().__init__(problem)
        self.event_type = event_type
        self.field_name = field_name


class _Field(NamedTuple):
    name: str
    key: str
    plain: type
    """A value of exactly this type needs no check (a class no JSON value has: always checked)."""
    check: Callable[[str, Any], Any]
    required: bool
    omit: bool
    default: Any


class _Checked:
    """The `plain` type of a field whose every value is checked (a date, a list, an enum)."""


_ABSENT = object()


@dataclass(frozen=True)
class AuditEvent:
    """The base of every event type: subclasses declare `event_type` and their fields."""

    event_type: ClassVar[str]
    signed_at_once: ClassVar[bool] = False
    """The writer signs it in the same write: it ends a session or a command's step, or may
    never stand unsigned."""
    must_be_signed: ClassVar[bool] = False
    """`audit verify` rejects a log in which it stands after the last checkpoint (a writer
    always signs it at once, so an unsigned one means checkpoints were removed)."""

    @property
    def needs_checkpoint(self) -> bool:
        """Whether a checkpoint must follow it in the same write."""
        return self.signed_at_once or self.must_be_signed

    def to_fields(self) -> dict[str, Any]:
        """The event's `fields` object as the log stores it."""
        out: dict[str, Any] = {}
        for spec in _specs(type(self)):
            value = getattr(self, spec.name)
            if not (spec.omit and value == spec.default):
                out[spec.key] = value
        return out

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        """The event a line's `fields` describe; EventError names the first bad field.
        Lean, as it runs for every session `audit verify` reads: a value of exactly its
        field's plain type is taken as it is, any other is checked (and converted) by name."""
        values: dict[str, Any] = {}
        for name, key, plain, check, required, _, _ in _specs(cls):
            value = data.get(key, _ABSENT)
            if type(value) is plain:
                values[name] = value
            elif value is not _ABSENT:
                try:
                    values[name] = check(key, value)
                except ValueError as exc:
                    raise EventError(cls.event_type, key, str(exc)) from None
            elif required:
                raise EventError(cls.event_type, key, repr(key))
        event = cls.__new__(cls)
        event.__dict__.update(_DEFAULTS[cls])  # what the frozen __init__ does, without its per-field cost
        event.__dict__.update(values)
        return event


@dataclass(frozen=True)
class UnknownEvent:
    """A type this edge does not write (an older or newer edge's, or a forged line), with its
    raw fields. It is read as it always was: `audit verify` checks its place in the chain and
    nothing else, the report and history leave it out. `append` never writes one."""

    event_type: str
    fields: Mapping[str, Any]


# -- the log's own events ------------------------------------------------------------------


@dataclass(frozen=True)
class LogCreated(AuditEvent):
    event_type = "log.created"
    log: str
    public_key: str
    format: int


@dataclass(frozen=True)
class CheckpointSigned(AuditEvent):
    """Signs the line before it (the text is edge.audit.log.checkpoint_text)."""

    event_type = "checkpoint"
    entries: int
    head: str
    signature: str


@dataclass(frozen=True)
class LogRecovered(AuditEvent):
    event_type = "log.recovered"
    signed_at_once = True
    torn_bytes: int
    torn_sha256: str


@dataclass(frozen=True)
class LogUnsigned(AuditEvent):
    event_type = "log.unsigned"
    signed_at_once = True
    first: int
    lines: int


@dataclass(frozen=True)
class WitnessCosigned(AuditEvent):
    """A C2SP witness cosigned the log's tree of its first `size` lines (`audit witness push`):
    its tlog-cosignature line, kept so that `audit verify` checks it against the log."""

    event_type = "witness.cosigned"
    signed_at_once = True
    witness: str
    vkey: str
    size: int
    tree_hash: str
    time: int
    signature: str


# -- the agent -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigLoaded(AuditEvent):
    event_type = "config.loaded"
    path: str
    sha256: str


@dataclass(frozen=True)
class AgentStarted(AuditEvent):
    event_type = "agent.started"
    signed_at_once = True
    version: str
    source: str
    vault: str
    level: str
    survives_reboot: bool


@dataclass(frozen=True)
class AgentStopped(AuditEvent):
    event_type = "agent.stopped"
    must_be_signed = True
    sessions: int
    seconds: float


@dataclass(frozen=True)
class ProfileActive(AuditEvent):
    """Set through the control socket ("" = back to the config): an operation's end."""

    event_type = "profile.active"
    signed_at_once = True
    profile: str


@dataclass(frozen=True)
class ProfileKept(AuditEvent):
    """A parent objected to a profile's purge for inactivity: it counts as heard from now."""

    event_type = "profile.kept"
    profile: str
    heard: Instant
    until: Instant
    source: str


@dataclass(frozen=True)
class PolicyAdopted(AuditEvent):
    """The household's written retention policy in force from this line (edge/written/)."""

    event_type = "policy.adopted"
    version: str
    previous: str | None
    changed: list[str]
    terms: dict[str, Any]


# -- sessions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionCreated(AuditEvent):
    event_type = "session.created"
    session: str
    profile: str
    rule: str
    child: bool
    audio_expires: Instant | None
    transcript_expires: Instant | None
    audio_bucket: str | None
    transcript_bucket: str | None
    policy: str | None = absent()
    """The written policy's version it was taken under (absent in logs older than the policy)."""
    created: Instant | None = absent()
    """When it began by the trusted clock (written with `policy`; in `sealed` when `details` is set)."""
    details: int | None = absent()
    """1: the personal fields (`created`) are in `sealed` (edge.store.details); absent in older lines."""
    sealed: str | None = absent()
    """Base64 ChaCha20-Poly1305 of those fields under the session's own details key (docs/FORMATS.md 6)."""

    @property
    def needs_checkpoint(self) -> bool:
        """A session that keeps nothing logs nothing more: this is its end."""
        return self.audio_bucket is None and self.transcript_bucket is None


@dataclass(frozen=True)
class SessionSealed(AuditEvent):
    event_type = "session.sealed"
    signed_at_once = True
    session: str
    audio_sealed: bool
    transcript_sealed: bool
    seconds: float | None = absent()
    """The audio's length (in `sealed` when `details` is set; always written by older edges)."""
    details: int | None = absent()
    sealed: str | None = absent()


@dataclass(frozen=True)
class SessionServed(AuditEvent):
    """A Wyoming utterance's last event, written before the text is handed out."""

    event_type = "session.served"
    signed_at_once = True
    session: str
    source: str
    profile: str
    kept: bool | None = None
    """None: written by an edge before keep_unrecognised, which did not say."""
    listener: str | None = absent()
    """These four are in `sealed` when `details` is set (a kept utterance); else in clear."""
    seconds: float | None = absent()
    characters: int | None = absent()
    end_reason: str | None = absent()
    details: int | None = absent()
    sealed: str | None = absent()


# -- access to kept data ---------------------------------------------------------------------


@dataclass(frozen=True)
class Export(AuditEvent):
    event_type = "export"
    session: str
    purpose: str
    seconds: float | None = absent()
    """The recording's length: in `sealed` when `details` is set; in clear in older lines."""
    details: int | None = absent()
    sealed: str | None = absent()


@dataclass(frozen=True)
class ExportRefused(AuditEvent):
    event_type = "export.refused"
    session: str
    purpose: str
    """A Purpose, or "identity" for a key export."""
    reason: str


@dataclass(frozen=True)
class IdentityExported(AuditEvent):
    event_type = "identity.exported"
    session: str
    bucket: str
    sessions: int


# -- retention -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shred(AuditEvent):
    """Written ahead of the keys' destruction, and signed in the same write."""

    event_type = "shred"
    must_be_signed = True
    bucket: str
    kind: DataKind
    profile: str
    reason: str
    sessions: list[str]
    expires: str
    late_seconds: float
    clock_synced: bool
    set_back_seconds: float
    backstop: bool = flag()
    """`purge --overdue` shredded it: the agent had left it overdue."""


@dataclass(frozen=True)
class ForgetRequested(AuditEvent):
    event_type = "forget.requested"
    request: str
    selector: str
    sessions: int
    resumed: bool = flag()


@dataclass(frozen=True)
class ForgetFulfilled(AuditEvent):
    event_type = "forget.fulfilled"
    must_be_signed = True
    request: str
    sessions: list[str]
    buckets: list[str]
    rekeyed: list[str]


@dataclass(frozen=True)
class VoiceCommand(AuditEvent):
    """A spoken command (edge.spoken) about its speaker's own profile, written before what it
    does (a forget's `forget.requested` follows with the same `request`); the command's own
    utterance keeps nothing."""

    event_type = "voice.command"
    signed_at_once = True
    command: str
    """forget_last, forget_today, guest_on, guest_off, or confirm."""
    outcome: str
    """forget (a request follows), nothing (nothing of the profile's to forget), ask (waits for
    the confirmation), guest_on, guest_off, refused (a child may not end guest mode), expired
    (a confirmation came too late or for nothing)."""
    profile: str
    """The profile the command's utterance was tagged with: the only one it may reach."""
    rule: str
    through: str
    """"microphone", "file" (`run --input`), or the Wyoming listener's name."""
    source: str = "voice"
    request: str | None = absent()
    """The forget request it made (outcome forget)."""
    sessions: int = 0
    """The sessions it names (outcome forget or ask)."""
    until: Instant | None = absent()
    """When guest mode ends by itself (outcome guest_on)."""


@dataclass(frozen=True)
class Cleanup(AuditEvent):
    event_type = "cleanup"
    files: int


@dataclass(frozen=True)
class VoiceEnrolled(AuditEvent):
    event_type = "voice.enrolled"
    profile: str
    child: bool
    consent: bool
    seconds: float
    utterances: int
    replaced: bool


@dataclass(frozen=True)
class VoiceForgotten(AuditEvent):
    event_type = "voice.forgotten"
    profile: str
    reason: str
    request: str | None = absent()
    """The forget request that named it (reason forget)."""
    heard: str | None = absent()
    """When its profile was last heard (reason inactive)."""


# -- the clock, the root, the keystore -------------------------------------------------------


@dataclass(frozen=True)
class _ClockStep(AuditEvent):
    seconds: float
    """The trusted clock ahead of the wall clock."""
    wall: str


@dataclass(frozen=True)
class ClockSetBack(_ClockStep):
    event_type = "clock.set_back"


@dataclass(frozen=True)
class ClockRanAhead(_ClockStep):
    """NTP vouched for the wall clock: the trusted clock was the wrong one."""

    event_type = "clock.ran_ahead"


@dataclass(frozen=True)
class ClockImpossible(AuditEvent):
    event_type = "clock.impossible"
    claimed_seconds: float
    allowed_seconds: float


@dataclass(frozen=True)
class ClockRewound(AuditEvent):
    event_type = "clock.rewound"
    signed_at_once = True
    request: str
    seconds: float
    to: str
    buckets: int
    sessions: int
    from_: str = named("from")
    """The trusted time it was brought back from (`from` in the log)."""
    resumed: bool = flag()
    """Finished by another command after a crash."""


@dataclass(frozen=True)
class RootLost(AuditEvent):
    event_type = "root.lost"
    backend: str
    reason: str = ""
    """Not written before 2026-12-01."""


@dataclass(frozen=True)
class KeystoreUnreadable(AuditEvent):
    event_type = "keystore.unreadable"
    reason: str


@dataclass(frozen=True)
class KeystoreMigrated(AuditEvent):
    event_type = "keystore.migrated"
    version: int
    sessions: int
    buckets: int


@dataclass(frozen=True)
class VaultMigrated(AuditEvent):
    event_type = "vault.migrated"
    backend: str
    previous: str
    sessions: int


# -- the registry ----------------------------------------------------------------------------


def _every(base: type[AuditEvent]) -> list[type[AuditEvent]]:
    """The event classes (those that name their type), in the order they are defined here."""
    found: list[type[AuditEvent]] = []
    for cls in base.__subclasses__():
        if "event_type" in vars(cls):
            found.append(cls)
        found += _every(cls)
    return found


EVENTS: dict[str, type[AuditEvent]] = {cls.event_type: cls for cls in _every(AuditEvent)}
"""Every event type edge writes, by its name (docs/FORMATS.md section 6)."""
MUST_BE_SIGNED = frozenset(name for name, cls in EVENTS.items() if cls.must_be_signed)


def read(event_type: str, data: Mapping[str, Any]) -> AuditEvent | UnknownEvent:
    """A log line's event; EventError if its type is known and its fields are not right."""
    cls = EVENTS.get(event_type)
    return UnknownEvent(event_type, data) if cls is None else cls.parse(data)


# -- field checks, from the annotations -------------------------------------------------------


def _is_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a string")
    return value


def _is_int(name: str, value: Any) -> int:
    if type(value) is not int:
        raise ValueError(f"{name} is not a whole number")
    return value


def _is_number(name: str, value: Any) -> float:
    if type(value) not in (int, float):
        raise ValueError(f"{name} is not a number")
    return typing.cast(float, value)


def _is_bool(name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError(f"{name} is not true or false")
    return bool(value)


def _is_strings(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} is not a list of strings")
    return value


def _is_object(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{name} is not an object")
    return value


def _is_instant(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a date")
    try:
        zone = datetime.fromisoformat(value).tzinfo
    except ValueError:
        raise ValueError(f"{name} is not a date") from None
    if zone is None:
        raise ValueError(f"{name} has no time zone")
    return value


_CHECKS: dict[Any, Callable[[str, Any], Any]] = {
    str: _is_str,
    int: _is_int,
    float: _is_number,
    bool: _is_bool,
    list[str]: _is_strings,
    dict[str, Any]: _is_object,
    Instant: _is_instant,
}


def _check_of(hint: Any) -> Callable[[str, Any], Any]:
    """The check for a field's annotation: one of _CHECKS, an Enum (by value), or X | None."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        check = _check_of(inner)
        return lambda name, value: None if value is None else check(name, value)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _enum_check(hint)
    return _CHECKS[hint]


def _enum_check(enum: type[Enum]) -> Callable[[str, Any], Any]:
    allowed = ", ".join(str(member.value) for member in enum)

    def check(name: str, value: Any) -> Any:
        try:
            return enum(value)
        except ValueError:
            raise ValueError(f"{name} is not one of {allowed}") from None

    return check


_SPECS: dict[type[AuditEvent], tuple[_Field, ...]] = {}
_DEFAULTS: dict[type[AuditEvent], dict[str, Any]] = {}


def _specs(cls: type[AuditEvent]) -> tuple[_Field, ...]:
    """How to write and read each of the class's fields (worked out once per class)."""
    found = _SPECS.get(cls)
    if found is None:
        found = _SPECS[cls] = _worked_out(cls)
        _DEFAULTS[cls] = {spec.name: spec.default for spec in found if not spec.required}
    return found


def _worked_out(cls: type[AuditEvent]) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return tuple(
        _Field(
            spec.name,
            spec.metadata.get(_KEY, spec.name),
            _plain_of(hints[spec.name]),
            _check_of(hints[spec.name]),
            spec.default is MISSING,
            bool(spec.metadata.get(_OMIT)),
            spec.default,
        )
        for spec in fields(cls)
    )


def _plain_of(hint: Any) -> type:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return hint if hint in (str, int, float, bool) else _Checked
