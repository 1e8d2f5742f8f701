"""One session's life, the same for the microphone, a file and a Wyoming client.

`Session` draws the id, holds the tag, opens the decoder and chooses once where the audio
goes; the paths only feed it frames (with the VAD's verdict) and end it:

- nowhere: a run that keeps nothing (`transcribe`);
- held in memory until the end, bounded by the longest a session can last, then sealed
  whole under the tag that wins: when voices are enrolled (the voice is judged at the end)
  and when an utterance in which nothing was recognised must keep nothing (a Wyoming
  listener's `keep_unrecognised = false`: Home Assistant's false wakes). A crash meanwhile
  leaves nothing at all, the private direction;
- sealed from its first byte otherwise: a crash leaves what was sealed, which expires on time.

With spoken commands on ([voice_commands]), every session is held: one that turns out to be a
command keeps nothing of itself, and guest mode decides the tag it is kept under
(edge.spoken does what the command asks, for the tag the session was given).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from edge.config import Config
from edge.policy import Tag
from edge.spoken import MICROPHONE, SpokenCommands, with_commands
from edge.store.recorder import Recorder, SealedSession
from edge.store.records import SessionEntry
from edge.stt.recognizer import Decoder, SpeechModel
from edge.tagging.held import HeldSession
from edge.tagging.voice import VoiceTagger
from edge.transcript import Transcript
from edge.values import TagRule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionParts:
    """What every session of a running agent shares."""

    config: Config
    model: SpeechModel
    recorder: Recorder | None
    """Seals what profiles keep; None keeps nothing."""
    tagger: VoiceTagger | None
    """Tags by voice once a voice is enrolled; None = by configuration only."""
    clock: Callable[[], datetime]
    spoken: SpokenCommands | None = None
    """The household's spoken commands; None = off (or nothing is kept: no recorder)."""


class _Sink(Protocol):
    """Where a session's audio goes; `entry` is the keystore's record once kept (None: not kept)."""

    tag: Tag
    entry: SessionEntry | None

    def write(self, pcm: bytes) -> None: ...
    def decide(self) -> Tag: ...
    def finish(self, transcript: Transcript) -> None: ...
    def abandon(self) -> None: ...


class _NotKept:
    def __init__(self, tag: Tag) -> None:
        self.tag = tag
        self.entry: SessionEntry | None = None

    def write(self, pcm: bytes) -> None:
        pass

    def decide(self) -> Tag:
        return self.tag

    def finish(self, transcript: Transcript) -> None:
        pass

    def abandon(self) -> None:
        pass


class _SealedNow:
    def __init__(self, sealed: SealedSession, tag: Tag) -> None:
        self._sealed, self.tag = sealed, tag
        self.entry: SessionEntry | None = None

    def write(self, pcm: bytes) -> None:
        self._sealed.write(pcm)

    def decide(self) -> Tag:
        return self.tag

    def finish(self, transcript: Transcript) -> None:
        self._sealed.finish(transcript)
        self.entry = self._sealed.entry

    def abandon(self) -> None:
        pass  # what was sealed stays registered and expires on time


class Session:
    """Begun when made; `feed` it, then `finish` (or `abandon` after a failure)."""

    def __init__(
        self,
        parts: SessionParts,
        tag: Tag,
        grammar: tuple[str, ...],
        padding: float,
        keep_unrecognised: bool = True,
        through: str = MICROPHONE,
    ) -> None:
        self.id = secrets.token_hex(8)
        self.began = parts.clock()
        self._keep_unrecognised = keep_unrecognised
        self._spoken = parts.spoken if parts.recorder is not None else None
        self._through = through
        """Where it was heard, as a spoken command's audit line names it."""
        if self._spoken is not None:
            grammar = with_commands(parts.config, grammar)
        self._decoder: Decoder = parts.model.decoder(grammar, padding=padding)
        try:
            self._sink: _Sink = self._sink_for(parts, tag)
        except BaseException:
            self._decoder.finish()  # hand its recognizer back
            raise

    def _sink_for(self, parts: SessionParts, tag: Tag) -> _Sink:
        if parts.recorder is None:
            return _NotKept(tag)
        tagger = parts.tagger
        voices = tagger.enrolled() if tagger is not None and tag.rule is not TagRule.GIVEN else {}
        if voices or not self._keep_unrecognised or self._spoken is not None:
            trigger = parts.config.trigger
            longest = (trigger.max_session + trigger.wake_timeout).total_seconds() + 1  # no session is longer
            return HeldSession(parts.recorder, tagger, self.id, tag, voices, self.began, longest)
        return _SealedNow(parts.recorder.begin(self.id, tag), tag)

    @property
    def tag(self) -> Tag:
        """The configured tag until finished, then the one that won (a voice may decide)."""
        return self._sink.tag

    @property
    def kept(self) -> SessionEntry | None:
        """The keystore's record once finished, if anything was kept."""
        return self._sink.entry

    def feed(self, pcm: bytes, silent: bool) -> None:
        """Every sample goes to the sink; the decoder leaves out what is silent and far from speech."""
        self._decoder.feed(pcm, silent)
        self._sink.write(pcm)

    def finish(self, shape: Callable[[Transcript], Transcript] = lambda transcript: transcript) -> Transcript:
        """The transcript (through `shape`: the microphone path drops its wake phrase), sealed
        with the audio; nothing is kept when nothing was recognised and that is the rule."""
        try:
            transcript = shape(self._decoder.transcript())
            spoken = self._spoken
            command = spoken.command(transcript.text) if spoken is not None else None
            if spoken is not None and command is not None:
                tag = self._sink.decide()
                self._sink.abandon()  # a command, not a session to retain: nothing of it is kept
                log.debug("session %s: a spoken command (%s) of %s; nothing of the utterance is kept", self.id, command, tag.profile.name)
                return Transcript(text=spoken.run(command, tag, self.began, self._through), words=())
            if spoken is not None:
                self._sink.tag = spoken.narrowed(self._sink.decide())
            if not transcript.text and not self._keep_unrecognised:
                log.debug("session %s: nothing was recognised, so nothing of it is kept", self.id)
                self._sink.abandon()
            else:
                self._sink.finish(transcript)
        except BaseException:
            self._sink.abandon()  # audio held in memory never outlives a failure
            raise
        return transcript

    def abandon(self) -> None:
        """After a failure: the recognizer is given back; audio held in memory is overwritten
        and dropped (what was sealed from the first byte stays and expires on time)."""
        self._decoder.finish()
        self._sink.abandon()
