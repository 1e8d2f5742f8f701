"""Boot the arm64 machine scripts/pi-system-check.sh made and check edge inside it, stage by
stage, printing PASS/FAIL lines and a summary with the time each stage took.

The machine: qemu-system-aarch64 (virt, cortex-a72, TCG), Debian's arm64 kernel and initrd,
the disk image as virtio-blk, swtpm as its TPM (tpm-tis-device: the kernel's own driver and
resource manager), user-mode network with the host's loopback PORT forwarded to the guest's
Wyoming port, the serial console as a Unix socket. A fresh swtpm per boot on the same state
folder, so a second boot is a power cycle for the TPM as for the rest. Commands go to the
console as `CMD; echo MARK$?` and their output is what comes between the marks.

Stages, in order (each needs the ones before it; a failed one ends the run):
  boot       systemd is PID 1, /dev/tpmrm0 exists and answers
  install    scripts/install.sh --tpm --wyoming 10300:child for real; the agent a service
  wyoming    espeak-ng speech from the host through the forwarded port, transcribed
  keyring    the keyring vault's syscalls on an arm64 kernel, persistent keyrings present
             and absent (a seccomp filter, as on a Raspberry Pi OS kernel)
  reboot     a power cycle: the TPM vault opens a session kept before it, shreds its audio
             on time after it; the keyring root is gone, as promised
  uninstall  scripts/install.sh --uninstall

    .venv/bin/python scripts/pi-system-check.py --work DIR --kernel VMLINUZ --initrd INITRD --image DISK [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import Speech, wyoming_utterance  # noqa: E402

WYOMING_PORT = 10300
"""The guest's Wyoming port (install.sh --wyoming 10300:child), forwarded from the host's loopback."""
PHRASE = "메시지"
"""A grammar phrase of the example config (tests/support.py: reliable on espeak-ng speech)."""
KEEP_AUDIO = 720
"""Seconds the child profile keeps audio in the guest (set after install), so that a shred is
due a few minutes after the reboot. The expiry is rounded down to its bucket's window, and a
power cycle under emulation took 2-5 minutes: 360 s once left 49 s, too few for the export."""
AGENT = "runuser -u edge -- /usr/local/bin/edge-agent --config /etc/edge/household.toml"
"""edge-agent as the service user, whose keyring and TPM group hold the root."""
SERVE_DROPIN = """# The README's setup for a device without a microphone (sudo systemctl edit edge-agent).
[Service]
ExecStart=
ExecStart=/opt/edge/venv/bin/edge-agent --config /etc/edge/household.toml serve
"""
KEYRING_CHECK = """\
import hashlib, os, sys
from pathlib import Path
from edge.crypto import keyring
from edge.crypto.vault import KeyringVault
from edge.errors import EdgeError
from edge.values import KeyringKind
step, data = sys.argv[1], Path(sys.argv[2])
data.mkdir(mode=0o700, exist_ok=True)
if step == "write":
    root = os.urandom(32)
    KeyringVault(data).write("current", root)
    print("root", hashlib.sha256(root).hexdigest()[:16])
elif step == "read":
    vault = KeyringVault(data)
    root = vault.read("current")
    print("root", hashlib.sha256(root).hexdigest()[:16] if root else None)
    if root is None:
        print("why", vault.why_missing())
elif step == "erase":
    KeyringVault(data).erase("current")
elif step == "absent":  # under a filter that plays a kernel without persistent keyrings
    print("persistent", keyring.persistent_supported())
    try:
        KeyringVault(data)
        print("opened")
    except EdgeError as exc:
        print("refused", type(exc).__name__)
    session = KeyringVault(data, KeyringKind.SESSION)
    session.write("current", b"s" * 32)
    print("session", session.read("current") == b"s" * 32)
"""
SECCOMP = (
    "import errno, os, sys, seccomp\n"
    "rules = seccomp.SyscallFilter(seccomp.ALLOW)\n"
    "rules.add_rule(seccomp.ERRNO(errno.EOPNOTSUPP), 'keyctl', seccomp.Arg(0, seccomp.EQ, 22))\n"
    "rules.load()\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)
"""tests/support.py's without_persistent_keyrings: KEYCTL_GET_PERSISTENT fails with EOPNOTSUPP."""


class StageFailed(Exception):
    """A check of the stage failed: later stages need what it was to set up."""


