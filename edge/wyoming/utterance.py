"""One Wyoming utterance is one edge session: tagged, sealed and decoded as it arrives.

Everything here blocks (the keystore's fsyncs, Vosk, sealing): the server runs it on a
worker thread so that its event loop keeps answering `describe` meanwhile.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import webrtcvad

from edge.agent import segmenter_settings
from edge.config import Config, ListenerSettings
from edge.pcm import FRAME_BYTES, PIPELINE_RATE, SAMPLE_BYTES
from edge.sink import AuditSink
from edge.store.recorder import Recorder, SealedSession
from edge.stt.recognizer import SpeechModel
from edge.tagging import tag_listener_session
from edge.tagging.held import HeldSession
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


class Utterance:
    """Registered and sealed from its first byte (a crash leaves a session that expires on
    time), or, with voices enrolled, held in memory until its voice is judged at the end;
    audio longer than [trigger] max_session is neither sealed nor decoded. Every sample is
    sealed; silence far from speech is not decoded (the VAD decides, 30 ms at a time),
    exactly as in a microphone's session."""

    def __init__(self, household: Household, listener: ListenerSettings, wire: WireFormat) -> None:
        config = household.config
        self.session = secrets.token_hex(8)
        self.tag = tag_listener_session(config, listener.profile, household.active_profile())
        self._limit = round(config.trigger.max_session.total_seconds() * PIPELINE_RATE) * SAMPLE_BYTES
        self._converter = WireConverter(wire)
        self._vad = webrtcvad.Vad(config.trigger.vad_aggressiveness)
        self._frame = bytearray()
        """Pipeline audio sealed but not yet judged by the VAD (less than one frame)."""
        self._decoder = household.model.decoder(config.trigger.grammar, padding=segmenter_settings(config.trigger).padding)
        try:
            self._sealed = self._seal(household, config)
        except BaseException:
            self._decoder.finish()  # hand its recognizer back
            raise
        self._bytes = 0
        self.cut = False
        """True once audio went past max_session."""

    def _seal(self, household: Household, config: Config) -> SealedSession | HeldSession:
        voices = household.tagger.enrolled() if household.tagger is not None else {}
        if household.tagger is not None and voices:
            started = household.recorder.clock()
            seconds = config.trigger.max_session.total_seconds()
            return HeldSession(household.recorder, household.tagger, self.session, self.tag, voices, started, seconds)
        return household.recorder.begin(self.session, self.tag)

    @property
    def seconds(self) -> float:
        """Pipeline audio taken so far."""
        return round(self._bytes / (SAMPLE_BYTES * PIPELINE_RATE), 3)

    def feed(self, raw: bytes) -> None:
        """Client audio in its declared format (WyomingError if not whole frames)."""
        self._take(self._converter.convert(raw))

    def finish(self) -> Transcript:
        """Seal the rest and the transcript; the session is complete."""
        try:
            return self._finish()
        except BaseException:
            if isinstance(self._sealed, HeldSession):
                self._sealed.abandon()  # held audio never outlives a failure
            raise

    def _finish(self) -> Transcript:
        self._take(self._converter.flush())
        if self._frame:  # the last part of a frame: decoded whole
            self._decoder.feed(bytes(self._frame))
            self._frame.clear()
        transcript = self._decoder.transcript()
        self._sealed.finish(transcript)
        if isinstance(self._sealed, HeldSession):
            self.tag = self._sealed.tag  # as the voice decided
        return transcript

    def abandon(self) -> None:
        """After a failure: give the recognizer back; what was sealed stays and expires on
        time (audio held for its voice is dropped: nothing of it was kept)."""
        self._decoder.finish()
        if isinstance(self._sealed, HeldSession):
            self._sealed.abandon()

    def end_reason(self, stopped: EndReason | None) -> EndReason:
        return stopped or (EndReason.MAX_LENGTH if self.cut else EndReason.END_OF_INPUT)

    def _take(self, pcm: bytes) -> None:
        room = self._limit - self._bytes
        if len(pcm) > room:
            pcm, self.cut = pcm[: max(room, 0)], True
        if pcm:
            self._sealed.write(pcm)
            self._bytes += len(pcm)
            self._frame += pcm
            whole = len(self._frame) - len(self._frame) % FRAME_BYTES
            for index in range(0, whole, FRAME_BYTES):
                frame = bytes(self._frame[index : index + FRAME_BYTES])
                self._decoder.feed(frame, silent=not self._vad.is_speech(frame, PIPELINE_RATE))
            del self._frame[:whole]
