"""Rights by voice: the spoken commands of [voice_commands], for the microphone and every
Wyoming listener alike (edge.session calls this once a session's transcript is known).

An utterance whose whole transcript is a command's phrase is that command, about the
profile the utterance was tagged with and no other:

- forget_last: that profile's latest kept session begun before the command is forgotten;
- forget_today: that profile's sessions begun since local midnight are forgotten;
- guest_on / guest_off: every session is tagged with the strictest policy until guest_off or
  guest_limit; guest_off is refused to a child's voice (or an unknown one): it widens retention;
- confirm: with a confirm phrase set, a forget or a guest_off waits for it, said by the same
  voice within confirm_window (a spoken "yes").

The command's own utterance keeps nothing: it is not a session to retain, so it is held in
memory while spoken (edge.session) and dropped once recognised. What it does is audited
(`voice.command`, source "voice") before it is done; a forget it makes is an ordinary forget
request (crypto-erase, write-ahead) logged under the id the command's line names. The reply
is the text a Wyoming client is handed (Home Assistant shows or speaks it) and what
`run --json` prints as the session's text.

One `SpokenCommands` serves a running agent. Guest mode is kept in the keystore's state, so a
restart (or a crash, or the watchdog's restart) never ends it early; a confirmation still
awaited is in memory only (a restart drops it: the forget is asked again).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from edge.config import Config, VoiceCommandSettings
from edge.durations import human
from edge.events import VoiceCommand
from edge.policy import Tag, strictest_policy
from edge.retention.shredder import ForgetRequest, Shredder
from edge.sink import AuditSink
from edge.values import TagRule

FORGET_LAST, FORGET_TODAY, GUEST_ON, GUEST_OFF, CONFIRM = "forget_last", "forget_today", "guest_on", "guest_off", "confirm"
MICROPHONE = "microphone"
"""What `voice.command`'s `through` says for the microphone (a listener: its name)."""


def command_of(settings: VoiceCommandSettings, text: str) -> str | None:
    """The command whose phrase is the whole transcript, if any (None: an ordinary session)."""
    said = " ".join(text.split())
    if not said:
        return None
    return next((key for key, phrase in settings.phrases().items() if phrase == said), None)


def with_commands(config: Config, grammar: tuple[str, ...]) -> tuple[str, ...]:
    """A session's grammar with the command phrases added, so the recognizer can output them
    (free dictation, an empty grammar, stays free)."""
    if not grammar:
        return grammar
    return grammar + tuple(p for p in config.voice_commands.phrases().values() if p not in grammar)


def local_midnight(now: datetime) -> datetime:
    """The start of `now`'s day in the device's time zone."""
    return now.astimezone().replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class _Awaited:
    """A forget or a guest_off said with confirmation on: done if the same voice says
    `confirm` by `until` (`request` None: guest_off)."""

    command: str
    request: ForgetRequest | None
    sessions: int
    until: datetime


