"""A session held in memory until it ends (its voice judged), then tagged and sealed in one go.

With voices enrolled, a session's profile (and so its retention) is known only once its
speaker is: its audio waits in memory, bounded by [trigger] max_session (32 KB a second),
and nothing reaches the disk or the keystore before the decision. A crash meanwhile
leaves nothing at all, which is the private direction. Afterwards the audio is sealed
exactly as a recorded session's, its retention counted from when it began.
"""

from __future__ import annotations

import logging
from datetime import datetime

from edge.pcm import PIPELINE_RATE, SAMPLE_BYTES
from edge.policy import Tag
from edge.store.recorder import Recorder
from edge.store.records import SessionEntry, Voiceprint
from edge.tagging.voice import VoiceTagger
from edge.transcript import Transcript

log = logging.getLogger(__name__)
_CHUNK = PIPELINE_RATE * SAMPLE_BYTES
"""Bytes sealed per write once the tag is known (one second)."""


class HeldSession:
    """Stands in for a SealedSession (write, finish, entry) until the session ends: while the
    voice is unknown, or while it is unknown whether anything will be recognised."""

    def __init__(
        self,
        recorder: Recorder,
        tagger: VoiceTagger | None,
        session_id: str,
        base: Tag,
        voices: dict[str, Voiceprint],
        started: datetime,
        max_seconds: float,
    ) -> None:
        self._recorder = recorder
        self._tagger = tagger
        self._session = session_id
        self._base = base
        self._voices = voices
        self._started = started
        self._audio = bytearray()
        self._limit = round(max_seconds * PIPELINE_RATE) * SAMPLE_BYTES
        self.tag = base
        """The tag the session carries: the configured one until decided, then the winner (or a
        stricter one its owner sets before `finish`: guest mode)."""
        self.entry: SessionEntry | None = None
        """The keystore's record, once finished."""
        self._decided = False

    def write(self, pcm: bytes) -> None:
        room = self._limit - len(self._audio)
        self._audio += pcm[: max(room, 0)]

    def decide(self) -> Tag:
        """Judge the voice (once): the tag that wins, before anything is kept or dropped."""
        if not self._decided:
            self._decided = True
            if self._tagger is not None:
                self.tag = self._tagger.decide(self._audio, self._base, self._voices)
        return self.tag

    def finish(self, transcript: Transcript) -> None:
        """Judge the voice, register the session under the tag that wins, seal it whole."""
        try:
            self.decide()
            sealed = self._recorder.begin_held(self._session, self.tag, self._started)
            if sealed is None:
                log.debug("session %s: a forget ran while it was spoken; nothing of it is kept", self._session)
                return
            for start in range(0, len(self._audio), _CHUNK):
                sealed.write(bytes(self._audio[start : start + _CHUNK]))
            sealed.finish(transcript)
            self.entry = sealed.entry
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Overwrite and drop the held audio (after a failure: nothing was kept)."""
        self._audio[:] = bytes(len(self._audio))
        self._audio.clear()
