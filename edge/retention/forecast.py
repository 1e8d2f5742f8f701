"""When each thing a household keeps will be shredded, and why.

One rule, used by the shredder to decide what is due and by the what-if views (`status
--at`, `purge --dry-run`) to show what would go when: a bucket goes at its expiry, or
earlier when its profile has not been heard for `inactive_after`; a voiceprint goes when
its profile has not been heard for that long; what a forget request interrupted by a crash
names goes at the next run. Pure: it reads a keystore view and the config, writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from edge.config import Config
from edge.policy import policies, strictest_policy
from edge.store.records import Bucket
from edge.store.tables import KeystoreData
from edge.values import ShredReason


@dataclass(frozen=True)
class Fate:
    """One thing kept, and when and why it will be shredded if nothing else happens first."""

    what: str
    """"audio", "transcript" or "voiceprint"."""
    profile: str
    at: datetime
    """When it goes (UTC): its expiry, or when its profile counts as inactive, or the next
    run for an unfinished forget. Earlier than now: overdue, it goes at the next sweep."""
    reason: ShredReason
    sessions: int
    """Sessions whose data it holds (0 for a voiceprint)."""
    bucket: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "what": self.what,
            "profile": self.profile,
            "at": self.at.isoformat(),
            "reason": self.reason,
            "sessions": self.sessions,
            "bucket": self.bucket,
        }


def inactive_from(config: Config, data: KeystoreData) -> dict[str, datetime]:
    """Per profile with a session kept: when it counts as inactive (last heard + inactive_after)."""
    return {p.name: data.last_seen[p.name] + p.inactive_after for p in policies(config) if p.name in data.last_seen}


def reason_at(bucket: Bucket, inactive: datetime | None, now: datetime) -> ShredReason | None:
    """Why `bucket` is due at `now` (expiry first), or None while it may be kept."""
    if bucket.expires <= now:
        return ShredReason.EXPIRED
    if inactive is not None and inactive <= now:
        return ShredReason.INACTIVE
    return None


def due(config: Config, data: KeystoreData, now: datetime) -> dict[str, ShredReason]:
    """The buckets to shred at `now`, with why. Every bucket row is opened only when one may be
    due: the state row bounds their expiries (BucketBound), and says when each profile goes inactive."""
    inactive = inactive_from(config, data)
    if all(at > now for at in inactive.values()) and not data.buckets.may_expire_by(now):
        return {}
    reasons = {b.id: reason_at(b, inactive.get(b.profile), now) for b in data.buckets.values()}
    return {bucket: reason for bucket, reason in reasons.items() if reason is not None}


def voice_expires(config: Config, profile: str, heard: datetime) -> datetime:
    """When a voiceprint goes: its profile unheard for its inactive_after (a profile the config
    no longer has is held to the strictest policy's: nothing may keep it for ever)."""
    inactive = {p.name: p.inactive_after for p in config.profiles}
    return heard + inactive.get(profile, strictest_policy(config).inactive_after)


def forecast(config: Config, data: KeystoreData, now: datetime) -> list[Fate]:
    """Everything kept, soonest to go first."""
    inactive = inactive_from(config, data)
    members = data.members_by_bucket()
    fates = []
    for bucket in data.buckets.values():
        gone = inactive.get(bucket.profile)
        at = bucket.expires if gone is None else min(bucket.expires, gone)
        reason = reason_at(bucket, gone, at) or ShredReason.EXPIRED
        fates.append(Fate(bucket.kind, bucket.profile, at, reason, len(members.get(bucket.id, ())), bucket.id))
    for profile, voice in data.voices.items():
        fates.append(Fate("voiceprint", profile, voice_expires(config, profile, voice.heard), ShredReason.INACTIVE, 0))
    for pending in data.forgets.values():
        for bucket_id, sessions in pending.buckets.items():
            if bucket_id in data.buckets:
                fates = [f for f in fates if f.bucket != bucket_id]
                fates.append(
                    Fate(data.buckets[bucket_id].kind, data.buckets[bucket_id].profile, now, ShredReason.FORGET, len(sessions), bucket_id)
                )
    return sorted(fates, key=lambda fate: (fate.at, fate.profile, fate.what))
