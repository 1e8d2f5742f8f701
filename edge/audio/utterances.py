"""Audio cut into the utterances the agent makes sessions of in `always` mode.

`voices check` judges a recording as the agent would judge what someone says: each pause
of `[trigger] silence_end` (or `max_session`) ends a session, and the tagger sees that
session's samples, pre-roll included. The same segmenter cuts them, with the config's
settings, so a file of one sentence is one session here as in `run --input`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from edge.audio.segmenter import Segmenter, segmenter_settings
from edge.config import Config
from edge.pcm import FRAME_BYTES
from edge.values import EndReason, TriggerMode


@dataclass
class Utterance:
    """One session's audio, in memory only; `drop` overwrites it."""

    start: float
    """Seconds from the start of the recording."""
    end: float = 0.0
    pcm: bytearray = field(default_factory=bytearray)

    def drop(self) -> None:
        self.pcm[:] = bytes(len(self.pcm))
        self.pcm.clear()


class _Cut:
    """The segmenter's sink: collects each session's samples until it ends."""

    def __init__(self) -> None:
        self.open: Utterance | None = None
        self.done: list[Utterance] = []

    def begin(self, offset: float) -> None:
        self.open = Utterance(offset)

    def audio(self, pcm: bytes, silent: bool) -> None:
        if self.open is not None:
            self.open.pcm += pcm

    def end(self, offset: float, reason: EndReason) -> None:
        if self.open is not None:
            self.open.end = offset
            self.done.append(self.open)
            self.open = None

    def ready(self) -> Iterator[Utterance]:
        """The finished utterances, one at a time: any not yet handed over stay in `done`."""
        while self.done:
            yield self.done.pop(0)


def utterances(config: Config, chunks: Iterable[bytes]) -> Iterator[Utterance]:
    """The sessions `always` mode would make of pipeline PCM `chunks`, each as soon as it ends
    (the caller drops it once used). An utterance left unfinished by an error is overwritten."""
    cut = _Cut()
    segmenter = Segmenter(replace(segmenter_settings(config.trigger), mode=TriggerMode.ALWAYS), cut)
    pending = bytearray()
    try:
        for chunk in chunks:
            pending += chunk
            whole = len(pending) - len(pending) % FRAME_BYTES
            for index in range(0, whole, FRAME_BYTES):
                segmenter.feed(bytes(pending[index : index + FRAME_BYTES]))
            pending[:whole] = bytes(whole)
            del pending[:whole]
            yield from cut.ready()
        if pending:  # the last partial frame, padded with silence (as the agent does)
            segmenter.feed(bytes(pending) + bytes(FRAME_BYTES - len(pending)))
        segmenter.finish(EndReason.END_OF_INPUT)
        yield from cut.ready()
    finally:
        pending[:] = bytes(len(pending))
        for left in [*cut.done, *([cut.open] if cut.open is not None else [])]:
            left.drop()
