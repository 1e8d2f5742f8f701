"""The speaker encoder's weights: resemblyzer's pretrained.pt, read without torch.

The file is torch's legacy checkpoint format: four pickles (a magic number, the
protocol version, facts about the writer's machine, then the checkpoint itself, whose
tensors name their storages by persistent id), a pickle listing the storage keys, then
each storage in that order as an 8-byte little-endian element count and its raw
little-endian data. Unpickling runs whatever code a pickle names, so the file's digest
is checked first and the pickles are read by an unpickler that knows only the globals
a state dict needs, each replaced by a harmless stand-in: a different file, or a
pickle naming anything else, is refused.

The file is 17 MB, of which 5.7 are the model's weights (the rest, the optimizer's
storages), and is never held whole: it is read twice through one open descriptor. The
first pass streams it through SHA-256 in small chunks; nothing is unpickled unless that
digest is resemblyzer's. The second parses it through a reader that hashes every byte
it hands out, keeps only the storages the model uses, reads past the others in small
chunks, reads on to the end, and the weights are returned only if its digest is the
same again: the bytes parsed are the bytes whose digest was checked, even if the file
changed between or during the passes.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.errors import ModelError
from edge.invocation import pip_install

PACKAGE = "resemblyzer==0.1.4"
"""The PyPI release whose weights edge uses."""
FILE_NAME = "pretrained.pt"
SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
"""Digest of resemblyzer 0.1.4's pretrained.pt: the only file loaded."""


def install_command() -> str:
    """How to (re)install the weights without torch into the environment edge runs from
    (a clone's .venv or an installed device's /opt/edge/venv alike)."""
    return pip_install(f"--no-deps --force-reinstall {PACKAGE}")


_MAGIC = 0x1950A86A20F9469CFC6C
"""The first pickle of every legacy torch file."""
_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "<i1",
    "ByteStorage": "<u1",
    "BoolStorage": "<?",
}
"""torch.<name> storage types and the little-endian numpy type of their elements."""
Weights = dict[str, NDArray[np.float32]]
"""A state dict: parameter name ("lstm.weight_ih_l0", ...) to its values."""


def find_weights() -> Path:
    """pretrained.pt inside the installed resemblyzer package, located without importing
    the package (its __init__ imports torch)."""
    try:
        spec = importlib.util.find_spec("resemblyzer")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise ModelError(f"the speaker encoder's weights are not installed: run `{install_command()}`")
    path = Path(spec.origin).parent / FILE_NAME
    if not path.is_file():
        raise ModelError(f"{path}: the speaker encoder's weights file is missing; reinstall it with `{install_command()}`", path=path)
    return path


def load_weights(path: Path | None = None) -> Weights:
    """The checkpoint's model_state as float32 arrays, from `path` (default: the installed
    package's file) if its SHA-256 is resemblyzer 0.1.4's. The file is read twice through one
    descriptor, never held whole: its digest first, then the parse, which hashes every byte it
    reads to the end, so the weights returned come from the very bytes that were checked."""
    path = path or find_weights()
    try:
        with path.open("rb") as file:  # one descriptor for both passes
            _check(path, _file_sha256(file))
            file.seek(0)
            reader = _HashingReader(file)
            weights = _parse(reader, str(path))
            reader.read_to_end()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the speaker encoder's weights ({exc.strerror})", path=path) from None
    _check(path, reader.hexdigest())  # differs from the first pass's only if the file changed while being read
    return weights


def _check(path: Path, found: str) -> None:
    if found != SHA256:
        raise ModelError(
            f"{path}: not the speaker encoder weights edge expects (SHA-256 {found}, expected {SHA256}); "
            f"reinstall them with `{install_command()}`",
            path=path,
        )


_CHUNK = 1 << 20
"""Bytes read at a time from the parts of the file not kept (the optimizer's storages)."""


def _file_sha256(file: io.BufferedIOBase) -> str:
    """The first pass: the digest of the whole file, read in 256 KiB chunks (a seam for tests)."""
    return hashlib.file_digest(file, "sha256").hexdigest()


