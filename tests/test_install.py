"""scripts/install.sh staged with --root, and the systemd unit it installs."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from edge.doctor import MAX_EXPOSURE, unit_exposure

from support import ROOT

UNIT = ROOT / "configs" / "edge-agent.service"
BACKSTOP = ROOT / "configs" / "edge-purge-overdue.service"
TIMER = ROOT / "configs" / "edge-purge-overdue.timer"
EXAMPLE = ROOT / "configs" / "household.example.toml"
SCRIPT = ROOT / "scripts" / "install.sh"
PROXYD = "/lib/systemd/systemd-socket-proxyd"


def _install(stage: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), "--root", str(stage), "--no-model", *args],
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
    version = _at_opt_edge(stage, str(stage / "usr/local/bin/edge-agent"), "--version")
    assert version.returncode == 0 and version.stdout.startswith("edge "), version.stderr
    assert _mode(stage / "opt/edge/venv") == "0o755"  # the service user must be able to read the program


def test_the_staged_venv_names_only_its_place_on_the_target(staged):
    """DIR can be packaged as it is: nothing in the venv's scripts or config names DIR."""
    stage, _ = staged
    venv = stage / "opt/edge/venv"
    texts = [p for p in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"] if p.is_file() and not p.is_symlink()]
    naming = [p.name for p in texts if str(stage).encode() in p.read_bytes()]
    assert naming == []
    assert (venv / "bin/edge-agent").read_text().splitlines()[0] == "#!/opt/edge/venv/bin/python"
    assert "/opt/edge/venv" in (venv / "bin/activate").read_text()


def _at_opt_edge(stage: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run argv in a mount namespace of its own where stage/opt/edge is /opt/edge, as on the
    target (root only, like the tests' tmpfs; the machine's own /opt is left alone)."""
    script = 'mount -t tmpfs tmpfs /opt && mkdir /opt/edge && mount --bind "$0" /opt/edge && exec "$@"'
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(stage / "opt/edge"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_installed_venv_has_voices_and_the_systems_python(staged, tmp_path):
    """Household voices work on an installed device (the speaker encoder's weights come with
    the install), and the venv is the system interpreter's, never a pyenv one from PATH."""
    stage, _ = staged
    loaded = _at_opt_edge(
        stage, "/opt/edge/venv/bin/python", "-c", "from edge.voice.weights import load_weights; print(len(load_weights()))"
    )
    assert loaded.returncode == 0 and int(loaded.stdout) > 0, loaded.stderr
    home = dict(line.split(" = ", 1) for line in (stage / "opt/edge/venv/pyvenv.cfg").read_text().splitlines() if " = " in line)
    assert home["home"] == "/usr/bin", home
    missing = subprocess.run(
        [str(SCRIPT), "--root", str(tmp_path / "stage"), "--no-model"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "EDGE_SYSTEM_PYTHON": str(tmp_path / "no-python3")},
    )
    assert missing.returncode == 1 and "no-python3 is missing: apt-get install python3 python3-venv" in missing.stderr


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
    units = []  # the same units, with ExecStart at the staged program
    for name in ("edge-agent.service", BACKSTOP.name, TIMER.name):
        units.append(tmp_path / name)
        units[-1].write_text((stage / "etc/systemd/system" / name).read_text().replace("/opt/edge/venv/bin/edge-agent", str(program)))
    result = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    unit = units[0]
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
        "ReadWritePaths=-/run/edge-wyoming",  # where it binds its Wyoming sockets
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


def _directives(unit: Path) -> list[str]:
    return [line for line in unit.read_text().splitlines() if line and not line.startswith("#")]


def test_the_backstop_timer_is_installed_enabled_and_runs_purge_overdue(staged, tmp_path):
    """Defence in depth (issue 27): a timer runs `purge --overdue` in a service of its own, as
    the agent's user, as sandboxed as the agent, so a wedged agent cannot keep data past expiry."""
    stage, log = staged
    service, timer = stage / "etc/systemd/system" / BACKSTOP.name, stage / "etc/systemd/system" / TIMER.name
    assert _mode(service) == _mode(timer) == "0o644"
    assert service.read_bytes() == BACKSTOP.read_bytes() and timer.read_bytes() == TIMER.read_bytes()
    assert _exec_start(service) == ["/opt/edge/venv/bin/edge-agent", "--config", "/etc/edge/household.toml", "purge", "--overdue", "10m"]
    assert "skip (--root): systemctl enable --now edge-purge-overdue.timer" in log
    lines = _directives(service)
    assert "Type=oneshot" in lines and "WantedBy=multi-user.target" not in lines  # started by its timer only
    agent = set(_directives(UNIT))
    shared = agent - {
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=5min",
        "TimeoutStartSec=15min",
        "SupplementaryGroups=audio",
        "DeviceAllow=char-alsa rw",
        "Restart=on-failure",
        "RestartSec=5s",
        "TimeoutStopSec=30s",
        "RuntimeDirectory=edge",
        "RuntimeDirectoryMode=0750",
        "ReadWritePaths=-/run/edge-wyoming",
        "RemoveIPC=yes",
        "After=sound.target time-sync.target",
        "Wants=time-sync.target",
        "WantedBy=multi-user.target",
        "[Install]",
    }
    shared = {line for line in shared if not line.startswith(("Description=", "ExecStart="))}
    assert shared - set(lines) == set()  # the same user, data folder, network namespace, sandbox and filter
    assert "RemoveIPC=yes" not in lines  # it would remove the agent's IPC objects too (the same user)
    exposure = unit_exposure(service)
    assert exposure is not None and exposure <= MAX_EXPOSURE
    timing = _directives(timer)
    assert {"OnActiveSec=5min", "OnUnitActiveSec=5min", "WantedBy=timers.target"} <= set(timing)
    assert not [line for line in timing if line.startswith("OnCalendar=")]  # the monotonic clock: a wall clock set back skips nothing

    config = tmp_path / "household.toml"  # the installed program, with the tests' config: a look that writes nothing
    config.write_text(
        EXAMPLE.read_text()
        .replace('data_dir = "/var/lib/edge"', f'data_dir = "{tmp_path / "data"}"')
        .replace('keyring = "persistent"', 'keyring = "session"')
        .replace('control_socket = "/run/edge/control.sock"', 'control_socket = ""')
    )
    command = _exec_start(service)
    command[2] = str(config)
    ran = _at_opt_edge(stage, *command)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", "")
    assert not (tmp_path / "data").exists()


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
    assert not list((stage / "etc/systemd/system").glob("edge-purge-overdue.*"))
    assert not (stage / "usr/local/bin/edge-agent").exists()
    assert config.exists()  # the household's config stays
    assert list((data / "recordings").iterdir()) == []
    assert '"type":"forget.fulfilled"' in (data / "audit.jsonl").read_text()
    assert "skip (--root): systemctl disable --now edge-agent.service" in result.stderr
    assert "skip (--root): systemctl disable --now edge-purge-overdue.timer" in result.stderr


def test_a_staged_uninstall_touches_nothing_outside_its_root_and_claims_nothing(tmp_path_factory):
    """The example config's vault is the persistent keyring: the caller's own, outside --root."""
    stage = tmp_path_factory.mktemp("stage-uninstall-plain") / "root"
    assert _install(stage).returncode == 0
    result = _install(stage, "--uninstall")
    assert result.returncode == 0, result.stderr
    assert "skip (--root): edge-agent forget --all --yes" in result.stderr
    assert "verified" not in result.stdout + result.stderr and "FAILED" not in result.stdout
    assert f"nothing was forgotten: --root touches nothing outside {stage}" in result.stderr
    assert not (stage / "var/lib/edge/keystore.db").exists()


def test_tpm_stages_the_extra_the_device_and_a_tpm_config_and_uninstalls_cleanly(tmp_path):
    """--tpm (issue 16): the TSS libraries, group tss, a drop-in that opens /dev/tpmrm0 only,
    tpm2-pytss in the venv, and backend = "tpm" in the new config."""
    from edge.config import parse_config

    stage = tmp_path / "root"
    result = _install(stage, "--tpm")
    assert result.returncode == 0, result.stderr
    apt = next(line for line in result.stderr.splitlines() if "skip (--root): apt-get install" in line)
    assert {"libtss2-dev", "pkg-config", "tpm-udev"} <= set(apt.split())
    assert "skip (--root): usermod -a -G tss edge" in result.stderr
    dropin = stage / "etc/systemd/system/edge-agent.service.d/tpm.conf"
    backstop = stage / "etc/systemd/system/edge-purge-overdue.service.d/tpm.conf"  # the timer's purge opens the same vault
    assert _mode(dropin) == _mode(backstop) == "0o644"
    for each in (dropin, backstop):
        assert _directives(each) == ["[Service]", "SupplementaryGroups=tss", "DeviceAllow=/dev/tpmrm0 rw"]
    config_path = stage / "etc/edge/household.toml"
    vault = parse_config(tomllib.loads(config_path.read_text()), config_path).vault
    assert (vault.backend, vault.tcti, vault.nv_index) == ("tpm", "device:/dev/tpmrm0", 0x0100ED60)
    python = stage / "opt/edge/venv/bin/python"
    assert subprocess.run([str(python), "-c", "import tpm2_pytss"], capture_output=True, timeout=60).returncode == 0
    removed = _install(stage, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert "the persistent keyring or the TPM, is outside" in removed.stderr  # --root never reaches the machine's TPM
    assert not dropin.exists() and not dropin.parent.exists() and config_path.exists()
    assert not backstop.parent.exists()


def test_on_a_kernel_without_persistent_keyrings_the_config_gets_the_file_vault(tmp_path):
    """Raspberry Pi OS kernels have no persistent keyrings (issue 19): the example's keyring
    vault would lose everything at a service restart, so install.sh writes the file vault."""
    from edge.config import parse_config

    from support import without_persistent_keyrings

    stage = tmp_path / "root"
    result = without_persistent_keyrings([str(SCRIPT), "--root", str(stage), "--no-model"])
    assert result.returncode == 0, result.stderr
    assert "this kernel has no persistent keyrings" in result.stderr and "re-run with --tpm" in result.stderr
    config_path = stage / "etc/edge/household.toml"
    vault = parse_config(tomllib.loads(config_path.read_text()), config_path).vault
    assert (vault.backend, vault.path) == ("file", Path("/var/lib/edge/root.key"))


EVERY_DEBIAN = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
"""apt and libapt-pkg depend on these, so every Debian and Raspberry Pi OS install has them."""
LOADED_BY_NAME = {"libportaudio.so.2", "libsndfile.so.1", "libkeyutils.so.1"}
"""Libraries edge's dependencies open at run time by name (ctypes, cffi): no NEEDED entry names them."""


def _apt_list(name: str) -> set[str]:
    listed = subprocess.run(
        ["bash", "-c", f'source scripts/apt-packages.sh && echo "${{{name}[@]}}"'], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return set(listed.stdout.split())


def _needed(library: Path) -> set[str]:
    dynamic = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic))


def _package_of(soname: str) -> str:
    found = subprocess.run(["dpkg", "-S", f"*/{soname}"], capture_output=True, text=True)
    assert found.returncode == 0, f"no Debian package on this machine ships {soname}"
    return found.stdout.split(":", 1)[0]


def test_the_runtime_apt_list_provides_every_library_the_native_code_needs(tmp_path):
    """Issue 19: a Pi OS Lite without gcc failed at model load, because the aarch64 libvosk.so
    links libatomic.so.1, which the apt list brought in only through gcc. Every library that
    the native code links (the Pi's libvosk.so, every .so in this venv) or opens by name must
    come from a package of the runtime list, or be one every Debian has; no build tools."""
    import zipfile

    runtime = _apt_list("APT_RUN")
    assert not runtime & {"gcc", "python3-dev", "pkg-config"} and not [p for p in runtime if p.endswith("-dev")]
    wheels = sorted((ROOT / ".venv" / "wheels-aarch64").glob("vosk-*.whl"))
    assert wheels, "the aarch64 vosk wheel is missing: run scripts/setup.sh test"
    with zipfile.ZipFile(wheels[-1]) as wheel:
        pi_vosk = Path(wheel.extract("vosk/libvosk.so", tmp_path))
    assert "libatomic.so.1" in _needed(pi_vosk)
    site = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    bundled = {path.name for path in site.rglob("*.so*")}  # the libraries wheels carry (numpy.libs/...)
    libraries = [pi_vosk] + [p for p in site.rglob("*.so*") if "tpm2_pytss" not in p.parts]  # the tpm extra: APT_TPM
    needed = {soname for library in libraries for soname in _needed(library)} - bundled
    needed |= LOADED_BY_NAME
    needed -= {"ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}  # the dynamic loader: libc6
    missing = {soname: _package_of(soname) for soname in needed if _package_of(soname) not in runtime | EVERY_DEBIAN}
    assert missing == {}, f"scripts/apt-packages.sh APT_RUN lacks the packages of {missing}"


@pytest.mark.parametrize("script", ["install.sh", "setup.sh"])
def test_32_bit_pi_os_is_refused_with_a_pointer_to_64_bit(tmp_path, script):
    """Issue 19: armhf has no wheels of numpy, cffi, soxr, webrtcvad-wheels; say so before
    anything is installed. (`dpkg` answers as on 32-bit Pi OS; the rest is the real script.)"""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dpkg").write_text('#!/bin/sh\n[ "$1" = --print-architecture ] && { echo armhf; exit 0; }\nexec /usr/bin/dpkg "$@"\n')
    (fake / "dpkg").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    args = [str(ROOT / "scripts" / script)] + (["--root", str(tmp_path / "root"), "--no-model"] if script == "install.sh" else [])
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    assert "this system is armhf" in result.stderr and "Install the 64-bit Raspberry Pi OS" in result.stderr
    assert not (tmp_path / "root").exists()


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


def test_usage_prints_the_whole_header():
    lines = SCRIPT.read_text().splitlines()
    header = lines[1 : lines.index("set -euo pipefail")]
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [re.sub(r"^# ?", "", line) for line in header]
    assert "--wyoming PORT[:PROFILE]" in result.stdout


# -- --wyoming: Home Assistant reaches the agent's Unix sockets through TCP bridges --------

WYOMING = {10300: "child", 10301: None}
BRIDGE_HARDENING = (
    "User=edge-wyoming",
    "Group=edge-wyoming",
    "PrivateNetwork=yes",
    "IPAddressDeny=any",
    "RestrictAddressFamilies=AF_UNIX",
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "InaccessiblePaths=-/run/edge",
    "LimitCORE=0",
    "SystemCallFilter=@system-service",
)


@pytest.fixture(scope="module")
def wyoming(tmp_path_factory):
    stage = tmp_path_factory.mktemp("stage-wyoming") / "root"
    result = _install(stage, "--wyoming", "10300:child", "--wyoming", "10301")
    assert result.returncode == 0, result.stderr
    return stage, result.stderr


def _bridge(stage: Path, port: int, kind: str) -> Path:
    return stage / f"etc/systemd/system/edge-wyoming-{port}.{kind}"


def _exec_start(service: Path) -> list[str]:
    (line,) = [line for line in service.read_text().splitlines() if line.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=").split()


def test_wyoming_stages_a_bridge_and_an_advertisement_per_port(wyoming):
    stage, _ = wyoming
    for port in WYOMING:
        socket_unit, service = _bridge(stage, port, "socket"), _bridge(stage, port, "service")
        assert _mode(socket_unit) == _mode(service) == "0o644"
        text = socket_unit.read_text()
        assert re.search(rf"^ListenStream={port}$", text, re.M) and re.search(r"^WantedBy=sockets.target$", text, re.M)
        text = service.read_text()
        assert _exec_start(service) == [PROXYD, "--exit-idle-time=5min", f"/run/edge-wyoming/{port}.sock"]
        assert re.search(rf"^Requires=edge-wyoming-{port}.socket$", text, re.M)
        assert re.search(rf"^After=edge-wyoming-{port}.socket edge-agent.service$", text, re.M)
        for line in BRIDGE_HARDENING:
            assert re.search(rf"^{re.escape(line)}$", text, re.M), (port, line)
        assert "SupplementaryGroups" not in text and "Group=edge\n" not in text  # never the control socket's group
        exposure = unit_exposure(service)
        assert exposure is not None and exposure <= MAX_EXPOSURE

        avahi = stage / f"etc/avahi/services/edge-wyoming-{port}.service"
        assert _mode(avahi) == "0o644"
        assert '<!DOCTYPE service-group SYSTEM "avahi-service.dtd">' in avahi.read_text()
        group = ET.parse(avahi).getroot()
        assert group.tag == "service-group"  # in the order avahi-service.dtd requires
        assert [child.tag for child in group] == ["name", "service"]
        assert [child.tag for child in group[1]] == ["type", "port"]
        name = group.find("name")
        assert name is not None and name.get("replace-wildcards") == "yes"
        assert name.text == f"edge speech-to-text (port {port}) on %h"  # never whose: mDNS tells the whole LAN
        (service_element,) = group.findall("service")
        assert service_element.findtext("type") == "_wyoming._tcp"
        assert service_element.findtext("port") == str(port)

    tmpfiles = stage / "etc/tmpfiles.d/edge-wyoming.conf"
    assert _mode(tmpfiles) == "0o644"
    rules = [line for line in tmpfiles.read_text().splitlines() if line and not line.startswith("#")]
    assert rules == ["d /run/edge-wyoming 2750 edge edge-wyoming -"]


def test_wyoming_appends_one_table_per_listener_to_the_config(wyoming):
    stage, _ = wyoming
    text = (stage / "etc/edge/household.toml").read_text(encoding="utf-8")
    assert text.startswith(EXAMPLE.read_text(encoding="utf-8"))  # the rest stays as it was
    assert text.count("\n[[wyoming]]\n") == 2  # tables, not the example's commented one
    assert tomllib.loads(text)["wyoming"] == [
        {"uri": "unix:///run/edge-wyoming/10300.sock", "profile": "child", "name": "edge (port 10300, child)"},
        {"uri": "unix:///run/edge-wyoming/10301.sock", "name": "edge (port 10301)"},
    ]


def test_wyoming_under_root_only_shows_what_would_change_the_system(wyoming, staged):
    _, log = wyoming
    for action in (
        "useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin edge-wyoming",
        "systemd-tmpfiles --create /etc/tmpfiles.d/edge-wyoming.conf",
        "systemctl enable --now edge-wyoming-10300.socket",
        "systemctl enable --now edge-wyoming-10301.socket",
    ):
        assert f"skip (--root): {action}" in log
    assert re.search(r"^install: skip \(--root\): apt-get install .* avahi-daemon$", log, re.M)
    _, plain = staged  # without --wyoming: no Avahi, no bridge, no second user
    assert "avahi-daemon" not in plain and "edge-wyoming" not in plain


def test_an_install_without_wyoming_keeps_the_folder_the_configs_listeners_need(tmp_path):
    """After --uninstall the config keeps its [[wyoming]] tables: a plain install must give
    the agent back their folder, or it cannot bind them and does not start."""
    stage = tmp_path / "root"
    (stage / "etc/edge").mkdir(parents=True)
    (stage / "etc/edge/household.toml").write_text(
        EXAMPLE.read_text() + '\n[[wyoming]]\nuri = "unix:///run/edge-wyoming/10300.sock"\nprofile = "child"\n'
    )
    result = _install(stage)
    assert result.returncode == 0, result.stderr
    assert (stage / "etc/tmpfiles.d/edge-wyoming.conf").read_text().strip().endswith("d /run/edge-wyoming 2750 edge edge-wyoming -")
    assert not list((stage / "etc/systemd/system").glob("edge-wyoming-*"))  # bridges only for --wyoming ports
    plain = _install(tmp_path / "plain")
    assert plain.returncode == 0 and not (tmp_path / "plain/etc/tmpfiles.d").exists()


def test_wyoming_reinstall_adds_nothing(wyoming):
    stage, _ = wyoming
    files = sorted(path for path in (stage / "etc").rglob("*") if path.is_file())
    before = {path: path.read_bytes() for path in files}
    again = _install(stage, "--wyoming", "10300:child", "--wyoming", "10301")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("kept the [[wyoming]] table for port") == 2 and "added a [[wyoming]]" not in again.stderr
    assert sorted(path for path in (stage / "etc").rglob("*") if path.is_file()) == files
    assert {path: path.read_bytes() for path in files} == before


def test_every_bridge_unit_verifies_cleanly(wyoming, tmp_path):
    stage, _ = wyoming
    program = stage / "opt/edge/venv/bin/edge-agent"
    units = tmp_path / "units"
    units.mkdir()
    agent = (stage / "etc/systemd/system/edge-agent.service").read_text()
    (units / "edge-agent.service").write_text(agent.replace("/opt/edge/venv/bin/edge-agent", str(program)))
    for port in WYOMING:
        for kind in ("socket", "service"):
            shutil.copy(_bridge(stage, port, kind), units)
    paths = sorted(str(path) for path in units.iterdir())
    assert len(paths) == 5
    result = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")

    broken = units / "edge-wyoming-10301.service"  # the same check does catch a mistake
    broken.write_text(broken.read_text().replace("PrivateNetwork=yes", "PrivateNetwrk=yes"))
    result = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=60)
    assert "Unknown key 'PrivateNetwrk'" in result.stderr


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("0", "PORT must be a whole number from 1 to 65535"),
        ("70000", "PORT must be a whole number from 1 to 65535"),
        ("abc", "PORT must be a whole number from 1 to 65535"),
        ("10300:Bad", "PROFILE must be a profile name"),
        ("10300:", "PROFILE must be a profile name"),
    ],
)
def test_a_bad_wyoming_value_is_refused(tmp_path, value, says):
    result = _install(tmp_path / "root", "--wyoming", value)
    assert result.returncode == 2
    assert f"install: --wyoming '{value}': {says}" in result.stderr
    assert not (tmp_path / "root").exists()  # refused before anything was staged


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("--wyoming",), 2, "install: --wyoming needs PORT[:PROFILE]"),
        (("--wyoming", "10300", "--wyoming", "10300:child"), 2, "port 10300 is given twice"),
        (("--wyoming", "10300:nobody"), 1, "has no [profiles.nobody]"),
        (("--uninstall", "--wyoming", "10300"), 2, "--wyoming is for installing"),
    ],
)
def test_wyoming_refuses_what_the_agent_could_not_serve(tmp_path, args, code, says):
    result = _install(tmp_path / "root", *args)
    assert result.returncode == code and says in result.stderr
    assert not (tmp_path / "root").exists()


