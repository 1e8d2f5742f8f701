"""Household policy derived from the config: the strictest policy, and the tag that
says which profile (and so which retention) a session carries.

Fail closed: when nobody says who is speaking, the session gets the strictest
policy in the household: for audio and for transcripts alike, never longer than any
profile keeps that kind, nor than the household's child caps, and never for training.
When one profile is that strict in both, the session is that profile's; otherwise it
gets a synthetic profile, `_unknown`, made of those limits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge.config import Config, Profile
from edge.values import ProfileKind, TagRule

UNKNOWN_PROFILE = "_unknown"
"""The synthetic strictest profile's name (not a valid config name, so it never collides)."""


@dataclass(frozen=True)
class Tag:
    profile: Profile
    rule: TagRule
    """How the profile was chosen."""


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
        kind=ProfileKind.CHILD,  # it may be a child: every child rule applies
        keep_audio=audio,
        keep_transcript=transcript,
        allow_training=False,
        inactive_after=min(p.inactive_after for p in config.profiles),
    )


def policies(config: Config) -> list[Profile]:
    """Every profile a session may carry: the config's, and the synthetic strictest one."""
    synthetic = strictest_policy(config)
    return list(config.profiles) + ([synthetic] if synthetic not in config.profiles else [])
