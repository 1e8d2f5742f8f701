"""Segmenter: turns a stream of 30 ms frames into sessions.

vosk 0.3.45 has no endpointer API, so utterance boundaries come from a voice
activity detector (WebRTC VAD): an utterance opens after a few speech frames
(with a short pre-roll so the first syllable is not clipped) and closes after
`silence_end` of non-speech or at `max_session`.

Trigger modes decide which utterances become sessions:

- always: every utterance is a session.
- wake: each utterance is held in RAM (bounded by `max_session`) and shown to a
  wake spotter. Only when it contains the wake phrase does a session begin: at the
  wake phrase if words follow it in the same utterance, else with the next
  utterance that starts within `wake_timeout`. Everything else is wiped from RAM.
- push_to_talk: `push()` opens a session at once; it closes on trailing silence
  after speech, at `max_session`, or (no speech within `wake_timeout`) as "no_speech".

The sink receives begin / audio / end calls in stream order. Offsets are seconds
since the start of the stream. Audio the VAD heard no speech in is marked silent, so
the recognizer can leave long silences out; the sink still gets every sample.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import webrtcvad

from edge.config import TriggerSettings
from edge.pcm import FRAME_BYTES, FRAME_SECONDS, PIPELINE_RATE, SAMPLE_BYTES
from edge.values import EndReason, TriggerMode


@dataclass(frozen=True)
class SegmenterSettings:
    mode: TriggerMode
    silence_end: float
    """Seconds of trailing non-speech that end an utterance."""
    max_session: float
    """Seconds: the longest utterance or session."""
    wake_timeout: float
    """Seconds allowed for speech to begin after the wake phrase or a push."""
    wake_phrase: str = ""
    wake_confidence: float = 0.8
    """Lowest confidence at which every word of the wake phrase counts as heard."""
    vad_aggressiveness: int = 2
    """WebRTC VAD mode, 0 (lenient) to 3 (strict)."""
    pre_roll: float = 0.3
    """Seconds of audio before speech onset included in the utterance."""
    start_frames: int = 3
    """Consecutive speech frames (30 ms each) needed to open an utterance."""

    @property
    def padding(self) -> float:
        """Seconds of non-speech the recognizer hears on each side of speech: as much as an
        utterance keeps before its onset (the pre-roll less the frames that confirm speech)."""
        return max(FRAME_SECONDS, self.pre_roll - self.start_frames * FRAME_SECONDS)


class SessionSink(Protocol):
    def begin(self, offset: float) -> None: ...
    def audio(self, pcm: bytes, silent: bool) -> None:
        """The session's next audio; `silent` when the VAD heard no speech in it."""

    def end(self, offset: float, reason: EndReason) -> None: ...


