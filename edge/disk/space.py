"""The free-space floor of the data folder.

Below it nothing new is taken in (a Wyoming client's utterance is refused with "storage"),
so a full card can never cost a commit that is under way or the room a shred needs (the
keystore keeps a reserve for that too, see edge.disk.reserve). `doctor` fails below it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

FLOOR_BYTES = 100 << 20
"""Free space below which new audio is refused (100 MiB: a few hours of sealed audio)."""


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def below_floor(folder: Path) -> bool:
    """True when the disk holding `folder` has less than FLOOR_BYTES free (or cannot say)."""
    try:
        return free_bytes(folder) < FLOOR_BYTES
    except OSError:
        return True  # fail closed: take nothing in that cannot be shown to fit
