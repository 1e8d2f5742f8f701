"""`audit report --html`: one self-contained page for a parent.

No scripts, fonts, images or links to anything outside the file: it can be
opened offline on any device. Everything shown comes from the audit log (and
the config for the policy table); it holds no audio, transcript or keys.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from edge.audit.verify import Verification
from edge.config import Config
from edge.crypto.vault import GuaranteeLevel
from edge.durations import format_duration
from edge.values import DataKind

MAX_ROWS = 60
"""Sessions drawn on the timeline (the most recent)."""


@dataclass
class _Session:
    id: str
    profile: str
    created: datetime
    expires: dict[DataKind, datetime | None]
    ended: dict[DataKind, datetime | None]
    """When each kind was shredded or forgotten (None: still kept)."""


def render(entries: list[dict[str, Any]], config: Config, level: GuaranteeLevel, verification: Verification, now: datetime) -> str:
    sessions, shreds, forgets = _collect(entries)
    status = "verified" if verification.ok else "FAILED"
    first_problem = html.escape(str(verification.problems[0])) if verification.problems else ""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>edge: what this device keeps</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>What this device keeps, and what it destroyed</h1>",
        f"<p class=meta>Report made {html.escape(now.isoformat(timespec='seconds'))} from the audit log "
        f"({verification.entries} entries, {verification.checkpoints} signed checkpoints). "
        f"Audit log: <b class={'ok' if verification.ok else 'bad'}>{status}</b> {first_problem}</p>",
        f"<h2>Guarantee level</h2><p><b>{html.escape(level.backend)}</b>: {html.escape(level.summary)}.</p>",
        "<h2>Policy per profile</h2>",
        _policy_table(config, sessions, now),
        "<h2>Timeline</h2>",
        "<p class=meta>One row per session (most recent last), from when it was made to when its retention "
        "ends. Dark blue / green: audio / transcript kept so far; light: retention still ahead; grey: "
        "destroyed before its retention ended (forgotten).</p>",
        _timeline(sessions[-MAX_ROWS:], now),
        "<h2>Shredding</h2>",
        _shred_table(shreds),
        "<h2>Forget requests</h2>",
        _forget_table(forgets),
        "</body></html>",
    ]
    return "\n".join(parts)


def _collect(entries: list[dict[str, Any]]) -> tuple[list[_Session], list[dict[str, Any]], list[dict[str, Any]]]:
    """What the page shows, from the log. A malformed event (anyone can chain a line) is
    left out: the page's header says the log did not verify, and `audit verify` names it."""
    sessions: dict[str, _Session] = {}
    shreds: list[dict[str, Any]] = []
    forgets: list[dict[str, Any]] = []
    for entry in entries:
        try:
            _take(entry, sessions, shreds, forgets)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return list(sessions.values()), shreds, forgets


def _take(entry: dict[str, Any], sessions: dict[str, _Session], shreds: list[dict[str, Any]], forgets: list[dict[str, Any]]) -> None:
    fields, when = entry["fields"], _aware(datetime.fromisoformat(entry["wall"]))
    if entry["type"] == "session.created":
        expires = {k: _time(fields.get(f"{k}_expires")) for k in DataKind}
        sessions[str(fields["session"])] = _Session(str(fields["session"]), str(fields["profile"]), when, expires, dict.fromkeys(DataKind))
    elif entry["type"] == "shred":
        if not isinstance(fields["sessions"], list) or fields["kind"] not in tuple(DataKind):
            raise ValueError
        shreds.append({**fields, "at": when, "late_seconds": float(fields.get("late_seconds", 0))})
        for session in fields["sessions"]:
            if session in sessions:
                sessions[session].ended[fields["kind"]] = when
    elif entry["type"] in ("forget.requested", "forget.fulfilled"):
        fulfilled = fields.get("sessions", []) if entry["type"] == "forget.fulfilled" else []
        if not isinstance(fulfilled, list):
            raise ValueError
        forgets.append({**fields, "type": entry["type"], "at": when, "request": str(fields["request"])})
        for session in fulfilled:
            if session in sessions:
                for kind in DataKind:
                    sessions[session].ended[kind] = sessions[session].ended[kind] or when


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("an instant without a zone")
    return instant


def _time(text: object) -> datetime | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError("not a date")
    return _aware(datetime.fromisoformat(text))


def _kept_after(session: _Session, kind: DataKind, now: datetime) -> bool:
    expires = session.expires[kind]
    return expires is not None and session.ended[kind] is None and expires > now


