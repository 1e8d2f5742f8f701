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
since the start of the stream.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import webrtcvad

from edge.audio import FRAME_BYTES, FRAME_SECONDS, PIPELINE_RATE, SAMPLE_BYTES
from edge.config import TriggerSettings


@dataclass(frozen=True)
class SegmenterSettings:
    mode: str
    """"always", "wake" or "push_to_talk"."""
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

    @classmethod
    def from_trigger(cls, trigger: TriggerSettings) -> SegmenterSettings:
        return cls(
            mode=trigger.mode,
            silence_end=trigger.silence_end.total_seconds(),
            max_session=trigger.max_session.total_seconds(),
            wake_timeout=trigger.wake_timeout.total_seconds(),
            wake_phrase=trigger.wake_phrase,
            wake_confidence=trigger.wake_confidence,
            vad_aggressiveness=trigger.vad_aggressiveness,
        )


class SessionSink(Protocol):
    def begin(self, offset: float) -> None: ...
    def audio(self, pcm: bytes) -> None: ...
    def end(self, offset: float, reason: str) -> None: ...


class SpottedWord(Protocol):
    word: str
    start: float
    conf: float


class Spotter(Protocol):
    """Decodes one utterance to find the wake phrase (a Vosk recognizer in practice)."""

    def feed(self, pcm: bytes) -> None: ...
    def finish(self) -> Sequence[SpottedWord]: ...


# The detector's per-frame verdicts.
IDLE, START, CONTINUE, END = "idle", "start", "continue", "end"


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
        self.end_reason = ""

    def push(self, frame: bytes) -> tuple[str, list[bytes]]:
        """Classify one frame; returns (verdict, frames that belong to the utterance now)."""
        speech = self._vad.is_speech(frame, PIPELINE_RATE)
        if not self.active:
            self._pre_roll.append(frame)
            self._speech_run = self._speech_run + 1 if speech else 0
            if self._speech_run < self._start_frames:
                return IDLE, []
            self.active, self._silence_run = True, 0
            frames = list(self._pre_roll)
            self._pre_roll.clear()
            self._length = len(frames)
            return START, frames
        self._length += 1
        self._silence_run = 0 if speech else self._silence_run + 1
        if self._silence_run >= self._end_frames or self._length >= self._max_frames:
            self.end_reason = "silence" if self._silence_run >= self._end_frames else "max_length"
            self.active, self._speech_run = False, 0
            return END, [frame]
        return CONTINUE, [frame]

    @property
    def length_seconds(self) -> float:
        return self._length * FRAME_SECONDS


