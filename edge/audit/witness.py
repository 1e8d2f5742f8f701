"""`audit witness push`: a C2SP tlog-witness (c2sp.org/tlog-witness) cosigns the log's tree.

Run by a person, never by the agent (which stays offline): it signs a C2SP checkpoint of
the log, sends it with a consistency proof from the size the witness last cosigned, and
keeps the cosignature the witness returns in the log itself (`witness.cosigned`), where
`audit verify` checks it against the log's own tree. A witness can be anything that speaks
the protocol; it keeps only the last checkpoint, never the log (docs/FORMATS.md section 6).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from edge.audit import merkle, note, transparency
from edge.audit.log import AuditLog
from edge.errors import AuditError, UsageError
from edge.events import WitnessCosigned

TIMEOUT_SECONDS = 30.0
_MAX_RESPONSE = 64 * 1024
_COSIGNED_TYPE = b'"type":"witness.cosigned"'


@dataclass(frozen=True)
class Pushed:
    event: WitnessCosigned
    cosigned: note.SignedNote
    """The checkpoint with the log's signature and the witness's cosignature."""


def push(log: AuditLog, url: str, vkey: str) -> Pushed:
    """Have the witness at `url` (its submission prefix) whose cosigning key is `vkey` cosign
    the log's tree now, and log its cosignature."""
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise UsageError(f"{url!r} is not a witness's URL (http:// or https://, its submission prefix)")
    try:
        name, public = note.parse_verifier_key(vkey, note.COSIGNATURE)
    except note.NoteError as exc:
        raise UsageError(f"--key: {exc}; a witness's Ed25519 cosigning key is NAME+KEYID+BASE64(0x04 || key)") from None
    signed = log.tree_checkpoint()
    head = note.parse_tree_head(signed.text)
    leaves = transparency.leaves_of(log.data_dir)[: head.size]
    if len(leaves) != head.size or merkle.root(leaves) != head.root:
        raise AuditError(f"{log.path}: changed under the checkpoint just signed; run `edge-agent audit verify`")
    old = _last_cosigned(log, vkey)
    for _attempt in range(2):
        if old > head.size:
            raise AuditError(
                f"the witness {name} has cosigned {old} entries of this log, which now has only {head.size}: the log was truncated"
            )
        status, body = _post(url, _request(old, merkle.consistency_proof(leaves, old, head.size), signed))
        if status != 409:
            break
        old = _conflict_size(body, name)  # it cosigned another size than the log recorded: prove from there
    if status != 200:
        raise AuditError(_refusal(status, body, name, head))
    try:
        lines = [note.parse_signature(line) for line in body.decode("utf-8").splitlines() if line]
    except (UnicodeDecodeError, note.NoteError) as exc:
        raise AuditError(f"the witness {name} answered with no note signature lines ({exc})") from None
    cosigned = note.SignedNote(signed.text, signed.signatures + tuple(lines))
    when = note.cosigned_at(cosigned, name, public)
    if when is None:
        raise AuditError(
            f"the witness answered, but with no cosignature of {name}'s key that verifies (another witness, or the wrong --key?)"
        )
    if note.cosigned_instant(when) is None:
        raise AuditError(f"the witness {name} cosigned with the time {when}, which is no date: its cosignature is not kept")
    mine = next(s for s in lines if s.name == name and s.key_id == note.key_id(name, note.COSIGNATURE, public))
    event = WitnessCosigned(
        witness=name,
        vkey=vkey.strip(),
        size=head.size,
        tree_hash=base64.b64encode(head.root).decode(),
        time=when,
        signature=base64.b64encode(mine.key_id + mine.signature).decode(),
    )
    log.append(event)
    return Pushed(event, cosigned)


def _request(old: int, proof: list[bytes], signed: note.SignedNote) -> bytes:
    """The add-checkpoint body: `old N`, the proof's hashes, a blank line, the checkpoint."""
    lines = [f"old {old}", *(base64.b64encode(h).decode() for h in proof), ""]
    return "".join(line + "\n" for line in lines).encode() + signed.encode()


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url.rstrip("/") + "/add-checkpoint", data=body, method="POST", headers={"Content-Type": "text/plain; charset=utf-8"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 (the scheme is checked)
            return int(response.status), response.read(_MAX_RESPONSE)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(_MAX_RESPONSE)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AuditError(f"cannot reach the witness at {url}: {reason}") from None


def _conflict_size(body: bytes, name: str) -> int:
    text = body.decode("ascii", errors="replace").strip()
    if not text.isdigit() or len(text) > 20:  # a tree size is 64 bits; int() of 4300 digits raises
        raise AuditError(f"the witness {name} answered 409 Conflict without the size it cosigned last")
    return int(text)


def _refusal(status: int, body: bytes, name: str, head: note.TreeHead) -> str:
    said = body.decode("utf-8", errors="replace").strip()[:200]
    why = {
        404: f"it does not know this log's origin {head.origin}: give it the log's key (`edge-agent audit export-key --format note`)",
        403: "it holds another key for this log's origin, or the signature did not verify",
        409: "it cosigned another size of this log than the one proven from",
        422: (
            "the checkpoint is NOT consistent with what it cosigned before for this log: the log was rewritten "
            "(lines edited, removed or replaced) since; run `edge-agent audit verify`"
        ),
        400: "it refused the request as malformed",
    }.get(status, "an unexpected answer")
    return f"the witness {name} refused to cosign {head.size} entries (HTTP {status}): {why}" + (f" ({said})" if said else "")


def _last_cosigned(log: AuditLog, vkey: str) -> int:
    """The size of the last tree this witness cosigned, as the log recorded it (0: none)."""
    size = 0
    for _number, raw in log.lines():
        if _COSIGNED_TYPE in raw:
            try:
                event = WitnessCosigned.parse(_fields(raw))
            except ValueError:
                continue  # audit verify names it
            if event.vkey == vkey.strip():
                size = event.size
    return size


def _fields(raw: bytes) -> dict[str, object]:
    entry = json.loads(raw)
    fields = entry.get("fields") if isinstance(entry, dict) else None
    if not isinstance(fields, dict) or entry.get("type") != WitnessCosigned.event_type:
        raise ValueError("not a witness.cosigned entry")
    return fields
