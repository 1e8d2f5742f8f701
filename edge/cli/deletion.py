"""`purge` and `forget`: shredding now."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta

from edge import wiring
from edge.audit.story import local
from edge.cli.base import Command, config_of, print_report
from edge.cli.whatif import print_forecast, what_if_instant
from edge.config import Config
from edge.durations import ALLOWED, format_duration, parse_duration
from edge.errors import UsageError
from edge.instants import parse_instant
from edge.progress import Meter
from edge.retention.forecast import Fate, forecast
from edge.retention.shredder import ForgetRequest, Shredder
from edge.store.keystore import Access

log = logging.getLogger("edge.cli")

PROGRESS_FROM = 1000
"""Files to delete from which a command shows its progress (fewer go by too fast to read)."""


def _shredder(config: Config) -> Shredder:
    """The shredder of a command: a big deletion shows how far it has come on a terminal."""
    return wiring.make_shredder(config, deleting=Meter("deleting shredded ciphertext", "files", least=PROGRESS_FROM))


def _purge(args: argparse.Namespace) -> int:
    config = config_of(args)
    if args.at is not None and not args.dry_run:
        raise UsageError("--at goes with --dry-run: a purge shreds what is due now, by the trusted clock")
    if args.dry_run:
        if args.overdue is not None:
            raise UsageError("--dry-run lists everything due (or due --at WHEN); --overdue does not go with it")
        store, _audit = wiring.open_store(config, Access.READ)
        now = wiring.trusted_now(config)
        print_forecast(forecast(config, store.read(), now), now, what_if_instant(args.at, now, "--at") if args.at else now)
        return 0
    if args.overdue is not None:
        return _purge_overdue(config, _margin(args.overdue, config))
    shredder = _shredder(config)
    report = shredder.sweep()
    if report.empty:
        upcoming = forecast(config, shredder.keystore.read(), report.reading.now)
        following = f"; next: {_next(upcoming[0])}" if upcoming else "; nothing is kept"
        print(f"nothing is due (at {local(report.reading.now)}){following}")
    print_report(report)
    return 0


def _next(fate: Fate) -> str:
    """The next shred, in words: when, whose, what and why (`status --at` lists them all)."""
    return f"{fate.profile}'s {fate.what} at {local(fate.at)} ({fate.reason}); `status --at +7d` shows what follows"


def _margin(text: str, config: Config) -> timedelta:
    """--overdue's margin: never under two sweep intervals, which a healthy agent may need."""
    try:
        margin = parse_duration(text)
    except ValueError:
        raise UsageError(f"--overdue {text!r}: must be {ALLOWED}") from None
    return max(margin, 2 * config.retention.sweep)


def _purge_overdue(config: Config, margin: timedelta) -> int:
    """The installed timer's second path to shredding, independent of the agent: look first
    with everything read-only (when nothing is `margin` past due, nothing is written at all),
    and only then sweep as `purge` does, saying that the agent had not."""
    found = wiring.make_shredder(config, store=wiring.open_store(config, Access.READ)).overdue(margin)
    if found.empty:
        return 0
    report = _shredder(config).sweep(backstop=True)
    late = found.left_in(report)  # the agent may have woken up meanwhile
    if not late.empty:
        log.warning(
            "the agent had not shredded %s more than %s past due: purge --overdue did (is it running? systemctl status edge-agent)",
            late.describe(),
            format_duration(margin),
        )
    print_report(report)
    return 0


def _purge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overdue",
        metavar="DURATION",
        help="only when something is more than DURATION past due (the agent did not shred it): then purge, and say so; "
        "otherwise write nothing and print nothing. At least twice [retention] sweep. The installed timer runs it",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be shredded and why; change and write nothing")
    parser.add_argument("--at", metavar="WHEN", help="with --dry-run: as of WHEN (+25h, +7d, or an ISO 8601 date or time) instead of now")


def _forget(args: argparse.Namespace) -> int:
    config = config_of(args)
    shredder = _shredder(config)
    request = ForgetRequest.checked(
        config,
        shredder.keystore.read(),
        session=args.session,
        profile=args.profile,
        everything=args.all,
        before=parse_instant(args.before, "--before"),
    )
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("forget needs confirmation: run it in a terminal, or add --yes")
        sessions = shredder.matching(request)  # ask first, without the lock: recording and shredding go on
        voices = request.voices(shredder.keystore.read())
        if sessions or voices:
            profiles = sorted({s.profile for s in sessions})
            whose = f" of {', '.join(profiles)}" if profiles and request.profile is None else ""  # a profile's are its own
            also = f" and the voiceprint(s) of {', '.join(voices)}" if voices else ""
            answer = input(f"Forget {request.describe()}: {len(sessions)} session(s){whose}{also}? This cannot be undone. [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing was forgotten")
                return 0
    report = shredder.forget(request)
    if not report.forgotten and not report.buckets and not report.voices:
        print(f"nothing to forget for {request.describe()}")
    print_report(report)
    return 0


def _forget_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--session", metavar="ID", help="one session")
    which.add_argument("--profile", metavar="NAME", help="every session of a profile")
    which.add_argument("--all", action="store_true", help="every session")
    which.add_argument("--before", metavar="ISO8601", help="every session created before this instant (no zone given = local time)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")


COMMANDS = (
    Command(
        "purge",
        "shred everything that is due now, and say what was shredded",
        "Run what the agent's sweep runs: shred every retention bucket whose expiry has passed (by the clock that "
        "cannot be set back) and every profile unused for its inactive_after, finish interrupted work, delete "
        "orphaned ciphertext. With --dry-run, list what a purge would shred (now, or --at WHEN) and why, changing "
        "nothing. With --overdue, a second path that does not depend on the agent: it acts only when the agent has "
        "left something past due.",
        _purge,
        _purge_arguments,
    ),
    Command(
        "forget",
        "forget sessions now: one, a profile, everything, or everything before a date",
        "Forget retained sessions immediately. Afterwards no key on the device opens them, nor any copy of their "
        "files recovered from the storage. --profile and --all also shred the voiceprints of those profiles. Asks "
        "for confirmation unless --yes.",
        _forget,
        _forget_arguments,
    ),
)