def test_uninstall_removes_every_bridge_and_keeps_the_config(wyoming, tmp_path):
    stage = tmp_path / "root"  # the staged files, without the program (so nothing to forget)
    shutil.copytree(wyoming[0] / "etc", stage / "etc", symlinks=True)
    theirs = stage / "etc/avahi/services/ssh.service"  # someone else's advertisement stays
    theirs.write_text("<service-group/>\n")
    config = (stage / "etc/edge/household.toml").read_bytes()
    result = _install(stage, "--uninstall")
    assert result.returncode == 0, result.stderr
    (disable,) = [line for line in result.stderr.splitlines() if "systemctl disable --now edge-wyoming" in line]
    for port in WYOMING:
        assert f"edge-wyoming-{port}.socket" in disable and f"edge-wyoming-{port}.service" in disable
    assert sorted(path.name for path in (stage / "etc/systemd/system").iterdir()) == []
    assert [path.name for path in (stage / "etc/avahi/services").iterdir()] == ["ssh.service"]
    assert not (stage / "etc/tmpfiles.d/edge-wyoming.conf").exists()
    assert (stage / "etc/edge/household.toml").read_bytes() == config


def _echo_server(path: Path) -> socket.socket:
    """A Unix-socket echo server in a thread: what the agent's listener is to the bridge."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()

    def echo(connection: socket.socket) -> None:
        with connection:
            while data := connection.recv(65536):
                connection.sendall(data)

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return  # closed: the test is over
            threading.Thread(target=echo, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _connect(port: int, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_the_bridge_relays_tcp_to_the_unix_socket(wyoming, tmp_path):
    """What edge-wyoming-PORT.socket and .service do, without systemd: systemd-socket-activate
    holds a TCP port and hands it to the unit's own ExecStart, aimed at a test socket."""
    stage, _ = wyoming
    command = _exec_start(_bridge(stage, 10300, "service"))
    path = tmp_path / "10300.sock"
    assert command[-1] == "/run/edge-wyoming/10300.sock" and len(os.fsencode(path)) < 108
    server = _echo_server(path)
    port = _free_port()
    bridge = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", *command[:-1], str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        header = b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, "payload_length": 65536}\n'
        for payload in (bytes(range(256)) * 256, os.urandom(200_000)):  # two connections, one after the other
            with _connect(port, deadline) as client:
                client.sendall(header + payload)
                echoed = bytearray()
                while len(echoed) < len(header) + len(payload):
                    data = client.recv(65536)
                    assert data, "the bridge closed the connection early"
                    echoed += data
                assert bytes(echoed) == header + payload
        assert bridge.poll() is None  # one proxy serves every connection
    finally:
        bridge.terminate()
        _, errors = bridge.communicate(timeout=10)
        server.close()
    assert f"Listening on 127.0.0.1:{port}" in errors


