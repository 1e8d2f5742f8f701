"""The agent: audio source -> segmenter -> tagger -> transcriber -> session records.

Decoding runs on the thread that calls `Agent.run`, never on the audio thread:
the microphone callback only fills a bounded queue (edge.audio.mic).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from edge.audio.segmenter import Segmenter, segmenter_settings
from edge.config import Config
from edge.instants import iso_utc
from edge.pcm import FRAME_BYTES
from edge.session import Session, SessionParts
from edge.spoken import MICROPHONE, SpokenCommands
from edge.store.recorder import Recorder
from edge.stt.recognizer import SpeechModel
from edge.stt.vocabulary import check_trigger_words
from edge.tagging import tag_session
from edge.tagging.voice import VoiceTagger
from edge.transcript import Transcript, Word
from edge.values import EndReason, TagRule, TriggerMode


@dataclass(frozen=True)
class SessionRecord:
    session: str
    """Random id (16 hex digits)."""
    profile: str
    rule: TagRule
    """How the profile was chosen."""
    started: str
    """Wall-clock time the session began, ISO 8601 UTC."""
    start: float
    """Seconds from the start of the input stream."""
    end: float
    """Seconds from the start of the input stream."""
    end_reason: EndReason
    text: str
    words: tuple[Word, ...] = field(default=())
    audio_expires: str | None = None
    """When the sealed audio will be shredded (ISO 8601 UTC); None = not kept."""
    transcript_expires: str | None = None
    """When the sealed transcript will be shredded (ISO 8601 UTC); None = not kept."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["start"], data["end"] = round(self.start, 3), round(self.end, 3)
        return data


@dataclass
class RunSummary:
    sessions: int = 0
    seconds: float = 0.0
    """Seconds of audio processed."""
    wake_count: int = 0


def session_grammar(config: Config) -> tuple[str, ...]:
    """Phrases a session recognizer may output. In wake mode the wake phrase is added,
    so a session that starts at the wake phrase is not forced onto other words."""
    grammar = config.trigger.grammar
    if grammar and config.trigger.mode == TriggerMode.WAKE and config.trigger.wake_phrase not in grammar:
        grammar = grammar + (config.trigger.wake_phrase,)
    return grammar


class SessionRunner:
    """The segmenter's sink: one session (edge.session) between begin() and end()."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._open: tuple[Session, float] | None = None
        """The session and its offset in the input stream."""

    def begin(self, offset: float) -> None:
        agent = self._agent
        tag = tag_session(agent.config, agent.given_profile, agent.active_profile)
        self._open = Session(agent.parts, tag, agent.grammar, agent.segmenter.settings.padding, through=agent.through), offset

    def audio(self, pcm: bytes, silent: bool) -> None:
        if self._open is not None:
            self._open[0].feed(pcm, silent)

    def abandon(self) -> None:
        """After a failure mid-session (see Session.abandon)."""
        opened, self._open = self._open, None
        if opened is not None:
            opened[0].abandon()

    def end(self, offset: float, reason: EndReason) -> None:
        opened, self._open = self._open, None
        if opened is None:
            return
        session, start = opened
        transcript = session.finish(lambda heard: _without_wake_phrase(heard, self._agent.wake_tokens, start))
        kept, tag = session.kept, session.tag
        record = SessionRecord(
            session=session.id,
            profile=tag.profile.name,
            rule=tag.rule,
            started=session.began.astimezone(timezone.utc).isoformat(timespec="seconds"),
            start=start,
            end=offset,
            end_reason=reason,
            text=transcript.text,
            words=transcript.words,
            audio_expires=iso_utc(kept.audio_expires) if kept else None,
            transcript_expires=iso_utc(kept.transcript_expires) if kept else None,
        )
        self._agent.on_session(record)


class Agent:
    """Wires the pipeline for one run. `on_session` receives each finished session."""

    def __init__(
        self,
        config: Config,
        model: SpeechModel,
        on_session: Callable[[SessionRecord], None],
        given_profile: str | None = None,
        recorder: Recorder | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        tagger: VoiceTagger | None = None,
        spoken: SpokenCommands | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.recorder = recorder
        """Seals what profiles keep; None stores nothing (e.g. `transcribe`)."""
        self.tagger = tagger
        """Tags sessions by voice once a voice is enrolled; None = by configuration only."""
        self.clock = clock
        self.on_session = self._count(on_session)
        self.given_profile = given_profile
        self.active_profile: str | None = None
        self.through = MICROPHONE
        """Where its sessions are heard, as a spoken command's audit line says ("file": run --input)."""
        """Set at run time (e.g. by the control socket); overrides [household] active_profile."""
        if given_profile:
            config.named_profile(given_profile, "--profile")  # fail before any audio is heard
        check_trigger_words(config, model.vocabulary, model.path)  # a word it cannot hear never triggers
        self.parts = SessionParts(config, model, recorder, tagger, clock, spoken)
        """What each session shares (edge.session)."""
        self.grammar = session_grammar(config)
        self.wake_tokens = config.trigger.wake_phrase.split() if config.trigger.mode == TriggerMode.WAKE else []
        spot_grammar = self.grammar  # free dictation when no grammar: any word may precede the wake phrase
        self._runner = SessionRunner(self)
        self.segmenter = Segmenter(
            segmenter_settings(config.trigger),
            self._runner,
            make_spotter=lambda: model.decoder(spot_grammar),
        )
        self.summary = RunSummary()

    def _count(self, callback: Callable[[SessionRecord], None]) -> Callable[[SessionRecord], None]:
        def counted(record: SessionRecord) -> None:
            self.summary.sessions += 1
            callback(record)

        return counted

    def push_to_talk(self) -> None:
        self.segmenter.push()

    def run(self, chunks: Iterable[bytes], stop: threading.Event | None = None) -> RunSummary:
        """Process pipeline PCM until the source ends or `stop` is set, then close open sessions."""
        stop = stop or threading.Event()
        pending = bytearray()
        try:
            for chunk in chunks:
                pending += chunk
                whole = len(pending) - len(pending) % FRAME_BYTES
                for index in range(0, whole, FRAME_BYTES):
                    self.segmenter.feed(bytes(pending[index : index + FRAME_BYTES]))
                del pending[:whole]
                if stop.is_set():
                    break
            if pending and not stop.is_set():  # the last partial frame, padded with silence
                self.segmenter.feed(bytes(pending) + bytes(FRAME_BYTES - len(pending)))
        except BaseException:
            self._runner.abandon()  # the source failed: audio held for its voice is dropped, never left behind
            raise
        self.segmenter.finish(EndReason.STOPPED if stop.is_set() else EndReason.END_OF_INPUT)
        self.summary.seconds = self.segmenter.offset
        self.summary.wake_count = self.segmenter.wake_count
        return self.summary


def _without_wake_phrase(transcript: Transcript, wake_tokens: list[str], start: float) -> Transcript:
    """Drop a leading wake phrase; shift word times to stream offsets."""
    words = list(transcript.words)
    if wake_tokens and [w.word for w in words[: len(wake_tokens)]] == wake_tokens:
        words = words[len(wake_tokens) :]
    shifted = tuple(Word(w.word, round(w.start + start, 3), round(w.end + start, 3), w.conf) for w in words)
    return Transcript(text=" ".join(w.word for w in shifted), words=shifted)