def _policy_table(config: Config, sessions: list[_Session], now: datetime) -> str:
    rows = []
    for profile in config.profiles:
        live = [s for s in sessions if s.profile == profile.name and any(_kept_after(s, k, now) for k in DataKind)]
        upcoming = [t for s in live for k in DataKind if (t := s.expires[k]) is not None and not s.ended[k]]
        rows.append(
            f"<tr><td>{html.escape(profile.name)}</td><td>{profile.kind}</td>"
            f"<td>{_keep(profile.keep_audio)}</td><td>{_keep(profile.keep_transcript)}</td>"
            f"<td>{'yes' if profile.allow_training else 'never' if profile.is_child else 'no'}</td>"
            f"<td>{len(live)}</td><td>{html.escape(min(upcoming).isoformat(timespec='minutes')) if upcoming else '-'}</td></tr>"
        )
    return (
        "<table><tr><th>profile</th><th>kind</th><th>audio kept</th><th>transcript kept</th>"
        "<th>training</th><th>sessions kept now</th><th>next expiry</th></tr>" + "".join(rows) + "</table>"
    )


def _keep(value: timedelta) -> str:
    return "never stored" if value <= timedelta(0) else format_duration(value)


def _timeline(sessions: list[_Session], now: datetime) -> str:
    if not sessions:
        return "<p>No sessions yet.</p>"
    start = min(s.created for s in sessions)
    ends = [t for s in sessions for t in s.expires.values() if t] + [now]
    span = max((max(ends) - start).total_seconds(), 1.0)
    width, row, left = 900, 14, 10

    def x(instant: datetime) -> float:
        return left + (instant - start).total_seconds() / span * (width - 2 * left)

    bars = []
    for index, session in enumerate(sessions):
        y = 20 + index * row
        for offset, kind, color, planned in ((0, DataKind.AUDIO, "#3b7dd8", "#c9dcf5"), (6, DataKind.TRANSCRIPT, "#3aa65b", "#cbead3")):
            expires, ended = session.expires[kind], session.ended[kind]
            if expires is None:
                continue
            kept_until = min(ended or now, expires)
            bars.append(_bar(x(session.created), x(expires), y + offset, planned, f"{kind} retention"))
            bars.append(_bar(x(session.created), x(kept_until), y + offset, color, f"{kind} kept"))
            if ended is not None and ended < expires:
                bars.append(_bar(x(ended), x(expires), y + offset, "#bbb", f"{kind} destroyed early"))
    height = 30 + len(sessions) * row
    axis = (
        f'<line x1="{x(now):.1f}" y1="10" x2="{x(now):.1f}" y2="{height}" stroke="#d33" stroke-dasharray="4 3"/>'
        f'<text x="{x(now) + 4:.1f}" y="12" font-size="11" fill="#d33">now</text>'
        f'<text x="{left}" y="{height - 2}" font-size="11">{html.escape(start.isoformat(timespec="minutes"))}</text>'
        f'<text x="{width - left}" y="{height - 2}" font-size="11" text-anchor="end">'
        f"{html.escape(max(ends).isoformat(timespec='minutes'))}</text>"
    )
    return f'<svg width="{width}" height="{height}" role="img" aria-label="timeline">{axis}{"".join(bars)}</svg>'


def _bar(start: float, end: float, y: int, color: str, label: str) -> str:
    return f'<rect x="{start:.1f}" y="{y}" width="{max(end - start, 1.5):.1f}" height="5" fill="{color}"><title>{label}</title></rect>'


def _shred_table(shreds: list[dict[str, Any]]) -> str:
    if not shreds:
        return "<p>Nothing has been shredded yet.</p>"
    worst = max(s["late_seconds"] for s in shreds)
    rows = "".join(
        f"<tr><td>{html.escape(s['at'].isoformat(timespec='seconds'))}</td><td>{html.escape(str(s.get('profile')))}</td>"
        f"<td>{html.escape(s['kind'])}</td><td>{len(s['sessions'])}</td><td>{html.escape(str(s.get('reason')))}</td>"
        f"<td>{_lateness(s['late_seconds'])}</td><td>{'yes' if s.get('clock_synced') else 'no'}</td></tr>"
        for s in shreds[-200:]
    )
    return (
        f"<p>{len(shreds)} bucket(s) shredded; worst lateness {_lateness(worst)}.</p>"
        "<table><tr><th>when</th><th>profile</th><th>data</th><th>sessions</th><th>why</th>"
        "<th>lateness</th><th>clock synced</th></tr>" + rows + "</table>"
    )


def _lateness(seconds: float) -> str:
    return "ahead of expiry" if seconds < 0 else f"{seconds:.1f} s"


def _forget_table(forgets: list[dict[str, Any]]) -> str:
    if not forgets:
        return "<p>No forget requests.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(f['at'].isoformat(timespec='seconds'))}</td><td>{html.escape(f['request'])}</td>"
        f"<td>{'requested: ' + html.escape(str(f.get('selector', ''))) if f['type'] == 'forget.requested' else 'fulfilled: ' + str(len(f.get('sessions', []))) + ' session(s)'}</td></tr>"
        for f in forgets
    )
    return "<table><tr><th>when</th><th>request</th><th>what</th></tr>" + rows + "</table>"


_CSS = """
body{font:15px/1.45 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left}
th{background:#f4f4f4}.meta{color:#555}.ok{color:#1a7f37}.bad{color:#c62828}
"""
