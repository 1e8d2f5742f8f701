"""Tagging: which household profile a session belongs to, and by which rule
(the policy itself, strictest included, is edge.policy)."""

from __future__ import annotations

from edge.config import Config
from edge.policy import Tag, strictest_policy
from edge.values import TagRule


def tag_session(config: Config, given: str | None = None, active: str | None = None) -> Tag:
    """Pick the profile for a new session. `active` (set at run time, e.g. `edge-agent profile`)
    says who speaks now, so it beats `given` (the run's --profile); then the household's
    active profile; else the strictest policy."""
    if active:
        return Tag(config.profile(active), TagRule.ACTIVE)
    if given:
        return Tag(config.profile(given), TagRule.GIVEN)
    if config.household.active_profile:
        return Tag(config.profile(config.household.active_profile), TagRule.ACTIVE)
    return Tag(strictest_policy(config), TagRule.STRICTEST)


def tag_listener_session(config: Config, listener_profile: str | None, active: str | None = None) -> Tag:
    """Pick the profile for a Wyoming utterance: the listener's (it stands for a room or a
    satellite), else who speaks now, else the strictest. Nothing the client sends takes part."""
    if listener_profile:
        return Tag(config.profile(listener_profile), TagRule.LISTENER)
    return tag_session(config, None, active)