class SpokenCommands:
    """The household's spoken commands, shared by every session of a running agent."""

    def __init__(self, config: Config, shredder: Shredder, audit: AuditSink, clock: Callable[[], datetime]) -> None:
        self.settings = config.voice_commands
        self._config = config
        self._shredder = shredder
        self._audit = audit
        self._clock = clock
        self._lock = threading.Lock()
        self._guest_until: datetime | None = None
        self._guest_read = False
        """Whether `_guest_until` was read from the keystore yet (on first need: the agent
        opens and checks the keystore itself before anything is heard)."""
        self._awaited: dict[tuple[str, bool], _Awaited] = {}
        """By profile and whether the voice was named (the same voice confirms): the forget
        waiting for its confirmation."""

    def command(self, text: str) -> str | None:
        return command_of(self.settings, text)

    def narrowed(self, tag: Tag) -> Tag:
        """The tag a session is kept under: the strictest policy while guest mode is on."""
        with self._lock:
            return self._narrowed(tag)

    def _narrowed(self, tag: Tag) -> Tag:
        if not self._guest_read:  # guest mode survives a restart
            self._guest_until, self._guest_read = self._shredder.keystore.read().guest_until, True
        on = self._guest_until is not None and self._clock() < self._guest_until
        return Tag(strictest_policy(self._config), TagRule.GUEST) if on else tag

    def run(self, command: str, tag: Tag, began: datetime, through: str) -> str:
        """Do what `command` asks (audited first); the reply, in words. `tag` is the utterance's
        tag as the config and the voice decide it: guest_off is judged by it (whether an adult
        speaks), every other command acts for the profile the utterance would be kept as (in
        guest mode: the strictest, so a guest's "forget" reaches the guest sessions only)."""
        with self._lock:
            if command == GUEST_ON:
                return self._guest_on(tag, through)
            if command == GUEST_OFF:
                return self._guest_off(tag, through)
            awaited = self._awaited.get((tag.profile.name, tag.rule.identifies))
            if command == CONFIRM and awaited is not None and awaited.command == GUEST_OFF:
                return self._confirmed(tag, through)  # guest_off is judged by the voice itself, as its command was
            tag = self._narrowed(tag)
            if command == CONFIRM:
                return self._confirmed(tag, through)
            return self._forget(command, tag, began, through)

    # -- forgetting ----------------------------------------------------------------------------

    def _request(self, command: str, profile: str, identified: bool, began: datetime) -> tuple[ForgetRequest | None, int]:
        """The request that forgets what `command` names of `profile` (None: nothing is kept).
        Only the profile's own sessions are opened: those with data in its buckets. A speaker
        the tag named reaches that profile's sessions that named their speaker; an unknown
        voice (the strictest fallback, guest mode) only the sessions that named nobody, so a
        visitor's "forget today" never reaches the strictest profile's own (a child's, say)."""
        data = self._shredder.keystore.read()
        buckets = [bucket.id for bucket in data.buckets.values() if bucket.profile == profile]
        ids = {session for members in data.members_of(buckets).values() for session in members}
        mine = [
            s
            for s in (data.sessions[i] for i in sorted(ids))
            if s.profile == profile and s.created <= began and s.rule.identifies == identified
        ]
        if not mine:
            return None, 0
        if command == FORGET_LAST:
            return ForgetRequest(session=max(mine, key=lambda s: s.created).id), 1
        since = local_midnight(began)
        today = sum(1 for s in mine if s.created >= since)
        return (ForgetRequest(profile=profile, since=since, identified=identified), today) if today else (None, 0)

    def _forget(self, command: str, tag: Tag, began: datetime, through: str) -> str:
        profile = tag.profile.name
        request, count = self._request(command, profile, tag.rule.identifies, began)
        if request is None:
            self._log(command, "nothing", tag, through)
            return "There was nothing of yours to forget." if command == FORGET_LAST else "Nothing of yours was kept today."
        if self.settings.confirm:
            until = self._clock() + self.settings.confirm_window
            self._awaited[profile, tag.rule.identifies] = _Awaited(command, request, count, until)
            self._log(command, "ask", tag, through, sessions=count)
            seconds = round(self.settings.confirm_window.total_seconds())
            return f'Say "{self.settings.confirm}" within {seconds} seconds to forget {_what(command, count)}.'
        return self._do(command, request, count, tag, through)

    def _do(self, command: str, request: ForgetRequest, count: int, tag: Tag, through: str) -> str:
        request_id = os.urandom(6).hex()
        self._log(command, "forget", tag, through, sessions=count, request=request_id)
        report = self._shredder.forget(request, request_id)
        return f"Forgot {_what(command, count)}." if report.forgotten else "There was nothing of yours to forget."

    def _confirmed(self, tag: Tag, through: str) -> str:
        awaited = self._awaited.pop((tag.profile.name, tag.rule.identifies), None)
        if awaited is None or self._clock() > awaited.until:
            self._log(CONFIRM, "expired", tag, through)
            return "There was nothing to confirm."
        if awaited.request is None:
            return self._end_guest_mode(tag, through)
        return self._do(awaited.command, awaited.request, awaited.sessions, tag, through)

    # -- guest mode ----------------------------------------------------------------------------

    def _guest_on(self, tag: Tag, through: str) -> str:
        until = self._clock() + self.settings.guest_limit
        self._log(GUEST_ON, "guest_on", tag, through, until=until.isoformat())
        self._keep_guest_until(until)
        return f"Guest mode is on for {human(self.settings.guest_limit)}: nothing is kept longer than the strictest policy allows."

    def _guest_off(self, tag: Tag, through: str) -> str:
        if tag.profile.is_child or not tag.rule.identifies:  # it widens retention: never a child's or an unknown voice's call
            self._log(GUEST_OFF, "refused", tag, through)
            return "Only an adult can end guest mode; it ends by itself."
        if self.settings.confirm:  # it widens retention: a phrase misheard must not be enough
            self._awaited[tag.profile.name, True] = _Awaited(GUEST_OFF, None, 0, self._clock() + self.settings.confirm_window)
            self._log(GUEST_OFF, "ask", tag, through)
            seconds = round(self.settings.confirm_window.total_seconds())
            return f'Say "{self.settings.confirm}" within {seconds} seconds to end guest mode.'
        return self._end_guest_mode(tag, through)

    def _end_guest_mode(self, tag: Tag, through: str) -> str:
        self._log(GUEST_OFF, "guest_off", tag, through)
        self._keep_guest_until(None)
        return "Guest mode is off."

    def _keep_guest_until(self, until: datetime | None) -> None:
        """In the keystore first (so a restart or a crash never ends guest mode early), then here."""
        with self._shredder.keystore.transaction() as data:
            data.guest_until = until
        self._guest_until, self._guest_read = until, True

    def _log(
        self, command: str, outcome: str, tag: Tag, through: str, sessions: int = 0, request: str | None = None, until: str | None = None
    ) -> None:
        self._audit.append(
            VoiceCommand(
                command=command,
                outcome=outcome,
                profile=tag.profile.name,
                rule=str(tag.rule),
                through=through,
                request=request,
                sessions=sessions,
                until=until,
            )
        )


def _what(command: str, count: int) -> str:
    return "your last request" if command == FORGET_LAST else f"what you said today ({count} request{'s' if count != 1 else ''})"
