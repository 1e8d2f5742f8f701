"""Tagging: which household profile a session belongs to, and by which rule.

Fail closed: when nobody says who is speaking, the session gets the strictest
policy in the household: for audio and for transcripts alike, never longer than any
profile keeps that kind, nor than the household's child caps, and never for training.
When one profile is that strict in both, the session is that profile's; otherwise it
gets a synthetic profile, `_unknown`, made of those limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from edge.config import Config, Profile

UNKNOWN_PROFILE = "_unknown"
"""The synthetic strictest profile's name (not a valid config name, so it never collides)."""

GIVEN = "given"
"""The profile was named for this run (`--profile`)."""
ACTIVE = "active"
"""The household's active profile ([household] active_profile, or set at run time)."""
STRICTEST = "strictest"
"""Nobody was named: the strictest profile, fail-closed."""


@dataclass(frozen=True)
class Tag:
    profile: Profile
    rule: str
    """How the profile was chosen: "given", "active" or "strictest"."""


def strictest(profiles: Iterable[Profile]) -> Profile:
    """Shortest audio retention, then shortest transcript retention; on a tie a child
    profile beats an adult one, then a non-training profile, then the name (stable)."""
    return min(
        profiles,
        key=lambda p: (p.keep_audio, p.keep_transcript, not p.is_child, p.allow_training, p.name),
    )


def strictest_policy(config: Config) -> Profile:
    """The policy for a session nobody identified: the shortest audio and the shortest
    transcript retention of any profile, each capped by the child caps, never for training."""
    household = config.household
    audio = min(min(p.keep_audio for p in config.profiles), household.max_child_audio)
    transcript = min(min(p.keep_transcript for p in config.profiles), household.max_child_transcript)
    candidate = strictest(config.profiles)
    if (candidate.keep_audio, candidate.keep_transcript) == (audio, transcript) and not candidate.allow_training:
        return candidate
    return Profile(
        name=UNKNOWN_PROFILE,
        kind="child",  # it may be a child: every child rule applies
        keep_audio=audio,
        keep_transcript=transcript,
        allow_training=False,
        inactive_after=min(p.inactive_after for p in config.profiles),
    )


def tag_session(config: Config, given: str | None = None, active: str | None = None) -> Tag:
    """Pick the profile for a new session. `active` (set at run time, e.g. `edge-agent profile`)
    says who speaks now, so it beats `given` (the run's --profile); then the household's
    active profile; else the strictest policy."""
    if active:
        return Tag(config.profile(active), ACTIVE)
    if given:
        return Tag(config.profile(given), GIVEN)
    if config.household.active_profile:
        return Tag(config.profile(config.household.active_profile), ACTIVE)
    return Tag(strictest_policy(config), STRICTEST)
