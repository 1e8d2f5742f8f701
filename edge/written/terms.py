"""The policy's terms: the facts the household's config and vault fix, in one canonical JSON
form whose SHA-256 is the policy's version.

Only facts are hashed (durations in seconds, kinds, names, the vault's level), never the
wording: a new release that words the policy better is not a new policy, while any config
change that changes what is kept, for how long, how it is destroyed or where it goes is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from edge.config import Config, Profile
from edge.crypto.guarantee import GuaranteeLevel
from edge.policy import UNKNOWN_PROFILE, strictest_policy

FORMAT = 1
"""The terms' layout (docs/FORMATS.md, "The written retention policy")."""


def canonical(obj: Any) -> bytes:
    """Sorted keys, no spaces, ASCII: the bytes the version hashes (as the audit log's lines)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class Terms:
    """The policy in force for one config and vault."""

    terms: dict[str, Any]
    version: str
    """SHA-256 (hex) of the canonical JSON of `terms`."""

    @property
    def short(self) -> str:
        """The first 12 hex digits, as people quote it."""
        return self.version[:12]


def _seconds(profile: Profile) -> dict[str, Any]:
    return {
        "kind": str(profile.kind),
        "audio_seconds": int(profile.keep_audio.total_seconds()),
        "transcript_seconds": int(profile.keep_transcript.total_seconds()),
        "inactive_after_seconds": int(profile.inactive_after.total_seconds()),
        "training": bool(profile.allow_training) and not profile.is_child,
    }


def terms_of(config: Config, level: GuaranteeLevel) -> Terms:
    """The terms this config and vault make: what a session taken now is held to."""
    unknown = strictest_policy(config)
    profiles = {p.name: _seconds(p) for p in config.profiles}
    if unknown.name == UNKNOWN_PROFILE:
        profiles[UNKNOWN_PROFILE] = _seconds(unknown)
    household = config.household
    terms: dict[str, Any] = {
        "format": FORMAT,
        "profiles": profiles,
        "unknown_speakers": unknown.name,
        "active_profile": household.active_profile,
        "child_caps": {
            "audio_seconds": int(household.max_child_audio.total_seconds()),
            "transcript_seconds": int(household.max_child_transcript.total_seconds()),
        },
        "vault": {
            "backend": str(level.backend),
            "crypto_erase": level.crypto_erase,
            "survives_reboot": level.survives_reboot,
        },
        "voice_tagging": config.speaker.identify,
        "wyoming": sorted(
            ({"name": li.name, "profile": li.profile, "keep_unrecognised": li.keep_unrecognised} for li in config.listeners),
            key=lambda listener: str(listener["name"]),
        ),
    }
    spoken = config.voice_commands
    if spoken.enabled:  # absent when off: a config without spoken commands keeps its version
        terms["voice_commands"] = {
            **spoken.phrases(),
            "guest_limit_seconds": int(spoken.guest_limit.total_seconds()) if spoken.guest_on else None,
            "confirm_window_seconds": int(spoken.confirm_window.total_seconds()) if spoken.confirm else None,
        }
    return Terms(terms, hashlib.sha256(canonical(terms)).hexdigest())


def changed(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """The dotted paths of the terms that differ (added, removed or changed), sorted; every
    top-level key when there is nothing before."""
    if before is None:
        return sorted(after)
    paths: list[str] = []
    _diff(before, after, "", paths)
    return sorted(paths)


def _diff(before: Any, after: Any, prefix: str, paths: list[str]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after)):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in before or key not in after:
                paths.append(path)
            else:
                _diff(before[key], after[key], path, paths)
    elif before != after:
        paths.append(prefix)
