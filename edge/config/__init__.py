"""The household config: which file, its TOML parsed into frozen, typed settings.

settings (what the code reads), parse (the validation, and `allowed_keys`: every key by
table), table (the TOML table reader that refuses unknown keys), listeners (Wyoming listener
URIs), files (which config file, and reading it).
"""

from edge.config.files import BUILTIN_CONFIG, SYSTEM_CONFIG, load_config, resolve_config_path
from edge.config.listeners import LISTENER_URIS, check_listeners, default_audio_per_minute, make_listener
from edge.config.parse import NV_INDEX_FIRST, NV_INDEX_LAST, TCTI_KINDS, allowed_keys, parse_config
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

__all__ = [
    "BUILTIN_CONFIG",
    "DEFAULT_NV_INDEX",
    "DEFAULT_TCTI",
    "LISTENER_URIS",
    "NV_INDEX_FIRST",
    "NV_INDEX_LAST",
    "SYSTEM_CONFIG",
    "TCTI_KINDS",
    "Config",
    "DeviceSettings",
    "HouseholdSettings",
    "ListenerSettings",
    "Profile",
    "RetentionSettings",
    "SpeakerSettings",
    "TriggerSettings",
    "VaultSettings",
    "VoiceCommandSettings",
    "allowed_keys",
    "check_listeners",
    "default_audio_per_minute",
    "load_config",
    "make_listener",
    "parse_config",
    "resolve_config_path",
]
