"""`edge-agent doctor`: print what the installation checks found (edge.doctor runs them)."""

from __future__ import annotations

import argparse
import json

from edge.cli.base import Command
from edge.config import resolve_config_path


def _doctor(args: argparse.Namespace) -> int:
    from edge.doctor import Status, run_checks  # it imports sounddevice: only when asked

    findings = run_checks(resolve_config_path(args.config), open_mic=not args.no_mic)
    if args.json:
        print(json.dumps([f.to_json() for f in findings], ensure_ascii=False))
    else:
        for finding in findings:
            print(f"{finding.status.upper():5} {finding.check:12} {finding.detail}")
            if finding.fix and finding.status is not Status.OK:
                print(f"{'':18} fix: {finding.fix}")
    return 1 if any(f.status.fails(args.strict) for f in findings) else 0


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument("--strict", action="store_true", help="warnings fail too")
    parser.add_argument("--no-mic", action="store_true", help="list input devices but do not open one")


COMMANDS = (
    Command(
        "doctor",
        "check the installation and explain what holds",
        "Check the config, the model, the wake phrase and grammar against the model's words, the microphone, the vault and its guarantee level, the clock, swap, "
        "permissions, free space and the service's hardening. Each problem comes with a fix. Exit status 1 when "
        "something fails (warnings alone exit 0; --strict makes them fail).",
        _doctor,
        _arguments,
    ),
)
