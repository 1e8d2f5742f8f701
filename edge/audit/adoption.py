"""Adopting the policy: the first command (or agent) that runs under a new version of it logs
`policy.adopted` (the version, the one before, which terms changed, and the terms
themselves, by whose retention `audit verify` bounds every session taken under it).

DATA_DIR/policy.json remembers the version last adopted in this log, so that a command does
not read the whole log to learn it; the log is the record. Without that file (or with one
written for another log) the log is read back from its end for the last adoption.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge.audit.log import AuditLog
from edge.disk.files import exists_in, read_in, write_atomic_in
from edge.disk.layout import AUDIT_LOG, POLICY
from edge.disk.lock import DataLock
from edge.errors import EdgeError
from edge.events import EventError, PolicyAdopted
from edge.written.terms import Terms, canonical, changed


@dataclass(frozen=True)
class Adopted:
    """The version last adopted in a log, as DATA_DIR/policy.json remembers it."""

    log: str
    version: str
    terms: dict[str, Any]
    at: datetime


def adopt(audit: AuditLog, terms: Terms) -> bool:
    """Log `terms` as adopted unless it is the version in force already; whether it logged."""
    with DataLock(audit.data_dir):
        log_id = _log_id(audit)
        last = last_adopted(audit, log_id)
        if last is not None and last.version == terms.version:
            if remembered(audit) != last:  # read back from the log: remember it, so that the next command need not
                remember(audit, last)
            return False
        entry = audit.append(
            PolicyAdopted(
                version=terms.version,
                previous=last.version if last is not None else None,
                changed=changed(last.terms if last is not None else None, terms.terms),
                terms=terms.terms,
            )
        )
        remember(audit, Adopted(log_id or audit.log_id(), terms.version, terms.terms, datetime.fromisoformat(entry["wall"])))
        return True


def remembered(audit: AuditLog) -> Adopted | None:
    """What DATA_DIR/policy.json says (read-only; None when missing or unreadable)."""
    try:
        raw = read_in(audit.data_dir, POLICY)
        if raw is None:
            return None
        data = json.loads(raw)
        return Adopted(str(data["log"]), str(data["version"]), dict(data["terms"]), datetime.fromisoformat(data["at"]))
    except (EdgeError, ValueError, KeyError, TypeError):
        return None


def remember(audit: AuditLog, adopted: Adopted) -> None:
    document = {"log": adopted.log, "version": adopted.version, "terms": adopted.terms, "at": adopted.at.isoformat()}
    write_atomic_in(audit.data_dir, POLICY, canonical(document) + b"\n")


def last_adopted(audit: AuditLog, log_id: str | None) -> Adopted | None:
    """The version in force in this log: policy.json's when it was written for this log, else
    the last `policy.adopted` in the log (read back from its end); None when none was."""
    if log_id is None:
        return None
    cached = remembered(audit)
    if cached is not None and cached.log == log_id:
        return cached
    found = last_adoption(audit)
    if found is None:
        return None
    event, wall = found
    return Adopted(log_id, event.version, event.terms, wall)


def last_adoption(audit: AuditLog) -> tuple[PolicyAdopted, datetime] | None:
    """The log's last well-formed `policy.adopted` and when it was written, or None."""
    last = None
    for entry in audit.entries():
        if entry["type"] == PolicyAdopted.event_type:
            try:
                last = PolicyAdopted.parse(entry["fields"]), datetime.fromisoformat(entry["wall"])
            except EventError:
                continue  # a malformed line is verify's to report
    return last


def _log_id(audit: AuditLog) -> str | None:
    """The log's id, or None when there is no log yet (the first append creates it)."""
    if not exists_in(audit.data_dir, AUDIT_LOG):
        return None
    try:
        return audit.log_id()
    except EdgeError:
        return None
