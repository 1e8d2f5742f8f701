"""The audit log as a C2SP transparency log: its lines are the leaves of an RFC 6962 tree.

Nothing in audit.jsonl changes for this: every log, format 1 included, already is one. A
leaf is one line's bytes without its newline, so the tree is computed from the file alone;
merkle.py does the hashing, note.py the C2SP text formats. docs/FORMATS.md section 6, "The
log as a transparency log", specifies all of it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from edge.audit import merkle, note
from edge.disk.files import open_in, why
from edge.disk.layout import AUDIT_LOG
from edge.errors import AuditError

ORIGIN_PREFIX = "edge.local/audit/"
"""A log's origin (and the name of its key in notes) is this and its 16-hex-digit log id."""
_BLOCK = 1 << 20


def origin(log_id: str) -> str:
    return ORIGIN_PREFIX + log_id


def tree_head(log_id: str, leaves: Sequence[bytes], size: int | None = None) -> note.TreeHead:
    """The checkpoint body of the first `size` leaves (all by default)."""
    size = len(leaves) if size is None else size
    return note.TreeHead(origin(log_id), size, merkle.root(leaves, size))


def leaves_of(data_dir: Path) -> list[bytes]:
    """The leaf hash of every whole line of the log (a last line still being written, with
    no newline yet, is not one). Read-only: opens nothing but the log, following no link."""
    try:
        fd = open_in(data_dir, AUDIT_LOG, os.O_RDONLY)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise AuditError(f"{data_dir / AUDIT_LOG}: cannot read the audit log: {why(exc)}") from None
    try:
        return leaves_in(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def leaves_in(fd: int, size: int, count: int | None = None) -> list[bytes]:
    """The leaf hashes of the first `count` whole lines (all by default) in the first `size`
    bytes of the log open as `fd`."""
    leaves: list[bytes] = []
    start, rest = 0, b""
    while start < size and (count is None or len(leaves) < count):
        data = os.pread(fd, min(_BLOCK, size - start), start)
        if not data:
            break
        start += len(data)
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        leaves += map(merkle.leaf_hash, lines)
    return leaves if count is None else leaves[:count]


def witness_problem(signed: note.SignedNote, log_id: str, public_key: bytes, leaves: Sequence[bytes]) -> str | None:
    """What is wrong with the log (its verified lines' leaf hashes: `leaves`) if a C2SP
    checkpoint a witness kept is to be believed; None if it is consistent. The signature is
    checked before anything the checkpoint says (an edited witness is no evidence); then a
    consistency proof from its tree to the log's is made from the log and verified."""
    try:
        head = note.parse_tree_head(signed.text)
    except note.NoteError as exc:
        return f"witness: {exc}"
    if not note.verified_by(signed, head.origin, public_key):
        return "witness: no signature of this log's key verifies on it (the witness was edited, or belongs to another log)"
    if head.origin != origin(log_id):
        return f"witness: it is for log {head.origin}, but this log is {origin(log_id)} (replaced?)"
    if head.size > len(leaves):
        return f"witness: it saw {head.size} entries but the log has only {len(leaves)}: the log was truncated"
    proof = merkle.consistency_proof(leaves, head.size, len(leaves))
    if not merkle.verify_consistency(head.size, len(leaves), head.root, merkle.root(leaves), proof):
        return (
            f"witness: the log's first {head.size} entries are not those the witness saw (its tree is no prefix of "
            "the log's: lines were edited or replaced)"
        )
    return None
