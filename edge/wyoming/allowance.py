"""How much audio one listener may take in: seconds of audio per minute.

Sealed audio fills the card until it expires, so a client that streams far faster than
anyone speaks (or opens utterance after utterance) must not be able to take all of it.
A token bucket: the allowance refills continuously at `per_minute` seconds a minute and
holds at most that much, so a burst up to a minute's worth is served at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class AudioAllowance:
    per_minute: float
    """Seconds of audio the listener may take in any minute."""
    clock: Callable[[], float] = time.monotonic
    _left: float = field(init=False)
    _at: float = field(init=False)

    def __post_init__(self) -> None:
        self._left, self._at = self.per_minute, self.clock()

    def left(self) -> float:
        """Seconds of audio that may be taken now."""
        now = self.clock()
        self._left = min(self.per_minute, self._left + (now - self._at) * self.per_minute / 60)
        self._at = now
        return self._left

    def take(self, seconds: float) -> bool:
        """Take `seconds` of audio if the allowance has them (False: nothing taken)."""
        if seconds > self.left():
            return False
        self._left -= seconds
        return True
