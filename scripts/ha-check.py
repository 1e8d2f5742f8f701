"""Drive an unmodified Home Assistant as edge's Wyoming client, with scripts only, and check
edge end to end. Run by scripts/ha-check.sh, which builds the Debian root HA runs in.

On the host, from this working tree's .venv: `edge-agent serve` with two listeners, the
kids' room (profile child) and the hall (no profile: the household's active profile,
parent), each behind the TCP bridge install.sh sets up (systemd-socket-proxyd,
socket-activated, SIGPIPE ignored as systemd does). In the root: Home Assistant with a
fresh config folder, HTTP on 127.0.0.1 only. Then onboarding over HTTP, the Wyoming
integration through the config-entries flow, an Assist pipeline per listener, and
`assist_pipeline/run` (stt to stt) over the websocket with espeak-ng speech as binary
frames. Last, discovery: all of it runs in a network and mount namespace of its own, with
loopback and one private link on which this machine's avahi-daemon publishes the records
install.sh writes and Home Assistant's zeroconf finds them. Prints PASS/FAIL lines (and NOTE
lines: what Home Assistant keeps); exit 1 on a FAIL.

    unshare --net --mount -- .venv/bin/python scripts/ha-check.py --root DIR [--env NAME=VALUE ...]
    .venv/bin/python scripts/ha-check.py --root DIR --warm-up   start HA once and stop it
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from websockets.asyncio.client import ClientConnection, connect  # noqa: E402  (vosk depends on websockets)
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402

import support  # noqa: E402
from support import CHILD, PARENT, PHRASES, ServeAgent, Speech, edge_agent, file_vault, household_toml, pcm_of, plaintext_files  # noqa: E402

INSIDE = "/srv/edge-ha-check"
"""Home Assistant's config folder, as the root sees it (made afresh for every run)."""
CHUNK = 640
"""Bytes of audio per binary frame: 20 ms at 16 kHz, 16-bit mono."""
STARTUP = 1200
"""Seconds Home Assistant may take to start (the first start after a build installs what its
integrations need, building some from source)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Checks:
    """PASS/FAIL lines as they happen; NOTE lines for facts that are not edge's to pass."""

    failed: list[str] = field(default_factory=list)
    passed: int = 0

    def check(self, name: str, ok: bool, detail: object = "") -> bool:
        if ok:
            self.passed += 1
            print(f"PASS  {name}", flush=True)
        else:
            self.failed.append(name)
            print(f"FAIL  {name}" + (f": {detail}" if detail != "" else ""), flush=True)
        return ok

    @staticmethod
    def note(text: str) -> None:
        print(f"NOTE  {text}", flush=True)


# -- Home Assistant -------------------------------------------------------------------------------


class HomeAssistantError(Exception):
    """Home Assistant answered a command with an error, or did not start."""


@dataclass
class Run:
    """One `assist_pipeline/run` as Home Assistant reported it."""

    events: list[dict[str, Any]]

    @property
    def text(self) -> str | None:
        ends = [e["data"]["stt_output"]["text"] for e in self.events if e["type"] == "stt-end"]
        return ends[0] if ends else None

    @property
    def error(self) -> str | None:
        errors = [e["data"].get("code") for e in self.events if e["type"] == "error"]
        return errors[0] if errors else None

    def __str__(self) -> str:
        return f"text={self.text!r} error={self.error!r} events={[e['type'] for e in self.events]}"