@dataclass
class Checks:
    """PASS/FAIL lines as they happen, and each stage's verdict and time for the summary."""

    failed: list[str] = field(default_factory=list)
    stages: list[tuple[str, str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: object = "") -> None:
        print(f"{'PASS' if ok else 'FAIL'}  {name}" + ("" if ok or detail == "" else f": {detail}"), flush=True)
        if not ok:
            self.failed.append(name)
            raise StageFailed(name)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"NOTE  {text}", flush=True)


class Console:
    """The guest's serial console: everything it prints goes to a log and a buffer that
    `expect` searches from where the last match ended."""

    def __init__(self, path: Path, log: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.log = log.open("ab")
        self.buffer = b""
        self.seen = 0
        self.lock = threading.Condition()
        self.closed = False
        self.count = 0
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            with self.lock:
                if not data:
                    self.closed = True
                    self.lock.notify_all()
                    return
                self.log.write(data)
                self.log.flush()
                self.buffer += data
                self.lock.notify_all()

    def expect(self, pattern: bytes, timeout: float) -> re.Match[bytes]:
        compiled = re.compile(pattern, re.DOTALL)
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                found = compiled.search(self.buffer, self.seen)
                if found:
                    self.seen = found.end()
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    tail = self.buffer[-400:].decode(errors="replace")
                    raise TimeoutError(f"no {pattern!r} on the console within {timeout:.0f} s; last output: {tail!r}")
                self.lock.wait(min(left, 1))

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def run(self, command: str, timeout: float = 120) -> tuple[int, str]:
        """(exit status, output) of a shell command line in the guest."""
        self.count += 1
        n = self.count
        # The quotes keep the echoed command line from matching the marks.
        self.send(f'echo __S{n}""__; {command}; echo __E{n}_$?""__\n')
        found = self.expect(rb"__S%d__\r?\n(.*?)__E%d_(\d+)__" % (n, n), timeout)
        return int(found.group(2)), found.group(1).decode(errors="replace").replace("\r\n", "\n").strip()

    def ok(self, command: str, timeout: float = 120) -> str:
        code, out = self.run(command, timeout)
        if code != 0:
            raise StageFailed(f"`{command}` exited {code}: {out[-600:]}")
        return out

    def put(self, path: str, text: str) -> None:
        """Write a file in the guest (base64 in lines short enough for the tty)."""
        encoded = base64.b64encode(text.encode()).decode()
        self.ok(f": > {path}.b64")
        for start in range(0, len(encoded), 512):
            self.ok(f"echo {encoded[start : start + 512]} >> {path}.b64")
        self.ok(f"base64 -d {path}.b64 > {path} && rm {path}.b64")

    def close(self) -> None:
        self.sock.close()
        self.log.close()


class Machine:
    """One boot: a fresh swtpm on the TPM state folder, then qemu-system-aarch64."""

    def __init__(self, args: argparse.Namespace, host_port: int, boot: int) -> None:
        self.args = args
        self.work: Path = args.work
        self.host_port = host_port
        self.boot = boot
        self.swtpm: subprocess.Popen[bytes] | None = None
        self.qemu: subprocess.Popen[bytes] | None = None
        self.console: Console | None = None

    def start(self) -> float:
        """Boot to the logged-in shell; the seconds it took."""
        started = time.monotonic()
        state = self.work / "tpm-state"
        state.mkdir(exist_ok=True)
        tpm_sock, console_sock = self.work / "swtpm.sock", self.work / "console.sock"
        for stale in (tpm_sock, console_sock):
            stale.unlink(missing_ok=True)
        swtpm = ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}", "--ctrl", f"type=unixio,path={tpm_sock}", "--terminate"]
        swtpm += ["--log", f"file={self.work / f'swtpm-{self.boot}.log'}"]
        self.swtpm = subprocess.Popen(swtpm)
        wait_for_path(tpm_sock, 10, "swtpm's control socket")
        qemu = ["qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "2048", "-display", "none"]
        qemu += ["-kernel", str(self.args.kernel), "-initrd", str(self.args.initrd)]
        qemu += ["-append", "root=LABEL=edge-pi rw console=ttyAMA0 net.ifnames=0 quiet loglevel=3 systemd.show_status=0"]
        qemu += ["-drive", f"file={self.args.image},format=raw,if=none,id=disk", "-device", "virtio-blk-device,drive=disk"]
        qemu += [
            "-netdev",
            f"user,id=net,hostfwd=tcp:127.0.0.1:{self.host_port}-:{WYOMING_PORT}",
            "-device",
            "virtio-net-device,netdev=net",
        ]
        qemu += ["-device", "virtio-rng-device"]
        qemu += [
            "-chardev",
            f"socket,id=tpm,path={tpm_sock}",
            "-tpmdev",
            "emulator,id=tpm0,chardev=tpm",
            "-device",
            "tpm-tis-device,tpmdev=tpm0",
        ]
        qemu += ["-chardev", f"socket,id=console,path={console_sock},server=on,wait=on", "-serial", "chardev:console", "-monitor", "none"]
        qemu += ["-no-reboot"]
        with (self.work / f"qemu-{self.boot}.log").open("wb") as log:
            self.qemu = subprocess.Popen(qemu, stdout=log, stderr=subprocess.STDOUT)
        wait_for_path(console_sock, 30, "qemu's console socket")
        self.console = Console(console_sock, self.work / f"console-{self.boot}.log")
        self.console.expect(rb"root@edge-pi:[^\n]*# ", 600)
        seconds = time.monotonic() - started
        self.console.ok("export TERM=dumb PAGER=cat SYSTEMD_PAGER=cat; dmesg -n 1")
        return seconds

    def power_off(self, timeout: float = 300) -> None:
        """systemctl poweroff, and wait for qemu (and with it swtpm) to end."""
        if self.console is not None and self.qemu is not None and self.qemu.poll() is None:
            self.console.send("systemctl poweroff\n")
            try:
                self.qemu.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        for process in (self.qemu, self.swtpm):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self.console is not None:
            self.console.close()
            self.console = None


def wait_for_path(path: Path, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise StageFailed(f"{what} did not appear within {seconds:.0f} s")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class SystemCheck:
    """The stages, in order, against one machine booted (and power-cycled) from the image."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.checks = Checks()
        self.host_port = free_port()
        self.machine = Machine(args, self.host_port, 1)
        self.speech = Speech(args.work / "speech")
        args.work.joinpath("speech").mkdir(exist_ok=True)
        self.session = ""

    @property
    def console(self) -> Console:
        assert self.machine.console is not None
        return self.machine.console

    def guest_clock(self) -> datetime:
        return datetime.fromtimestamp(float(self.console.ok("date +%s.%N")), timezone.utc)

    def status(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.console.ok(f"{AGENT} status --json 2>/dev/null", 300).splitlines()[-1])
        return document

    def wait_for_listener(self, timeout: float) -> float:
        """Seconds until the agent binds its Wyoming socket (it loads the model first)."""
        started = time.monotonic()
        self.console.ok(f"timeout {timeout:.0f} sh -c 'until [ -S /run/edge-wyoming/{WYOMING_PORT}.sock ]; do sleep 2; done'", timeout + 30)
        return time.monotonic() - started

    def utterance(self, timeout: float = 900) -> tuple[str, float]:
        """Speak PHRASE to the guest through the host's forwarded port: (text, seconds)."""
        clip = self.speech.say(PHRASE)
        started = time.monotonic()
        event = asyncio.run(wyoming_utterance(f"tcp://127.0.0.1:{self.host_port}", clip, timeout=timeout))
        seconds = time.monotonic() - started
        if event.type != "transcript":
            raise StageFailed(f"the guest answered {event.type}: {event.data}")
        return str(event.data.get("text")), seconds

    # -- the stages --------------------------------------------------------------------------

    def stage_boot(self) -> None:
        seconds = self.machine.start()
        self.checks.note(f"boot to a logged-in shell: {seconds:.0f} s")
        c = self.console
        self.checks.check("systemd is PID 1", c.ok("readlink /proc/1/exe").endswith("/systemd"))
        state = c.run("systemctl is-system-running --wait", 600)[1].splitlines()[-1]
        failed = c.ok("systemctl --failed --plain --no-legend | cut -d' ' -f1 | xargs")
        self.checks.note(f"systemd: {state} ({failed or 'no failed units'})")
        self.checks.check(f"an arm64 kernel: {c.ok('uname -rm')}", c.ok("uname -m") == "aarch64")
        self.checks.check(
            "the kernel's TPM driver: /dev/tpm0 and /dev/tpmrm0",
            c.run("test -c /dev/tpm0 && test -c /dev/tpmrm0")[0] == 0,
            c.ok("dmesg | grep -i tpm | tail -5"),
        )
        self.checks.check(
            "the TPM answers through the resource manager", c.run("tpm2_getrandom -T device:/dev/tpmrm0 --hex 8", 120)[0] == 0
        )
        self.checks.note(f"TPM: {c.ok('ls -l /dev/tpmrm0')}")

    def stage_install(self) -> None:
        c = self.console
        c.ok("mkdir -p /etc/systemd/system/edge-agent.service.d")
        c.put("/etc/systemd/system/edge-agent.service.d/serve.conf", SERVE_DROPIN)
        started = time.monotonic()
        code, out = c.run(
            f"cd /src/edge && PIP_NO_INDEX=1 PIP_FIND_LINKS=/var/cache/edge-wheels scripts/install.sh --tpm --wyoming {WYOMING_PORT}:child 2>&1 | tail -40; exit_=${{PIPESTATUS[0]}}; cd; (exit $exit_)",
            3600,
        )
        self.checks.note(f"install.sh --tpm --wyoming {WYOMING_PORT}:child: {time.monotonic() - started:.0f} s")
        self.checks.check("install.sh --tpm --wyoming for real", code == 0, out[-1500:])
        # A shred due minutes after the reboot: the child's audio is kept KEEP_AUDIO seconds.
        c.ok(f'sed -i \'/^\\[profiles.child\\]/,/^\\[/ s/^keep_audio = "1h"/keep_audio = "{KEEP_AUDIO}s"/\' /etc/edge/household.toml')
        self.checks.check(
            f"the child profile keeps audio {KEEP_AUDIO} s (for the reboot stage)",
            f'keep_audio = "{KEEP_AUDIO}s"' in c.ok("cat /etc/edge/household.toml"),
        )
        c.ok("systemctl restart edge-agent.service")
        self.checks.check(
            'the config names the TPM: backend = "tpm", tcti = "device:/dev/tpmrm0"',
            c.run(
                "grep -q '^backend = \"tpm\"' /etc/edge/household.toml && grep -q '^tcti = \"device:/dev/tpmrm0\"' /etc/edge/household.toml"
            )[0]
            == 0,
        )
        self.checks.check(
            "users edge (groups edge, audio, tss) and edge-wyoming (not in edge)",
            c.run("id -nG edge | grep -qw tss && id -nG edge | grep -qw audio && ! id -nG edge-wyoming | tr ' ' '\\n' | grep -qx edge")[0]
            == 0,
            c.run("id edge; id edge-wyoming")[1],
        )
        self.checks.check(
            "tmpfiles: /run/edge-wyoming 2750 edge:edge-wyoming", c.ok("stat -c '%a %U:%G' /run/edge-wyoming") == "2750 edge:edge-wyoming"
        )
        self.checks.check(
            f"edge-wyoming-{WYOMING_PORT}.socket listens", c.ok(f"systemctl is-active edge-wyoming-{WYOMING_PORT}.socket") == "active"
        )
        self.checks.check("the backstop timer is active", c.ok("systemctl is-active edge-purge-overdue.timer") == "active")
        waited = self.wait_for_listener(900)
        self.checks.note(f"the service bound its Wyoming socket {waited:.0f} s after the restart")
        self.checks.check(
            "edge-agent.service runs as user edge",
            c.ok("systemctl show -P ActiveState edge-agent") == "active"
            and c.ok("stat -c %U /proc/$(systemctl show -P MainPID edge-agent)") == "edge",
        )
        watchdog = [c.ok(f"systemctl show -P {name} edge-agent") for name in ("Type", "WatchdogUSec", "WatchdogTimestampMonotonic")]
        self.checks.check(
            "systemd heard the agent: READY=1 (Type=notify, active) and WATCHDOG=1 (its 5-minute watchdog was fed)",
            watchdog[:2] == ["notify", "5min"] and watchdog[2] not in ("", "0"),
            watchdog,
        )
        self.checks.check(
            "the sandbox allows /dev/tpmrm0 only",
            "/dev/tpmrm0 rw" in c.ok("systemctl show -P DeviceAllow edge-agent"),
            c.ok("systemctl show -P DeviceAllow edge-agent"),
        )
        exposure = c.run("systemd-analyze security edge-agent.service --no-pager 2>/dev/null | tail -1")[1]
        self.checks.note(f"systemd-analyze security: {exposure}")
        vault = self.status()["vault"]
        self.checks.check(f"status: the vault is the TPM ({vault.get('backend')})", vault.get("backend") == "tpm", vault)

    def stage_wyoming(self) -> None:
        text, seconds = self.utterance()
        self.checks.note(f"a Wyoming utterance from the host, transcribed in the guest: {seconds:.1f} s")
        self.checks.check(
            f"the host's utterance came back as {PHRASE!r} through 127.0.0.1:{self.host_port} -> guest:{WYOMING_PORT}",
            text == PHRASE,
            repr(text),
        )
        sessions = self.status()["sessions"]
        child = [s for s in sessions if s["profile"] == "child" and s["rule"] == "listener"]
        self.checks.check("status: a sealed session of profile child (rule listener)", len(child) == 1, sessions)
        code, out = self.console.run(f"{AGENT} audit verify", 600)
        self.checks.check("audit verify", code == 0, out[-800:])
        journal = self.console.ok("journalctl -u edge-agent -u 'edge-wyoming-*' --no-pager -o cat")
        self.checks.check("no transcript text in the journal", PHRASE not in journal)

    def stage_keyring(self) -> None:
        c = self.console
        c.put("/root/keyring-check.py", KEYRING_CHECK)
        c.put("/root/no-persistent.py", SECCOMP)
        py = "/opt/edge/venv/bin/python /root/keyring-check.py"
        self.checks.check(
            "persistent keyrings (CONFIG_PERSISTENT_KEYRINGS) on this arm64 kernel",
            c.ok("/opt/edge/venv/bin/python -c 'from edge.crypto import keyring; print(keyring.persistent_supported())'") == "True",
        )
        written = c.ok(f"{py} write /root/kr")
        self.checks.check(
            "a root written to the persistent keyring is read back by another process", c.ok(f"{py} read /root/kr") == written, written
        )
        self.checks.check("keyctl sees the key in root's persistent keyring", "edge:" in c.ok("keyctl show $(keyctl get_persistent @s)"))
        c.ok(f"{py} erase /root/kr")
        self.checks.check("erased: another process finds no root", c.ok(f"{py} read /root/kr").startswith("root None"))
        absent = c.ok(f"/usr/bin/python3 /root/no-persistent.py {py} absent /root/kr-pi")
        self.checks.check(
            "without persistent keyrings (as on a Pi's kernel): refused with a clear error; a session keyring works",
            absent.splitlines() == ["persistent False", "refused VaultError", "session True"],  # NO_PERSISTENT_KEYRINGS
            absent,
        )
        self.checks.note(f"without persistent keyrings: {' / '.join(absent.splitlines())}")
        c.ok(f"{py} write /root/kr-reboot")  # the reboot stage checks that it is gone

    def stage_reboot(self) -> None:
        c = self.console
        text, _ = self.utterance()
        self.checks.check(f"a second utterance before the power cycle ({text!r})", text == PHRASE, repr(text))
        sessions = [s for s in self.status()["sessions"] if s["profile"] == "child" and s["audio_expires"]]
        newest = max(sessions, key=lambda s: s["created"])
        self.session = newest["session"]
        due = parse_time(newest["audio_expires"])
        c.ok("sync")
        started = time.monotonic()
        self.machine.power_off()
        self.machine = Machine(self.args, self.host_port, 2)
        seconds = self.machine.start()
        self.checks.note(
            f"power cycle (poweroff, a fresh swtpm on the same state, boot): {time.monotonic() - started:.0f} s, boot {seconds:.0f} s"
        )
        c = self.console
        self.checks.check("after the power cycle: /dev/tpmrm0 again", c.run("test -c /dev/tpmrm0")[0] == 0)
        gone = c.ok("/opt/edge/venv/bin/python /root/keyring-check.py read /root/kr-reboot")
        self.checks.check(
            "the keyring vault's root did not survive the power cycle (as promised)",
            gone.startswith("root None") and "restarted" in gone,
            gone,
        )
        left = (due - self.guest_clock()).total_seconds()
        self.checks.note(f"the session's audio is due in {left:.0f} s")
        code, out = c.run(
            f"{AGENT} export --session {shlex.quote(self.session)} --out /tmp/kept.wav --purpose playback && stat -c %s /tmp/kept.wav && rm /tmp/kept.wav",
            600,
        )
        self.checks.check(
            "the TPM vault opens the session kept before the power cycle (export --purpose playback)",
            code == 0 and left > 0,
            out[-600:] if code else f"{left:.0f} s before its audio was due",
        )
        self.wait_for_listener(900)
        wait = max(0.0, (due - self.guest_clock()).total_seconds()) + 90
        self.checks.note(f"waiting {wait:.0f} s for the audio's shred (due {due.isoformat()}, plus a sweep and a margin)")
        time.sleep(wait)
        shreds = [json.loads(line) for line in c.ok(f"{AGENT} audit show --type shred --json", 300).splitlines() if line.startswith("{")]
        mine = [e for e in shreds if self.session in json.dumps(e) and '"audio"' in json.dumps(e)]
        self.checks.check("the audio was shredded after the power cycle, on time", bool(mine), shreds[-3:])
        late = max(float(find_key(e, "late_seconds") or 0) for e in mine)
        self.checks.note(f"the shred was {late:.1f} s after its due time")
        self.checks.check("shred late by less than a sweep (60 s) and a margin", late < 75, late)
        session = [s for s in self.status()["sessions"] if s["session"] == self.session]
        self.checks.check(
            "status: audio shredded, transcript kept",
            bool(session) and session[0]["audio_shredded"] is not None and session[0]["transcript_expires"] is not None,
            session,
        )
        code, out = c.run(f"{AGENT} audit verify", 600)
        self.checks.check("audit verify after the power cycle", code == 0, out[-800:])

    def stage_uninstall(self) -> None:
        c = self.console
        started = time.monotonic()
        code, out = c.run("cd /src/edge && scripts/install.sh --uninstall 2>&1 | tail -20; exit_=${PIPESTATUS[0]}; cd; (exit $exit_)", 1800)
        self.checks.note(f"install.sh --uninstall: {time.monotonic() - started:.0f} s")
        self.checks.check("install.sh --uninstall", code == 0, out[-1500:])
        self.checks.check("the audit log that records the purge verified", "verified above" in out, out[-600:])
        c.ok("rm -rf /etc/systemd/system/edge-agent.service.d && systemctl daemon-reload")
        left = c.run("ls /etc/systemd/system/edge-* /opt/edge /usr/local/bin/edge-agent /etc/tmpfiles.d/edge-wyoming.conf 2>/dev/null")[1]
        self.checks.check("the units, the bridges, the program and the tmpfiles entry are gone", left == "", left)
        self.checks.check("nothing listens on the Wyoming port", c.run(f"ss -ltn | grep -q ':{WYOMING_PORT} '")[0] != 0)

    def run(self) -> int:
        stages = [
            ("boot", self.stage_boot),
            ("install", self.stage_install),
            ("wyoming", self.stage_wyoming),
            ("keyring", self.stage_keyring),
            ("reboot", self.stage_reboot),
            ("uninstall", self.stage_uninstall),
        ]
        started = time.monotonic()
        try:
            for index, (name, stage) in enumerate(stages):
                print(f"pi-check --system: stage {name}", flush=True)
                began = time.monotonic()
                try:
                    stage()
                except (StageFailed, TimeoutError, OSError, ValueError, KeyError) as exc:
                    if not isinstance(exc, StageFailed) or str(exc) not in self.checks.failed:
                        print(f"FAIL  {name}: {exc}", flush=True)
                    self.checks.stages.append((name, "FAIL", time.monotonic() - began))
                    self.checks.stages += [(later, "NOT RUN", 0.0) for later, _ in stages[index + 1 :]]
                    break
                self.checks.stages.append((name, "PASS", time.monotonic() - began))
            if self.machine.console is not None:
                self.machine.power_off(120)
        finally:
            self.machine.kill()
        print(f"pi-check --system: {(time.monotonic() - started) / 60:.1f} min; the stages:", flush=True)
        for name, verdict, seconds in self.checks.stages:
            print(f"  {verdict:<8} {name:<10} {seconds:6.0f} s", flush=True)
        return 0 if all(verdict == "PASS" for _, verdict, _ in self.checks.stages) else 1


def find_key(value: Any, key: str) -> Any:
    """The first value of `key` anywhere in a JSON document."""
    if isinstance(value, dict):
        if key in value:
            return value[key]
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = find_key(item, key)
            if found is not None:
                return found
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="the work folder (swtpm state, sockets, console logs)")
    parser.add_argument("--kernel", type=Path, required=True)
    parser.add_argument("--initrd", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True, help="the disk image (ext4, label edge-pi)")
    parser.add_argument("--keep", action="store_true", help="(for the shell script: keep the work folder)")
    return SystemCheck(parser.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