# -- a data folder that a command run as root made before the install (issue 27, item 8) ------


class Device:
    """A Debian machine that install.sh changes for real (useradd, chown, the venv, the units),
    as root, in mount namespaces of its own: /etc, /var/lib, /usr/local and /opt are overlays
    of this machine's whose changes all land in `folder`, so this machine is left as it was.
    Its python3 is Debian's (/usr/bin), which the service user may run. No systemd runs here,
    so `systemctl` only notes its calls (the one stand-in: the test is about the files). Each
    `run` is a new namespace on the same state."""

    OVERLAID = ("etc", "var/lib", "usr/local", "opt")

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        for place in self.OVERLAID:
            (folder / "upper" / place).mkdir(parents=True)
            (folder / "work" / place).mkdir(parents=True)
        (folder / "bin").mkdir()
        stub = folder / "bin" / "systemctl"
        stub.write_text(f'#!/bin/sh\necho "$*" >> {folder / "systemctl.log"}\n')
        stub.chmod(0o755)

    def run(self, script: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        mounts = [
            f"mount -t overlay overlay -o lowerdir=/{place},upperdir={self.folder}/upper/{place},workdir={self.folder}/work/{place} /{place}"
            for place in self.OVERLAID
        ]
        path = f"{self.folder}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        body = "set -e\n" + "\n".join(mounts) + f'\nexport PATH="{path}"\nunset EDGE_CONFIG\nset +e\n' + script
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "bash", "-c", body],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )

    def path(self, target: str) -> Path:
        """Where a path the device wrote (or changed) is kept here."""
        return self.folder / "upper" / target.lstrip("/")

    def uid(self, user: str) -> int:
        """The device's own user database, which useradd wrote."""
        passwd = self.path("/etc/passwd").read_text()
        return next(int(line.split(":")[2]) for line in passwd.splitlines() if line.startswith(f"{user}:"))


