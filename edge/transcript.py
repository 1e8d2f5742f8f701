"""What a session's speech became: words with times. Made by the recognizer, sealed by
the recorder, sent by the Wyoming server; never logged, never printed unless asked for."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    """Seconds from the start of the decoded audio."""
    end: float
    """Seconds from the start of the decoded audio."""
    conf: float
    """Vosk's confidence, 0..1."""


@dataclass(frozen=True)
class Transcript:
    text: str
    words: tuple[Word, ...]

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "words": [asdict(w) for w in self.words]}
