"""Inactive profiles, the Alexa order's way: a profile unheard for its `inactive_after` has its
data and voiceprint purged, unless it speaks again or a parent objects (`edge-agent profile
keep NAME`, audited). `status`, `doctor` and the report give notice before that happens.

When it happens comes from forecast.py's one rule (the fates whose reason is inactivity), so
the notice and the shredder can never disagree.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from edge.config import Config
from edge.errors import UsageError
from edge.events import ProfileKept
from edge.instants import iso_utc
from edge.retention.forecast import forecast
from edge.sink import AuditSink
from edge.store.keystore import Keystore
from edge.store.tables import KeystoreData
from edge.values import ShredReason
from edge.written.notice import Notice

NOTICE = timedelta(days=7)
"""How long before the purge a profile is listed (half its inactive_after when that is shorter)."""


def notices(config: Config, data: KeystoreData, now: datetime) -> list[Notice]:
    """Every profile whose inactivity purge is within its notice window, soonest first."""
    windows = {p.name: min(NOTICE, p.inactive_after / 2) for p in config.profiles}
    purges: dict[str, datetime] = {}
    buckets: dict[str, set[str]] = {}
    voices: set[str] = set()
    for fate in forecast(config, data, now):
        if fate.reason != ShredReason.INACTIVE or fate.at - now > windows.get(fate.profile, NOTICE):
            continue
        purges[fate.profile] = min(purges.get(fate.profile, fate.at), fate.at)
        if fate.bucket is not None:
            buckets.setdefault(fate.profile, set()).add(fate.bucket)
        else:
            voices.add(fate.profile)
    found = []
    for profile, purge in purges.items():
        gone = buckets.get(profile, set())
        sessions = sum(1 for s in data.sessions.entries() if s.audio_bucket in gone or s.transcript_bucket in gone)
        heard = data.last_seen.get(profile) or data.voices[profile].heard
        found.append(Notice(profile, heard, purge, sessions, profile in voices))
    return sorted(found, key=lambda n: (n.purge, n.profile))


def keep(store: Keystore, audit: AuditSink, config: Config, name: str, now: datetime) -> datetime | None:
    """A parent objects to the purge: NAME counts as heard now, so its inactive_after starts
    again (audited as profile.kept). The new purge instant, or None when nothing of NAME is
    kept (nothing to keep, nothing logged)."""
    profile = config.named_profile(name, "profile keep")
    with store.transaction() as data:
        voice = data.voices.get(name)
        heard = max([t for t in (data.last_seen.get(name), voice.heard if voice else None) if t is not None], default=None)
        if heard is None:
            return None
        if heard > now:
            raise UsageError(f"profile keep {name}: it was heard at {iso_utc(heard)}, later than now by the trusted clock; nothing changed")
        due = min(t + profile.inactive_after for t in (data.last_seen.get(name), voice.heard if voice else None) if t is not None)
        if due <= now:  # an objection comes before the purge, never after
            raise UsageError(
                f"profile keep {name}: its purge for inactivity was due at {iso_utc(due)}; what it kept is shredded "
                "at the next sweep (`edge-agent purge` now). Nothing changed"
            )
        until = now + profile.inactive_after
        audit.append(ProfileKept(profile=name, heard=iso_utc(heard), until=iso_utc(until), source="command"))
        if name in data.last_seen:
            data.last_seen[name] = now
        if voice is not None:
            data.voices[name] = replace(voice, heard=now)
    return until