class HomeAssistant:
    """The hass process in the root, its HTTP API (urllib) and its websocket API."""

    def __init__(self, root: Path, env: list[str], log: Path, zeroconf: bool = False) -> None:
        self.root = root
        self.env = env
        self.log = log
        self.zeroconf = zeroconf
        self.port = free_port()
        self.config = root / INSIDE.lstrip("/")
        self.process: subprocess.Popen[bytes] | None = None
        self.client_id = f"http://127.0.0.1:{self.port}/"
        self.refresh_token = ""
        self.access_token = ""
        # loopback only, whatever proxy the environment names
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def write_config(self, settings: bool = False) -> None:
        """Only what the check needs (no default_config), the recorder as a household has it,
        HTTP on loopback; with `zeroconf` (only on the check's private link, see Avahi) the
        discovery a household has through default_config. `settings`: the two settings the
        README names, to see what each does: debug_recording_dir (keeps every run's audio)
        and the recorder's exclude (keeps no time of any utterance)."""
        lines = [
            "homeassistant:",
            "  name: edge check",
            "  time_zone: UTC",
            "  country: KR",
            "  language: ko",
            "  unit_system: metric",
            "  latitude: 37.5",
            "  longitude: 127.0",
            "  elevation: 0",
            "http:",
            "  server_host: 127.0.0.1",
            f"  server_port: {self.port}",
            "api:",
            "config:",
            "onboarding:",
            "websocket_api:",
            "conversation:",
            "logger:",
            "  default: info",
            *(["zeroconf:"] if self.zeroconf else []),
            "assist_pipeline:",
        ]
        if settings:
            lines.append(f"  debug_recording_dir: {INSIDE}/debug-recordings")
        lines.append("recorder:")
        if settings:
            lines += ["  exclude:", "    domains:", "      - stt"]
        self.config.mkdir(parents=True, exist_ok=True)
        (self.config / "configuration.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def fresh(self) -> None:
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.config)], check=True)
        self.write_config()

    def version(self) -> str:
        return subprocess.run(
            ["chroot", str(self.root), "/opt/ha/bin/python", "-c", "from homeassistant.const import __version__; print(__version__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def start(self) -> float:
        """Start hass and wait until it says it is initialized: seconds taken."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        started = time.monotonic()
        with self.log.open("ab") as out:
            command = ["chroot", str(self.root), "/usr/bin/env", "-i", "HOME=/root", "PATH=/opt/ha/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
            command += ["LANG=C.UTF-8", *self.env, "/opt/ha/bin/hass", "--config", INSIDE]
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        while b"Home Assistant initialized" not in self._log_since(offset):
            if self.process.poll() is not None:
                raise HomeAssistantError(f"hass exited with {self.process.returncode}; its log: {self.log}")
            if time.monotonic() - started > STARTUP:
                raise HomeAssistantError(f"hass did not start within {STARTUP} s; its log: {self.log}")
            time.sleep(0.5)
        return time.monotonic() - started

    def _log_since(self, offset: int) -> bytes:
        with self.log.open("rb") as log:
            log.seek(offset)
            return log.read()

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    # HTTP

    def http(self, path: str, body: dict[str, Any], form: bool = False) -> Any:
        data = urllib.parse.urlencode(body).encode() if form else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded" if form else "application/json")
        if self.access_token:
            request.add_header("Authorization", f"Bearer {self.access_token}")
        try:
            with self.opener.open(request, timeout=120) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise HomeAssistantError(f"POST {path}: {error.code} {error.read().decode(errors='replace')}") from None

    def onboard(self) -> None:
        """The owner user (onboarding's first step), then tokens, as the frontend gets them.
        The core-config step is left out: it sets up integrations that reach the internet
        (weather, Google Translate, radio browser)."""
        user = {
            "client_id": self.client_id,
            "name": "edge check",
            "username": "edge-check",
            "password": secrets.token_urlsafe(16),
            "language": "ko",
        }
        code = self.http("/api/onboarding/users", user)["auth_code"]
        tokens = self.http("/auth/token", {"grant_type": "authorization_code", "code": code, "client_id": self.client_id}, form=True)
        self.access_token, self.refresh_token = tokens["access_token"], tokens["refresh_token"]

    def refresh(self) -> None:
        """A new access token from the refresh token (after a restart, as the frontend does)."""
        self.access_token = ""
        body = {"grant_type": "refresh_token", "refresh_token": self.refresh_token, "client_id": self.client_id}
        self.access_token = self.http("/auth/token", body, form=True)["access_token"]

    def add_wyoming(self, port: int) -> dict[str, Any]:
        """Settings → Add integration → Wyoming Protocol, host and port: the config-entries flow."""
        flow = self.http("/api/config/config_entries/flow", {"handler": "wyoming", "show_advanced_options": False})
        if flow.get("type") != "form" or flow.get("step_id") != "user":
            raise HomeAssistantError(f"the Wyoming flow did not ask for host and port: {flow}")
        result: dict[str, Any] = self.http(f"/api/config/config_entries/flow/{flow['flow_id']}", {"host": "127.0.0.1", "port": port})
        return result

    def entry_data(self, entry_id: str) -> dict[str, Any] | None:
        """A config entry's data (host and port, for Wyoming) as Home Assistant stores it: its
        APIs do not show it. Home Assistant writes the file within a second or so."""
        store = self.config / ".storage" / "core.config_entries"
        deadline = time.monotonic() + 30
        while True:
            try:
                entries = json.loads(store.read_text(encoding="utf-8"))["data"]["entries"]
            except (FileNotFoundError, ValueError, KeyError):
                entries = []
            for entry in entries:
                if entry["entry_id"] == entry_id:
                    data: dict[str, Any] = entry["data"]
                    return data
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)

    # websocket

    def ws(self, work: Callable[[Socket], Awaitable[Any]]) -> Any:
        async def session() -> Any:
            url = f"ws://127.0.0.1:{self.port}/api/websocket"
            async with connect(url, proxy=None, max_size=64 * 2**20, open_timeout=60) as connection:
                hello = json.loads(await connection.recv())
                assert hello["type"] == "auth_required", hello
                await connection.send(json.dumps({"type": "auth", "access_token": self.access_token}))
                answer = json.loads(await connection.recv())
                if answer["type"] != "auth_ok":
                    raise HomeAssistantError(f"websocket authentication: {answer}")
                return await work(Socket(connection))

        return asyncio.run(session())


class Socket:
    """One authenticated websocket connection to Home Assistant."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.last_id = 0

    async def _send(self, message: dict[str, Any]) -> int:
        self.last_id += 1
        await self.connection.send(json.dumps({"id": self.last_id, **message}))
        return self.last_id

    async def _receive(self, wanted: int) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(await self.connection.recv())
            if message.get("id") == wanted:
                return message

    async def call(self, kind: str, **fields: Any) -> Any:
        wanted = await self._send({"type": kind, **fields})
        async with asyncio.timeout(120):
            message = await self._receive(wanted)
        if message["type"] != "result" or not message["success"]:
            raise HomeAssistantError(f"{kind}: {message}")
        return message["result"]

    async def transcribe(self, pipeline: str, pcm: bytes) -> Run:
        """`assist_pipeline/run` from stt to stt, as a satellite streams: once Home Assistant
        names its binary handler, the audio goes in real time as frames prefixed by that
        byte, and the byte alone ends it; streaming stops when Home Assistant has heard enough."""
        wanted = await self._send(
            {"type": "assist_pipeline/run", "start_stage": "stt", "end_stage": "stt", "input": {"sample_rate": 16000}, "pipeline": pipeline}
        )
        events: list[dict[str, Any]] = []
        streaming: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(180):
                while not events or events[-1]["type"] != "run-end":
                    message = await self._receive(wanted)
                    if message["type"] == "result":
                        if not message["success"]:
                            raise HomeAssistantError(f"assist_pipeline/run: {message}")
                        continue
                    events.append(message["event"])
                    if events[-1]["type"] == "run-start":
                        handler = events[-1]["data"]["runner_data"]["stt_binary_handler_id"]
                        streaming = asyncio.create_task(self._stream(bytes([handler]), pcm))
                    elif events[-1]["type"] in ("stt-vad-end", "stt-end", "error") and streaming is not None:
                        streaming.cancel()
        finally:
            if streaming is not None:
                streaming.cancel()
                await asyncio.gather(streaming, return_exceptions=True)
        return Run(events)

    async def _stream(self, prefix: bytes, pcm: bytes) -> None:
        started = time.monotonic()
        for index in range(0, len(pcm), CHUNK):
            await self.connection.send(prefix + pcm[index : index + CHUNK])
            await asyncio.sleep(max(0.0, started + (index + CHUNK) / 32000 - time.monotonic()))
        await self.connection.send(prefix)


# -- discovery -------------------------------------------------------------------------------------


LINK = "edge-mdns"
"""The check's one network link: a veth pair in its own network namespace (the kernel here may
have no dummy links), its peer up and unused, so multicast has somewhere to go."""
ADDRESS = "192.0.2.1"
"""The link's address: TEST-NET-1 (RFC 5737), for documentation, routed nowhere."""
AVAHI_HOST = "edge-ha-check"
"""avahi-daemon's host name, what it puts for %h in a record's name."""
FLOW_WAIT = 90
"""Seconds Home Assistant may take to discover a record and start the Wyoming flow."""


def private_namespaces() -> None:
    """Refuse to run outside a network and a mount namespace of its own: the check sets up a
    link, mounts over /etc/avahi/services and runs a second avahi-daemon, none of which may
    touch this machine (scripts/ha-check.sh runs it under `unshare --net --mount`)."""
    for kind in ("net", "mnt"):  # the parent's: PID 1's may not be readable in a container
        if os.readlink(f"/proc/self/ns/{kind}") == os.readlink(f"/proc/{os.getppid()}/ns/{kind}"):
            raise SystemExit(
                f"ha-check: not in a {kind} namespace of its own: run it as scripts/ha-check.sh does, "
                "`unshare --net --mount -- .venv/bin/python scripts/ha-check.py --root DIR`"
            )


def set_up_link() -> None:
    """Loopback, and LINK with ADDRESS and a route for multicast only: mDNS has a way out,
    and anything else meant for the internet fails at once."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "link", "add", LINK, "type", "veth", "peer", "name", f"{LINK}-peer"], check=True)
    for name in (LINK, f"{LINK}-peer"):  # IPv4 only: one address in each record Avahi publishes
        Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1\n")
    subprocess.run(["ip", "link", "set", f"{LINK}-peer", "up"], check=True)
    subprocess.run(["ip", "link", "set", LINK, "multicast", "on", "up"], check=True)
    subprocess.run(["ip", "address", "add", f"{ADDRESS}/24", "dev", LINK], check=True)
    subprocess.run(["ip", "route", "add", "224.0.0.0/4", "dev", LINK], check=True)


def avahi_record(port: int) -> str:
    """The Avahi service file install.sh writes for a listener on `port`, made by install.sh's
    own code (scripts/wyoming-templates.sh), not a copy of it."""
    script = 'SRC=$1; source "$SRC/scripts/wyoming-templates.sh"; avahi_record "$2"'
    made = subprocess.run(["bash", "-c", script, "ha-check", str(ROOT), str(port)], capture_output=True, text=True)
    if made.returncode != 0 or not made.stdout:
        raise RuntimeError(f"scripts/wyoming-templates.sh did not make the Avahi record: {made.stderr.strip()}")
    return made.stdout


def advertised_name(record: str) -> str:
    """The service instance name Home Assistant sees: the record's name, %h as Avahi fills it."""
    name = ET.fromstring(record).findtext("name") or ""
    return f"{name.replace('%h', AVAHI_HOST)}._wyoming._tcp.local."


@dataclass
class Avahi:
    """This machine's avahi-daemon on LINK only, without D-Bus, its pid file and socket in a
    private /run/avahi-daemon, publishing the check's records as /etc/avahi/services (both
    mounts in the check's own mount namespace)."""

    work: Path
    process: subprocess.Popen[bytes] | None = None
    mounted: list[str] = field(default_factory=list)
    made_run_folder: bool = False

    def start(self, records: dict[str, str]) -> None:
        """Publish `records` (file name -> content) and wait until avahi-daemon says each is
        established."""
        if not Path("/etc/avahi/services").is_dir() or not shutil.which("avahi-daemon"):
            raise RuntimeError("avahi-daemon is not installed (apt-get install avahi-daemon; scripts/ha-check.sh does)")
        services = self.work / "services"
        services.mkdir(parents=True)
        for name, record in records.items():
            (services / name).write_text(record, encoding="utf-8")
        config = self.work / "avahi-daemon.conf"
        config.write_text(
            f"[server]\nhost-name={AVAHI_HOST}\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces={LINK}\nenable-dbus=no\n"
            "[wide-area]\nenable-wide-area=no\n[publish]\npublish-hinfo=no\npublish-workstation=no\n",
            encoding="utf-8",
        )
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)  # nothing mounted here reaches the machine
        run = Path("/run/avahi-daemon")
        self.made_run_folder = not run.exists()
        run.mkdir(mode=0o755, exist_ok=True)
        for mount in (["-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", str(run)], ["--bind", str(services), "/etc/avahi/services"]):
            subprocess.run(["mount", *mount], check=True)
            self.mounted.append(mount[-1])
        log = self.work / "avahi-daemon.log"
        with log.open("ab") as out:
            command = ["avahi-daemon", "-f", str(config), "--no-drop-root", "--no-chroot", "--no-rlimits", "--no-proc-title"]
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        wanted = [f"/etc/avahi/services/{name}) successfully established" for name in records]
        deadline = time.monotonic() + 30
        while not all(line in log.read_text(encoding="utf-8", errors="replace") for line in wanted):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"avahi-daemon did not establish {sorted(records)}; its log: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        for target in reversed(self.mounted):
            subprocess.run(["umount", target], check=False)
        self.mounted.clear()
        if self.made_run_folder:
            Path("/run/avahi-daemon").rmdir()
            self.made_run_folder = False


# -- edge's side -----------------------------------------------------------------------------------


@dataclass
class Listener:
    """One [[wyoming]] listener of the check's household, its bridge and its pipeline."""

    name: str
    profile: str | None
    socket: Path
    expect: tuple[str, str]
    """(profile, rule) edge must tag its sessions with."""
    port: int = field(default_factory=free_port)
    bridge: subprocess.Popen[bytes] | None = None
    entry: str = ""
    entity: str = ""
    pipeline: str = ""
    via: str = ""
    """How Home Assistant found it, when not by hand (its PASS lines say so)."""

    @property
    def label(self) -> str:
        return f"{self.name}{self.via}"

    def toml(self) -> str:
        lines = ["", "[[wyoming]]", f'uri = "unix://{self.socket}"', f'name = "{self.name}"']
        return "\n".join(lines + ([f'profile = "{self.profile}"'] if self.profile else [])) + "\n"

    def start_bridge(self, log: Path) -> None:
        """What install.sh's edge-wyoming-PORT.socket/.service do, by hand: systemd-socket-proxyd
        socket-activated on the TCP port (every address, as ListenStream=PORT: the check's
        private network has loopback and its one link, see Avahi), SIGPIPE ignored (a systemd
        service ignores it)."""
        command = f"trap '' PIPE; exec systemd-socket-activate -l {self.port} /lib/systemd/systemd-socket-proxyd {self.socket}"
        with log.open("ab") as out:
            self.bridge = subprocess.Popen(["bash", "-c", command], stdout=out, stderr=subprocess.STDOUT)

    async def describe(self) -> Info:
        """edge's own `info`, asked through the bridge as Home Assistant asks it."""
        async with AsyncTcpClient("127.0.0.1", self.port) as client, asyncio.timeout(10):
            await client.write_event(Describe().event())
            while True:
                event = await client.read_event()
                if event is None:
                    raise ConnectionError("edge closed the connection without an info event")
                if Info.is_type(event.type):
                    return Info.from_event(event)


@dataclass
class Utterance:
    """What was said through a listener and what Home Assistant heard (said None: silence)."""

    listener: Listener
    said: str | None
    pcm: bytes
    run: Run


@dataclass
class Edge:
    """`edge-agent serve` from this working tree, restarted as a device would be; what it
    printed is kept, to check no transcript reached it."""

    config: Path
    agent: ServeAgent | None = None
    output: str = ""

    def start(self) -> None:
        self.agent = ServeAgent(self.config)

    def stop(self) -> int:
        assert self.agent is not None
        out, err, code = self.agent.stop()
        self.output += str(out) + err
        self.agent = None
        return code


# -- the check --------------------------------------------------------------------------------------


class Check:
    def __init__(self, root: Path, env: list[str], work: Path) -> None:
        self.work = work
        self.checks = Checks()
        self.ha = HomeAssistant(root, env, work / "home-assistant.log", zeroconf=True)
        self.avahi = Avahi(work / "avahi")
        (work / "speech").mkdir()
        self.speech = Speech(work / "speech")
        self.data = work / "data"
        self.listeners = [
            Listener("edge (kids' room)", "child", work / "kids.sock", ("child", "listener")),
            Listener("edge (hall)", None, work / "hall.sock", ("parent", "active")),
        ]
        config = work / "household.toml"
        text = household_toml(
            self.data,
            vault=file_vault(work / "root.key"),
            household='active_profile = "parent"',
            profiles={"parent": PARENT, "child": CHILD},
        )
        config.write_text(text + "".join(listener.toml() for listener in self.listeners), encoding="utf-8")
        self.edge = Edge(config)
        self.records: dict[int, str] = {}
        """Port -> the Avahi record install.sh writes for a listener there (--wyoming PORT[:PROFILE])."""
        self.utterances: list[Utterance] = []
        self.restarted = 0.0
        """Wall-clock time of Home Assistant's restart."""

    def run(self) -> int:
        started = time.monotonic()
        print(f"ha-check: Home Assistant {self.ha.version()} in {self.ha.root}; edge from {ROOT}", flush=True)
        try:
            set_up_link()
            self.records = {listener.port: avahi_record(listener.port) for listener in self.listeners}
            self.avahi.start({f"edge-wyoming-{port}.service": record for port, record in self.records.items()})
            for listener in self.listeners:
                listener.start_bridge(self.work / "bridges.log")
            self.edge.start()
            self.ha.fresh()
            print(
                f"ha-check: Home Assistant started in {self.ha.start():.0f} s (http://127.0.0.1:{self.ha.port}, loopback only)", flush=True
            )
            self.set_up()
            if not self.checks.failed:
                self.speak()
                self.restart_edge()
                self.restart_home_assistant()
                self.discover()
        except Exception as error:  # a step that cannot go on: one FAIL line, then cleanup
            self.checks.check("the check ran to its end", False, f"{type(error).__name__}: {error}")
        finally:
            self.ha.stop()
            if self.edge.agent is not None:
                self.checks.check("edge-agent serve stopped cleanly", self.edge.stop() == 0)
            for listener in self.listeners:
                if listener.bridge is not None:
                    listener.bridge.terminate()
                    listener.bridge.wait(timeout=30)
            self.avahi.stop()
        if self.utterances:
            self.check_edge()
            self.what_home_assistant_keeps()
        minutes = (time.monotonic() - started) / 60
        print(f"ha-check: {self.checks.passed} passed, {len(self.checks.failed)} failed, {minutes:.1f} min", flush=True)
        return 1 if self.checks.failed else 0

    # Home Assistant's setup, by scripts only

    def set_up(self) -> None:
        check = self.checks.check
        self.ha.onboard()
        check("onboarding over HTTP: the owner user is created and a token issued", bool(self.ha.access_token))
        for listener in self.listeners:
            result = self.ha.add_wyoming(listener.port)
            created = result.get("type") == "create_entry"
            check(f"the Wyoming integration's config flow adds 127.0.0.1:{listener.port} ({listener.name})", created, result)
            if created:
                listener.entry = result["result"]["entry_id"]
        self.ha.ws(self._set_up_pipelines)

    async def _set_up_pipelines(self, ws: Socket, listeners: list[Listener] | None = None) -> None:
        """For each listener (all by default): its entry loaded, its entity named and its
        languages as edge's info says, and an Assist pipeline with it as speech-to-text."""
        entries = await self._loaded_entries(ws)
        registry = await ws.call("config/entity_registry/list")
        states = {state["entity_id"]: state for state in await ws.call("get_states")}
        engines = {engine["engine_id"]: engine for engine in (await ws.call("stt/engine/list"))["providers"]}
        titles = {e["entry_id"]: e["title"] for e in await ws.call("config_entries/get", domain="wyoming")}
        for listener in self.listeners if listeners is None else listeners:
            await self._set_up_pipeline(ws, listener, entries, registry, states, engines, titles)
        if listeners is None:
            info = await self.listeners[0].describe()
            self.checks.note(f"edge's info as Home Assistant reads it: {info.event().data['asr']}")

    async def _set_up_pipeline(
        self,
        ws: Socket,
        listener: Listener,
        entries: dict[str, str],
        registry: list[dict[str, Any]],
        states: dict[str, dict[str, Any]],
        engines: dict[str, dict[str, Any]],
        titles: dict[str, str],
    ) -> None:
        check = self.checks.check
        info = await listener.describe()
        asr = info.asr[0]
        languages = sorted({language for model in asr.models if model.installed for language in model.languages})
        entities = [e["entity_id"] for e in registry if e["config_entry_id"] == listener.entry and e["entity_id"].startswith("stt.")]
        check(
            f"{listener.label}: Home Assistant loads the entry and makes one speech-to-text entity",
            entries.get(listener.entry) == "loaded" and len(entities) == 1,
            (entries, entities),
        )
        if len(entities) != 1:
            return
        listener.entity = entities[0]
        shown = (titles.get(listener.entry), states[listener.entity]["attributes"].get("friendly_name"))
        check(
            f"{listener.label}: Home Assistant shows edge's name (entry title, entity name) as edge's info says",
            shown == (asr.name, asr.name) == (listener.name, listener.name),
            shown,
        )
        shown_languages = sorted(engines.get(listener.entity, {}).get("supported_languages", []))
        check(
            f"{listener.label}: Home Assistant offers the languages edge's info says ({', '.join(languages)})",
            shown_languages == languages != [],
            shown_languages,
        )
        pipeline = await ws.call(
            "assist_pipeline/pipeline/create",
            name=f"edge check: {listener.label}",
            language=languages[0],
            stt_engine=listener.entity,
            stt_language=languages[0],
            conversation_engine="conversation.home_assistant",
            conversation_language=languages[0],
            tts_engine=None,
            tts_language=None,
            tts_voice=None,
            wake_word_entity=None,
            wake_word_id=None,
        )
        listener.pipeline = pipeline["id"]
        check(
            f"{listener.label}: an Assist pipeline with edge as its speech-to-text ({languages[0]})",
            pipeline["stt_engine"] == listener.entity,
        )

    async def _loaded_entries(self, ws: Socket) -> dict[str, str]:
        """Entry id -> state, once every Wyoming entry has left the setup states."""
        deadline = time.monotonic() + 60
        while True:
            entries = {e["entry_id"]: e["state"] for e in await ws.call("config_entries/get", domain="wyoming")}
            if time.monotonic() > deadline or all(state not in ("not_loaded", "setup_in_progress") for state in entries.values()):
                return entries
            await asyncio.sleep(0.5)

    # speech

    def say(self, listener: Listener, said: str | None, check: bool = True) -> Utterance:
        clip = self.speech.silence(2.0) if said is None else self.speech.say(said)
        pcm = pcm_of(clip)
        run: Run = self.ha.ws(lambda ws: ws.transcribe(listener.pipeline, pcm))
        utterance = Utterance(listener, said, pcm, run)
        if check:
            self.utterances.append(utterance)
            if said is not None:
                self.checks.check(f"{listener.label}: Home Assistant's stt-end text is {said!r}", run.text == said, run)
        return utterance

    def speak(self) -> None:
        kids, hall = self.listeners
        for phrase in PHRASES:
            self.say(kids, phrase)
        for phrase in PHRASES[::2]:
            self.say(hall, phrase)
        silence = self.say(kids, None)
        self.checks.check(
            "an utterance of silence: Home Assistant reports no text recognised (stt-no-text-recognized)",
            silence.run.error == "stt-no-text-recognized",
            silence.run,
        )
        running = edge_agent("--config", str(self.edge.config), "status")
        served = len(self.utterances)
        self.checks.check(
            f"`edge-agent status` on the serving agent counts the {served} utterances",
            f"{served} session(s) so far" in running.stdout,
            running.stdout,
        )

    def restart_edge(self) -> None:
        kids, hall = self.listeners
        self.checks.check("edge stopped cleanly for a restart", self.edge.stop() == 0)
        down = self.say(kids, PHRASES[0], check=False)
        self.checks.check(
            "edge down: Home Assistant's run ends in an error, not a hang", down.run.error is not None and down.run.text is None, down.run
        )
        self.edge.start()
        self.checks.check(
            "the bridges outlived edge's restart",
            all(listener.bridge is not None and listener.bridge.poll() is None for listener in self.listeners),
        )
        for listener, phrase in ((kids, PHRASES[3]), (hall, PHRASES[1])):
            self.say(listener, phrase)
        self.checks.check(
            "edge restarted while Home Assistant ran: Home Assistant recovered without user action",
            all(u.run.text == u.said for u in self.utterances[-2:]),
        )

    def restart_home_assistant(self) -> None:
        """Before: the transcripts Home Assistant keeps in memory (pipeline debug). Then a
        restart, with debug_recording_dir set, to see what that setting keeps."""
        kids, hall = self.listeners
        runs = self.ha.ws(self._debug_runs)
        texts = [text for listener in self.listeners for text in runs[listener.pipeline]]
        self.checks.note(
            f"Home Assistant holds the last runs of each pipeline in memory with their text (pipeline debug): {len(texts)} run(s), "
            f"{sum(1 for t in texts if t)} with a transcript"
        )
        self.checks.check("Home Assistant stopped cleanly", self.ha.stop() == 0)
        self.ha.write_config(settings=True)
        self.restarted = time.time()
        print(
            f"ha-check: Home Assistant restarted in {self.ha.start():.0f} s (now with debug_recording_dir, stt excluded from the recorder)",
            flush=True,
        )
        self.ha.refresh()
        pipelines = self.ha.ws(lambda ws: ws.call("assist_pipeline/pipeline/list"))
        kept = {p["id"] for p in pipelines["pipelines"]}
        self.checks.check(
            "after Home Assistant's restart the Wyoming entries and pipelines are back", {kids.pipeline, hall.pipeline} <= kept, kept
        )
        after = self.ha.ws(self._debug_runs)
        self.checks.note(
            f"after a restart Home Assistant's pipeline debug holds {sum(len(r) for r in after.values())} run(s): it lives in memory only"
        )
        for listener, phrase in ((kids, PHRASES[2]), (hall, PHRASES[4])):
            self.say(listener, phrase)
        self.checks.check("Home Assistant restarted: the next pipeline runs work", all(u.run.text == u.said for u in self.utterances[-2:]))
        recordings = sorted((self.ha.config / "debug-recordings").rglob("*.wav"))
        spoken = b"".join(u.pcm for u in self.utterances[-2:])
        with_speech = [p for p in recordings if any(w in spoken for w in support.speech_windows(p.read_bytes()[44:])[:5])]
        self.checks.note(
            f"with debug_recording_dir set, Home Assistant wrote {len(recordings)} WAV file(s) for 2 runs, {len(with_speech)} holding the speech as sent "
            f"({', '.join(str(p.relative_to(self.ha.config)) for p in recordings[:2])}); Home Assistant never deletes them"
        )

    async def _debug_runs(self, ws: Socket) -> dict[str, list[str | None]]:
        """Pipeline id -> the stt text of each run its debug view holds."""
        runs: dict[str, list[str | None]] = {}
        for listener in self.listeners:
            listed = await ws.call("assist_pipeline/pipeline_debug/list", pipeline_id=listener.pipeline)
            runs[listener.pipeline] = []
            for run in listed["pipeline_runs"]:
                debug = await ws.call(
                    "assist_pipeline/pipeline_debug/get", pipeline_id=listener.pipeline, pipeline_run_id=run["pipeline_run_id"]
                )
                runs[listener.pipeline].append(Run(debug["events"]).text)
        return runs

    # discovery

    def discover(self) -> None:
        """What a household sees: Home Assistant's zeroconf finds the records install.sh has
        Avahi publish and starts the Wyoming integration's zeroconf flow for each (its own
        config_flow: it reads the name, host and port, asks edge for `info`, and waits for the
        user to confirm); confirming adds an entry for the address and port Avahi published,
        which then transcribes like one added by hand."""
        check = self.checks.check
        network = self.ha.ws(lambda ws: ws.call("network"))
        enabled = [adapter["name"] for adapter in network["adapters"] if adapter["enabled"]]
        check(f"Home Assistant's zeroconf runs on the check's private link only ({LINK}, {ADDRESS})", enabled == [LINK], network)
        names = {listener.port: advertised_name(self.records[listener.port]) for listener in self.listeners}
        wanted = {f"{names[listener.port]}_{listener.name}" for listener in self.listeners}
        flows = self.ha.ws(lambda ws: self._zeroconf_flows(ws, wanted))
        discovered: list[Listener] = []
        for listener in self.listeners:
            flow = flows.get(f"{names[listener.port]}_{listener.name}")
            check(
                f"{listener.name}: Home Assistant discovers install.sh's Avahi record {names[listener.port]!r} and starts "
                "the Wyoming flow (source zeroconf), named as edge's info says",
                flow is not None
                and flow["step_id"] == "zeroconf_confirm"
                and flow["context"].get("title_placeholders") == {"name": listener.name},
                flow if flow is not None else flows,
            )
            if flow is None:
                continue
            result = self.ha.http(f"/api/config/config_entries/flow/{flow['flow_id']}", {})
            entry = result.get("result", {}) if result.get("type") == "create_entry" else {}
            data = self.ha.entry_data(entry["entry_id"]) if entry else None
            check(
                f"{listener.name}: confirming the discovered flow adds an entry for {ADDRESS}:{listener.port} (what Avahi published), "
                "titled as edge's info says",
                (entry.get("source"), entry.get("title"), data) == ("zeroconf", listener.name, {"host": ADDRESS, "port": listener.port}),
                (result, data),
            )
            if entry:
                discovered.append(replace(listener, entry=entry["entry_id"], entity="", pipeline="", via=" (discovered)"))
        if discovered:
            self.ha.ws(lambda ws: self._set_up_pipelines(ws, discovered))
            for listener, phrase in zip(discovered, (PHRASES[1], PHRASES[3]), strict=False):
                if listener.pipeline:
                    self.say(listener, phrase)

    async def _zeroconf_flows(self, ws: Socket, wanted: set[str]) -> dict[str, dict[str, Any]]:
        """Unique id -> the Wyoming flows zeroconf started, once every `wanted` one is there
        (or FLOW_WAIT has passed). The flow's unique id is the service's name and edge's."""
        deadline = time.monotonic() + FLOW_WAIT
        while True:
            flows = {
                flow["context"].get("unique_id"): flow
                for flow in await ws.call("config_entries/flow/progress")
                if flow["handler"] == "wyoming" and flow["context"].get("source") == "zeroconf"
            }
            if wanted <= set(flows) or time.monotonic() > deadline:
                return flows
            await asyncio.sleep(1)

    # what edge kept

    def check_edge(self) -> None:
        check = self.checks.check
        log = self.data / "audit.jsonl"
        entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []
        from edge import wiring
        from edge.config import load_config
        from edge.store.details import readable

        raw = [entry for entry in entries if entry["type"] == "session.served"]
        keys = wiring.held_details_keys(load_config(self.edge.config))  # a kept utterance's details are sealed under its own key
        served = [readable(entry["type"], entry["fields"], keys) for entry in raw]
        expected = [(u.listener.name, u.listener.expect[0], len(u.said or "")) for u in self.utterances if u.said is not None]
        check(
            "each kept utterance's listener, length and characters are sealed in the log (forgotten with its data); of one that "
            "keeps nothing the log says only that it was served, whose, and how it ended",
            all(("sealed" in e["fields"]) == bool(e["fields"].get("kept")) and "listener" not in e["fields"] for e in raw),
            [e["fields"] for e in raw],
        )
        check(
            "each utterance is audited (session.served: listener, profile, characters handed out)",
            len(served) == len(self.utterances)
            and [(s.get("listener"), s["profile"], s.get("characters")) for s in served if s.get("kept")] == expected,
            served,
        )
        status = edge_agent("--config", str(self.edge.config), "status", "--json")
        sessions = {s["session"]: s for s in json.loads(status.stdout)["sessions"]} if status.returncode == 0 else {}
        spoken = [(u, s["session"]) for u, s in zip(self.utterances, served, strict=False) if u.said is not None]
        tags = [(sessions.get(session, {}).get("profile"), sessions.get(session, {}).get("rule")) for _, session in spoken]
        check(
            "each utterance is a session in `edge-agent status`, tagged by its listener's profile",
            tags == [u.listener.expect for u, _ in spoken],
            tags,
        )
        from edge.disk.layout import recording_path, transcript_path

        sealed = [_is_age(recording_path(self.data, s)) and _is_age(transcript_path(self.data, s)) for _, s in spoken]
        check("each utterance is sealed (its recording and transcript files are age-encrypted)", sealed != [] and all(sealed), sealed)
        pcm = b"".join(u.pcm for u in self.utterances)
        leaks = plaintext_files(self.data, pcm, PHRASES)
        check("no audio and no transcript text in the clear in edge's data folder", leaks == [], leaks)
        verified = edge_agent("--config", str(self.edge.config), "audit", "verify")
        check("`edge-agent audit verify` passes", verified.returncode == 0, verified.stdout + verified.stderr)
        said = [phrase for phrase in PHRASES if phrase in self.edge.output]
        check("no transcript text in edge's stdout or stderr", said == [] and self.edge.output.strip() != "", said)
        silent = [s for u, s in zip(self.utterances, served, strict=False) if u.said is None]
        kept = [s["session"] in sessions or s.get("kept") for s in silent]
        self.checks.check(
            "the utterance of silence: audited as served, nothing of it kept (keep_unrecognised = false) nor said in the log",
            silent != [] and not any(kept) and all(not {"characters", "seconds", "listener"} & s.keys() for s in silent),
            silent,
        )

    def what_home_assistant_keeps(self) -> None:
        """Home Assistant's config folder after the check: where the text and the audio are."""
        pcm = b"".join(u.pcm for u in self.utterances)
        holding = plaintext_files(self.ha.config, pcm, PHRASES)
        self.checks.note(
            f"files in Home Assistant's config folder holding the audio or a transcript: {[str(Path(p).relative_to(self.ha.config)) for p in holding]}"
        )
        database = self.ha.config / "home-assistant_v2.db"
        self.checks.check(
            "the recorder's database holds no transcript (what the README says of Home Assistant's history)",
            not any(str(Path(p)).startswith(str(database)) for p in holding),
            holding,
        )
        times = _recorded_stt_times(database)
        before = [t for t in times if t < self.restarted]
        self.checks.note(
            f"the recorder kept {len(before)} state row(s) of the speech-to-text entities before the restart: the time of each run, no text"
        )
        self.checks.check(
            "with `recorder: exclude: domains: [stt]` the recorder keeps no time of an utterance (the README's setting)",
            self.restarted > 0 and [t for t in times if t >= self.restarted] == [],
            times,
        )


def _is_age(path: Path) -> bool:
    """An age v1 file (docs/FORMATS.md): what edge seals a recording and a transcript in."""
    try:
        with path.open("rb") as sealed:
            return sealed.read(22) == b"age-encryption.org/v1\n"
    except FileNotFoundError:
        return False


def _recorded_stt_times(database: Path) -> list[float]:
    """When the recorder stored a state of a speech-to-text entity (Home Assistant's schema:
    states joined to states_meta; last_updated_ts in seconds since the epoch)."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT s.last_updated_ts FROM states s JOIN states_meta m USING (metadata_id) WHERE m.entity_id LIKE 'stt.%'")
        return sorted(row[0] for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root", type=Path, required=True, help="the Debian root with Home Assistant in /opt/ha (scripts/ha-check.sh builds it)"
    )
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for Home Assistant's environment (proxies, CA bundle)")
    parser.add_argument(
        "--warm-up", action="store_true", help="start Home Assistant once (it installs what its integrations need) and stop it"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (edge's data, logs) instead of removing it")
    args = parser.parse_args()
    os.setpgrp()  # a group of its own: what it started can be stopped with it (see below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what was started (finally clauses), then go
    try:
        return run(args)
    except SystemExit:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(0, signal.SIGTERM)  # what was half started when the signal came (an agent not yet serving)
        raise


def run(args: argparse.Namespace) -> int:
    if not args.warm_up:
        private_namespaces()
    work = Path(tempfile.mkdtemp(prefix="edge-ha-check-"))
    support.SCRATCH = work
    if args.warm_up:
        ha = HomeAssistant(args.root, args.env, work / "home-assistant.log")
        ha.fresh()
        try:
            print(f"ha-check: Home Assistant {ha.version()} first start: {ha.start():.0f} s", flush=True)
        finally:
            ha.stop()
        subprocess.run(["rm", "-rf", "--one-file-system", str(ha.config), str(work)], check=True)
        return 0
    check = Check(args.root, args.env, work)
    code = check.run()
    if code == 0 and not args.keep:
        subprocess.run(["rm", "-rf", "--one-file-system", str(work), str(check.ha.config)], check=True)
    else:
        print(f"ha-check: kept: {work} (edge's data and config, the logs), {check.ha.config} (Home Assistant's config folder)", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