def _device_config(*, vault: str, model: Path) -> str:
    """The example config as a household might have it before installing: recording always,
    a vault of the tests (never a persistent keyring of this machine's)."""
    text = EXAMPLE.read_text()
    text = text.replace('model = "auto"', f'model = "{model}"').replace('mode = "wake"', 'mode = "always"')
    text = text.replace('control_socket = "/run/edge/control.sock"', 'control_socket = ""')
    text = re.sub(r'(?m)^keyring = "persistent".*$', "", text)
    return re.sub(r'(?m)^backend = "keyring".*$', vault, text)


@pytest.fixture
def device(tmp_path):
    return Device(tmp_path / "device")


BEFORE_INSTALL = f"cd {ROOT} && {sys.executable} -m edge --config /etc/edge/household.toml"
"""An edge-agent command run as root from this clone before the install (its scripts/setup.sh venv)."""


def _owners(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.lstat().st_uid for path in sorted(folder.rglob("*"))}


def test_install_gives_the_service_what_a_command_run_as_root_made_in_its_folder(device, speech, tmp_path):
    """`edge-agent run` as root before install.sh leaves /var/lib/edge root's, files and all:
    the install gives edge's own names to edge (through no link), nothing else, and the
    service user can then do what the service does: forget everything it holds."""
    from edge.stt.model_path import find_model

    outside = tmp_path / "outside"  # what links inside the folder point at: never changed
    (outside / "models").mkdir(parents=True)
    (outside / "target").write_text("not edge's\n")
    config = _device_config(vault='backend = "file"\npath = "/var/lib/edge/root.key"', model=find_model("auto"))
    clip = speech.join(speech.say("메시지"), 1.0, speech.say("아버지"))
    before = device.run(
        "mkdir -p /etc/edge && cat > /etc/edge/household.toml <<'TOML'\n" + config + "TOML\n"
        f"{BEFORE_INSTALL} run --input {clip} --profile child || exit 1\n"
        "mkdir -m 0700 /var/lib/edge/lost+found && touch /var/lib/edge/lost+found/#1234\n"  # a file system's: not edge's
        f"ln -s {outside / 'target'} /var/lib/edge/recordings/0123456789abcdef.wav.age\n"
        f"ln -s {outside / 'models'} /var/lib/edge/models\n"
    )
    assert before.returncode == 0, before.stderr
    data = device.path("/var/lib/edge")
    assert sorted(p.name for p in data.iterdir()) == [
        "audit.jsonl",
        "audit.key",
        "clock",
        "files-clean",
        "keystore-at-rest",
        "keystore.db",
        "lock",
        "lost+found",
        "models",
        "policy.json",
        "recordings",
        "reserve",
        "root.key",
        "transcripts",
    ]
    assert set(_owners(data).values()) == {0}

    installed = device.run(f"{SCRIPT} --no-model")
    assert installed.returncode == 0, installed.stderr
    edge = device.uid("edge")
    owners = _owners(data)
    theirs = {"lost+found", "lost+found/#1234"}
    assert {name: uid for name, uid in owners.items() if name not in theirs} == {name: edge for name in owners if name not in theirs}
    assert {name: owners[name] for name in theirs} == {name: 0 for name in theirs}
    assert data.stat().st_uid == edge and len(owners) == 20  # with 2 sessions, a recording and a transcript each
    assert (outside / "target").stat().st_uid == 0 and (outside / "models").stat().st_uid == 0  # links: never followed
    assert "gave 18 of edge's own files and folders in /var/lib/edge to the service user edge" in installed.stderr
    assert "enable --now edge-purge-overdue.timer" in (device.folder / "systemctl.log").read_text()

    service = device.run("runuser -u edge -- /opt/edge/venv/bin/edge-agent forget --all --yes")
    assert service.returncode == 0, service.stderr
    assert "forgot 2 session(s)" in service.stdout
    assert [p.name for p in (data / "recordings").iterdir()] == ["0123456789abcdef.wav.age"]  # a link: left alone
    again = device.run(f"{SCRIPT} --no-model")  # nothing more to take over
    assert again.returncode == 0 and "gave" not in again.stderr, again.stderr


