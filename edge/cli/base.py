"""What every command shares: the command record, the parser, reading the config, and
printing results. Every handler has one shape: `handler(args) -> exit code`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NoReturn

from edge import wiring
from edge.agent import SessionRecord
from edge.config import BUILTIN_CONFIG, Config, load_config, resolve_config_path
from edge.errors import AgentNotRunning, ControlError, EdgeError, UsageError
from edge.instants import iso_utc
from edge.retention.clock import Reading
from edge.retention.shredder import ShredReport
from edge.store.keystore import Keystore
from edge.store.tables import KeystoreData

log = logging.getLogger("edge.cli")

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """One `edge-agent` command: its words for --help, its arguments, and its handler (or
    its subcommands, like `audit verify`)."""

    name: str
    help: str
    description: str
    handler: Handler | None = None
    arguments: Callable[[argparse.ArgumentParser], object] = lambda _parser: None
    subcommands: tuple[Command, ...] = field(default=())


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 2) instead of exiting from deep inside."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage().strip()}\nSee `{self.prog} --help`.")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], commands: tuple[Command, ...]) -> None:
    for command in commands:
        parser = sub.add_parser(command.name, help=command.help, description=command.description)
        command.arguments(parser)
        if command.subcommands:
            parser.set_defaults(handler=_help_of(parser))
            add_commands(
                parser.add_subparsers(title=f"{command.name} commands", metavar="COMMAND", parser_class=Parser), command.subcommands
            )
        else:
            parser.set_defaults(handler=command.handler)


def _help_of(parser: argparse.ArgumentParser) -> Handler:
    def show(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 0

    return show


def refuse_running_agent(config: Config, error: type[EdgeError]) -> None:
    """For changes a running agent would undo or miss (it holds the keystore's root and the
    clock in memory): raise `error` when an agent answers on the control socket, or when
    nobody can tell."""
    from edge.control.protocol import call  # only the commands that talk to the agent import the protocol

    try:
        call(config.device.control_socket, "status")
    except AgentNotRunning:
        return
    except ControlError as exc:
        raise error(f"cannot tell whether the agent is running ({exc}); stop it first (systemctl stop edge-agent)") from None
    raise error("the agent is running: stop it first (systemctl stop edge-agent), then run this again")


def config_of(args: argparse.Namespace, quiet: bool = False) -> Config:
    """--config, then $EDGE_CONFIG, then /etc/edge/household.toml, then the built-in example."""
    path = resolve_config_path(args.config)
    if path == BUILTIN_CONFIG and not quiet:
        log.info("no config given; using the built-in example (%s)", path)
    return load_config(path)


# -- output ----------------------------------------------------------------------------


def stdout_is_journal() -> bool:
    """Whether stdout is the journal stream systemd gave this process (JOURNAL_STREAM)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return False
    return device.isdigit() and inode.isdigit() and (info.st_dev, info.st_ino) == (int(device), int(inode))


def refuse_text_into_journal(what: str) -> None:
    """Transcript text must never reach the systemd journal, which stores it on disk in
    plaintext: refuse when stdout is the journal stream systemd gave this process."""
    if stdout_is_journal():
        raise UsageError(
            f"{what} prints what was said, and stdout is the systemd journal, which keeps it on disk in "
            "plaintext. Run it at a terminal or pipe its output to the program that needs the text "
            "(in a unit: drop --json)."
        )


def session_printer(as_json: bool, show_text: bool = False) -> Callable[[SessionRecord], None]:
    """One line per finished session: JSON with the text (`--json`, asked for), or a readable
    pair of lines that says what was kept but never what was said (unless `show_text`: the
    demo, run by a person at a terminal). Nothing into the systemd journal: it keeps each
    line, exactly timed, on disk long after the session's data and details are forgotten
    (the audit log holds what must be kept, docs/FORMATS.md section 6)."""
    quiet = not as_json and stdout_is_journal()

    def emit(record: SessionRecord) -> None:
        if quiet:
            return
        if as_json:
            print(json.dumps(record.to_json(), ensure_ascii=False), flush=True)
            return
        kept = f"audio until {record.audio_expires}" if record.audio_expires else "audio not kept"
        kept += f", transcript until {record.transcript_expires}" if record.transcript_expires else ", transcript not kept"
        heard = f"{len(record.words)} word(s)" if record.words else "nothing recognised"
        if show_text and record.text:
            heard = record.text
        print(
            f"session {record.session}  {record.profile} ({record.rule})  "
            f"{record.start:6.2f}-{record.end:6.2f}s  [{record.end_reason}]  {heard}"
            f"\n    {kept}",
            flush=True,
        )

    return emit


def print_report(report: ShredReport) -> None:
    for line in report.lines():
        print(line, flush=True)


def clock_state(store: Keystore, data: KeystoreData) -> tuple[Reading | None, list[str]]:
    """The trusted clock as it reads now (None when its mark cannot be read) and what is
    wrong with it, in sentences (`status`)."""
    notes = []
    if data.rewind is not None and not data.rewind.finished:
        notes.append("a rewind of the clock was cut short; the next purge, forget or agent start finishes it")
    try:
        reading = wiring.read_clock(store.data_dir)
    except EdgeError as exc:
        return None, [*notes, str(exc)]
    return reading, notes + reading.notes()


def print_status(store: Keystore) -> None:
    level = store.vault.level
    data = store.read()
    print(f"vault: {level.backend}: {level.summary}")
    for note in clock_state(store, data)[1]:
        print(f"clock: {note}")
    if store.root_lost:
        print(f"root key lost: {store.root_lost}; nothing retained before can be opened (the agent records this at its next start)")
    if not data.sessions:
        print("no retained sessions")
    for entry in sorted(data.sessions.entries(), key=lambda s: s.created):
        audio = _kept("audio", entry.audio_expires, entry.audio_shredded)
        text = _kept("transcript", entry.transcript_expires, entry.transcript_shredded)
        print(f"session {entry.id}  {entry.profile} ({entry.rule})  {audio}  {text}  [{entry.state}]")
    if data.voices:
        print(f"voiceprints: {', '.join(sorted(data.voices))} (`edge-agent voices list` says more)")


def _kept(kind: str, expires: datetime | None, shredded: datetime | None) -> str:
    """What `status` says of one kind of a session's data: until when, shredded, or not kept."""
    if shredded is not None:
        return f"{kind} shredded (was kept until {iso_utc(shredded)})"
    return f"{kind} until {iso_utc(expires)}" if expires is not None else f"{kind} not kept"