class Segmenter:
    """Feed pipeline frames (30 ms each); sessions come out through the sink."""

    def __init__(
        self,
        settings: SegmenterSettings,
        sink: SessionSink,
        make_spotter: Callable[[], Spotter] | None = None,
    ) -> None:
        if settings.mode == "wake" and (make_spotter is None or not settings.wake_phrase.strip()):
            raise ValueError("wake mode needs a wake phrase and a spotter")
        self.settings = settings
        self._sink = sink
        self._make_spotter = make_spotter
        self._detector = UtteranceDetector(settings)
        self._wake_tokens = settings.wake_phrase.split()
        self._frames = 0
        self._in_session = False
        self._session_start = 0.0
        self._heard_speech = False
        self._armed_until: float | None = None
        self._ptt_requested = threading.Event()
        self._held = bytearray()  # wake mode: the current utterance, RAM only
        self._held_start = 0.0
        self._spotter: Spotter | None = None
        self.wake_count = 0
        """How many times the wake phrase was heard."""

    @property
    def offset(self) -> float:
        """Seconds of audio processed so far."""
        return self._frames * FRAME_SECONDS

    def push(self) -> None:
        """Push-to-talk: open a session at the next frame. Safe to call from any thread."""
        self._ptt_requested.set()

    def feed(self, frame: bytes) -> None:
        if len(frame) != FRAME_BYTES:
            raise ValueError(f"frames must be {FRAME_BYTES} bytes")
        start_offset = self.offset
        self._frames += 1
        if self.settings.mode == "push_to_talk" and self._ptt_requested.is_set() and not self._in_session:
            self._ptt_requested.clear()
            self._open(start_offset)
            self._heard_speech = self._detector.active
        verdict, frames = self._detector.push(frame)
        if self.settings.mode == "always":
            self._feed_always(verdict, frames)
        elif self.settings.mode == "wake":
            self._feed_wake(verdict, frames)
        else:
            self._feed_push_to_talk(verdict, frame)

    def finish(self, reason: str = "end_of_input") -> None:
        """End of the stream (or a stop): close what is open; nothing is left half-done."""
        if self._spotter is not None:
            self._spot_held(reason)
        if self._in_session:
            self._close(reason)
        self._armed_until = None

    # -- modes ---------------------------------------------------------------

    def _feed_always(self, verdict: str, frames: list[bytes]) -> None:
        if verdict == START:
            self._open(self.offset - len(frames) * FRAME_SECONDS)
        if self._in_session and frames:
            self._sink.audio(b"".join(frames))
        if verdict == END:
            self._close(self._detector.end_reason)

    def _feed_wake(self, verdict: str, frames: list[bytes]) -> None:
        if self._armed_until is not None and not self._in_session and verdict == IDLE and self.offset > self._armed_until:
            self._armed_until = None  # the wake phrase was not followed by speech in time
        if verdict == START and self._armed_until is not None:
            self._armed_until = None
            self._feed_always(verdict, frames)
            return
        if self._in_session:
            self._feed_always(verdict, frames)
            return
        if verdict == START:
            self._spotter = self._make_spotter()
            self._held_start = self.offset - len(frames) * FRAME_SECONDS
        if self._spotter is not None and frames:
            pcm = b"".join(frames)
            self._held += pcm
            self._spotter.feed(pcm)
        if verdict == END:
            self._spot_held(self._detector.end_reason)

    def _feed_push_to_talk(self, verdict: str, frame: bytes) -> None:
        if not self._in_session:
            return
        self._sink.audio(frame)  # every frame since the push, speech or not
        if verdict in (START, CONTINUE):
            self._heard_speech = True
        length = self.offset - self._session_start
        if verdict == END and self._heard_speech:
            self._close(self._detector.end_reason)
        elif length >= self.settings.max_session:
            self._close("max_length")
        elif not self._heard_speech and not self._detector.active and length >= self.settings.wake_timeout:
            self._close("no_speech")

    # -- helpers ---------------------------------------------------------------

    def _spot_held(self, end_reason: str) -> None:
        """Decide what a held utterance was; wipe it from RAM either way."""
        words = list(self._spotter.finish()) if self._spotter else []
        self._spotter = None
        try:
            found = _find_phrase([w.word for w in words], self._wake_tokens)
            if found is None:
                return
            heard = words[found : found + len(self._wake_tokens)]
            if min(w.conf for w in heard) < self.settings.wake_confidence:
                return  # a near miss (e.g. a similar word): not a wake
            self.wake_count += 1
            after = found + len(self._wake_tokens)
            if after >= len(words):
                self._armed_until = self.offset + self.settings.wake_timeout
                return
            # Words follow the wake phrase: the session is this utterance from the phrase on.
            cut_seconds = max(0.0, words[found].start - 0.1)
            cut = min(len(self._held), int(cut_seconds * PIPELINE_RATE) * SAMPLE_BYTES)
            self._open(self._held_start + cut / (PIPELINE_RATE * SAMPLE_BYTES))
            self._sink.audio(bytes(self._held[cut:]))
            self._close(end_reason)
        finally:
            self._held[:] = bytes(len(self._held))  # overwrite before release
            self._held.clear()

    def _open(self, offset: float) -> None:
        self._in_session = True
        self._session_start = offset
        self._heard_speech = False
        self._sink.begin(offset)

    def _close(self, reason: str) -> None:
        self._in_session = False
        self._sink.end(self.offset, reason)


def _find_phrase(words: list[str], phrase: list[str]) -> int | None:
    for index in range(len(words) - len(phrase) + 1):
        if words[index : index + len(phrase)] == phrase:
            return index
    return None
