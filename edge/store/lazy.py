"""A table of the keystore read on demand and written back at commit: the bookkeeping of
which rows were read (known), changed (dirty) or removed (gone), and the flush that writes
only those. A commit therefore costs the rows it touches, not the number of rows kept.

A table (edge.store.tables) says only how one row is loaded, sealed and deleted.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import MutableMapping
from typing import TypeVar

Value = TypeVar("Value")


class LazyTable(MutableMapping[str, Value]):
    """Rows by id, opened when first asked for; changes stay in memory until `flush`."""

    def __init__(self) -> None:
        self._known: dict[str, Value] = {}
        """Rows opened or set in this transaction (a removed one is not here)."""
        self._dirty: set[str] = set()
        """Ids set since the last flush: sealed and written by the next."""
        self._gone: set[str] = set()
        """Ids removed since the last flush: deleted by the next (and absent until then)."""

    # -- what a table says: one row's load, seal, delete ------------------------------------

    @abstractmethod
    def _load(self, key: str) -> Value | None:
        """The stored row `key`, opened; None if there is none."""

    @abstractmethod
    def _seal(self, key: str, value: Value) -> None:
        """Write `value` as the row `key` (inserted or replaced) into the open transaction."""

    @abstractmethod
    def _delete(self, key: str) -> None:
        """Delete the row `key`, if stored, in the open transaction."""

    def _stored(self, key: str) -> bool:
        """Whether the database holds the row `key` (a table may answer without opening it)."""
        return self.get(key) is not None

    # -- the bookkeeping ------------------------------------------------------------------

    def __getitem__(self, key: str) -> Value:
        if key in self._gone:
            raise KeyError(key)
        found = self._known.get(key)
        if found is None:
            found = self._load(key)
            if found is None:
                raise KeyError(key)
            self._known[key] = found
        return found

    def __setitem__(self, key: str, value: Value) -> None:
        self._known[key] = value
        self._dirty.add(key)
        self._gone.discard(key)

    def __delitem__(self, key: str) -> None:
        self[key]  # KeyError if there is none
        del self._known[key]
        self._dirty.discard(key)
        self._gone.add(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or key in self._gone:
            return False
        return key in self._known or self._stored(key)

    def flush(self) -> None:
        """Write every change into the open SQL transaction (the caller commits): removals
        first, then the changed rows, each in id order."""
        for key in sorted(self._gone):
            self._delete(key)
        self._gone.clear()
        for key in sorted(self._dirty):
            self._seal(key, self._known[key])
        self._dirty.clear()
