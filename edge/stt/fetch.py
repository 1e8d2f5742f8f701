"""Download, verify and install a Vosk model: the only code in edge that downloads.

It runs only when a person asks (`edge-agent model fetch`), never while the agent
runs (the service has no network at all). The archive goes to a temporary folder
beside the destination; its SHA-256 must match before anything is unpacked; every
member is checked (no absolute paths, no `..`, no links or devices, bounded size);
the model folder appears in the destination by one atomic rename, or not at all.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from edge.errors import ModelError
from edge.stt.model_path import is_model_dir

MAX_ARCHIVE_BYTES = 4 << 30
"""Largest download accepted (the big Vosk models are about 2 GB)."""
MAX_UNPACKED_BYTES = 8 << 30
CHUNK = 1 << 16
TIMEOUT = 30.0
"""Seconds without progress before the download is abandoned."""

Progress = Callable[[int, "int | None"], None]
"""Called with (bytes so far, total bytes or None) as the download proceeds."""


@dataclass(frozen=True)
class Fetched:
    path: Path
    """The installed model folder."""
    already: bool
    """True when the folder was there already and nothing was downloaded."""


def default_models_dir() -> Path:
    """Where `model = "auto"` looks: /usr/share/vosk for root, ~/.cache/vosk otherwise."""
    return Path("/usr/share/vosk") if os.geteuid() == 0 else Path.home() / ".cache" / "vosk"


def fetch_model(url: str, sha256: str, dest: Path, name: str | None = None, progress: Progress | None = None) -> Fetched:
    """Install the model archived at `url` as dest/NAME (NAME: the archive's top folder)."""
    expected = _check_digest_text(sha256)
    if urllib.parse.urlsplit(url).scheme not in ("https", "http", "file"):
        raise ModelError(f"{url}: only https://, http:// and file:// addresses can be fetched")
    if name is not None and (target := dest / name).exists():
        if is_model_dir(target):
            return Fetched(target, already=True)
        raise ModelError(f"{target} exists but is not a Vosk model; move it away and fetch again")
    try:
        _public_dirs(dest)
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
    except OSError as exc:
        raise ModelError(f"{dest}: cannot create the model folder: {exc.strerror}") from None
    try:
        archive = work / "archive"
        digest = _download(url, archive, progress)
        if not hmac.compare_digest(digest, expected):
            raise ModelError(
                f"{url}: the download's SHA-256 is {digest}, not the pinned {expected}. "
                "It was damaged or changed on the way; nothing was installed."
            )
        unpacked = work / "unpacked"
        _unpack(archive, unpacked, url)
        root = _model_root(unpacked, url)
        target = dest / (name or root.name)
        if target.exists():
            raise ModelError(f"{target} exists already; remove it first to replace it")
        os.chmod(root, 0o755)
        os.rename(root, target)  # same filesystem: the model appears whole or not at all
        return Fetched(target, already=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_digest_text(sha256: str) -> str:
    text = sha256.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ModelError(f"--sha256 {sha256!r} is not a SHA-256 digest (64 hex digits)")
    return text


def _download(url: str, path: Path, progress: Progress | None) -> str:
    """Stream `url` into `path`, hashing as it goes; return the hex digest."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response, path.open("wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > MAX_ARCHIVE_BYTES:
                raise ModelError(f"{url}: {total} bytes is larger than any Vosk model ({MAX_ARCHIVE_BYTES} at most)")
            done = 0
            while chunk := response.read(CHUNK):
                done += len(chunk)
                if done > MAX_ARCHIVE_BYTES:
                    raise ModelError(f"{url}: more than {MAX_ARCHIVE_BYTES} bytes; not a Vosk model")
                digest.update(chunk)
                out.write(chunk)
                if progress:
                    progress(done, total)
    except urllib.error.HTTPError as exc:
        raise ModelError(f"{url}: the server answered {exc.code} {exc.reason}; nothing was installed") from None
    except http.client.HTTPException as exc:  # a bad status line, a cut chunked body, too many headers
        detail = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        raise ModelError(f"{url}: the server's answer is not valid HTTP ({detail[:200]}); nothing was installed") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise ModelError(f"{url}: the download failed ({reason}); nothing was installed") from None
    if total is not None and done != total:
        raise ModelError(f"{url}: the download stopped after {done} of {total} bytes; nothing was installed")
    return digest.hexdigest()


def _safe_member(name: str, url: str) -> PurePosixPath | None:
    """The member's path inside the archive ("./" prefixes dropped); None for the archive's
    own top (".", as `tar -C dir .` writes it)."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name.startswith("\\"):
        raise ModelError(f"{url}: the archive holds an unsafe path {name!r}; nothing was installed")
    if not path.parts:
        return None
    if ":" in path.parts[0]:
        raise ModelError(f"{url}: the archive holds an unsafe path {name!r}; nothing was installed")
    return path


def _unpack(archive: Path, into: Path, url: str) -> None:
    """Unpack a zip or tar archive member by member, refusing anything but plain files and folders."""
    into.mkdir(mode=0o755)
    total, seen = 0, set()
    try:
        for name, is_dir, plain, size, opener in _members(archive, url):
            path = _safe_member(name, url)
            if path is None:
                continue
            if not plain:
                raise ModelError(f"{url}: {name!r} is a link or device, not a file; nothing was installed")
            if path in seen:
                raise ModelError(f"{url}: {name!r} appears twice in the archive; nothing was installed")
            seen.add(path)
            total += size
            if total > MAX_UNPACKED_BYTES:
                raise ModelError(f"{url}: unpacks to more than {MAX_UNPACKED_BYTES} bytes; nothing was installed")
            try:
                if is_dir:
                    _make_dir(into / path)
                    continue
                _make_dir((into / path).parent)
                with opener() as source, _public_file(into / path) as target:
                    shutil.copyfileobj(source, target, CHUNK)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                raise ModelError(
                    f"{url}: {name!r} clashes with another member (a file where a folder belongs?); nothing was installed"
                ) from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise ModelError(f"{url}: the archive is damaged ({exc}); nothing was installed") from None
    except (RuntimeError, NotImplementedError) as exc:  # zipfile: an encrypted member, or deflate64
        raise ModelError(f"{url}: the archive cannot be unpacked ({exc}); nothing was installed") from None
    except OSError as exc:
        raise ModelError(f"{url}: cannot unpack it: {exc.strerror or exc}; nothing was installed") from None


Opener = Callable[[], IO[bytes]]


def _members(archive: Path, url: str) -> Iterator[tuple[str, bool, bool, int, Opener]]:
    """(name, is a folder, is a plain file or folder, size, open it) for each member."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                kind = (info.external_attr >> 16) & 0o170000
                yield info.filename, info.is_dir(), kind in (0, 0o100000, 0o040000), info.file_size, partial(zipped.open, info)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tarred:
            for member in tarred:
                plain = member.isfile() or member.isdir()
                yield member.name, member.isdir(), plain, member.size, partial(_extract, tarred, member)
    else:
        raise ModelError(f"{url}: is not a zip or tar archive; nothing was installed")


def _extract(bundle: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    handle = bundle.extractfile(member)
    if handle is None:  # only links and devices have no data, and those are refused before
        raise tarfile.TarError(f"{member.name} has no data")
    return handle


def _make_dir(path: Path) -> None:
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    if not path.is_dir() or path.is_symlink():
        raise NotADirectoryError(str(path))
    os.chmod(path, 0o755)  # a model is not private: the service user must read it


def _public_dirs(dest: Path) -> None:
    """Create `dest` and its missing parents 0755 (edge runs with umask 077, and the service
    user must be able to reach the model); existing folders are left as they are."""
    missing = []
    folder = dest
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o755)
        os.chmod(path, 0o755)


def _public_file(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.fchmod(fd, 0o644)
    return os.fdopen(fd, "wb")


def _model_root(unpacked: Path, url: str) -> Path:
    """The unpacked model folder: the archive's single top folder, holding am/final.mdl."""
    children = [c for c in unpacked.iterdir()]
    if len(children) == 1 and children[0].is_dir() and is_model_dir(children[0]):
        return children[0]
    raise ModelError(f"{url}: the archive does not hold one Vosk model folder (with am/final.mdl inside); nothing was installed")
