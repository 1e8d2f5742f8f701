"""The household config: TOML validated into frozen, typed settings.

Unknown keys are errors (a typo such as `keep_adio` must never silently fall back
to a default). Every error names the file, the key path and what is allowed.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlparse

from edge.durations import ALLOWED as DURATION_ALLOWED
from edge.durations import format_duration, parse_duration
from edge.errors import ConfigError, UsageError
from edge.invocation import program
from edge.values import KeyringKind, ListenerTransport, ProfileKind, TriggerMode, VaultBackend

Choice = TypeVar("Choice", bound=StrEnum)

SYSTEM_CONFIG = Path("/etc/edge/household.toml")
BUILTIN_CONFIG = (Path(__file__).parent / "data" / "household.example.toml").resolve()

VAULT_BACKENDS = (VaultBackend.KEYRING, VaultBackend.FILE, VaultBackend.TPM)
"""What [vault] backend may say (the demo's in-memory vault is never configured)."""
DEFAULT_TCTI = "device:/dev/tpmrm0"
TCTI_KINDS = ("device", "swtpm", "mssim", "tabrmd")
"""The TSS's TCTI modules: the kernel device, a TPM simulator, the access broker."""
DEFAULT_NV_INDEX = 0x0100ED60
NV_INDEX_FIRST, NV_INDEX_LAST = 0x01000000, 0x013FFFFE
SAMPLE_RATES = (8000, 16000, 22050, 32000, 44100, 48000)
MAX_SOCKET_PATH = 107
"""Longest Unix socket path Linux accepts (sun_path is 108 bytes with the final NUL)."""
_PROFILE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


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


def resolve_config_path(explicit: str | None) -> Path:
    """--config, then $EDGE_CONFIG, then /etc/edge/household.toml, then the built-in example."""
    if explicit:
        return Path(explicit)
    if os.environ.get("EDGE_CONFIG"):
        return Path(os.environ["EDGE_CONFIG"])
    if SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG
    return BUILTIN_CONFIG


def load_config(path: Path) -> Config:
    """Read and validate a household config file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found. `{program()} init FOLDER` writes a household config of your own (then pass "
            f"--config FOLDER/household.toml); on a device, scripts/install.sh writes /etc/edge/household.toml."
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; --config needs a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text, so it cannot be a TOML config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: is not valid TOML: {exc}") from None
    return parse_config(data, path)


def parse_config(data: dict[str, Any], path: Path) -> Config:
    """Validate a parsed TOML document; `path` is used in messages and for relative paths."""
    root = _Table(data, path, "")
    device = _parse_device(root.table("device"), path)
    vault = _parse_vault(root.table("vault"), path)
    trigger = _parse_trigger(root.table("trigger"))
    household_table = root.table("household")
    retention = _parse_retention(root.table("retention"))
    profiles_table = root.table("profiles")
    listener_tables = root.tables("wyoming")
    speaker = _parse_speaker(root.table("speaker"))
    root.finish()

    profiles = tuple(_parse_profile(name, profiles_table.table(name)) for name in list(profiles_table.keys()))
    profiles_table.finish()
    if not profiles:
        raise ConfigError(f'{path}: [profiles] is empty: add at least one profile, e.g. [profiles.parent] with kind = "adult"')
    names = [p.name for p in profiles]
    active = household_table.get("active_profile", str, None)
    if active is not None and active not in names:
        household_table.fail("active_profile", active, f"one of the profiles: {', '.join(names)}")
    household = HouseholdSettings(
        active_profile=active,
        max_child_audio=household_table.duration("max_child_audio", "24h"),
        max_child_transcript=household_table.duration("max_child_transcript", "30d"),
    )
    household_table.finish()
    for profile in profiles:
        _check_child_caps(profile, household, path, data)
    listeners = tuple(_parse_listener(table, names, trigger.max_session) for table in listener_tables)
    check_listeners(listeners, device, f"{path}: [[wyoming]]")
    return Config(
        path=path,
        device=device,
        vault=vault,
        trigger=trigger,
        household=household,
        retention=retention,
        profiles=profiles,
        listeners=listeners,
        speaker=speaker,
    )


TCP_REFUSED = (
    "edge opens no network socket (its service runs with PrivateNetwork=yes): serve a unix:// socket and let "
    "systemd-socket-proxyd bridge TCP to it; `sudo scripts/install.sh --wyoming PORT[:PROFILE]` sets that up "
    "(README: Use with Home Assistant)"
)
LISTENER_URIS = 'unix:///ABSOLUTE/PATH.sock or "stdio://"'


def listener_socket(uri: str, where: str, setting: str | None = None) -> tuple[ListenerTransport, Path | None]:
    """The transport and socket path a listener URI names; tcp:// and anything else refused.
    `where` starts each message (a config key with its file, or an option)."""
    parsed = urlparse(uri)
    if parsed.scheme == "tcp":
        raise ConfigError(f"{where} = {uri!r} is not allowed: {TCP_REFUSED}", setting=setting)
    if parsed.scheme == "stdio" and uri.rstrip("/") == "stdio:":
        return ListenerTransport.STDIO, None
    if parsed.scheme == "unix" and not parsed.netloc and parsed.path.startswith("/") and not parsed.query and not parsed.fragment:
        socket = Path(parsed.path)
        if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
            raise ConfigError(f"{where} = {uri!r} is not allowed; use a socket path of at most {MAX_SOCKET_PATH} bytes", setting=setting)
        return ListenerTransport.UNIX, socket
    raise ConfigError(f"{where} = {uri!r} is not allowed; use {LISTENER_URIS}", setting=setting)


AUDIO_PER_MINUTE = timedelta(minutes=2)
"""A listener's default allowance: two people speaking at once, all the time."""
LONGEST_AUDIO_PER_MINUTE = timedelta(hours=1)


def make_listener(
    uri: str,
    profile: str | None,
    name: str | None,
    where: str,
    setting: str | None = None,
    audio_per_minute: timedelta = AUDIO_PER_MINUTE,
    keep_unrecognised: bool = False,
) -> ListenerSettings:
    transport, socket = listener_socket(uri, where, setting)
    default_name = f"edge ({profile})" if profile else "edge"
    return ListenerSettings(
        uri=uri,
        transport=transport,
        socket=socket,
        profile=profile,
        name=name or default_name,
        audio_per_minute=audio_per_minute,
        keep_unrecognised=keep_unrecognised,
    )


def default_audio_per_minute(max_session: timedelta) -> timedelta:
    """The default allowance, never less than one whole session."""
    return max(AUDIO_PER_MINUTE, max_session)


def check_listeners(listeners: tuple[ListenerSettings, ...], device: DeviceSettings, where: str) -> None:
    """At most one stdio listener, no socket twice, none on the control socket."""
    if sum(1 for listener in listeners if listener.transport == ListenerTransport.STDIO) > 1:
        raise ConfigError(f'{where}: "stdio://" is named more than once; a process has one stdin and one stdout')
    sockets = [listener.socket for listener in listeners if listener.socket is not None]
    for socket in sockets:
        if sockets.count(socket) > 1:
            raise ConfigError(f"{where}: the socket {str(socket)!r} is named more than once; give each listener its own")
        if socket == device.control_socket:
            raise ConfigError(
                f"{where}: the socket {str(socket)!r} is the control socket ([device] control_socket); a Wyoming client "
                "must never reach the control socket (it can forget data): choose another path"
            )


def _parse_listener(table: _Table, profile_names: list[str], max_session: timedelta) -> ListenerSettings:
    uri = table.get("uri", str, REQUIRED)
    profile = table.get("profile", str, None)
    if profile is not None and profile not in profile_names:
        table.fail("profile", profile, f"one of the profiles: {', '.join(profile_names)}")
    name = table.get("name", str, "").strip()
    if len(name) > 64:
        table.fail("name", name, "a name of at most 64 characters")
    per_minute = table.duration("audio_per_minute", format_duration(default_audio_per_minute(max_session)))
    if not max_session <= per_minute <= LONGEST_AUDIO_PER_MINUTE:
        table.fail(
            "audio_per_minute",
            table.get("audio_per_minute", str, ""),
            f"from [trigger] max_session ({format_duration(max_session)}: one whole utterance) to "
            f"{format_duration(LONGEST_AUDIO_PER_MINUTE)} of audio per minute",
        )
    keep_unrecognised = table.get("keep_unrecognised", bool, False)
    table.finish()
    where = f"{table.file}: {table.key_path('uri')}"
    return make_listener(uri, profile, name, where, table.key_path("uri"), per_minute, keep_unrecognised)


def _check_child_caps(profile: Profile, household: HouseholdSettings, path: Path, data: dict[str, Any]) -> None:
    """Children's data is capped household-wide; a child profile may not exceed the caps.
    The message quotes the values as written (`48h`, not `2d`)."""
    if not profile.is_child:
        return

    def written(table: Any, key: str, value: timedelta) -> str:
        raw = table.get(key) if isinstance(table, dict) else None
        return repr(raw) if isinstance(raw, str) else f"{format_duration(value)!r} (the default)"

    for key, value, cap_key, cap in (
        ("keep_audio", profile.keep_audio, "max_child_audio", household.max_child_audio),
        ("keep_transcript", profile.keep_transcript, "max_child_transcript", household.max_child_transcript),
    ):
        if value > cap:
            raise ConfigError(
                f"{path}: profiles.{profile.name}.{key} = {written(data['profiles'][profile.name], key, value)} is longer than "
                f"household.{cap_key} = {written(data.get('household'), cap_key, cap)}, the most a child profile "
                "may keep; "
                f"lower {key} or raise {cap_key}"
            )


def _parse_retention(table: _Table) -> RetentionSettings:
    sweep = table.duration("sweep", "60s")
    if not timedelta(seconds=1) <= sweep <= timedelta(hours=1):
        table.fail("sweep", sweep, "a duration from 1s to 1h")
    table.finish()
    return RetentionSettings(sweep=sweep)


def _parse_speaker(table: _Table) -> SpeakerSettings:
    default = Config.speaker
    identify = table.get("identify", bool, default.identify)
    threshold = table.get("threshold", (float, int), default.threshold)
    if not 0 < threshold <= 1:
        table.fail("threshold", threshold, "a number above 0, at most 1 (0.80 by default)")
    adult = table.get("adult_threshold", (float, int), max(default.adult_threshold, threshold))
    if not threshold <= adult <= 1:
        table.fail(
            "adult_threshold",
            adult,
            f"a number from speaker.threshold ({threshold}) to 1: tagging as an adult must never be the easier decision",
        )
    margin = table.get("margin", (float, int), default.margin)
    if not 0 <= margin < 1:
        table.fail("margin", margin, "a number from 0 to below 1 (0.06 by default)")
    table.finish()
    return SpeakerSettings(identify=identify, threshold=float(threshold), adult_threshold=float(adult), margin=float(margin))


def _parse_device(table: _Table, path: Path) -> DeviceSettings:
    data_dir = _relative_to(path, table.get("data_dir", str, "/var/lib/edge"))
    model = table.get("model", str, "auto")
    sample_rate = table.get("sample_rate", int, 16000)
    if sample_rate not in SAMPLE_RATES:
        table.fail("sample_rate", sample_rate, f"one of {', '.join(map(str, SAMPLE_RATES))}")
    device_name = table.get("input_device", (str, int), "")
    socket_path = table.get("control_socket", str, "")
    control_socket = _relative_to(path, socket_path) if socket_path else data_dir / "control.sock"
    if len(os.fsencode(control_socket)) > MAX_SOCKET_PATH:
        table.fail("control_socket", str(control_socket), f"a path of at most {MAX_SOCKET_PATH} bytes (a Unix socket limit)")
    table.finish()
    return DeviceSettings(
        data_dir=data_dir,
        model=model if model == "auto" else str(_relative_to(path, model)),
        sample_rate=sample_rate,
        input_device=str(device_name) if device_name != "" else None,
        control_socket=control_socket,
    )


def _parse_vault(table: _Table, path: Path) -> VaultSettings:
    backend = table.choice("backend", VAULT_BACKENDS, VaultBackend.KEYRING)
    key_path = table.get("path", str, "")
    if backend == VaultBackend.FILE and not key_path:
        table.fail("path", key_path, 'the path of the root key file (required when backend = "file")')
    if backend != VaultBackend.FILE and key_path:
        table.fail("path", key_path, 'no value: path is only used when backend = "file"')
    ring = table.choice("keyring", tuple(KeyringKind), KeyringKind.PERSISTENT)
    tcti = table.get("tcti", str, DEFAULT_TCTI)
    if tcti.split(":", 1)[0] not in TCTI_KINDS:
        table.fail(
            "tcti",
            tcti,
            f'a TPM connection such as "device:/dev/tpmrm0" or "swtpm:host=127.0.0.1,port=2321" (kinds: {", ".join(TCTI_KINDS)})',
        )
    nv_index = table.get("nv_index", int, DEFAULT_NV_INDEX)
    if not NV_INDEX_FIRST <= nv_index <= NV_INDEX_LAST:
        table.fail(
            "nv_index",
            nv_index,
            f"an NV index from {NV_INDEX_FIRST:#010x} to {NV_INDEX_LAST:#010x}, written in hex "
            "(the TPM owner's range; edge uses the index and the next one)",
        )
    for key in ("tcti", "nv_index"):
        if backend != VaultBackend.TPM and key in table.keys():
            table.fail(key, table.get(key, (str, int), ""), f'no value: {key} is only used when backend = "tpm"')
    table.finish()
    return VaultSettings(
        backend=backend,
        path=_relative_to(path, key_path) if key_path else None,
        keyring=ring,
        tcti=tcti,
        nv_index=nv_index,
    )


def _parse_trigger(table: _Table) -> TriggerSettings:
    mode = table.choice("mode", tuple(TriggerMode), TriggerMode.WAKE)
    wake_phrase = table.get("wake_phrase", str, "").strip()
    if mode == TriggerMode.WAKE and "wake_phrase" not in table.keys():
        raise ConfigError(
            f'{table.file}: [trigger] wake_phrase is missing, and mode = "wake" (the default) needs one: a phrase '
            f'the model knows, e.g. wake_phrase = "라디오" as in the example config; or set mode = "always" or "push_to_talk"',
            setting="trigger.wake_phrase",
        )
    if mode == TriggerMode.WAKE and not wake_phrase:
        table.fail("wake_phrase", wake_phrase, 'a phrase (required when mode = "wake")')
    grammar = table.get("grammar", list, [])
    for index, phrase in enumerate(grammar):
        if not isinstance(phrase, str) or not phrase.strip():
            table.fail(f"grammar[{index}]", phrase, "a non-empty phrase (string)")
    if len(set(grammar)) != len(grammar):
        table.fail("grammar", grammar, "a list of distinct phrases (one is repeated)")
    silence_end = table.duration("silence_end", "800ms")
    max_session = table.duration("max_session", "15s")
    wake_timeout = table.duration("wake_timeout", "5s")
    if not timedelta(milliseconds=200) <= silence_end <= timedelta(seconds=10):
        table.fail("silence_end", silence_end, "a duration from 200ms to 10s")
    if not timedelta(seconds=1) <= max_session <= timedelta(minutes=10):
        table.fail("max_session", max_session, "a duration from 1s to 10m")
    if not timedelta(seconds=1) <= wake_timeout <= timedelta(minutes=1):
        table.fail("wake_timeout", wake_timeout, "a duration from 1s to 1m")
    wake_confidence = table.get("wake_confidence", (float, int), 0.8)
    if not 0 <= wake_confidence <= 1:
        table.fail("wake_confidence", wake_confidence, "a number from 0 to 1")
    vad = table.get("vad_aggressiveness", int, 2)
    if vad not in (0, 1, 2, 3):
        table.fail("vad_aggressiveness", vad, "0, 1, 2 or 3")
    table.finish()
    return TriggerSettings(
        mode=mode,
        wake_phrase=wake_phrase,
        grammar=tuple(p.strip() for p in grammar),
        silence_end=silence_end,
        max_session=max_session,
        wake_timeout=wake_timeout,
        wake_confidence=float(wake_confidence),
        vad_aggressiveness=vad,
    )


def _parse_profile(name: str, table: _Table) -> Profile:
    if not _PROFILE_NAME.match(name):
        raise ConfigError(
            f"{table.file}: [profiles.{name}]: the profile name must be 1-32 characters: "
            "a lowercase letter first, then lowercase letters, digits, '-' or '_'"
        )
    kind = table.choice("kind", tuple(ProfileKind), REQUIRED)
    allow_training = table.get("allow_training", bool, False)
    if kind == ProfileKind.CHILD and allow_training:
        table.fail("allow_training", True, "false for a child profile (children's audio is never used for training)")
    profile = Profile(
        name=name,
        kind=kind,
        keep_audio=table.duration("keep_audio", "0s"),
        keep_transcript=table.duration("keep_transcript", "0s"),
        allow_training=allow_training,
        inactive_after=table.duration("inactive_after", "90d"),
    )
    if profile.inactive_after <= timedelta(0):
        table.fail("inactive_after", "0s", "a duration longer than 0s")
    table.finish()
    return profile


def _relative_to(config_path: Path, value: str) -> Path:
    """Relative paths in the config are relative to the config file's folder."""
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else (config_path.parent / candidate).resolve()


_MISSING = object()
REQUIRED = object()
_TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list", dict: "a table"}


class _Table:
    """One TOML table being validated: tracks which keys were read so leftovers are errors."""

    def __init__(self, data: Any, file: Path, prefix: str) -> None:
        self.file = file
        self.prefix = prefix
        self._data: dict[str, Any] = data
        self._seen: set[str] = set()

    def keys(self) -> list[str]:
        return list(self._data)

    def key_path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str, value: object, allowed: str) -> NoReturn:
        written = self._data.get(key, format_duration(value)) if isinstance(value, timedelta) else value  # as the user wrote it
        shown = str(written).lower() if isinstance(written, bool) else repr(written)  # TOML's true, not Python's True
        raise ConfigError(
            f"{self.file}: {self.key_path(key)} = {shown} is not allowed; use {allowed}", path=self.file, setting=self.key_path(key)
        )

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self._seen.add(key)
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            if default is REQUIRED:
                raise ConfigError(f"{self.file}: {self.key_path(key)} is missing; it is required")
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is a subclass of int in Python; a TOML `true` is never a number here.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            self.fail(key, value, " or ".join(_TYPE_NAMES[k] for k in kinds))
        return value

    def choice(self, key: str, allowed: tuple[Choice, ...], default: object) -> Choice:
        """One of `allowed` (StrEnum members), as that member."""
        self._seen.add(key)
        value = self._data.get(key, _MISSING)
        options = " or ".join(f'"{a}"' for a in allowed)
        if value is _MISSING:
            if default is REQUIRED:
                raise ConfigError(f"{self.file}: {self.key_path(key)} is missing; set it to {options}")
            return default  # type: ignore[return-value]
        if not isinstance(value, str) or value not in allowed:
            close = difflib.get_close_matches(value, [str(a) for a in allowed], n=1) if isinstance(value, str) else []
            self.fail(key, value, options + (f' (did you mean "{close[0]}"?)' if close else ""))
        return type(allowed[0])(value)

    def duration(self, key: str, default: str) -> timedelta:
        value = self.get(key, str, default)
        try:
            return parse_duration(value)
        except ValueError:
            self.fail(key, value, DURATION_ALLOWED)

    def table(self, key: str) -> _Table:
        value = self.get(key, dict, {})
        return _Table(value, self.file, self.key_path(key))

    def tables(self, key: str) -> list[_Table]:
        """An array of tables ([[key]] in TOML)."""
        items = self.get(key, list, [])
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                self.fail(f"{key}[{index}]", item, f"a table ([[{self.key_path(key)}]] in TOML)")
        return [_Table(item, self.file, f"{self.key_path(key)}[{index}]") for index, item in enumerate(items)]

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            where = f"[{self.prefix}]" if self.prefix else "the top level"
            known = sorted(self._seen)
            raise ConfigError(
                f"{self.file}: unknown key {self.key_path(unknown[0])!r} in {where}; the keys allowed there are: {', '.join(known)}"
            )
