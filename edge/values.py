"""The named values edge passes around: one StrEnum per kind of choice.

Each member equals its string (`TriggerMode.WAKE == "wake"`), so configs, JSON and
the audit log keep the words they always had; code compares members, never strings.
"""

from __future__ import annotations

from enum import StrEnum


class TriggerMode(StrEnum):
    WAKE = "wake"
    """A session starts at the wake phrase."""
    PUSH_TO_TALK = "push_to_talk"
    """A session starts on command (SIGUSR1, `edge-agent push`)."""
    ALWAYS = "always"
    """Every utterance is a session."""


class ProfileKind(StrEnum):
    ADULT = "adult"
    CHILD = "child"


class DataKind(StrEnum):
    """What a retention bucket holds."""

    AUDIO = "audio"
    TRANSCRIPT = "transcript"


class VaultBackend(StrEnum):
    KEYRING = "keyring"
    FILE = "file"
    TPM = "tpm"
    RAM = "ram"
    """This process's memory: the demo only, never configured."""


class KeyringKind(StrEnum):
    PERSISTENT = "persistent"
    SESSION = "session"


class TagRule(StrEnum):
    """How a session's profile was chosen."""

    GIVEN = "given"
    """Named for the run (`--profile`)."""
    ACTIVE = "active"
    """The household's active profile, or one set at run time."""
    STRICTEST = "strictest"
    """Nobody was named: the strictest policy, fail-closed."""
    LISTENER = "listener"
    """The Wyoming listener the utterance came through names who speaks there."""
    VOICE = "voice"
    """An enrolled voiceprint matched (and nothing stricter said otherwise)."""
    GUEST = "guest"
    """Guest mode was on (a spoken command, edge.spoken): the strictest policy."""

    @property
    def identifies(self) -> bool:
        """Whether the rule names who speaks (the strictest fallback and guest mode do not)."""
        return self not in (TagRule.STRICTEST, TagRule.GUEST)


class ListenerTransport(StrEnum):
    """Where a Wyoming listener accepts clients (never TCP: see edge.config)."""

    UNIX = "unix"
    STDIO = "stdio"


class Purpose(StrEnum):
    """Why retained audio is exported."""

    PLAYBACK = "playback"
    REVIEW = "review"
    TRAINING = "training"


class EndReason(StrEnum):
    """Why a session ended."""

    SILENCE = "silence"
    MAX_LENGTH = "max_length"
    NO_SPEECH = "no_speech"
    END_OF_INPUT = "end_of_input"
    STOPPED = "stopped"
    TIMEOUT = "timeout"
    """A Wyoming client sent nothing for the idle timeout."""


class ShredReason(StrEnum):
    EXPIRED = "expired"
    INACTIVE = "inactive"
    """The profile was unused for its inactive_after."""
    FORGET = "forget"
