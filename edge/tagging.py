"""Tagging: which household profile a session belongs to, and by which rule.

Fail closed: when nobody says who is speaking, the session gets the strictest
profile in the household, so an unidentified child is never kept longer than a
child's policy allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from edge.config import Config, Profile

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


def tag_session(config: Config, given: str | None = None, active: str | None = None) -> Tag:
    """Pick the profile for a new session: given, else active, else the strictest."""
    if given:
        return Tag(config.profile(given), GIVEN)
    active = active or config.household.active_profile
    if active:
        return Tag(config.profile(active), ACTIVE)
    return Tag(strictest(config.profiles), STRICTEST)
