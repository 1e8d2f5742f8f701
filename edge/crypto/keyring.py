"""The Linux kernel key retention service, through the add_key/keyctl syscalls.

No PyPI binding builds on Python 3.11, and libkeyutils may be absent, so this
calls the syscalls directly through libc. Only the few operations the vault
needs: add (or update) a "user" key, find it, read it, invalidate it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform

from edge.errors import KeyringError

SESSION_KEYRING = -3
"""KEY_SPEC_SESSION_KEYRING: the caller's session keyring (inherited by children)."""
PROCESS_KEYRING = -2
USER_KEYRING = -4

_KEYCTL_GET_KEYRING_ID = 0
_KEYCTL_JOIN_SESSION_KEYRING = 1
_KEYCTL_SEARCH = 10
_KEYCTL_READ = 11
_KEYCTL_INVALIDATE = 21
_KEYCTL_GET_PERSISTENT = 22

_SYSCALLS = {  # (add_key, keyctl) numbers per architecture
    "x86_64": (248, 250),
    "aarch64": (217, 219),
    "armv7l": (309, 311),
    "armv6l": (309, 311),
}


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


_LIBC = _libc()


def _numbers() -> tuple[int, int]:
    machine = platform.machine()
    if machine not in _SYSCALLS:
        raise KeyringError(f"the kernel keyring is not supported on {machine} by this version of edge")
    return _SYSCALLS[machine]


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise KeyringError(f"the kernel keyring refused to {what}: {os.strerror(code)} ({errno.errorcode.get(code, code)})")
    return result


def _keyctl(operation: int, *args: int | bytes | ctypes.Array[ctypes.c_char] | None) -> int:
    converted = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return int(_LIBC.syscall(ctypes.c_long(_numbers()[1]), ctypes.c_long(operation), *converted))


def join_new_session_keyring() -> int:
    """Give this process (and its future children) a fresh, private session keyring."""
    return _check(_keyctl(_KEYCTL_JOIN_SESSION_KEYRING, None), "create a session keyring")


def persistent_keyring(link_into: int = PROCESS_KEYRING) -> int:
    """The calling user's persistent keyring: outlives processes, not reboots. Linking it
    into our process keyring makes its keys "possessed", hence readable by us."""
    return _check(_keyctl(_KEYCTL_GET_PERSISTENT, -1, link_into), "open the persistent keyring")


def add(description: str, payload: bytes, keyring: int) -> int:
    """Add a "user" key, or replace the payload of the one with this description."""
    result = _LIBC.syscall(
        ctypes.c_long(_numbers()[0]),
        b"user",
        description.encode(),
        ctypes.c_char_p(payload),
        ctypes.c_size_t(len(payload)),
        ctypes.c_long(keyring),
    )
    return _check(result, f"store key {description!r}")


def find(description: str, keyring: int) -> int | None:
    """Serial of the "user" key with this description in (or below) `keyring`, or None."""
    result = _keyctl(_KEYCTL_SEARCH, keyring, b"user", description.encode(), 0)
    if result < 0:
        if ctypes.get_errno() in (errno.ENOKEY, errno.EKEYEXPIRED, errno.EKEYREVOKED):
            return None
        _check(result, f"search for key {description!r}")
    return result


def read(serial: int) -> bytes:
    buffer = ctypes.create_string_buffer(256)
    size = _check(_keyctl(_KEYCTL_READ, serial, buffer, 256), "read a key")
    data = buffer.raw[: min(size, 256)]
    ctypes.memset(buffer, 0, 256)
    return data


def invalidate(serial: int) -> None:
    """Destroy the key now: the kernel unlinks it everywhere and frees its payload."""
    _check(_keyctl(_KEYCTL_INVALIDATE, serial), "destroy a key")
