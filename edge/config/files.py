"""Which household config file is read, and reading it (then edge.config.parse validates it)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from edge.config.parse import parse_config
from edge.config.settings import Config
from edge.errors import ConfigError
from edge.invocation import program

SYSTEM_CONFIG = Path("/etc/edge/household.toml")
BUILTIN_CONFIG = (Path(__file__).parent.parent / "data" / "household.example.toml").resolve()


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
