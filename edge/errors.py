"""Project exception types.

Every error a user can cause is one of these, with a message a parent could act
on: it names the file, the setting and what is allowed. The CLI prints the
message and exits non-zero; no traceback reaches the user.
"""


class EdgeError(Exception):
    """Base class: a problem the user can fix. `exit_code` is what the CLI returns."""

    exit_code = 1


class UsageError(EdgeError):
    """The command line itself is wrong (like argparse errors)."""

    exit_code = 2


class ConfigError(EdgeError):
    """The household config file is missing, not TOML, or has a bad value."""


class AudioError(EdgeError):
    """An audio file or the microphone cannot be used."""


class ModelError(EdgeError):
    """No usable Vosk model was found or it failed to load."""


class PolicyError(EdgeError):
    """A request the household's policy refuses (e.g. a child's audio for training)."""

    def __init__(self, message: str, reason: str = "policy") -> None:
        super().__init__(message)
        self.reason = reason
        """A short, loggable reason ("child", "no consent", ...)."""
