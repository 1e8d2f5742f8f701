"""One Wyoming utterance is one edge session: tagged, kept and decoded as it arrives.

Everything here blocks (the keystore's fsyncs, Vosk, sealing): the server runs it on a
worker thread so that its event loop keeps answering `describe` meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import webrtcvad

from edge.audio.segmenter import segmenter_settings
from edge.config import Config, ListenerSettings
from edge.pcm import FRAME_BYTES, PIPELINE_RATE, SAMPLE_BYTES
from edge.policy import Tag
from edge.session import Session, SessionParts
from edge.sink import AuditSink
from edge.spoken import SpokenCommands
from edge.store.recorder import Recorder
from edge.stt.recognizer import SpeechModel
from edge.tagging import tag_listener_session
from edge.tagging.voice import VoiceTagger
from edge.transcript import Transcript
from edge.values import EndReason
from edge.wyoming.audio import WireConverter, WireFormat


@dataclass(frozen=True)
class Household:
    """What every utterance shares with the rest of the running agent."""

    config: Config
    model: SpeechModel
    recorder: Recorder
    audit: AuditSink
    active_profile: Callable[[], str | None]
    """Who speaks now, as set at run time (`edge-agent profile`); None = not set."""
    tagger: VoiceTagger | None = None
    """Tags utterances by voice once a voice is enrolled; None = by configuration only."""
    spoken: SpokenCommands | None = None
    """The household's spoken commands (the microphone's too); None = off."""

    def parts(self) -> SessionParts:
        return SessionParts(self.config, self.model, self.recorder, self.tagger, self.recorder.clock, self.spoken)


class Utterance:
    """One edge session (edge.session) fed by a Wyoming client: what the listener keeps is held
    in memory until the utterance ends, or, with `keep_unrecognised = true` and no voices
    enrolled, sealed from its first byte. Audio past [trigger] max_session is neither kept nor
    decoded; silence far from speech is not decoded (the VAD decides, 30 ms at a time),
    exactly as in a microphone's session."""

    def __init__(self, household: Household, listener: ListenerSettings, wire: WireFormat) -> None:
        config = household.config
        tag = tag_listener_session(config, listener.profile, household.active_profile())
        self._limit = round(config.trigger.max_session.total_seconds() * PIPELINE_RATE) * SAMPLE_BYTES
        self._converter = WireConverter(wire)
        self._vad = webrtcvad.Vad(config.trigger.vad_aggressiveness)
        self._frame = bytearray()
        """Pipeline audio taken but not yet judged by the VAD (less than one frame)."""
        padding = segmenter_settings(config.trigger).padding
        self._session = Session(household.parts(), tag, config.trigger.grammar, padding, listener.keep_unrecognised, listener.name)
        self.session = self._session.id
        self._bytes = 0
        self.cut = False
        """True once audio went past max_session."""

    @property
    def tag(self) -> Tag:
        return self._session.tag

    @property
    def seconds(self) -> float:
        """Pipeline audio taken so far."""
        return round(self._bytes / (SAMPLE_BYTES * PIPELINE_RATE), 3)

    @property
    def kept(self) -> bool:
        """Whether anything of it was kept (known once finished)."""
        return self._session.kept is not None

    @property
    def details_key(self) -> str | None:
        """The key its audit lines' personal details are sealed under (None: nothing kept)."""
        entry = self._session.kept
        return entry.details if entry is not None else None

    def feed(self, raw: bytes) -> None:
        """Client audio in its declared format (WyomingError if not whole frames)."""
        self._take(self._converter.convert(raw))

    def finish(self) -> Transcript:
        """Decode and keep the rest; the session is complete."""
        try:
            self._take(self._converter.flush())
        except BaseException:
            self._session.abandon()
            raise
        if self._frame:  # the last part of a frame, judged padded with silence as the file path's is
            padded = bytes(self._frame) + bytes(FRAME_BYTES - len(self._frame))
            self._session.feed(bytes(self._frame), silent=not self._vad.is_speech(padded, PIPELINE_RATE))
            self._frame.clear()
        return self._session.finish()

    def abandon(self) -> None:
        """After a failure (see Session.abandon)."""
        self._session.abandon()

    def end_reason(self, stopped: EndReason | None) -> EndReason:
        return stopped or (EndReason.MAX_LENGTH if self.cut else EndReason.END_OF_INPUT)

    def _take(self, pcm: bytes) -> None:
        room = self._limit - self._bytes
        if len(pcm) > room:
            pcm, self.cut = pcm[: max(room, 0)], True
        if pcm:
            self._bytes += len(pcm)
            self._frame += pcm
            whole = len(self._frame) - len(self._frame) % FRAME_BYTES
            for index in range(0, whole, FRAME_BYTES):
                frame = bytes(self._frame[index : index + FRAME_BYTES])
                self._session.feed(frame, silent=not self._vad.is_speech(frame, PIPELINE_RATE))
            del self._frame[:whole]
