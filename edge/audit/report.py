"""`audit report --html`: one self-contained page a parent reads in a minute.

No scripts, fonts, images or links to anything outside the file: it opens offline on any
device. Everything shown comes from the audit log (edge.audit.story) and the config (the
policy table); it holds no audio, transcript or keys. Times are the device's local time,
the zone named in the header.

Nothing is left out silently: every export and key export has its own row, identical
refusals share one row with their count and first and last time, and a table or the
timeline cut at its limit says how many rows it leaves out and which command lists them all.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from edge.audit.story import LATE, Event, Session, Story, human, local, read_story
from edge.audit.verify import Verification
from edge.config import Config
from edge.crypto.guarantee import GuaranteeLevel
from edge.values import DataKind
from edge.written.notice import Notice
from edge.written.terms import terms_of

TIMELINE_SESSIONS = 40
"""Sessions drawn on the timeline (the most recent); the page says how many it leaves out."""
TABLE_ROWS = 200
"""Rows per table (the most recent); the page says how many it leaves out. Exports and key
exports are never cut: they are rare and each matters."""
SHOW = "edge-agent audit show"
"""The command that lists what a cut table or timeline leaves out."""
TICKS = (
    (timedelta(minutes=1), "1 min"),
    (timedelta(hours=1), "1 hour"),
    (timedelta(days=1), "1 day"),
    (timedelta(days=7), "1 week"),
    (timedelta(days=30), "30 days"),
    (timedelta(days=365), "1 year"),
)
COLORS = {DataKind.AUDIO: ("#2f6fd0", "#c7dbf6"), DataKind.TRANSCRIPT: ("#2e9a52", "#c8ead2")}
"""Per kind, while it is kept: kept so far, retention still ahead."""
SHREDDED = "#8c8c8c"
"""Shredded: the time it was kept."""
EARLY = "#d6d6d6"
"""Deleted before its expiry (forgotten, inactive): the time it lost."""
OVERDUE = "#e08a1e"
"""Kept past its expiry by more than LATE (not yet shredded, or shredded late)."""


def render(
    entries: list[dict[str, Any]],
    config: Config,
    level: GuaranteeLevel,
    verification: Verification,
    now: datetime,
    notices: Sequence[Notice] = (),
) -> str:
    """`notices`: the profiles whose inactivity purge is near (from the keystore, which the
    log does not describe)."""
    story = read_story(entries)
    zone = now.astimezone().strftime("%Z (UTC%z)")
    integrity = (
        f"<b class=ok>The audit log is intact</b>: {verification.entries} entries, {verification.checkpoints} signed checkpoints."
        if verification.ok
        else f"<b class=bad>The audit log did NOT verify</b>: {html.escape(str(verification.problems[0]))}. What follows may be incomplete."
    )
    sections = [
        ("The retention policy in force", _policy_in_force(config, level, story)),
        ("What this device promises", f"<p>{html.escape(promise(level))}</p>"),
        ("What each person's data is kept for", _policy_table(config, story, now)),
        ("Inactive profiles", _inactive(notices, story)),
        ("Timeline", _timeline(list(story.sessions.values()), now)),
        ("Who looked at kept recordings", _events(story.exports, "No recording or key was exported.")),
        ("Refused exports", _refusals(list(story.refusals.values()))),
        ("Deletions", _events(story.shreds, "Nothing has been shredded yet.", f"{SHOW} --type shred")),
        (
            "Forget requests",
            _events(story.forgets, "No one asked to forget anything.", f"{SHOW} --type forget.requested --type forget.fulfilled"),
        ),
        (
            "Spoken commands",
            _events(story.spoken, "No one used a spoken command.", f"{SHOW} --type voice.command"),
        ),
        (
            "Voices",
            _events(
                story.voices,
                "No voice is enrolled: sessions are tagged by the household config only.",
                f"{SHOW} --type voice.enrolled --type voice.forgotten",
            ),
        ),
        ("Clock and key", _events(story.device, "The clock was never set back and the key was never lost.", SHOW)),
    ]
    body = "".join(f"<section><h2>{html.escape(title)}</h2>{content}</section>" for title, content in sections)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>edge: what this device keeps</title>"
        f"<style>{_CSS}</style></head><body><h1>What this device keeps, and what it destroyed</h1>"
        f"<p class=meta>Made {html.escape(local(now))}; all times are this device's local time, {html.escape(zone)}. {integrity}</p>"
        f"{body}</body></html>"
    )


def _policy_in_force(config: Config, level: GuaranteeLevel, story: Story) -> str:
    """The version this config and vault make, since when it is in force, and every change."""
    terms = terms_of(config, level)
    since = story.adopted.get(terms.version)
    if since is None:
        said = (
            f"The config now makes policy <code>{terms.short}</code>, which is not adopted yet: the agent's next start (or the "
            "next command that writes) adopts it. Until then the latest version below is in force."
        )
    else:
        changed = f" It changed {len(story.policies) - 1} time(s) before." if len(story.policies) > 1 else ""
        said = f"Policy <code>{terms.short}</code> is in force since {html.escape(local(since))}.{changed}"
    full = "<code>edge-agent policy --format html --out policy.html</code> writes it in full: per person and kind of data, what it is for, how long it is kept, how it is deleted and who can see it."
    changes = _events(
        story.policies,
        "No version of the policy is recorded in the log (it was written by an older edge).",
        f"{SHOW} --type policy.adopted",
    )
    return f"<p>{said}</p><p class=meta>Version {html.escape(terms.version)}. {full}</p>{changes}"


def _inactive(notices: Sequence[Notice], story: Story) -> str:
    """Purges for inactivity coming soon (and what stops them), then those that happened."""
    coming = "".join(
        f"<tr><td>{html.escape(n.profile)}</td><td>{html.escape(local(n.heard))}</td><td><b>{html.escape(local(n.purge))}</b></td>"
        f"<td>{n.sessions} session(s){' and the voiceprint' if n.voiceprint else ''}</td>"
        f"<td>{html.escape(n.profile)} speaking, or <code>edge-agent profile keep {html.escape(n.profile)}</code></td></tr>"
        for n in notices
    )
    upcoming = (
        "<table><tr><th>profile</th><th>last heard</th><th>purged at</th><th>what goes</th><th>what keeps it</th></tr>"
        + coming
        + "</table>"
        if notices
        else "<p>No profile is near its inactivity purge (listed 7 days before, or half its inactive_after when shorter).</p>"
    )
    past = sorted(story.inactive, key=lambda e: e.at)
    return upcoming + _events(
        past, "No profile was purged for inactivity.", f"{SHOW} --type shred --type voice.forgotten --type profile.kept"
    )


def promise(level: GuaranteeLevel) -> str:
    """The guarantee level in one sentence a parent understands."""
    if level.crypto_erase and level.survives_reboot:
        return "Kept recordings survive a restart, and what is deleted is gone for good, even from a copy of the memory card."
    if level.crypto_erase:
        return (
            "What is deleted is gone for good, even from a copy of the memory card: the key that opened it lived only in "
            "this device's memory. For the same reason, everything kept is also lost when the device loses power."
        )
    return (
        "Kept recordings survive a restart, and this device cannot open what it deleted; but a copy of its memory card "
        "may still hold old keys, so deletion is not proof against someone who copied the card."
    )


def _policy_table(config: Config, story: Story, now: datetime) -> str:
    rows = []
    for profile in config.profiles:
        live = [s for s in story.sessions.values() if s.profile == profile.name and any(_kept(s, k, now) for k in DataKind)]
        upcoming = [t for s in live for k in DataKind if (t := s.expires[k]) is not None and not s.ended[k] and t > now]
        training = "never (a child)" if profile.is_child else ("yes" if profile.allow_training else "no")
        rows.append(
            f"<tr><td><b>{html.escape(profile.name)}</b></td><td>{'child' if profile.is_child else 'adult'}</td>"
            f"<td>{_keep(profile.keep_audio)}</td><td>{_keep(profile.keep_transcript)}</td><td>{training}</td>"
            f"<td>after {human(profile.inactive_after)} unused</td><td>{'yes' if story.enrolled.get(profile.name) else 'no'}</td>"
            f"<td>{len(live)}</td><td>{html.escape(local(min(upcoming))) if upcoming else '-'}</td></tr>"
        )
    return (
        "<table><tr><th>profile</th><th>who</th><th>recordings kept for</th><th>transcripts kept for</th>"
        "<th>used for training</th><th>everything deleted</th><th>voice enrolled</th><th>sessions kept now</th>"
        "<th>next deletion</th></tr>" + "".join(rows) + "</table>"
    )


def _kept(session: Session, kind: DataKind, now: datetime) -> bool:
    expires = session.expires[kind]
    return expires is not None and session.ended[kind] is None and expires > now


def _keep(value: timedelta) -> str:
    return "never stored" if value <= timedelta(0) else human(value)


def _timeline(every: list[Session], now: datetime) -> str:
    """One labelled row per session (the latest TIMELINE_SESSIONS); each bar starts at the
    session and runs for its retention on a logarithmic scale, so 1 hour and 30 days are
    both readable. What is still kept is coloured; what was shredded is grey."""
    if not every:
        return "<p>No sessions yet.</p>"
    sessions = every[-TIMELINE_SESSIONS:]
    hidden = every[: len(every) - len(sessions)]
    cut = ""
    if hidden:
        still = sum(1 for s in hidden if any(_kept(s, k, now) for k in DataKind))
        cut = _cut(
            f"The timeline draws the latest {len(sessions)} of {len(every)} sessions: the {len(hidden)} earlier ones "
            f"({f'{still} of them' if still else 'none'} still kept) are not drawn.",
            f"{SHOW} --type session.created",
        )
    label, width, row = 230, 900, 26
    spans = [t - s.created for s in sessions for t in [*s.expires.values(), *s.ended.values()] if t]
    scale_end = max([*spans, now - min(s.created for s in sessions), timedelta(days=1)])

    def x(span: timedelta) -> float:
        fraction = math.log1p(max(span.total_seconds(), 0) / 60) / math.log1p(scale_end.total_seconds() / 60)
        return label + min(fraction, 1.0) * (width - label - 10)

    marks = []
    height = 40 + len(sessions) * row
    for tick, name in TICKS:
        if tick <= scale_end:
            marks.append(
                f'<line x1="{x(tick):.1f}" y1="22" x2="{x(tick):.1f}" y2="{height - 10}" stroke="#e2e2e2"/>{_tick_label(x(tick), name, width)}'
            )
    rows = []
    for index, session in enumerate(sessions):
        y = 30 + index * row
        kept = [kind for kind in DataKind if session.expires[kind] is not None]
        forgotten = " (details forgotten with the data)" if kept and all(session.ended[kind] for kind in kept) else ""
        rows.append(
            f'<text x="0" y="{y + 11}" font-size="12"><tspan font-weight="bold">{html.escape(session.profile)}</tspan> '
            f"{html.escape(local(session.created))}{forgotten}</text>"
        )
        for offset, kind in ((0, DataKind.AUDIO), (9, DataKind.TRANSCRIPT)):
            rows.extend(_bars(session, kind, now, x, y + offset))
    legend = "".join(
        f'<span class=key><svg width="14" height="10"><rect width="14" height="10" fill="{color}"/></svg> {text}</span>'
        for color, text in (
            (COLORS[DataKind.AUDIO][0], "recording kept so far"),
            (COLORS[DataKind.AUDIO][1], "recording: time left"),
            (COLORS[DataKind.TRANSCRIPT][0], "transcript kept so far"),
            (COLORS[DataKind.TRANSCRIPT][1], "transcript: time left"),
            (SHREDDED, "shredded: the time it was kept"),
            (EARLY, "deleted before its time (forgotten, or its profile unused)"),
            (OVERDUE, "kept past its time (see Deletions)"),
        )
    )
    return (
        f"<p class=meta>Each row is one session: who spoke and when. The bars run from the session for as long as it may "
        f"be kept, the recording above the transcript (the scale grows by steps, so minutes and months fit side by side). "
        f"Grey is gone: no key on this device opens it. A session's time is given to the hour: the log keeps its exact "
        f"time and length only sealed under a key that goes with its data.</p>{cut}<p>{legend}</p>"
        f'<svg width="{width}" height="{height}" role="img" aria-label="timeline of kept sessions">{"".join(marks + rows)}</svg>'
    )


def _tick_label(at: float, name: str, width: int) -> str:
    """A tick's name centred on it, or ending at the picture's edge when centred it would
    not fit (11px text is at most ~7px a character)."""
    if at + len(name) * 3.5 > width - 2:
        return f'<text x="{width - 2}" y="16" font-size="11" text-anchor="end" fill="#666">{name}</text>'
    return f'<text x="{at:.1f}" y="16" font-size="11" text-anchor="middle" fill="#666">{name}</text>'


def _bars(session: Session, kind: DataKind, now: datetime, x: Callable[[timedelta], float], y: int) -> list[str]:
    """One kind's bars: kept so far and time left while it is kept; once shredded, grey for
    the time it was kept and light grey for the time it lost by an early deletion; past
    its expiry (kept on, or shredded late), the overdue part."""
    expires, ended = session.expires[kind], session.ended[kind]
    if expires is None:
        return []
    full = expires - session.created
    start = x(timedelta(0))
    if ended is None:
        kept, ahead = COLORS[kind]
        bars = [
            _bar(start, x(full), y, ahead, f"{kind}: kept for {human(full)}, until {local(expires)}"),
            _bar(start, x(min(now, expires) - session.created), y, kept, f"{kind}: kept so far"),
        ]
        over = now - expires
    else:
        bars = [_bar(start, x(min(ended, expires) - session.created), y, SHREDDED, f"{kind}: shredded {local(ended)}")]
        if ended < expires:
            bars.append(_bar(x(ended - session.created), x(full), y, EARLY, f"{kind}: deleted {human(expires - ended)} before its time"))
        over = ended - expires
    if over > LATE:
        bars.append(_bar(x(full), x(full + over), y, OVERDUE, f"{kind}: kept {human(over)} past its time"))
    return bars


def _bar(start: float, end: float, y: int, color: str, label: str) -> str:
    return f'<rect x="{start:.1f}" y="{y}" width="{max(end - start, 2):.1f}" height="7" rx="2" fill="{color}"><title>{html.escape(label)}</title></rect>'


def _events(events: list[Event], empty: str, listed_by: str | None = None) -> str:
    """A table of every event, or, with `listed_by` (the command that lists them all), of
    the latest TABLE_ROWS and a line saying how many earlier ones are left out."""
    if not events:
        return f"<p>{html.escape(empty)}</p>"
    shown = events if listed_by is None else events[-TABLE_ROWS:]
    rows = "".join(
        f"<tr><td>{_when(e)}</td><td>{html.escape(e.profile or '-')}</td><td>{html.escape(e.what)}"
        f"{f' <b>(logged {e.count} times)</b>' if e.count > 1 else ''}</td><td>{html.escape(e.why)}</td></tr>"
        for e in shown
    )
    cut = _cut_rows(len(events), len(shown), listed_by or SHOW)
    if any(e.count > 1 for e in shown):
        cut += "<p class=meta>Identical events one after another share one row: how many times they were logged, from when to when.</p>"
    return cut + "<table><tr><th>when</th><th>whose</th><th>what</th><th>why</th></tr>" + rows + "</table>"


def _when(event: Event) -> str:
    """When, or from when to when for identical events counted in one row."""
    first, last = local(event.at), local(event.last) if event.last else None
    if last is None or last == first:
        return html.escape(first)
    return f"{html.escape(first)} <span class=meta>to</span> {html.escape(last)}"


def _refusals(groups: list[Event]) -> str:
    """One row per kind of refusal (whose, what, why) with how many times, first and last."""
    if not groups:
        return "<p>No export was refused.</p>"
    shown = groups[-TABLE_ROWS:]
    rows = "".join(
        f"<tr><td>{html.escape(g.profile or '-')}</td><td>{html.escape(g.what)}</td><td>{html.escape(g.why)}</td>"
        f"<td class=count>{g.count}</td><td>{html.escape(local(g.at))}</td>"
        f"<td>{html.escape(local(g.last)) if g.last else '-'}</td></tr>"
        for g in shown
    )
    return (
        "<p class=meta>Identical refusals (same person, request and reason) share one row.</p>"
        + _cut_rows(len(groups), len(shown), f"{SHOW} --type export.refused")
        + "<table><tr><th>whose</th><th>what</th><th>why</th><th>times</th><th>first</th><th>last</th></tr>"
        + rows
        + "</table>"
    )


def _cut_rows(total: int, shown: int, listed_by: str) -> str:
    if shown == total:
        return ""
    return _cut(f"Only the latest {shown} of {total} rows are shown: the {total - shown} earlier ones are not.", listed_by)


def _cut(said: str, listed_by: str) -> str:
    return f"<p class=cut><b>{html.escape(said)}</b> <code>{html.escape(listed_by)}</code> lists every one.</p>"


_CSS = """
body{font:15px/1.45 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}.meta{color:#555}.ok{color:#1a7f37}.bad{color:#c62828}.key{margin-right:1.2em;white-space:nowrap}
.count{text-align:right}.cut{background:#fff6d6;padding:.3em .5em}.cut code{white-space:nowrap}
"""
