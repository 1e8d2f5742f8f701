"""How the person reading a message runs edge-agent and its Python, from where they are.

On an installed device `edge-agent` is on PATH; in a clone it is `.venv/bin/edge-agent`,
which a hint naming the bare command would send a newcomer hunting for. Messages name
the program the way it can be typed: the bare name when PATH finds this very program,
else its path (relative to the current folder when inside it).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

PROGRAM = "edge-agent"


def _typed(path: Path) -> str:
    """`path` as a person types it here: relative when inside the current folder."""
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return str(relative) if str(relative).startswith(".") else f"./{relative}"


def _beside_python() -> Path:
    """The program's script in the same bin/ as this interpreter (its venv's)."""
    return Path(sys.executable).parent / PROGRAM


def program() -> str:
    """`edge-agent`, or the path to type where PATH does not find this one."""
    mine = _beside_python()
    found = shutil.which(PROGRAM)
    if found is not None and (not mine.exists() or _same(found, mine)):
        return PROGRAM
    return _typed(mine) if mine.exists() else f"{python()} -m edge"


def python() -> str:
    """This interpreter, as typed (the venv's, whose packages edge uses)."""
    found = shutil.which("python3")
    if found is not None and _same(found, sys.executable):
        return "python3"
    return _typed(Path(sys.executable))


def _same(one: str, other: str | Path) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:
        return False


def pip_install(requirement: str) -> str:
    """The command that installs `requirement` into the environment edge runs from."""
    return f"{python()} -m pip install {requirement}"
