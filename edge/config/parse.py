"""The household config's parser: a TOML document validated into edge.config.settings.

Unknown keys are errors (a typo such as `keep_adio` must never silently fall back
to a default). Every error names the file, the key path and what is allowed.
To add a key: read it in its table's `_parse_*` here, add its field to the settings, and
document it in the example config and README's Configuration table (tests/test_config.py
checks both against `allowed_keys`).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from edge.config.listeners import LONGEST_AUDIO_PER_MINUTE, MAX_SOCKET_PATH, check_listeners, default_audio_per_minute, make_listener
from edge.config.settings import (
    DEFAULT_NV_INDEX,
    DEFAULT_TCTI,
    Config,
    DeviceSettings,
    HouseholdSettings,
    ListenerSettings,
    Profile,
    RetentionSettings,
    SpeakerSettings,
    TriggerSettings,
    VaultSettings,
    VoiceCommandSettings,
)
from edge.config.table import REQUIRED, Table
from edge.durations import format_duration
from edge.errors import ConfigError
from edge.values import KeyringKind, ProfileKind, TriggerMode, VaultBackend

VAULT_BACKENDS = (VaultBackend.KEYRING, VaultBackend.FILE, VaultBackend.TPM)
"""What [vault] backend may say (the demo's in-memory vault is never configured)."""
TCTI_KINDS = ("device", "swtpm", "mssim", "tabrmd")
"""The TSS's TCTI modules: the kernel device, a TPM simulator, the access broker."""
NV_INDEX_FIRST, NV_INDEX_LAST = 0x01000000, 0x013FFFFE
SAMPLE_RATES = (8000, 16000, 22050, 32000, 44100, 48000)
_PROFILE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def parse_config(data: dict[str, Any], path: Path) -> Config:
    """Validate a parsed TOML document; `path` is used in messages and for relative paths."""
    return _parse(data, path, None)


_PROBE: dict[str, Any] = {"trigger": {"wake_phrase": "x"}, "profiles": {"name": {"kind": "adult"}}, "wyoming": [{"uri": "stdio://"}]}
"""The least config with one table of each kind, for allowed_keys."""
_PROBE_TABLES = {
    "": "",
    **{table: table for table in ("device", "vault", "trigger", "household", "retention", "speaker", "voice_commands")},
    "profiles.name": "profiles.NAME",
    "wyoming[0]": "wyoming",
}
"""Each probed table's prefix, and the name allowed_keys gives it (the table "profiles" is
left out: its keys are the profiles' names)."""


def allowed_keys() -> dict[str, tuple[str, ...]]:
    """Every key the config allows, by table: "" (the top level: the tables), "device", ...,
    "profiles.NAME" (each profile), "wyoming" (each [[wyoming]] listener). Recorded while the
    parser reads a config with one table of each kind, so the parser is the only list."""
    allowed: dict[str, tuple[str, ...]] = {}
    _parse(_PROBE, Path("/probe.toml"), allowed)
    return {name: allowed[prefix] for prefix, name in _PROBE_TABLES.items()}


def _parse(data: dict[str, Any], path: Path, allowed: dict[str, tuple[str, ...]] | None) -> Config:
    root = Table(data, path, "", allowed)
    device = _parse_device(root.table("device"), path)
    vault = _parse_vault(root.table("vault"), path)
    trigger = _parse_trigger(root.table("trigger"))
    household_table = root.table("household")
    retention = _parse_retention(root.table("retention"))
    profiles_table = root.table("profiles")
    listener_tables = root.tables("wyoming")
    speaker = _parse_speaker(root.table("speaker"))
    voice_commands = _parse_voice_commands(root.table("voice_commands"), trigger)
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
        voice_commands=voice_commands,
    )


def _parse_listener(table: Table, profile_names: list[str], max_session: timedelta) -> ListenerSettings:
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


def _parse_retention(table: Table) -> RetentionSettings:
    sweep = table.duration("sweep", "60s")
    if not timedelta(seconds=1) <= sweep <= timedelta(hours=1):
        table.fail("sweep", sweep, "a duration from 1s to 1h")
    table.finish()
    return RetentionSettings(sweep=sweep)


def _parse_speaker(table: Table) -> SpeakerSettings:
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


_COMMAND_KEYS = ("forget_last", "forget_today", "guest_on", "guest_off", "confirm")


def _parse_voice_commands(table: Table, trigger: TriggerSettings) -> VoiceCommandSettings:
    """Phrases are compared with what the recognizer outputs: words one space apart. None may
    be another command's, the wake phrase or a grammar phrase (one utterance, one meaning)."""
    phrases: dict[str, str] = {}
    for key in _COMMAND_KEYS:
        written = table.get(key, str, "")
        phrase = " ".join(written.split())
        if phrase and (phrase in phrases.values() or phrase == trigger.wake_phrase or phrase in trigger.grammar):
            table.fail(
                key, written, "a phrase no other command, the wake phrase or a [trigger] grammar phrase uses (one utterance, one meaning)"
            )
        phrases[key] = phrase
    if bool(phrases["guest_on"]) != bool(phrases["guest_off"]):
        key = "guest_off" if phrases["guest_on"] else "guest_on"
        table.fail(key, phrases[key], "a phrase: guest_on and guest_off go together (guest mode must be something a voice can end)")
    if phrases["confirm"] and not (phrases["forget_last"] or phrases["forget_today"] or phrases["guest_off"]):
        table.fail(
            "confirm",
            phrases["confirm"],
            '"" (no confirmation): confirm is the reply to forget_last, forget_today or guest_off, and none is set',
        )
    guest_limit = table.duration("guest_limit", "2h")
    if not timedelta(minutes=1) <= guest_limit <= timedelta(hours=24):
        table.fail("guest_limit", guest_limit, "a duration from 1m to 24h")
    confirm_window = table.duration("confirm_window", "10s")
    if not timedelta(seconds=2) <= confirm_window <= timedelta(minutes=1):
        table.fail("confirm_window", confirm_window, "a duration from 2s to 1m")
    table.finish()
    return VoiceCommandSettings(**phrases, guest_limit=guest_limit, confirm_window=confirm_window)


def _parse_device(table: Table, path: Path) -> DeviceSettings:
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


def _parse_vault(table: Table, path: Path) -> VaultSettings:
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


def _parse_trigger(table: Table) -> TriggerSettings:
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


def _parse_profile(name: str, table: Table) -> Profile:
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
