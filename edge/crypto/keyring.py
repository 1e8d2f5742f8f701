"""The Linux kernel key retention service, through libkeyutils (Debian's libkeyutils1).

No PyPI binding builds on Python 3.11, so this calls the C library through ctypes. Not
raw syscalls: their numbers depend on the ABI of the interpreter, not on the machine the
kernel reports (32-bit Pi OS on a Pi 4 runs a 64-bit kernel that says "aarch64", where
the aarch64 numbers are other calls entirely); the library is built for the interpreter's
ABI, so it cannot get that wrong. Only the few operations the vault needs: add (or
update) a "user" key, find it, read it, invalidate it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

from edge.errors import KeyringError

SESSION_KEYRING = -3
"""KEY_SPEC_SESSION_KEYRING: the caller's session keyring (inherited by children)."""
PROCESS_KEYRING = -2
USER_KEYRING = -4
LIBRARY = "keyutils"
"""libkeyutils.so.1, from Debian's libkeyutils1."""

_serial = ctypes.c_int32  # key_serial_t
_SIGNATURES: dict[str, tuple[type, list[type]]] = {
    "add_key": (_serial, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t, _serial]),
    "keyctl_search": (ctypes.c_long, [_serial, ctypes.c_char_p, ctypes.c_char_p, _serial]),
    "keyctl_read": (ctypes.c_long, [_serial, ctypes.c_void_p, ctypes.c_size_t]),
    "keyctl_invalidate": (ctypes.c_long, [_serial]),
    "keyctl_get_persistent": (ctypes.c_long, [ctypes.c_int, _serial]),  # uid_t; -1 = the caller
    "keyctl_join_session_keyring": (_serial, [ctypes.c_char_p]),
}


def load_library(name: str | None) -> ctypes.CDLL:
    """libkeyutils with every function's C signature declared (so ctypes passes 32-bit key
    serials and sizes exactly as the ABI wants), or KeyringError saying what to install."""
    try:
        if name is None:
            raise OSError("not found")
        library = ctypes.CDLL(name, use_errno=True)
    except OSError:
        raise KeyringError(
            "the kernel keyring needs the library libkeyutils.so.1, which is not installed (sudo apt-get install libkeyutils1)"
        ) from None
    for function, (result, arguments) in _SIGNATURES.items():
        call = getattr(library, function)
        call.restype, call.argtypes = result, arguments
    return library


_library: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _library
    if _library is None:
        _library = load_library(ctypes.util.find_library(LIBRARY))
    return _library


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise KeyringError(f"the kernel keyring refused to {what}: {os.strerror(code)} ({errno.errorcode.get(code, code)})")
    return result


def join_new_session_keyring() -> int:
    """Give this process (and its future children) a fresh, private session keyring."""
    return _check(_lib().keyctl_join_session_keyring(None), "create a session keyring")


def persistent_keyring(link_into: int = PROCESS_KEYRING) -> int:
    """The calling user's persistent keyring: outlives processes, not reboots. Linking it
    into our process keyring makes its keys "possessed", hence readable by us."""
    return _check(_lib().keyctl_get_persistent(-1, link_into), "open the persistent keyring")


def persistent_supported() -> bool:
    """Whether this kernel has persistent keyrings (CONFIG_PERSISTENT_KEYRINGS; Raspberry Pi
    kernels are built without them): False only when the kernel says it has none."""
    result = _lib().keyctl_get_persistent(-1, PROCESS_KEYRING)
    if result < 0 and ctypes.get_errno() in (errno.EOPNOTSUPP, errno.ENOSYS):
        return False
    _check(result, "open the persistent keyring")
    return True


def add(description: str, payload: bytes, keyring: int) -> int:
    """Add a "user" key, or replace the payload of the one with this description."""
    result = _lib().add_key(b"user", description.encode(), payload, len(payload), keyring)
    return _check(result, f"store key {description!r}")


def find(description: str, keyring: int) -> int | None:
    """Serial of the "user" key with this description in (or below) `keyring`, or None."""
    result = _lib().keyctl_search(keyring, b"user", description.encode(), 0)
    if result < 0:
        if ctypes.get_errno() in (errno.ENOKEY, errno.EKEYEXPIRED, errno.EKEYREVOKED):
            return None
        _check(result, f"search for key {description!r}")
    return int(result)


def read(serial: int) -> bytes:
    buffer = ctypes.create_string_buffer(256)
    size = _check(_lib().keyctl_read(serial, buffer, 256), "read a key")
    data = buffer.raw[: min(size, 256)]
    ctypes.memset(buffer, 0, 256)
    return data


def invalidate(serial: int) -> None:
    """Destroy the key now: the kernel unlinks it everywhere and frees its payload."""
    _check(_lib().keyctl_invalidate(serial), "destroy a key")
