"""edge-agent: the command line, a registry of command modules.

Every user mistake ends as one readable paragraph on stderr and a non-zero exit
code; no traceback reaches the user. Logging is configured here, once: what the
library logs reaches stderr as "edge-agent: ..." (under systemd, the journal).
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence

from edge import __version__
from edge.audit.log import sign_open_tails
from edge.cli import audit, clock, data, deletion, doctor, init, live, model, policy, speech, vault, voices
from edge.cli.base import Command, Parser, add_commands, log
from edge.errors import EdgeError

COMMANDS: tuple[Command, ...] = (
    speech.COMMANDS[:3]
    + init.COMMANDS
    + data.COMMANDS
    + policy.COMMANDS
    + deletion.COMMANDS
    + voices.COMMANDS
    + vault.COMMANDS
    + clock.COMMANDS
    + live.COMMANDS
    + audit.COMMANDS
    + model.COMMANDS
    + doctor.COMMANDS
    + speech.COMMANDS[3:]
)
"""Every command, in the order --help lists them."""


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(0o077)  # everything edge creates is private to its user
    # numpy (the speaker encoder, the resampler) works on small matrices: one thread is faster,
    # and leaves the other cores to Vosk. Set before anything imports numpy (all lazily).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _configure_logging()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        try:
            code: int = args.handler(args)
        except BaseException:
            _sign_after_failure()
            raise
        sign_open_tails()  # the end of every command: what it logged is signed (docs/FORMATS.md section 6)
        sys.stdout.flush()  # here, so a closed pipe is caught below rather than at exit
        return code
    except EdgeError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return exc.exit_code
    except sqlite3.Error as exc:  # a keystore page read lazily, after the keystore opened
        print(
            f"edge-agent: the keystore failed while it was read ({exc}); nothing more was changed. "
            "Run `edge-agent doctor`; if it says the keystore is damaged, it cannot be opened again.",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge-agent status | head -1`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


def _sign_after_failure() -> None:
    """A failed command's lines are signed too; if that fails as well, the first error is the
    one reported (and `audit verify` names the unsigned lines)."""
    try:
        sign_open_tails()
    except EdgeError as exc:
        log.error("could not sign the audit log: %s", exc)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="edge-agent",
        description="On-device privacy middleware for voice assistants: offline transcription, per-profile retention, verifiable deletion.",
    )
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="household config (TOML). Default: $EDGE_CONFIG, then /etc/edge/household.toml, then the built-in example config",
    )

    def show_help(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)  # a command was missing: a command-line mistake
        return 2

    parser.set_defaults(handler=show_help)
    add_commands(parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser), COMMANDS)
    return parser


def _configure_logging() -> None:
    """What edge logs goes to stderr in the words people read ("edge-agent: ..."). Nothing
    edge logs holds transcript text or audio (tests check a whole session's log)."""
    root = logging.getLogger("edge")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("edge-agent: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