class _HashingReader:
    """A seekable binary stream that hashes every byte it hands out, for the unpickler
    (read, readinto, readline: no peek, so it never reads past a pickle's end) and then
    for the storages."""

    def __init__(self, stream: io.BufferedIOBase) -> None:
        self._stream = stream
        self._sha256 = hashlib.sha256()

    def head(self, size: int) -> bytes:
        """The stream's next `size` bytes (fewer at its end), left unread and unhashed."""
        here = self._stream.tell()
        data = self._stream.read(size)
        self._stream.seek(here)
        return data

    def remaining(self) -> int:
        """Bytes left to read: a storage claiming more is refused before memory is set
        aside for it."""
        here = self._stream.tell()
        end = self._stream.seek(0, io.SEEK_END)
        self._stream.seek(here)
        return end - here

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._sha256.update(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):  # a buffered stream may return less than asked before its end
            count = self._stream.readinto(view[done:])
            if not count:
                break
            done += count
        self._sha256.update(view[:done])
        return done

    def readline(self) -> bytes:
        data = self._stream.readline()
        self._sha256.update(data)
        return data

    def skip(self, size: int) -> int:
        """Reads and hashes `size` bytes (fewer at the end) in small chunks, keeping none."""
        buffer = bytearray(min(size, _CHUNK))
        done = 0
        while done < size:
            count = self.readinto(memoryview(buffer)[: min(_CHUNK, size - done)])
            if not count:
                break
            done += count
        return done

    def read_to_end(self) -> None:
        while self.skip(_CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()


# -- stand-ins for the globals a state dict names ----------------------------------------------


@dataclass(frozen=True)
class _StorageType:
    """Stands in for torch.FloatStorage and the like: only says the element type."""

    name: str
    dtype: str


@dataclass(frozen=True)
class _Storage:
    """A storage the checkpoint refers to; its data follows the pickles."""

    key: str
    dtype: str
    count: int


@dataclass(frozen=True)
class _Tensor:
    """What torch._utils._rebuild_tensor_v2 would have built: a view of a storage."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: object, offset: object, shape: object, stride: object, *_rest: object) -> _Tensor:
    """Records the view; requires_grad, hooks and metadata do not matter to inference.
    A malformed view is a ValueError, which read_checkpoint reports with the file's name."""
    if not (isinstance(storage, _Storage) and isinstance(offset, int) and isinstance(shape, tuple) and isinstance(stride, tuple)):
        raise ValueError("a tensor is malformed")
    if len(shape) != len(stride) or not all(isinstance(n, int) and n >= 0 for n in (offset, *shape, *stride)):
        raise ValueError("a tensor is malformed")
    elements = math.prod(shape)
    if elements and offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) >= storage.count:
        raise ValueError(f"a tensor reaches past its storage {storage.key!r}")
    if elements > storage.count:  # only an expanded view (stride 0) could: no parameter is one
        raise ValueError(f"a tensor repeats its storage {storage.key!r}; parameters never do")
    return _Tensor(storage, offset, shape, stride)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Unpickler(pickle.Unpickler):
    """Knows collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch's storage
    types (as stand-ins); any other global is refused. Persistent ids must name storages."""

    def __init__(self, reader: _HashingReader, where: str) -> None:
        super().__init__(reader)
        self.where = where
        self.storages: dict[str, _Storage] = {}
        """Every storage the pickle referred to, by key."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise ModelError(f"{self.where}: the checkpoint names {module}.{name}, which a state dict never needs; refusing to load it")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise ModelError(f"{self.where}: the checkpoint refers to something other than a storage ({type(pid).__name__})")
        _, kind, key, _location, count, view = pid
        if not isinstance(kind, _StorageType) or not isinstance(key, str) or not _is_int(count) or count < 0:
            raise ModelError(f"{self.where}: a storage reference in the checkpoint is malformed")
        if view is not None:
            raise ModelError(f"{self.where}: the checkpoint uses storage views (torch < 0.4), which edge does not read")
        storage = _Storage(key, kind.dtype, count)
        if self.storages.setdefault(key, storage) != storage:
            raise ModelError(f"{self.where}: storage {key!r} is described twice, differently")
        return storage


def read_checkpoint(data: bytes | io.BufferedIOBase, where: str) -> Weights:
    """The model_state of a legacy torch checkpoint, given whole or as a seekable binary
    stream (`where` names it in errors). Storages the model does not use (the optimizer's)
    are read past in small chunks, not kept."""
    return _parse(_HashingReader(io.BytesIO(data) if isinstance(data, bytes) else data), where)


def _parse(reader: _HashingReader, where: str) -> Weights:
    """read_checkpoint's parse, from the reader's current position; it reads every storage
    (kept or not) and nothing after the last one."""
    if reader.head(4) == b"PK\x03\x04":
        raise ModelError(f"{where}: a zip-format torch checkpoint; edge reads only the legacy format resemblyzer 0.1.4 ships")
    try:
        magic, protocol, sys_info = (_Unpickler(reader, where).load() for _ in range(3))
        if magic != _MAGIC or protocol != _PROTOCOL:
            raise ModelError(f"{where}: not a legacy torch checkpoint (magic number {magic!r}, protocol {protocol!r})")
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise ModelError(f"{where}: the checkpoint was written on a big-endian machine; edge reads only little-endian ones")
        unpickler = _Unpickler(reader, where)
        checkpoint = unpickler.load()
        keys = _Unpickler(reader, where).load()
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ModelError(f"{where}: not a readable torch checkpoint ({exc})") from None
    state = checkpoint.get("model_state") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, _Tensor) for k, v in state.items()):
        raise ModelError(f"{where}: the checkpoint has no model_state of tensors")
    if not isinstance(keys, list) or set(keys) != set(unpickler.storages) or len(keys) != len(unpickler.storages):
        raise ModelError(f"{where}: the checkpoint's storage list does not match its tensors")
    wanted = {tensor.storage.key for tensor in state.values()}
    storages: dict[str, NDArray[Any]] = {}
    for key in keys:
        storage = unpickler.storages[key]
        header = reader.read(8)
        count = int.from_bytes(header, "little") if len(header) == 8 else -1
        size = count * np.dtype(storage.dtype).itemsize
        if count == storage.count and key in wanted and size <= reader.remaining():
            storages[key] = np.empty(count, dtype=storage.dtype)
            done = reader.readinto(storages[key])
        elif count == storage.count:
            done = reader.skip(size)
        if count != storage.count or done != size:
            raise ModelError(f"{where}: storage {key!r} is truncated or has the wrong size; reinstall with `{install_command()}`")
    return {name: _materialise(tensor, storages[tensor.storage.key]) for name, tensor in state.items()}


def _materialise(tensor: _Tensor, storage: NDArray[Any]) -> NDArray[np.float32]:
    """A contiguous native float32 copy of the view (never a view of the file's bytes)."""
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[tensor.offset :], shape=tensor.shape, strides=tuple(s * item for s in tensor.stride), writeable=False
    )
    return np.array(view, dtype=np.float32, order="C", copy=True)  # ascontiguousarray would keep a view
