"""`edge-agent init DIR`: a household config of one's own, to try edge without touching the system.

It is the example config with everything in DIR: the data folder DIR/data, the root key in
DIR/root.key (the file vault: it survives reboots; deletion is logical only on flash) and
the control socket in the data folder. Nothing outside DIR is read or written.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from edge.cli.base import Command
from edge.config import BUILTIN_CONFIG, parse_config
from edge.disk.files import private_dir
from edge.errors import UsageError
from edge.invocation import program

DEMO_WAV = Path(__file__).resolve().parent.parent / "data" / "demo.wav"
EDITS = (
    ('data_dir = "/var/lib/edge"  ', 'data_dir = "{data}"'),
    ('backend = "keyring"        ', 'backend = "file"'),
    ('# path = "/var/lib/edge/root.key"   # only for backend = "file"', 'path = "{key}"'),
    ('control_socket = "/run/edge/control.sock"', 'control_socket = ""'),
)
"""The example's lines that name system places, and what they become (checked: the example
changing must not silently leave one behind)."""


def household_in(folder: Path) -> str:
    """The example config with its data folder, root key and control socket in `folder`."""
    text = BUILTIN_CONFIG.read_text(encoding="utf-8")
    for old, new in EDITS:
        if old not in text:
            raise AssertionError(f"{BUILTIN_CONFIG} no longer has {old!r}: edge.cli.init needs updating (a bug in edge)")
        text = text.replace(old, new.format(data=folder / "data", key=folder / "root.key"), 1)
    return text


def _init(args: argparse.Namespace) -> int:
    import tomllib

    folder = Path(args.folder).expanduser().absolute()
    target = folder / "household.toml"
    if os.path.lexists(target):
        raise UsageError(f"{target} exists already; nothing was changed (edit it, or choose another folder)")
    text = household_in(folder)
    parse_config(tomllib.loads(text), target)  # valid before anything is written
    private_dir(folder, tighten=False)
    with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {target}: data in {folder / 'data'}, root key in {folder / 'root.key'} (the file vault: survives reboots,")
    print("deletion on flash is logical only; see the README's guarantee levels). Edit the profiles, then try (a")
    print("file names nobody, so --profile says who speaks: without it the session gets the strictest profile,")
    print("guest, which keeps nothing):")
    print(f"    {program()} --config {target} run --input {DEMO_WAV} --profile parent")
    print(f"    {program()} --config {target} status --at +25h    # what is shredded when")
    return 0


COMMANDS = (
    Command(
        "init",
        "write a household config of your own into a folder, to try edge safely",
        "Write FOLDER/household.toml: the example config with its data folder, root key (file vault) and control "
        "socket inside FOLDER, so nothing of the system's is touched. An existing file is never overwritten.",
        _init,
        lambda parser: parser.add_argument("folder", metavar="FOLDER", help="where the config and its data will live"),
    ),
)
