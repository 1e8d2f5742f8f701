"""Room kept in reserve in the data folder, so a shred can always commit on a full disk.

SQLite needs free space to commit (WAL frames, the shared-memory index); deleting the
doomed ciphertext frees some, but perhaps not enough. DATA_DIR/reserve holds RESERVE_BYTES
of zeros that edge deletes when the disk is full and makes again once there is room.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edge.disk.files import create_in, exists_in, unlink_in
from edge.disk.layout import RESERVE
from edge.errors import StorageError

RESERVE_BYTES = 256 * 1024


def keep(data_dir: Path) -> None:
    """Make the reserve if it is missing and the disk has room for it several times over."""
    if exists_in(data_dir, RESERVE) or shutil.disk_usage(data_dir).free < 4 * RESERVE_BYTES:
        return
    try:
        with create_in(data_dir, RESERVE) as reserve:
            view = memoryview(bytes(RESERVE_BYTES))
            while view:  # an unbuffered write may write less than asked on a nearly full disk
                written = reserve.write(view)
                if not written:
                    raise OSError("no room")
                view = view[written:]
            os.fsync(reserve.fileno())
    except (OSError, StorageError):
        unlink_in(data_dir, RESERVE)  # half a reserve is no use; try again next time


def release(data_dir: Path) -> bool:
    """Give the reserve's room back (the disk is full and a shred must commit)."""
    return unlink_in(data_dir, RESERVE)
