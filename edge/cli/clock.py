"""`clock rewind`: the audited way back for a trusted clock that ran ahead."""

from __future__ import annotations

import argparse
import sys

from edge import wiring
from edge.cli.base import Command, config_of, print_report, refuse_running_agent
from edge.durations import human
from edge.errors import ClockError, UsageError
from edge.progress import Meter
from edge.retention.clock import RAN_AHEAD
from edge.retention.rewind import rewind

PROGRESS_FROM = 10_000
"""Sessions from which a rewind shows its progress (each is sealed again)."""


def _rewind(args: argparse.Namespace) -> int:
    config = config_of(args)
    refuse_running_agent(config, ClockError)  # it holds the clock in memory and would write it back
    shredder = wiring.make_shredder(config)
    reading = shredder.clock.read()
    ahead = human(reading.set_back)
    if reading.synced and not reading.ran_ahead:
        print(
            f"the trusted clock is not ahead of the NTP-synchronised wall clock by {human(RAN_AHEAD)} or more ({ahead}): nothing to bring back"
        )
        return 0
    if reading.synced and not args.yes:  # an unsynchronised clock is refused below, before anything changes
        if not sys.stdin.isatty():
            raise UsageError("clock rewind needs confirmation: run it in a terminal, or add --yes")
        answer = input(
            f"The trusted clock is {ahead} ahead of the NTP-synchronised wall clock. Bring it back by {ahead}? Every "
            "retained bucket's expiry moves back by as much, so each keeps the time it has left. [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("the clock was not changed")
            return 0
    if reading.synced:
        print_report(shredder.sweep())  # first what is due by the trusted clock, and any unfinished forget
    done = rewind(shredder.keystore, shredder.clock, shredder.audit, Meter("sealing sessions again", "sessions", least=PROGRESS_FROM))
    if done is None:
        print(f"the trusted clock is no longer ahead of the wall clock by {human(RAN_AHEAD)} or more: nothing to bring back")
        return 0
    print(
        f"the trusted clock is back at {done.to.isoformat(timespec='seconds')} (it was {human(done.before - done.to)} ahead); "
        f"{done.buckets} bucket(s) of {done.sessions} retained session(s) moved back by as much and keep the time they had left"
    )
    return 0


COMMANDS = (
    Command(
        "clock",
        "the trusted clock: bring it back after it ran ahead",
        "The trusted clock never goes back by itself, so a clock set back cannot lengthen retention; a forward jump "
        "that was wrong leaves it ahead. `clock rewind` brings it back.",
        subcommands=(
            Command(
                "rewind",
                "bring a trusted clock that ran ahead back to the NTP-synchronised wall clock",
                "Move the trusted clock back to the wall clock, which NTP must have synchronised, and every retained "
                "bucket's expiry (and every instant the keystore holds) back by the same amount, so each keeps the time it "
                "had left: nothing is kept longer. First shreds what is due. Stop the agent first. Audited (clock.rewound). "
                "Asks for confirmation unless --yes.",
                _rewind,
                lambda parser: parser.add_argument("--yes", action="store_true", help="do not ask for confirmation"),
            ),
        ),
    ),
)
