"""How far long work has come, shown to a person at a terminal.

A part that may run long (verifying a big audit log, converting an old keystore, deleting
the ciphertext of a big purge, downloading a model) takes a `Progress` callable and calls
it with (done, total); it never knows who listens. `Meter` is the listener the commands
use: a line redrawn in place on a terminal, nothing at all otherwise (a journal or a
captured stderr stays free of carriage returns), unless `lines` asks for a line per tenth.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

Progress = Callable[[int, int], None]
"""Called with (units done, units in all); the last call has done == total."""


class Meter:
    """`label: 42% (4,200 of 10,000 sessions)` on stderr, redrawn while the work goes on.

    Work smaller than `least` draws nothing: it is over before anyone could read it."""

    def __init__(self, label: str, unit: str, least: int = 0, lines: bool = False, stream: TextIO | None = None) -> None:
        self.label = label
        self.unit = unit
        self.least = least
        self._stream = stream if stream is not None else sys.stderr
        self._terminal = self._stream.isatty()
        self._lines = lines
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        if total < max(self.least, 1) or not (self._terminal or self._lines):
            return
        percent = min(100, done * 100 // total)
        if not self._terminal:  # a line per tenth, so a log shows the work is alive
            if percent // 10 > self._shown:
                self._shown = percent // 10
                print(f"{self.label}: {percent}% ({self._amount(done, total)})", file=self._stream, flush=True)
            return
        if percent == self._shown and done < total:
            return  # nothing new to draw: a terminal is slow next to a loop of 200,000
        self._shown = percent
        end = "\n" if done >= total else ""
        print(f"\r{self.label}: {percent:3d}% ({self._amount(done, total)})", end=end, file=self._stream, flush=True)

    def _amount(self, done: int, total: int) -> str:
        if self.unit == "bytes":
            return f"{done / 1e6:.1f} of {total / 1e6:.1f} MB"
        return f"{done:,} of {total:,} {self.unit}"
