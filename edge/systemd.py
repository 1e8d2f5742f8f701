"""Tell systemd how the agent is doing: ready, alive, stopping (sd_notify, no library).

Why: a hung agent that holds the data folder's lock stops every shred, its own and the
`purge --overdue` backstop's (which waits its turn for that lock). Under `Type=notify` with
`WatchdogSec=`, systemd kills and restarts an agent that stops saying it is alive, and the
restart's catch-up shreds what is due. The agent says so only after proving what retention
needs: its scheduler ran a job, and that job took the data folder's lock (see
`RetentionService`). Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

The protocol is one datagram per state on the Unix socket systemd names in
`NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace); `WATCHDOG_USEC` is the
watchdog's period, meant for us only when `WATCHDOG_PID` is unset or our pid.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Notifier:
    """Sends states to systemd's notify socket; `address` None: not under systemd."""

    address: str | None
    watchdog_seconds: float | None
    _failed: bool = field(default=False, repr=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]
        return cls(address, _watchdog_seconds(env))

    @property
    def beat_every(self) -> float | None:
        """How often to say the agent is alive: half the watchdog's period (systemd's advice)."""
        if self.address is None or self.watchdog_seconds is None:
            return None
        return self.watchdog_seconds / 2

    def ready(self) -> None:
        self._send("READY=1\nSTATUS=retention on schedule; listening")

    def alive(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def _send(self, state: str) -> None:
        if self.address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(state.encode("ascii"), self.address)
        except OSError as exc:  # never fatal: a missed WATCHDOG=1 makes systemd restart us, as it should
            if not self._failed:
                log.warning("cannot notify systemd at NOTIFY_SOCKET: %s", exc.strerror or exc)
                self._failed = True
        else:
            self._failed = False


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    pid, usec = env.get("WATCHDOG_PID"), env.get("WATCHDOG_USEC")
    if usec is None or (pid is not None and pid != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1_000_000
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number of microseconds: no watchdog heartbeat", usec)
        return None
    return seconds if seconds > 0 else None
