"""A warning said once per burst: the first time, then at most once a minute with a count.

A client (or many) can make the same thing fail thousands of times a second; under systemd
every log line goes to the journal, on the same card as the recordings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

QUIET_SECONDS = 60.0
"""Repeats within this long of the last line are only counted."""


class BurstLog:
    def __init__(self, logger: logging.Logger, message: str, clock: Callable[[], float] = time.monotonic) -> None:
        """`message` takes the number of occurrences since the last line, then a detail."""
        self._log, self._message, self._clock = logger, message, clock
        self._said: float | None = None
        self._unsaid = 0

    def count(self, detail: object) -> None:
        self._unsaid += 1
        now = self._clock()
        if self._said is None or now - self._said >= QUIET_SECONDS:
            self._log.warning(self._message, self._unsaid, detail)
            self._said, self._unsaid = now, 0