def test_a_root_key_in_roots_keyring_stops_the_install_with_the_exact_fix(device, tmp_path):
    """The service could not open a keystore whose root key is in root's kernel keyring (no key
    can be handed over between users): install.sh changes nothing and prints the commands
    that forget it; after them the install completes and the service user can use the folder."""
    config = _device_config(vault='backend = "keyring"\nkeyring = "session"', model=Path("/nonexistent"))  # the tests' keyring
    before = device.run("mkdir -p /etc/edge && cat > /etc/edge/household.toml <<'TOML'\n" + config + f"TOML\n{BEFORE_INSTALL} purge")
    assert before.returncode == 0, before.stderr
    data = device.path("/var/lib/edge")
    refused = device.run(f"{SCRIPT} --no-model")
    assert refused.returncode == 1
    assert "holds a keystore whose root key is in the kernel keyring of uid 0 (root)" in refused.stderr
    assert set(_owners(data).values()) == {0} and data.stat().st_uid == 0  # nothing was changed
    assert not device.path("/etc/systemd/system/edge-agent.service").exists()
    fix = [line.removeprefix("install:   sudo ") for line in refused.stderr.splitlines() if line.startswith("install:   sudo ")]
    assert [line.split(" ", 1)[0] for line in fix] == ["edge-agent", "/opt/edge/venv/bin/python", "rm"]
    assert fix[0] == "edge-agent forget --all --yes"
    fixed = device.run("\n".join(f"{line} || exit 1" for line in fix) + f"\n{SCRIPT} --no-model")
    assert fixed.returncode == 0, fixed.stderr
    assert set(_owners(data).values()) == {device.uid("edge")}
    # as the service: user edge, in a session keyring of its own (systemd gives each service one)
    own_keyring = "from edge.crypto.keyring import join_new_session_keyring as j; import os, sys; j(); os.execv(sys.argv[1], sys.argv[1:])"
    service = device.run(f"runuser -u edge -- /opt/edge/venv/bin/python -c '{own_keyring}' /opt/edge/venv/bin/edge-agent purge")
    assert service.returncode == 0, service.stderr
    assert json.loads((data / "vault").read_text())["uid"] == device.uid("edge")  # a fresh keystore, its root in edge's keyring
    # root's old key is gone too: else root, sharing its name, would find it and be told the keystore is damaged
    by_root = device.run("edge-agent status")
    assert by_root.returncode != 0 and "which this process (user root (uid 0)) cannot see" in by_root.stderr, by_root.stderr


