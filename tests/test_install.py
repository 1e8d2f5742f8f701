"""scripts/install.sh staged with --root, and the systemd unit it installs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge.doctor import MAX_EXPOSURE, unit_exposure

from support import ROOT

UNIT = ROOT / "configs" / "edge-agent.service"
EXAMPLE = ROOT / "configs" / "household.example.toml"


def _install(stage: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "scripts" / "install.sh"), "--root", str(stage), "--no-model", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    stage = tmp_path_factory.mktemp("stage") / "root"
    result = _install(stage)
    assert result.returncode == 0, result.stderr
    return stage, result.stderr


def _mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)


def test_install_stages_every_file_with_its_mode(staged):
    stage, _ = staged
    assert _mode(stage / "etc/edge") == "0o750"
    assert _mode(stage / "etc/edge/household.toml") == "0o640"
    assert (stage / "etc/edge/household.toml").read_bytes() == EXAMPLE.read_bytes()
    assert _mode(stage / "var/lib/edge") == "0o700"
    unit = stage / "etc/systemd/system/edge-agent.service"
    assert _mode(unit) == "0o644" and unit.read_bytes() == UNIT.read_bytes()
    assert os.readlink(stage / "usr/local/bin/edge-agent") == "/opt/edge/venv/bin/edge-agent"
    program = stage / "opt/edge/venv/bin/edge-agent"
    version = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("edge ")
    assert _mode(stage / "opt/edge/venv") == "0o755"  # the service user must be able to read the program


def test_install_under_root_only_shows_what_would_change_the_system(staged):
    _, log = staged
    for action in (
        "apt-get install",
        "useradd --system --user-group --home-dir /var/lib/edge --shell /usr/sbin/nologin edge",
        "usermod -a -G audio edge",
        "chown root:edge /etc/edge/household.toml",
        "chown edge:edge /var/lib/edge",
        "systemctl enable --now edge-agent.service",
    ):
        assert f"skip (--root): {action}" in log


def test_reinstall_is_idempotent_and_keeps_the_household_config(staged):
    stage, _ = staged
    config = stage / "etc/edge/household.toml"
    edited = config.read_text(encoding="utf-8") + "# the household's own edit\n"
    config.write_text(edited, encoding="utf-8")
    again = _install(stage)
    assert again.returncode == 0, again.stderr
    assert "kept the existing" in again.stderr
    assert config.read_text(encoding="utf-8") == edited
    assert _mode(config) == "0o640" and _mode(stage / "var/lib/edge") == "0o700"


def test_the_unit_verifies_cleanly(staged, tmp_path):
    stage, _ = staged
    program = stage / "opt/edge/venv/bin/edge-agent"
    unit = tmp_path / "edge-agent.service"  # the same unit, with ExecStart at the staged program
    unit.write_text(UNIT.read_text().replace("/opt/edge/venv/bin/edge-agent", str(program)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("UMask=0077", "UMask=0077\nPrivateNetwrk=yes"))
    result = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "Unknown key 'PrivateNetwrk'" in result.stderr


def test_the_unit_is_hardened():
    text = UNIT.read_text()
    for line in (
        "PrivateNetwork=yes",
        "IPAddressDeny=any",
        "RestrictAddressFamilies=AF_UNIX",
        "LimitCORE=0",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "DevicePolicy=closed",
        "DeviceAllow=char-alsa rw",
        "Restart=on-failure",
        "UMask=0077",
        "StateDirectoryMode=0700",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    exposure = unit_exposure(UNIT)
    assert exposure is not None and exposure <= MAX_EXPOSURE


def test_a_weakened_unit_scores_worse(tmp_path):
    weak = tmp_path / "edge-agent.service"
    keep = ("[", "Description", "ExecStart", "User", "Group", "Type")
    weak.write_text("\n".join(line for line in UNIT.read_text().splitlines() if line.startswith(keep)) + "\n")
    exposure = unit_exposure(weak)
    assert exposure is not None and exposure > 5


def test_uninstall_forgets_everything_audited_then_removes_the_service(tmp_path_factory, speech):
    stage = tmp_path_factory.mktemp("stage-uninstall") / "root"
    assert _install(stage).returncode == 0
    config = stage / "etc/edge/household.toml"
    config.write_text(config.read_text().replace('keyring = "persistent"', 'keyring = "session"'))  # the tests' keyring
    data = stage / "var/lib/edge"
    local = tmp_path_factory.mktemp("cfg") / "household.toml"
    local.write_text(
        config.read_text()
        .replace('data_dir = "/var/lib/edge"', f'data_dir = "{data}"')
        .replace('control_socket = "/run/edge/control.sock"', 'control_socket = ""')
        .replace('mode = "wake"', 'mode = "always"')
    )
    clip = speech.join(speech.say("메시지"), 1.0, speech.say("아버지"))
    run = subprocess.run(
        [sys.executable, "-m", "edge", "--config", str(local), "run", "--input", str(clip), "--profile", "child"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert len(list((data / "recordings").iterdir())) == 2

    result = _install(stage, "--uninstall")
    assert result.returncode == 0, result.stderr
    assert "forgot 2 session(s)" in result.stdout
    assert "audit log intact" in result.stdout and "nothing past its retention can be opened" in result.stdout
    assert not (stage / "opt/edge").exists()
    assert not (stage / "etc/systemd/system/edge-agent.service").exists()
    assert not (stage / "usr/local/bin/edge-agent").exists()
    assert config.exists()  # the household's config stays
    assert list((data / "recordings").iterdir()) == []
    assert '"type":"forget.fulfilled"' in (data / "audit.jsonl").read_text()
    assert "skip (--root): systemctl disable --now edge-agent.service" in result.stderr


def test_the_agent_process_makes_itself_non_dumpable():
    code = (
        "import resource\n"
        "from edge.hardening import is_dumpable, make_non_dumpable\n"
        "assert is_dumpable()\n"
        "make_non_dumpable()\n"
        "print(is_dumpable(), resource.getrlimit(resource.RLIMIT_CORE))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False (0, 0)"
