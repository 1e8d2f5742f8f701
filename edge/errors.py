"""Project exception types, all in one place.

Every error a user can cause is one of these, with a message a parent could act
on: it names the file, the setting and what is allowed. The CLI prints the
message and exits non-zero; no traceback reaches the user. Where a caller may
branch on what went wrong, the error also carries it as data: the `path`, the
`setting` (a config key such as "profiles.child.keep_audio") or the `session`.
"""

from __future__ import annotations

from pathlib import Path


class EdgeError(Exception):
    """Base class: a problem the user can fix. `exit_code` is what the CLI returns."""

    exit_code = 1

    def __init__(self, message: str, *, path: Path | None = None, setting: str | None = None, session: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        """The file or folder the problem is about, when there is one."""
        self.setting = setting
        """The config key the problem is about, when there is one."""
        self.session = session
        """The session the problem is about, when there is one."""


class UsageError(EdgeError):
    """The command line itself is wrong (like argparse errors)."""

    exit_code = 2


class ConfigError(EdgeError):
    """The household config file is missing, not TOML, or has a bad value."""


class AudioError(EdgeError):
    """An audio file or the microphone cannot be used."""


class ModelError(EdgeError):
    """No usable Vosk model was found, it failed to load, or it could not be fetched."""


class PolicyError(EdgeError):
    """A request the household's policy refuses (e.g. a child's audio for training)."""

    def __init__(self, message: str, reason: str = "policy", *, session: str | None = None) -> None:
        super().__init__(message, session=session)
        self.reason = reason
        """A short, loggable reason ("child", "no consent", "expired", ...)."""


class StorageError(EdgeError):
    """A file or folder edge keeps could not be written, read or locked."""


class KeyringError(EdgeError):
    """The kernel keyring refused an operation."""


class VaultError(EdgeError):
    """The root key could not be stored or read."""


class KeystoreError(EdgeError):
    """The keystore cannot be opened with the vault's root key; nothing was changed."""


class ClockError(EdgeError):
    """The trusted clock cannot be changed as asked (e.g. a rewind while NTP has not
    synchronised the wall clock); nothing was changed."""


class AgeError(EdgeError):
    """A sealed file could not be opened. Deliberately says nothing about why."""

    def __init__(
        self, message: str = "the sealed file is damaged, incomplete, or not sealed for this key", *, session: str | None = None
    ) -> None:
        super().__init__(message, session=session)


class AuditError(EdgeError):
    """The audit log cannot be written or read."""


class ControlError(EdgeError):
    """A control request was malformed or refused, or no agent answered."""


class AgentNotRunning(ControlError):
    """Nothing listens on the control socket."""


class WyomingError(EdgeError):
    """A Wyoming client sent what edge refuses; `code` is what the `error` event carries."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code
        """Machine-readable: "bad-frame", "too-large", "bad-audio-format", "protocol", "busy", ..."""
