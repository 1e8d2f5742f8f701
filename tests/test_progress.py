"""Long work shows how far it has come on a terminal, and nothing anywhere else: the meter
itself, then the real commands with a real pseudo-terminal as their stderr (a big purge's
deletions, the conversion of a big v1 keystore)."""

from __future__ import annotations

import io
import json
import os
import pty
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from edge import wiring
from edge.config import load_config
from edge.crypto.vault import FileVault
from edge.disk.layout import KEYSTORE, KEYSTORE_DB
from edge.progress import Meter
from edge.store.legacy import MAGIC
from edge.store.rows import derive, seal, unseal

from support import ROOT, Retention, default_config, edge_agent, file_vault, populate


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_meter_redraws_one_line_on_a_terminal_and_ends_it():
    shown = Terminal()
    meter = Meter("deleting", "files", stream=shown)
    for done in range(1, 2001):
        meter(done, 2000)
    frames = shown.getvalue().split("\r")[1:]
    assert len(frames) == 101  # once per percent, not once per file
    assert frames[0] == "deleting:   0% (1 of 2,000 files)"
    assert frames[-1] == "deleting: 100% (2,000 of 2,000 files)\n"
    assert all("\n" not in frame for frame in frames[:-1])


def test_the_meter_is_silent_off_a_terminal_and_for_small_work():
    quiet = io.StringIO()
    Meter("deleting", "files", stream=quiet)(5, 10)
    assert quiet.getvalue() == ""
    small = Terminal()
    Meter("deleting", "files", least=1000, stream=small)(999, 999)
    assert small.getvalue() == ""


def test_the_meter_writes_a_line_per_tenth_to_a_log_when_asked():
    log = io.StringIO()
    meter = Meter("downloading", "bytes", lines=True, stream=log)
    for done in range(0, 50_000_001, 1_000_000):
        meter(done, 50_000_000)
    lines = log.getvalue().splitlines()
    assert lines[0] == "downloading: 0% (0.0 of 50.0 MB)" and lines[-1] == "downloading: 100% (50.0 of 50.0 MB)"
    assert len(lines) == 11 and "\r" not in log.getvalue()


def with_terminal_stderr(*args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run `python -m edge ARGS` with a pseudo-terminal as stderr: (the run, what the terminal showed)."""
    controller, terminal = pty.openpty()
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the terminal's last holder closed it
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    env = {**os.environ, "EDGE_CONFIG": str(default_config())}
    try:
        ran = subprocess.run(
            [sys.executable, "-m", "edge", *args], stdout=subprocess.PIPE, stderr=terminal, text=True, env=env, cwd=ROOT, timeout=300
        )
    finally:
        os.close(terminal)
    reader.join(10)
    os.close(controller)
    return ran, shown.decode(errors="replace")


def overdue_folder(tmp_path: Path, write_config, sessions: int) -> tuple[Path, Path]:
    """A config (file vault) whose data folder holds `sessions` overdue sessions, each with its two files."""
    config = write_config(vault=file_vault(tmp_path / "root.key"))
    loaded = load_config(config)
    assert loaded.vault.path is not None
    store, _audit = wiring.open_store(loaded, vault=FileVault(loaded.vault.path, loaded.device.data_dir))
    populate(store, sessions, timedelta(hours=2), datetime.now(timezone.utc), files_in=loaded.device.data_dir)
    return config, loaded.device.data_dir


def test_a_big_purge_shows_its_deletions_on_a_terminal(tmp_path, write_config):
    config, data = overdue_folder(tmp_path, write_config, 1500)
    ran, shown = with_terminal_stderr("--config", str(config), "purge")
    assert ran.returncode == 0, shown
    assert "\rdeleting shredded ciphertext: 100% (3,000 of 3,000 files)" in shown
    assert not os.listdir(data / "recordings") and not os.listdir(data / "transcripts")
    assert "deleted 3000 ciphertext file(s)" in ran.stdout


def test_a_purge_off_a_terminal_prints_no_progress(tmp_path, write_config):
    config, data = overdue_folder(tmp_path, write_config, 1500)
    ran = edge_agent("--config", str(config), "purge")
    assert ran.returncode == 0, ran.stderr
    assert "deleting shredded" not in ran.stderr and "\r" not in ran.stderr + ran.stdout
    assert not os.listdir(data / "recordings")


VECTOR = ROOT / "tests" / "vectors" / "keystore-v1"


def big_v1_folder(folder: Path, write_config, sessions: int) -> Path:
    """A config for folder/data: the v1 vector with `sessions` more complete sessions sealed
    into it the way v1 sealed its one document (tests/vectors/keystore-v1 is v1's own output;
    only its list grows)."""
    folder.mkdir(mode=0o700)
    data = folder / "data"
    shutil.copytree(VECTOR / "data", data)
    for path in [data, *data.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    sealed = (data / KEYSTORE).read_bytes()
    for name in ("root.key", "root.key.next"):
        root = (VECTOR / name).read_bytes()
        key = ChaCha20Poly1305(derive(root, b"edge/v1 keystore"))
        try:
            document = json.loads(unseal(key, sealed[len(MAGIC) :], MAGIC))
        except InvalidTag:
            continue
        (folder / "root.key").write_bytes(root)
        (folder / "root.key").chmod(0o600)
        break
    complete = next(s for s in document["sessions"] if s["state"] == "complete")
    document["sessions"] += [dict(complete, id=f"{n:016x}") for n in range(sessions)]
    (data / KEYSTORE).write_bytes(MAGIC + seal(key, json.dumps(document).encode(), MAGIC))
    long = Retention("adult", "3650d", "3650d")
    household = 'max_child_audio = "3650d"\nmax_child_transcript = "3650d"'
    return write_config(
        f"{folder.name}.toml", data, mode="always", vault=file_vault(folder / "root.key"), parent=long, child=long, household=household
    )


def test_converting_a_big_v1_keystore_shows_its_progress_on_a_terminal(tmp_path, write_config):
    config = big_v1_folder(tmp_path / "shown", write_config, 5000)
    ran, shown = with_terminal_stderr("--config", str(config), "purge")
    assert ran.returncode == 0, shown
    frames = [f for f in shown.split("\r") if f.startswith("converting the keystore from format 1")]
    total = int(frames[-1].split(" of ")[1].split()[0].replace(",", ""))
    assert total > 5000 and frames[-1].startswith("converting the keystore from format 1: 100%")
    assert len(frames) >= 3  # it moved: at least one step between the first report and the last
    assert (tmp_path / "shown" / "data" / KEYSTORE_DB).exists() and not (tmp_path / "shown" / "data" / KEYSTORE).exists()

    quiet = edge_agent("--config", str(big_v1_folder(tmp_path / "quiet", write_config, 5000)), "purge")
    assert quiet.returncode == 0, quiet.stderr
    assert "converting the keystore" not in quiet.stderr and (tmp_path / "quiet" / "data" / KEYSTORE_DB).exists()
