"""What the audit log says happened, in the terms a parent asks about: sessions and how long
each is kept, every access to kept data and every refusal, every shred and why it came
when it did, the clock, the key and the voices. Read by the parent's report (report.py).

A malformed event (anyone can chain a line) is left out: the report's header says the log
did not verify, and `audit verify` names the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from edge.durations import human as human  # re-exported: the report words durations alike
from edge.values import DataKind

LATE = timedelta(minutes=2)
"""A shred later than this after its expiry is explained (the device was off, the clock...)."""


@dataclass
class Session:
    id: str
    profile: str
    created: datetime
    expires: dict[DataKind, datetime | None]
    ended: dict[DataKind, datetime | None] = field(default_factory=lambda: dict.fromkeys(DataKind))
    """When each kind was shredded or forgotten (None: still kept)."""


@dataclass(frozen=True)
class Event:
    """One line of the report's tables: when, whose, what, and why in plain words."""

    at: datetime
    profile: str
    what: str
    why: str = ""


@dataclass
class Story:
    sessions: dict[str, Session] = field(default_factory=dict)
    accesses: list[Event] = field(default_factory=list)
    """Exports, refused exports and identity exports."""
    shreds: list[Event] = field(default_factory=list)
    forgets: list[Event] = field(default_factory=list)
    device: list[Event] = field(default_factory=list)
    """The clock (set back, ran ahead, brought back, impossible readings), lost root keys,
    recovered writes, migrations."""
    voices: list[Event] = field(default_factory=list)
    enrolled: dict[str, bool] = field(default_factory=dict)
    """Per profile: whether its voiceprint is held, by the last voice event."""
    off: list[tuple[datetime, datetime | None]] = field(default_factory=list)
    """When the agent was not running: (stopped, started again; None: not since)."""
    ahead: timedelta = timedelta(0)
    """The most the clock was found to have run ahead (a shred that late was early, not late)."""


_REFUSED = {
    "child": "a child's recording is never used for training",
    "no consent": "the profile did not consent to training",
    "not kept": "the profile does not keep audio",
    "shredded": "it had already been shredded",
    "expired": "its retention had ended",
}
_SHRED_WHY = {"expired": "its retention ended", "inactive": "the profile was unused for its inactive_after", "forget": "a parent asked"}


def read_story(entries: list[dict[str, Any]]) -> Story:
    story = Story()
    stopped: datetime | None = None
    pending: list[tuple[dict[str, Any], datetime]] = []
    for entry in entries:
        try:
            when = aware(datetime.fromisoformat(entry["wall"]))
            kind, fields = entry["type"], entry["fields"]
            if kind == "agent.stopped":
                stopped = when
            elif kind == "agent.started" and stopped is not None:
                story.off.append((stopped, when))
                stopped = None
            if kind == "shred":
                pending.append((fields, when))  # explained once every stop and start is known
            else:
                _take(story, kind, fields, when)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    if stopped is not None:
        story.off.append((stopped, None))
    for fields, when in pending:
        try:
            _shred(story, fields, when)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return story


