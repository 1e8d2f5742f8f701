"""`policy`: the household's written retention policy, made from its config and vault."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge import wiring
from edge.audit.adoption import remembered
from edge.cli.base import Command, config_of, log
from edge.disk.outputs import check_output, write_output
from edge.written.terms import terms_of
from edge.written.wording import render


def _policy(args: argparse.Namespace) -> int:
    config = config_of(args)
    if args.out:
        check_output(Path(args.out), config.device.data_dir)  # links, FIFOs, the data folder: refused first
    level = wiring.open_vault(config.vault, config.device.data_dir).level
    terms = terms_of(config, level)
    page = render(terms, level, args.format)
    adopted = remembered(wiring.open_audit(config))
    if adopted is not None and adopted.version == terms.version:
        said = f"policy {terms.short} is in force, adopted {adopted.at.isoformat(timespec='seconds')}"
    else:
        said = (
            f"policy {terms.short} is not adopted yet: the agent's next start (or the next command that writes) logs it as policy.adopted"
        )
    if args.out:
        write_output(Path(args.out), page.encode("utf-8"), config.device.data_dir)
        print(f"policy written to {args.out}; {said}")
    else:
        sys.stdout.write(page)
        log.info("%s", said)
    return 0


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=("text", "html", "json"), default="text", help="text (default), a self-contained HTML page, or JSON"
    )
    parser.add_argument(
        "--out", metavar="FILE", help="write it to FILE (0600; a new name or a regular file outside the data folder) instead of stdout"
    )


COMMANDS = (
    Command(
        "policy",
        "the household's written retention policy",
        "Write the household's retention policy, made from its config and vault: per profile (and for unknown speakers) "
        "and per kind of data, what it is for, why and how long it is kept, how it is deleted, what is never done with it, "
        "who can see it and how to ask for its deletion; with its version (a SHA-256 of its terms). Read-only.",
        _policy,
        _arguments,
    ),
)
