"""The TOML table reader under the config parser: typed reads with defaults, and unknown
keys refused.

A reader reads every key a table allows, whether it is there or not (so a default applies);
whatever it did not read when the table is finished is a typo or a key from elsewhere, and
an error. Which keys a table allows is therefore known only to the parser, which is what
edge.config.parse.allowed_keys asks.
"""

from __future__ import annotations

import difflib
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from edge.durations import ALLOWED as DURATION_ALLOWED
from edge.durations import format_duration, parse_duration
from edge.errors import ConfigError

Choice = TypeVar("Choice", bound=StrEnum)

_MISSING = object()
REQUIRED = object()
"""A default that means: the key must be there."""
_TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list", dict: "a table"}


class Table:
    """One TOML table being validated: tracks which keys were read so leftovers are errors."""

    def __init__(self, data: Any, file: Path, prefix: str, allowed: dict[str, tuple[str, ...]] | None = None) -> None:
        self.file = file
        self.prefix = prefix
        self._data: dict[str, Any] = data
        self._seen: set[str] = set()
        self._allowed = allowed
        """Where each finished table records the keys it allows, by prefix (for edge.config.parse.allowed_keys)."""

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

    def table(self, key: str) -> Table:
        value = self.get(key, dict, {})
        return Table(value, self.file, self.key_path(key), self._allowed)

    def tables(self, key: str) -> list[Table]:
        """An array of tables ([[key]] in TOML)."""
        items = self.get(key, list, [])
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                self.fail(f"{key}[{index}]", item, f"a table ([[{self.key_path(key)}]] in TOML)")
        return [Table(item, self.file, f"{self.key_path(key)}[{index}]", self._allowed) for index, item in enumerate(items)]

    def finish(self) -> None:
        """Every key the table holds was read: any other is refused, naming those allowed
        (the keys read, since a reader reads each key it allows, present or not)."""
        if self._allowed is not None:
            self._allowed[self.prefix] = tuple(sorted(self._seen))
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            where = f"[{self.prefix}]" if self.prefix else "the top level"
            known = sorted(self._seen)
            raise ConfigError(
                f"{self.file}: unknown key {self.key_path(unknown[0])!r} in {where}; the keys allowed there are: {', '.join(known)}"
            )