def _take(story: Story, kind: str, fields: dict[str, Any], when: datetime) -> None:
    if kind == "session.created":
        expires = {k: _time(fields.get(f"{k}_expires")) for k in DataKind}
        story.sessions[str(fields["session"])] = Session(str(fields["session"]), str(fields["profile"]), when, expires)
    elif kind == "export":
        story.accesses.append(Event(when, _owner(story, fields), f"recording exported for {fields['purpose']}", ""))
    elif kind == "export.refused":
        reason = _REFUSED.get(str(fields.get("reason")), str(fields.get("reason")))
        what = "key export refused" if fields.get("purpose") == "identity" else f"export for {fields['purpose']} refused"
        story.accesses.append(Event(when, _owner(story, fields), what, reason))
    elif kind == "identity.exported":
        story.accesses.append(Event(when, _owner(story, fields), f"key exported: opens {fields['sessions']} recording(s)", "for checking"))
    elif kind == "forget.requested":
        if fields.get("resumed"):  # the same request again, after a crash or power cut stopped its first run
            what = f"finished the request to forget {fields['selector']} that a power cut or crash interrupted"
        else:
            what = f"asked to forget {fields['selector']}"
        story.forgets.append(Event(when, "", what, f"{fields['sessions']} session(s)"))
    elif kind == "forget.fulfilled":
        for session in fields["sessions"]:
            if session in story.sessions:
                ended = story.sessions[session].ended
                for data_kind in DataKind:
                    ended[data_kind] = ended[data_kind] or when
        story.forgets.append(Event(when, "", "done: nothing of it opens any more", f"{len(fields['sessions'])} session(s)"))
    elif kind == "clock.set_back":
        story.device.append(
            Event(
                when,
                "",
                f"the clock was set back by {human(timedelta(seconds=float(fields['seconds'])))}",
                "retention still counts from the trusted clock",
            )
        )
    elif kind == "clock.ran_ahead":
        ahead = timedelta(seconds=float(fields["seconds"]))
        story.ahead = max(story.ahead, ahead)
        story.device.append(
            Event(
                when,
                "",
                f"the clock ran ahead of the synchronised time by {human(ahead)}",
                "data was shredded early, never late; `edge-agent clock rewind` brings the clock back",
            )
        )
    elif kind == "clock.rewound":
        back = timedelta(seconds=float(fields["seconds"]))
        story.ahead = max(story.ahead, back)
        story.device.append(
            Event(
                when,
                "",
                f"the clock was brought back by {human(back)} to the synchronised time",
                f"{fields['buckets']} bucket(s) of {fields['sessions']} session(s) kept the time they had left; nothing is kept longer",
            )
        )
    elif kind == "clock.impossible":
        claimed, allowed = float(fields["claimed_seconds"]), float(fields["allowed_seconds"])
        story.device.append(
            Event(
                when,
                "",
                "an impossible reading of the monotonic clock was ignored",
                f"it claimed {human(timedelta(seconds=claimed))} {'before' if claimed < 0 else 'since'} the last trusted time; "
                f"the kernel counted {human(timedelta(seconds=max(0.0, allowed)))} since",
            )
        )
    elif kind == "root.lost":
        story.enrolled.clear()  # voiceprints live under the root too
        story.device.append(
            Event(when, "", "the root key was lost: everything kept before is unreadable for good", str(fields.get("reason", "")))
        )
    elif kind == "log.recovered":
        story.device.append(Event(when, "", "a write cut off by a power cut was cleaned up", ""))
    elif kind == "keystore.migrated":
        story.device.append(Event(when, "", f"storage converted to version {fields['version']}", f"{fields['sessions']} session(s)"))
    elif kind == "vault.migrated":
        story.device.append(
            Event(
                when, "", f"the root key moved into the {fields['backend']} vault", f"the {fields['previous']} vault's root was destroyed"
            )
        )
    elif kind == "voice.enrolled":
        consent = "with a parent's consent" if fields.get("consent") else ""
        story.voices.append(Event(when, str(fields["profile"]), f"voice enrolled from {fields['seconds']} s of speech", consent))
        story.enrolled[str(fields["profile"])] = True
    elif kind == "voice.forgotten":
        if story.enrolled.get(str(fields["profile"])) is False:
            return  # written ahead again by the run that finished an interrupted forget
        story.voices.append(Event(when, str(fields["profile"]), "voiceprint shredded", _SHRED_WHY.get(str(fields.get("reason")), "")))
        story.enrolled[str(fields["profile"])] = False


def _shred(story: Story, fields: dict[str, Any], when: datetime) -> None:
    kind = DataKind(fields["kind"])
    sessions = [s for s in fields["sessions"] if isinstance(s, str)]
    for session in sessions:
        if session in story.sessions:
            story.sessions[session].ended[kind] = when
    late = timedelta(seconds=float(fields.get("late_seconds", 0)))
    why = _SHRED_WHY.get(str(fields.get("reason")), str(fields.get("reason")))
    if late > LATE:
        why += f"; {human(late)} late: {lateness_reason(story, when - late, when, fields)}"
    elif late >= timedelta(0):
        why += "; on time"
    story.shreds.append(Event(when, str(fields.get("profile", "")), f"{kind} of {len(sessions)} session(s) shredded", why))


def lateness_reason(story: Story, due: datetime, done: datetime, fields: dict[str, Any]) -> str:
    if story.ahead / 2 < done - due <= story.ahead + LATE:  # about as late as the clock was found ahead
        return f"the clock had run {human(story.ahead)} ahead, so this was early, not late"
    for stopped, started in story.off:
        if stopped <= done and (started is None or started >= due):
            if started is None or started > done:
                return f"edge was not running from {local(stopped)}: the next purge shredded it"
            return f"the device was off from {local(stopped)} to {local(started)}"
    if abs(float(fields.get("set_back_seconds", 0))) > 2:
        return "the clock had run ahead" if fields.get("clock_synced") else "the clock had been set back"
    return "no agent was running to shred it on time; the next purge or start did" if not story.off else "no reason was recorded"


def _owner(story: Story, fields: dict[str, Any]) -> str:
    session = story.sessions.get(str(fields.get("session")))
    return session.profile if session is not None else ""


def aware(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("an instant without a zone")
    return instant


def _time(text: object) -> datetime | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError("not a date")
    return aware(datetime.fromisoformat(text))


def local(instant: datetime) -> str:
    """The device's local time, as a person reads it (the zone is shown once, in the header)."""
    return instant.astimezone().strftime("%a %d %b %Y %H:%M")