class SpottedWord(Protocol):
    @property
    def word(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def conf(self) -> float: ...


class Spotter(Protocol):
    """Decodes one utterance to find the wake phrase (a Vosk recognizer in practice)."""

    def feed(self, pcm: bytes) -> None: ...
    def finish(self) -> Sequence[SpottedWord]: ...


class Verdict(StrEnum):
    """The detector's verdict on one frame."""

    IDLE = "idle"
    """No utterance, and none begins."""
    START = "start"
    """An utterance begins (its frames: the pre-roll up to this one)."""
    CONTINUE = "continue"
    END = "end"
    """The utterance ends with this frame (why: `UtteranceDetector.end_reason`)."""


class UtteranceDetector:
    """VAD state machine: reports where utterances start and end."""

    def __init__(self, settings: SegmenterSettings) -> None:
        self._vad = webrtcvad.Vad(settings.vad_aggressiveness)
        self._pre_roll: deque[bytes] = deque(maxlen=max(settings.start_frames, round(settings.pre_roll / FRAME_SECONDS)))
        self._start_frames = settings.start_frames
        self._end_frames = max(1, round(settings.silence_end / FRAME_SECONDS))
        self._max_frames = max(1, round(settings.max_session / FRAME_SECONDS))
        self._speech_run = 0
        self._silence_run = 0
        self._length = 0
        self.active = False
        self.speech = False
        """The VAD's verdict on the latest frame."""
        self.end_reason = EndReason.SILENCE

    def push(self, frame: bytes) -> tuple[Verdict, list[bytes]]:
        """Classify one frame; returns (verdict, frames that belong to the utterance now)."""
        speech = self.speech = self._vad.is_speech(frame, PIPELINE_RATE)
        if not self.active:
            self._pre_roll.append(frame)
            self._speech_run = self._speech_run + 1 if speech else 0
            if self._speech_run < self._start_frames:
                return Verdict.IDLE, []
            self.active, self._silence_run = True, 0
            frames = list(self._pre_roll)
            self._pre_roll.clear()
            self._length = len(frames)
            return Verdict.START, frames
        self._length += 1
        self._silence_run = 0 if speech else self._silence_run + 1
        if self._silence_run >= self._end_frames or self._length >= self._max_frames:
            self.end_reason = EndReason.SILENCE if self._silence_run >= self._end_frames else EndReason.MAX_LENGTH
            self.active, self._speech_run = False, 0
            return Verdict.END, [frame]
        return Verdict.CONTINUE, [frame]

    @property
    def length_seconds(self) -> float:
        return self._length * FRAME_SECONDS


class Segmenter:
    """Feed pipeline frames (30 ms each); sessions come out through the sink. The trigger
    mode's class is chosen once, here; this class holds what every mode shares: the
    detector, the stream offset, and opening and closing sessions."""

    def __init__(
        self,
        settings: SegmenterSettings,
        sink: SessionSink,
        make_spotter: Callable[[], Spotter] | None = None,
    ) -> None:
        self.settings = settings
        self.detector = UtteranceDetector(settings)
        self._sink = sink
        self._frames = 0
        self.in_session = False
        self.session_start = 0.0
        self.wake_count = 0
        """How many times the wake phrase was heard."""
        self._trigger = _TRIGGERS[settings.mode](self, make_spotter)

    @property
    def sink(self) -> SessionSink:
        """Where sessions go (the benchmarks time its calls)."""
        return self._sink

    @property
    def offset(self) -> float:
        """Seconds of audio processed so far."""
        return self._frames * FRAME_SECONDS

    def push(self) -> None:
        """Push-to-talk: open a session at the next frame. Safe to call from any thread."""
        self._trigger.push()

    def feed(self, frame: bytes) -> None:
        if len(frame) != FRAME_BYTES:
            raise ValueError(f"frames must be {FRAME_BYTES} bytes")
        start_offset = self.offset
        self._frames += 1
        self._trigger.before(start_offset)
        verdict, frames = self.detector.push(frame)
        self._trigger.frame(verdict, frames, frame)

    def finish(self, reason: EndReason = EndReason.END_OF_INPUT) -> None:
        """End of the stream (or a stop): close what is open; nothing is left half-done."""
        self._trigger.finish(reason)
        if self.in_session:
            self.close(reason)

    # -- what triggers do ------------------------------------------------------

    def open(self, offset: float) -> None:
        self.in_session = True
        self.session_start = offset
        self._sink.begin(offset)

    def send(self, pcm: bytes, silent: bool = False) -> None:
        self._sink.audio(pcm, silent)

    def close(self, reason: EndReason) -> None:
        self.in_session = False
        self._sink.end(self.offset, reason)


class Trigger(Protocol):
    """Which utterances become sessions: one class per trigger mode."""

    def before(self, start_offset: float) -> None:
        """Called before the detector sees a frame that starts at `start_offset`."""

    def frame(self, verdict: Verdict, frames: list[bytes], frame: bytes) -> None:
        """The detector's verdict on one frame, and the frames that belong to the utterance now."""

    def finish(self, reason: EndReason) -> None:
        """The stream ends: settle anything held."""

    def push(self) -> None:
        """Push-to-talk was pressed (ignored by the modes that do not use it)."""


class AlwaysTrigger:
    """Every utterance is a session."""

    def __init__(self, segmenter: Segmenter, make_spotter: Callable[[], Spotter] | None = None) -> None:
        self.segmenter = segmenter

    def before(self, start_offset: float) -> None:
        pass

    def frame(self, verdict: Verdict, frames: list[bytes], frame: bytes) -> None:
        segmenter = self.segmenter
        if verdict == Verdict.START:
            segmenter.open(segmenter.offset - len(frames) * FRAME_SECONDS)
        if segmenter.in_session and frames:  # an onset with its pre-roll, or one frame
            segmenter.send(b"".join(frames), silent=verdict != Verdict.START and not segmenter.detector.speech)
        if verdict == Verdict.END:
            segmenter.close(segmenter.detector.end_reason)

    def finish(self, reason: EndReason) -> None:
        pass

    def push(self) -> None:
        pass


class WakeTrigger(AlwaysTrigger):
    """Each utterance is held in RAM and shown to the wake spotter; a session begins only
    at the wake phrase (or with the next utterance within wake_timeout)."""

    def __init__(self, segmenter: Segmenter, make_spotter: Callable[[], Spotter] | None = None) -> None:
        super().__init__(segmenter)
        if make_spotter is None or not segmenter.settings.wake_phrase.strip():
            raise ValueError("wake mode needs a wake phrase and a spotter")
        self._make_spotter = make_spotter
        self._wake_tokens = segmenter.settings.wake_phrase.split()
        self._armed_until: float | None = None
        self._held = bytearray()  # the current utterance, RAM only
        self._held_start = 0.0
        self._spotter: Spotter | None = None

    def frame(self, verdict: Verdict, frames: list[bytes], frame: bytes) -> None:
        segmenter = self.segmenter
        if self._armed_until is not None and not segmenter.in_session and verdict == Verdict.IDLE and segmenter.offset > self._armed_until:
            self._armed_until = None  # the wake phrase was not followed by speech in time
        if verdict == Verdict.START and self._armed_until is not None:
            self._armed_until = None
            super().frame(verdict, frames, frame)
            return
        if segmenter.in_session:
            super().frame(verdict, frames, frame)
            return
        if verdict == Verdict.START:
            self._spotter = self._make_spotter()
            self._held_start = segmenter.offset - len(frames) * FRAME_SECONDS
        if self._spotter is not None and frames:
            pcm = b"".join(frames)
            self._held += pcm
            self._spotter.feed(pcm)
        if verdict == Verdict.END:
            self._spot_held(segmenter.detector.end_reason)

    def finish(self, reason: EndReason) -> None:
        if self._spotter is not None:
            self._spot_held(reason)
        self._armed_until = None

    def _spot_held(self, end_reason: EndReason) -> None:
        """Decide what a held utterance was; wipe it from RAM either way."""
        segmenter = self.segmenter
        words = list(self._spotter.finish()) if self._spotter else []
        self._spotter = None
        try:
            found = _find_phrase([w.word for w in words], self._wake_tokens)
            if found is None:
                return
            heard = words[found : found + len(self._wake_tokens)]
            if min(w.conf for w in heard) < segmenter.settings.wake_confidence:
                return  # a near miss (e.g. a similar word): not a wake
            segmenter.wake_count += 1
            after = found + len(self._wake_tokens)
            if after >= len(words):
                self._armed_until = segmenter.offset + segmenter.settings.wake_timeout
                return
            # Words follow the wake phrase: the session is this utterance from the phrase on.
            cut_seconds = max(0.0, words[found].start - 0.1)
            cut = min(len(self._held), int(cut_seconds * PIPELINE_RATE) * SAMPLE_BYTES)
            segmenter.open(self._held_start + cut / (PIPELINE_RATE * SAMPLE_BYTES))
            segmenter.send(bytes(self._held[cut:]))
            segmenter.close(end_reason)
        finally:
            self._held[:] = bytes(len(self._held))  # overwrite before release
            self._held.clear()


class PushToTalkTrigger(AlwaysTrigger):
    """`push()` opens a session at once; it closes on trailing silence after speech, at
    max_session, or (no speech within wake_timeout) as no_speech."""

    def __init__(self, segmenter: Segmenter, make_spotter: Callable[[], Spotter] | None = None) -> None:
        super().__init__(segmenter)
        self._requested = threading.Event()
        self._heard_speech = False

    def push(self) -> None:
        self._requested.set()

    def before(self, start_offset: float) -> None:
        segmenter = self.segmenter
        if self._requested.is_set() and not segmenter.in_session:
            self._requested.clear()
            segmenter.open(start_offset)
            self._heard_speech = segmenter.detector.active

    def frame(self, verdict: Verdict, frames: list[bytes], frame: bytes) -> None:
        segmenter = self.segmenter
        if not segmenter.in_session:
            return
        segmenter.send(frame, silent=not segmenter.detector.speech)  # every frame since the push, speech or not
        if verdict in (Verdict.START, Verdict.CONTINUE):
            self._heard_speech = True
        length = segmenter.offset - segmenter.session_start
        if verdict == Verdict.END and self._heard_speech:
            segmenter.close(segmenter.detector.end_reason)
        elif length >= segmenter.settings.max_session:
            segmenter.close(EndReason.MAX_LENGTH)
        elif not self._heard_speech and not segmenter.detector.active and length >= segmenter.settings.wake_timeout:
            segmenter.close(EndReason.NO_SPEECH)


_TRIGGERS: dict[TriggerMode, Callable[[Segmenter, Callable[[], Spotter] | None], Trigger]] = {
    TriggerMode.ALWAYS: AlwaysTrigger,
    TriggerMode.WAKE: WakeTrigger,
    TriggerMode.PUSH_TO_TALK: PushToTalkTrigger,
}


def _find_phrase(words: list[str], phrase: list[str]) -> int | None:
    for index in range(len(words) - len(phrase) + 1):
        if words[index : index + len(phrase)] == phrase:
            return index
    return None


def segmenter_settings(trigger: TriggerSettings) -> SegmenterSettings:
    """The segmenter's settings (seconds) from the config's trigger table."""
    return SegmenterSettings(
        mode=trigger.mode,
        silence_end=trigger.silence_end.total_seconds(),
        max_session=trigger.max_session.total_seconds(),
        wake_timeout=trigger.wake_timeout.total_seconds(),
        wake_phrase=trigger.wake_phrase,
        wake_confidence=trigger.wake_confidence,
        vad_aggressiveness=trigger.vad_aggressiveness,
    )
