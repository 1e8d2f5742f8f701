"""What the audit log says happened, in the terms a parent asks about: sessions and how long
each is kept, every access to kept data and every refusal, every shred and why it came
when it did, the clock, the key and the voices. Read by the parent's report (report.py).

Exports and key exports are kept one by one (they are rare and each matters); refusals are
counted, identical ones (same profile, request and reason) as one row with its first and
last time, so a flood of them hides nothing. Clock events are counted the same way when
one follows another with the same amount: a clock stepped once is seen again by every
command that runs after it, and that is one row, not one per command.

A malformed event (anyone can chain a line: edge.events.EventError) is left out, and so is
a type this edge does not know: the report's header says the log did not verify, and
`audit verify` names the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from edge.durations import human as human  # re-exported: the report words durations alike
from edge.events import (
    AgentStarted,
    AgentStopped,
    AuditEvent,
    ClockImpossible,
    ClockRanAhead,
    ClockRewound,
    ClockSetBack,
    Export,
    ExportRefused,
    ForgetFulfilled,
    ForgetRequested,
    IdentityExported,
    KeystoreMigrated,
    LogRecovered,
    PolicyAdopted,
    ProfileKept,
    RootLost,
    SessionCreated,
    Shred,
    UnknownEvent,
    VaultMigrated,
    VoiceCommand,
    VoiceEnrolled,
    VoiceForgotten,
    read,
)
from edge.values import DataKind

LATE = timedelta(minutes=2)
"""A shred later than this after its expiry is explained (the device was off, the clock...)."""
SAME_STEP = timedelta(minutes=1)
"""Clock events of one type, one after another, whose amounts differ by less than this are
one counted row: the same step, seen again by each later command (the amounts drift by
seconds with the monotonic clock and NTP's slewing)."""


@dataclass
class Session:
    id: str
    profile: str
    created: datetime
    expires: dict[DataKind, datetime | None]
    ended: dict[DataKind, datetime | None] = field(default_factory=lambda: dict.fromkeys(DataKind))
    """When each kind was shredded or forgotten (None: still kept)."""


@dataclass
class Event:
    """One line of the report's tables: when, whose, what, and why in plain words; or
    `count` identical events as one line (refusals, a clock step seen again), from `at` to `last`."""

    at: datetime
    profile: str
    what: str
    why: str = ""
    count: int = 1
    last: datetime | None = None
    """When the last of `count` identical events happened (None: there is one)."""

    def again(self, when: datetime) -> None:
        self.count += 1
        self.last = when


@dataclass
class Story:
    sessions: dict[str, Session] = field(default_factory=dict)
    exports: list[Event] = field(default_factory=list)
    """Every export and every key (identity) export."""
    refusals: dict[tuple[str, str, str], Event] = field(default_factory=dict)
    """Refused exports and key exports by (profile, what, why), in the order first seen."""
    shreds: list[Event] = field(default_factory=list)
    forgets: list[Event] = field(default_factory=list)
    asked: dict[str, tuple[str, list[Event]]] = field(default_factory=dict)
    """Each forget request's selector and rows, by its id: its fulfilment names whose
    sessions went (for `everything before`) and says again who asked."""
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
    policies: list[Event] = field(default_factory=list)
    """Each adoption of a version of the written policy (`what` names it, `why` what changed)."""
    adopted: dict[str, datetime] = field(default_factory=dict)
    """Policy version -> when it was first adopted."""
    inactive: list[Event] = field(default_factory=list)
    """Purges for inactivity (data and voiceprints) and a parent's `profile keep`."""
    spoken: list[Event] = field(default_factory=list)
    """Every spoken command (rights by voice) and what came of it."""
    by_voice: dict[str, str] = field(default_factory=dict)
    """Forget request id -> who asked for it by voice, and where (its rows say so)."""


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
    pending: list[tuple[Shred, datetime]] = []
    clock: tuple[type[AuditEvent], float, Event] | None = None  # the latest clock row: its type and amount
    for entry in entries:
        try:
            when = aware(datetime.fromisoformat(entry["wall"]))
            event = read(entry["type"], entry["fields"])
        except (KeyError, TypeError, ValueError):  # not an entry (audit verify names it), or an EventError
            continue
        if isinstance(event, AgentStopped):
            stopped = when
        elif isinstance(event, AgentStarted) and stopped is not None:
            story.off.append((stopped, when))
            stopped = None
        if isinstance(event, Shred):
            pending.append((event, when))  # explained once every stop and start is known
        elif isinstance(event, _CLOCK) and clock is not None and _same_step(story, clock, event):
            clock[2].again(when)
        else:
            rows = len(story.device)
            _take(story, event, when)
            if isinstance(event, _CLOCK) and len(story.device) > rows:
                clock = (type(event), _amount(event), story.device[-1])
    if stopped is not None:
        story.off.append((stopped, None))
    for shred, when in pending:
        _shred(story, shred, when)
    return story


_CLOCK = (ClockSetBack, ClockRanAhead, ClockRewound, ClockImpossible)


def _same_step(story: Story, clock: tuple[type[AuditEvent], float, Event], event: AuditEvent) -> bool:
    """Whether a clock event repeats the device table's last row (of the same type, with
    an amount within SAME_STEP of that row's first)."""
    seen, amount, row = clock
    return (
        bool(story.device) and story.device[-1] is row and type(event) is seen and abs(_amount(event) - amount) < SAME_STEP.total_seconds()
    )


def _amount(event: AuditEvent) -> float:
    return float(event.seconds) if isinstance(event, (ClockSetBack, ClockRanAhead, ClockRewound)) else 0.0


def _take(story: Story, event: AuditEvent | UnknownEvent, when: datetime) -> None:
    match event:
        case SessionCreated():
            expires = {DataKind.AUDIO: _time(event.audio_expires), DataKind.TRANSCRIPT: _time(event.transcript_expires)}
            story.sessions[event.session] = Session(event.session, event.profile, when, expires)
        case Export():
            story.exports.append(Event(when, _owner(story, event.session), f"recording exported for {event.purpose}", ""))
        case ExportRefused():
            _refused(story, event, when)
        case IdentityExported():
            story.exports.append(
                Event(when, _owner(story, event.session), f"key exported: opens {event.sessions} recording(s)", "for checking")
            )
        case VoiceCommand():
            _spoken(story, event, when)
        case ForgetRequested():
            _asked(story, event, when)
        case ForgetFulfilled():
            _fulfilled(story, event, when)
        case ClockSetBack():
            story.device.append(
                Event(
                    when,
                    "",
                    f"the clock was set back by {human(timedelta(seconds=event.seconds))}",
                    "retention still counts from the trusted clock",
                )
            )
        case ClockRanAhead():
            ahead = timedelta(seconds=event.seconds)
            story.ahead = max(story.ahead, ahead)
            story.device.append(
                Event(
                    when,
                    "",
                    f"the clock ran ahead of the synchronised time by {human(ahead)}",
                    "data was shredded early, never late; `edge-agent clock rewind` brings the clock back",
                )
            )
        case ClockRewound():
            back = timedelta(seconds=event.seconds)
            story.ahead = max(story.ahead, back)
            story.device.append(
                Event(
                    when,
                    "",
                    f"the clock was brought back by {human(back)} to the synchronised time",
                    f"{event.buckets} bucket(s) of {event.sessions} session(s) kept the time they had left; nothing is kept longer",
                )
            )
        case ClockImpossible(claimed_seconds=claimed, allowed_seconds=allowed):
            story.device.append(
                Event(
                    when,
                    "",
                    "an impossible reading of the monotonic clock was ignored",
                    f"it claimed {human(timedelta(seconds=claimed))} {'before' if claimed < 0 else 'since'} the last trusted time; "
                    f"the kernel counted {human(timedelta(seconds=max(0.0, allowed)))} since",
                )
            )
        case PolicyAdopted():
            story.adopted.setdefault(event.version, when)
            why = "the first policy this log records" if event.previous is None else "changed: " + (", ".join(event.changed) or "nothing")
            story.policies.append(Event(when, "", f"policy {event.version[:12]} adopted", why))
        case ProfileKept():
            heard, until = local(aware(datetime.fromisoformat(event.heard))), local(aware(datetime.fromisoformat(event.until)))
            story.inactive.append(
                Event(
                    when,
                    event.profile,
                    "kept from its inactivity purge by a parent (`profile keep`)",
                    f"unheard since {heard}; now kept until {until} unless it speaks",
                )
            )
        case RootLost():
            story.enrolled.clear()  # voiceprints live under the root too
            story.device.append(Event(when, "", "the root key was lost: everything kept before is unreadable for good", event.reason))
        case LogRecovered():
            story.device.append(Event(when, "", "a write cut off by a power cut was cleaned up", ""))
        case KeystoreMigrated():
            story.device.append(Event(when, "", f"storage converted to version {event.version}", f"{event.sessions} session(s)"))
        case VaultMigrated():
            story.device.append(
                Event(when, "", f"the root key moved into the {event.backend} vault", f"the {event.previous} vault's root was destroyed")
            )
        case VoiceEnrolled():
            consent = "with a parent's consent" if event.consent else ""
            story.voices.append(Event(when, event.profile, f"voice enrolled from {event.seconds} s of speech", consent))
            story.enrolled[event.profile] = True
        case VoiceForgotten():
            if story.enrolled.get(event.profile) is False:
                return  # written ahead again by the run that finished an interrupted forget
            story.voices.append(Event(when, event.profile, "voiceprint shredded", _SHRED_WHY.get(event.reason, "")))
            if event.reason == "inactive":
                story.inactive.append(Event(when, event.profile, "voiceprint purged for inactivity", _SHRED_WHY["inactive"]))
            story.enrolled[event.profile] = False


def _refused(story: Story, event: ExportRefused, when: datetime) -> None:
    reason = _REFUSED.get(event.reason, event.reason)
    what = "key export refused" if event.purpose == "identity" else f"export for {event.purpose} refused"
    key = (_owner(story, event.session), what, reason)
    seen = story.refusals.get(key)
    if seen is None:
        story.refusals[key] = Event(when, *key)
    else:
        seen.again(when)


def _asked(story: Story, event: ForgetRequested, when: datetime) -> None:
    """A forget request's row: whose data (one session of a profile, a profile, everyone),
    what it named and how many sessions, and who asked (resumed: after a power cut)."""
    whose, named, command = _forgetting(story, event.selector)
    sessions = event.sessions
    count = "" if command == VOICES_FORGET else f": {plural(sessions, 'session') if sessions else 'none was kept'}"
    why = story.by_voice.get(event.request) or _who_asked(command)
    if event.resumed:  # the same request again, after a crash or power cut stopped its first run
        row = Event(when, whose, f"finished the request to forget {named} that a power cut or crash interrupted{count}", why)
    else:
        row = Event(when, whose, f"asked to forget {named}{count}", why)
    story.forgets.append(row)
    story.asked.setdefault(event.request, (event.selector, []))[1].append(row)


def _fulfilled(story: Story, event: ForgetFulfilled, when: datetime) -> None:
    """Marks the sessions forgotten; the row (and the request's) names whose they were."""
    sessions = event.sessions
    profiles = sorted({story.sessions[s].profile for s in sessions if s in story.sessions})
    for session in sessions:
        if session in story.sessions:
            ended = story.sessions[session].ended
            for data_kind in DataKind:
                ended[data_kind] = ended[data_kind] or when
    selector, asked = story.asked.get(event.request, ("", []))
    if selector.startswith("everything before ") and profiles:
        for row in asked:
            row.profile = ", ".join(profiles)
    whose, why = (asked[-1].profile, asked[-1].why) if asked else (", ".join(profiles), "")
    what = f"done: nothing of {plural(len(sessions), 'session')} opens any more" if sessions else "done: nothing of it opens any more"
    story.forgets.append(Event(when, whose, what, why))


FORGET, VOICES_FORGET = "edge-agent forget", "edge-agent voices forget"


def _who_asked(command: str) -> str:
    return f"a parent asked ({command})" if command == VOICES_FORGET else f"a parent asked ({command}, or the control socket)"


def _forgetting(story: Story, selector: str) -> tuple[str, str, str]:
    """A forget request's selector (as the shredder describes it) as (whose, what it names,
    the command that asks for it), every time in local time."""
    word, _, rest = selector.partition(" ")
    if word == "session":
        session = story.sessions.get(rest)
        return (f"one session of {session.profile}" if session else "one session"), selector, FORGET
    if word == "profile":
        name, _, since = rest.partition(" since ")
        if since:
            try:
                return name, f"every session of {name} since {local(aware(datetime.fromisoformat(since)))}", FORGET
            except ValueError:
                return name, selector, FORGET
        return rest, f"every session of {rest}", FORGET
    if selector.startswith("the voiceprint of "):
        return selector.removeprefix("the voiceprint of "), selector, VOICES_FORGET
    if selector.startswith("everything before "):
        try:
            before = aware(datetime.fromisoformat(selector.removeprefix("everything before ")))
        except ValueError:  # not as the shredder words it: shown as written
            return "everyone", selector, FORGET
        return "everyone", f"everything before {local(before)}", FORGET  # until its fulfilment names them
    return ("everyone" if selector == "everything" else ""), selector, FORGET


_SPOKEN = {
    "forget_last": "forget my last request",
    "forget_today": "forget what I said today",
    "guest_on": "guest mode on",
    "guest_off": "guest mode off",
    "confirm": "yes (confirming a forget)",
}
_OUTCOME = {
    "forget": "done: see the forget request it made",
    "nothing": "nothing of theirs was kept, so nothing was forgotten",
    "ask": "waited for a spoken yes",
    "expired": "nothing was waiting to be confirmed (or it came too late)",
    "guest_off": "every session is tagged by the household config again",
    "refused": "refused: ending guest mode widens retention, which a child's (or an unknown) voice may not",
}


def _spoken(story: Story, event: VoiceCommand, when: datetime) -> None:
    """A spoken command's row, in the speaker's own words' meaning; a forget it made says
    who asked for it by voice."""
    where = f"by voice ({event.through})"
    if event.request is not None:
        story.by_voice[event.request] = f"{event.profile} asked {where}"
    said = _SPOKEN.get(event.command, event.command)
    count = f": {plural(event.sessions, 'session')}" if event.outcome in ("forget", "ask") else ""
    if event.outcome == "guest_on" and event.until is not None:
        why = f"every session is kept as the strictest policy allows until {local(aware(datetime.fromisoformat(event.until)))}"
    else:
        why = _OUTCOME.get(event.outcome, event.outcome)
    story.spoken.append(Event(when, event.profile, f'said "{said}" {where}{count}', why))


def _shred(story: Story, shred: Shred, when: datetime) -> None:
    for session in shred.sessions:
        if session in story.sessions:
            story.sessions[session].ended[shred.kind] = when
    late = timedelta(seconds=shred.late_seconds)
    why = _SHRED_WHY.get(shred.reason, shred.reason)
    if late > LATE:
        why += f"; {human(late)} late: {lateness_reason(story, when - late, when, shred)}"
    elif late >= timedelta(0):
        why += "; on time"
    story.shreds.append(Event(when, shred.profile, f"{shred.kind} of {len(shred.sessions)} session(s) shredded", why))
    if shred.reason == "inactive":
        story.inactive.append(Event(when, shred.profile, f"{shred.kind} of {len(shred.sessions)} session(s) purged for inactivity", why))


def lateness_reason(story: Story, due: datetime, done: datetime, shred: Shred) -> str:
    if story.ahead / 2 < done - due <= story.ahead + LATE:  # about as late as the clock was found ahead
        return f"the clock had run {human(story.ahead)} ahead, so this was early, not late"
    for stopped, started in story.off:
        if stopped <= done and (started is None or started >= due):
            if started is None or started > done:
                return f"edge was not running from {local(stopped)}: the next purge shredded it"
            return f"the device was off from {local(stopped)} to {local(started)}"
    if abs(shred.set_back_seconds) > 2:
        return "the clock had run ahead" if shred.clock_synced else "the clock had been set back"
    return "no agent was running to shred it on time; the next purge or start did" if not story.off else "no reason was recorded"


def _owner(story: Story, session_id: str) -> str:
    session = story.sessions.get(session_id)
    return session.profile if session is not None else ""


def aware(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("an instant without a zone")
    return instant


def _time(text: str | None) -> datetime | None:
    """An instant SessionCreated.parse checked (ISO 8601 with a zone), or None (not kept)."""
    return None if text is None else datetime.fromisoformat(text)


def plural(count: int, noun: str) -> str:
    """A count and its noun as a person writes them: "1 session", "3 sessions"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def local(instant: datetime) -> str:
    """The device's local time, as a person reads it. The header names the zone once; a time
    whose offset differs from the header's (summer time, winter time) names its own."""
    here = instant.astimezone()
    if here.utcoffset() != datetime.now().astimezone().utcoffset():
        return here.strftime("%a %d %b %Y %H:%M %Z")
    return here.strftime("%a %d %b %Y %H:%M")
