"""The household config as the code sees it: frozen, typed settings (read by
edge.config.parse)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from edge.errors import ConfigError, UsageError
from edge.values import KeyringKind, ListenerTransport, ProfileKind, TriggerMode, VaultBackend

DEFAULT_TCTI = "device:/dev/tpmrm0"
DEFAULT_NV_INDEX = 0x0100ED60


@dataclass(frozen=True)
class DeviceSettings:
    data_dir: Path
    """Folder for everything edge keeps (sealed recordings, keystore, audit log); mode 0700."""
    model: str
    """"auto" (find an installed model) or the path of a Vosk model folder."""
    sample_rate: int
    """Microphone capture rate in Hz. Audio is resampled to 16 kHz mono for Vosk."""
    input_device: str | None
    """sounddevice input device (name or index); None means the system default."""
    control_socket: Path
    """Unix socket through which the CLI talks to a running agent (default: in data_dir)."""


@dataclass(frozen=True)
class VaultSettings:
    backend: VaultBackend
    """Where the root key lives: keyring (kernel, lost at power-off), file, tpm."""
    path: Path | None
    """Root key file for the "file" backend; None otherwise."""
    keyring: KeyringKind
    """For "keyring": "persistent" (the user's persistent keyring: outlives the agent, not a
    reboot) or "session" (the caller's session keyring, e.g. inside `keyctl session`)."""
    tcti: str = DEFAULT_TCTI
    """For "tpm": how to reach the TPM (a TSS TCTI string; the kernel's resource manager on a Pi)."""
    nv_index: int = DEFAULT_NV_INDEX
    """For "tpm": the NV index of the root's "current" slot; "next" is nv_index + 1."""


@dataclass(frozen=True)
class TriggerSettings:
    mode: TriggerMode
    """Which utterances become sessions (see edge.values.TriggerMode)."""
    wake_phrase: str
    """Phrase that opens a session in "wake" mode."""
    grammar: tuple[str, ...]
    """Limited vocabulary: the only phrases Vosk may output. Empty = free dictation."""
    silence_end: timedelta
    """Trailing silence that ends a session."""
    max_session: timedelta
    """Longest session; longer speech is cut here."""
    wake_timeout: timedelta
    """After the wake phrase (or a push-to-talk press): how long speech may take to begin."""
    wake_confidence: float
    """Lowest Vosk confidence (0-1) at which the wake phrase counts as heard."""
    vad_aggressiveness: int
    """WebRTC VAD mode 0-3: higher ignores more background noise."""


@dataclass(frozen=True)
class Profile:
    name: str
    kind: ProfileKind
    keep_audio: timedelta
    """How long sealed audio may be kept; 0 = never stored."""
    keep_transcript: timedelta
    """How long the sealed transcript may be kept; 0 = never stored."""
    allow_training: bool
    """Whether this (adult) profile consents to export for training. Never for a child."""
    inactive_after: timedelta
    """A profile unused this long has all its data shredded."""

    @property
    def is_child(self) -> bool:
        return self.kind == ProfileKind.CHILD


@dataclass(frozen=True)
class HouseholdSettings:
    active_profile: str | None
    """Profile for sessions not tagged otherwise; None = the strictest profile."""
    max_child_audio: timedelta
    """Cap on any child profile's keep_audio."""
    max_child_transcript: timedelta
    """Cap on any child profile's keep_transcript."""


@dataclass(frozen=True)
class RetentionSettings:
    sweep: timedelta
    """How often the running agent checks for anything due, besides each bucket's own job."""


@dataclass(frozen=True)
class SpeakerSettings:
    """[speaker]: tagging sessions by voice, once at least one voice is enrolled
    (`edge-agent voices enroll`). Scores are cosine similarities of voiceprints (-1 to 1)."""

    identify: bool
    """Whether enrolled voices tag sessions; false = tagging by configuration only."""
    threshold: float
    """Score the best-matching voice must reach for its profile to be chosen."""
    adult_threshold: float
    """The (higher) score an adult profile's voice must reach: a child tagged as an adult
    is the error that matters, so that decision needs more evidence."""
    margin: float
    """How far the best match must beat the best match of every other profile."""


@dataclass(frozen=True)
class ListenerSettings:
    """One Wyoming speech-to-text listener ([[wyoming]] in the config, or `serve --uri`)."""

    uri: str
    """As written: unix:///ABSOLUTE/PATH.sock or stdio://."""
    transport: ListenerTransport
    socket: Path | None
    """The Unix socket's path; None for stdio."""
    profile: str | None
    """Who speaks through this listener; None = the active profile, else the strictest."""
    name: str
    """The speech-to-text service's name as Home Assistant shows it."""
    audio_per_minute: timedelta = timedelta(minutes=2)
    """Seconds of audio this listener may take in any minute (its clients together): sealed
    audio fills the card until it expires, so no client may send far faster than people speak."""
    keep_unrecognised: bool = False
    """Whether an utterance in which nothing was recognised is kept (by its profile's policy):
    by default it keeps nothing, since a false wake of the client's is noise or someone who
    did not mean to speak to the assistant. It is audited as served all the same."""


@dataclass(frozen=True)
class VoiceCommandSettings:
    """[voice_commands]: rights by voice. Each phrase, said as a whole utterance, is a command
    about the speaker's own profile (the one the utterance is tagged with); "" = that command
    is off. An utterance that is a command keeps nothing of itself."""

    forget_last: str = ""
    """Forgets the speaker's profile's latest kept session before the command."""
    forget_today: str = ""
    """Forgets the speaker's profile's sessions since local midnight."""
    guest_on: str = ""
    """Tags every session with the strictest policy until `guest_off` or `guest_limit`."""
    guest_off: str = ""
    guest_limit: timedelta = timedelta(hours=2)
    """Guest mode ends by itself this long after it began."""
    confirm: str = ""
    """A forget waits for this reply (a "yes") within `confirm_window`; "" = done at once."""
    confirm_window: timedelta = timedelta(seconds=10)

    def phrases(self) -> dict[str, str]:
        """Each command that is on, by its key, and its phrase."""
        found = {
            "forget_last": self.forget_last,
            "forget_today": self.forget_today,
            "guest_on": self.guest_on,
            "guest_off": self.guest_off,
            "confirm": self.confirm,
        }
        return {key: phrase for key, phrase in found.items() if phrase}

    @property
    def enabled(self) -> bool:
        return bool(self.forget_last or self.forget_today or self.guest_on)


@dataclass(frozen=True)
class Config:
    path: Path
    device: DeviceSettings
    vault: VaultSettings
    trigger: TriggerSettings
    household: HouseholdSettings
    retention: RetentionSettings
    profiles: tuple[Profile, ...]
    listeners: tuple[ListenerSettings, ...] = ()
    """Wyoming listeners served by `serve` and `run --mic`."""
    speaker: SpeakerSettings = SpeakerSettings(identify=True, threshold=0.80, adult_threshold=0.86, margin=0.06)
    voice_commands: VoiceCommandSettings = VoiceCommandSettings()
    """Off unless [voice_commands] sets a phrase."""

    def profile(self, name: str) -> Profile:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        raise ConfigError(f"{self.path}: there is no profile named {name!r}; the profiles are: {', '.join(p.name for p in self.profiles)}")

    def named_profile(self, name: str, option: str) -> Profile:
        """A profile named on the command line: a name that is not there is a command-line
        mistake (exit 2), not a config problem."""
        try:
            return self.profile(name)
        except ConfigError:
            names = ", ".join(p.name for p in self.profiles)
            raise UsageError(f"{option} {name!r}: {self.path} has no such profile; the profiles are: {names}") from None