def test_a_data_folder_holding_what_edge_did_not_make_stops_the_install(tmp_path):
    """The agent refuses such a folder: the install says so, changing nothing there."""
    stage = tmp_path / "root"
    data = stage / "var/lib/edge"
    data.mkdir(parents=True, mode=0o700)
    (data / "audit.jsonl").write_text("")
    (data / "notes.txt").write_text("someone's\n")
    result = _install(stage)
    assert result.returncode == 1
    assert "/var/lib/edge holds what edge did not make: 'notes.txt'. The agent refuses" in result.stderr
    assert "sudo mv /var/lib/edge/NAME /root/" in result.stderr and "chown" not in result.stderr.split("did not make")[1]
    assert sorted(p.name for p in data.iterdir()) == ["audit.jsonl", "notes.txt"]
    assert not (stage / "etc/systemd/system/edge-agent.service").exists()


def test_a_staged_install_names_the_own_files_it_would_give_the_service(tmp_path):
    stage = tmp_path / "root"
    data = stage / "var/lib/edge"
    for name in ("recordings", "lost+found"):
        (data / name).mkdir(parents=True, mode=0o700)
    for name in ("lock", "keystore.db", ".keystore.db.123.tmp"):
        (data / name).touch(mode=0o600)
    result = _install(stage)
    assert result.returncode == 0, result.stderr
    names = ".keystore.db.123.tmp keystore.db lock recordings"
    assert f"skip (--root): chown -hPR edge:edge {' '.join('/var/lib/edge/' + n for n in names.split())}" in result.stderr
