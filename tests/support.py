"""What the tests and the fault campaign share: the household config template and the
bulk keystore of edge.testing (re-exported: the benchmarks use them too), real speech, the real command line, the virtual microphone's agent, clocks
moved by hand, and the scans and checks the promises are tested with.

No test file imports another: helpers live here, fixtures in conftest.py.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import json
import locale
import os
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import soundfile
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient
from wyoming.event import Event

from edge.testing import CHILD as CHILD
from edge.testing import KEYRING_VAULT as KEYRING_VAULT
from edge.testing import PARENT as PARENT
from edge.testing import PHRASES as PHRASES
from edge.testing import Retention as Retention
from edge.testing import file_vault as file_vault
from edge.testing import household_toml as household_toml
from edge.testing import populate as populate

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("메시지", "아버지")
"""Two of them, spoken in the clips most tests record."""


# -- real speech ----------------------------------------------------------------------------


def run_tool(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, check=True, capture_output=True, **kwargs)


class Speech:
    """Makes speech WAVs with espeak-ng and sox, cached for the whole test session."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        for tool in ("espeak-ng", "sox"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is missing: run scripts/setup.sh test")

    def _path(self, *key: object) -> Path:
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
        return self.folder / f"{digest}.wav"

    def say(self, text: str, speed: int = 175, pitch: int = 50, pad: float = 0.5) -> Path:
        """16 kHz mono int16 speech padded with `pad` seconds of silence on both ends."""
        out = self._path("say", text, speed, pitch, pad)
        if not out.exists():
            raw = out.with_suffix(".raw.wav")
            run_tool(["espeak-ng", "-v", "ko", "-s", str(speed), "-p", str(pitch), "-w", str(raw), text])
            # -D: no dither, so the same text always gives the same samples (reproducible tests)
            run_tool(["sox", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out), "pad", str(pad), str(pad)])
            raw.unlink()
        return out

    def silence(self, seconds: float) -> Path:
        out = self._path("silence", seconds)
        if not out.exists():
            run_tool(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(out), "trim", "0", str(seconds)])
        return out

    def join(self, *parts: Path | float) -> Path:
        """Concatenate WAVs; a number stands for that many seconds of silence."""
        paths = [self.silence(p) if isinstance(p, (int, float)) else p for p in parts]
        out = self._path("join", *[str(p) for p in paths])
        if not out.exists():
            run_tool(["sox", *map(str, paths), str(out)])
        return out

    def convert(self, source: Path, suffix: str, *sox_args: str) -> Path:
        """Re-encode with sox (e.g. "-r", "44100", "-c", "2", "-b", "24")."""
        out = self._path("convert", str(source), sox_args).with_suffix(suffix)
        if not out.exists():
            run_tool(["sox", str(source), *sox_args, str(out)])
        return out


def pcm_of(path: Path) -> bytes:
    """A WAV file as pipeline PCM."""
    from edge.audio.wavfile import open_wav, read_pipeline_chunks

    return b"".join(read_pipeline_chunks(open_wav(path)))


# -- the real command line -------------------------------------------------------------------


SCRATCH: Path | None = None
"""The test run's scratch folder (set by conftest)."""


def default_config() -> Path:
    """The example config, with a scratch data folder and the tests' session keyring."""
    assert SCRATCH is not None, "conftest sets the scratch folder"
    path = SCRATCH / "household.toml"
    if not path.exists():
        text = (ROOT / "configs" / "household.example.toml").read_text(encoding="utf-8")
        text = text.replace('data_dir = "/var/lib/edge"', f'data_dir = "{SCRATCH / "data"}"')
        text = text.replace('keyring = "persistent"', 'keyring = "session"')
        text = text.replace('control_socket = "/run/edge/control.sock"', 'control_socket = ""')
        path.write_text(text, encoding="utf-8")
    return path


def edge_agent(*args: str, env: dict[str, str] | None = None, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the real command line (`python -m edge`) and capture its output: in a process forked
    from the warm agent (tests/warm_agent.py) when nothing edge reads at start differs, else
    in a new Python (EDGE_TESTS_COLD=1: always)."""
    full_env = {**os.environ, "EDGE_CONFIG": str(default_config())}
    full_env.update(env or {})  # never /etc/edge/household.toml of the machine running the tests
    if not kwargs and WarmAgent.serves(full_env):
        return WarmAgent.run(list(args), full_env, timeout)
    return subprocess.run(
        [sys.executable, "-m", "edge", *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT, **kwargs
    )


class WarmAgent:
    """The client of tests/warm_agent.py, started at the first command it can run (the session's
    keyring is joined by then) and stopped by conftest at the end of the run."""

    COLD = ("LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHASHSEED")
    """Variables the dynamic linker or Python read as the process starts: a command given other
    values than the warm agent started with runs cold (so does a command with other numpy
    threads than the one edge.cli sets). EDGE_CRASH_AT and PYTHONFAULTHANDLER the fork reads."""
    process: subprocess.Popen[str] | None = None
    path: Path | None = None
    started: dict[str, str | None] = {}
    commands: list[int] = []
    """The pid of every command it ran."""

    @classmethod
    def serves(cls, env: dict[str, str]) -> bool:
        if os.environ.get("EDGE_TESTS_COLD") or SCRATCH is None:
            return False
        started = cls.started if cls.process is not None else {name: os.environ.get(name) for name in cls.COLD}
        return all(env.get(name) == started[name] for name in cls.COLD) and env.get("OPENBLAS_NUM_THREADS") in (None, "1")

    @classmethod
    def connect(cls) -> socket.socket:
        if cls.process is None or cls.process.poll() is not None:
            assert SCRATCH is not None
            cls.path = SCRATCH / f"warm-agent-{os.getpid()}.sock"
            cls.path.unlink(missing_ok=True)
            script = Path(__file__).resolve().parent / "warm_agent.py"
            cls.started = {name: os.environ.get(name) for name in cls.COLD}
            cls.process = subprocess.Popen(
                [sys.executable, str(script), str(cls.path)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, cwd=ROOT
            )
            atexit.register(cls.stop)  # a script using support (scripts/ha-check.py) leaves nothing behind either
            assert cls.process.stdout is not None
            ready = cls.process.stdout.readline()
            assert ready == "ready\n", f"the warm agent did not start (exit {cls.process.poll()})"
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(str(cls.path))
        return connection

    @classmethod
    def run(cls, args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        """`python -m edge ARGS` as subprocess.run(capture_output=True, text=True) runs it."""
        process = WarmProcess(args, env)
        try:
            stdout, stderr = process.communicate(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        except BaseException:  # as subprocess.run: the command does not outlive the test
            process.kill()
            raise
        return subprocess.CompletedProcess(process.args, process.wait(), stdout, stderr)

    @classmethod
    def stop(cls) -> None:
        """Stop the warm agent, and any command of it a failed test left running (a fork's
        command line is the warm agent's, its socket named: a pid since reused by another program is left alone)."""
        for pid in cls.commands:
            try:
                if str(cls.path).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        cls.commands.clear()
        if cls.process is not None and cls.process.poll() is None:
            cls.process.kill()
            cls.process.wait()
        if cls.path is not None:
            cls.path.unlink(missing_ok=True)
        cls.process = None


def _stdin() -> int:
    """What a child of this process would have as stdin: this process's (or nothing)."""
    try:
        os.fstat(0)
        return 0
    except OSError:
        return os.open(os.devnull, os.O_RDONLY)


class WarmProcess:
    """A command the warm agent runs, with what the tests use of subprocess.Popen(stdout=PIPE,
    stderr=PIPE, text=True): pid, stdout, stderr, returncode, poll, wait, communicate, signals."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = [sys.executable, "-m", "edge", *args]
        umask = os.umask(0o077)
        os.umask(umask)
        request = json.dumps({"args": args, "env": env, "cwd": str(ROOT), "umask": umask}).encode() + b"\n"
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            self._answer = WarmAgent.connect()
            socket.send_fds(self._answer, [request], [_stdin(), out_write, err_write])
        except BaseException:
            os.close(out_read)
            os.close(err_read)
            raise
        finally:
            os.close(out_write)
            os.close(err_write)
        encoding = locale.getpreferredencoding(False)
        self.stdout = open(out_read, encoding=encoding)
        self.stderr = open(err_read, encoding=encoding)
        self._buffer = b""
        self._received: dict[int, bytes] = {}
        self.returncode: int | None = None
        started = self._answer_line(None)
        assert started is not None
        self.pid: int = started["pid"]
        WarmAgent.commands.append(self.pid)

    def _answer_line(self, timeout: float | None) -> dict[str, int] | None:
        """The warm agent's next line, or None when `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._answer], [], [], left)[0]:
                return None
            chunk = self._answer.recv(4096)
            if not chunk:
                raise AssertionError(f"the warm agent ended without an answer for {self.args}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return cast(dict[str, int], json.loads(line))

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            answer = self._answer_line(timeout)
            if answer is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self.returncode = answer["code"]
            self._answer.close()
        return self.returncode

    def poll(self) -> int | None:
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """As Popen's: the rest of stdout and stderr, read off their descriptors, then the exit."""
        deadline = None if timeout is None else time.monotonic() + timeout
        streams = [stream for stream in (self.stdout, self.stderr) if not stream.closed]
        received = self._received  # kept across a call that timed out, as Popen keeps it
        for stream in streams:
            received.setdefault(stream.fileno(), b"")
        with selectors.DefaultSelector() as selector:
            for stream in streams:
                selector.register(stream.fileno(), selectors.EVENT_READ)
            while selector.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                for key, _ in selector.select(left):
                    chunk = os.read(key.fd, 1 << 16)
                    received[key.fd] += chunk
                    if not chunk:
                        selector.unregister(key.fd)
        texts = [_text(received.get(stream.fileno(), b"")) if not stream.closed else "" for stream in (self.stdout, self.stderr)]
        for stream in streams:
            stream.close()
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return texts[0], texts[1]


def _text(data: bytes) -> str:
    """Output as subprocess's text mode gives it (the locale's encoding, universal newlines)."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


def record(config: Path, clip: Path, profile: str | None = "child", env: dict[str, str] | None = None) -> list[str]:
    """Sessions recorded from `clip` by the real agent (`run --input --json`)."""
    args = ["--config", str(config), "run", "--input", str(clip), "--json"] + (["--profile", profile] if profile else [])
    ran = edge_agent(*args, env=env)
    assert ran.returncode == 0, ran.stderr
    return [json.loads(line)["session"] for line in ran.stdout.splitlines()]


def forget_in_a_terminal(config: Path, *selector: str) -> tuple[subprocess.Popen[str], int]:
    """`edge-agent forget SELECTOR` with a terminal on stdin, so it asks: (the process, the
    terminal's controller, where the test types the answer)."""
    import pty

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "--config", str(config), "forget", *selector],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    os.close(terminal)
    return process, controller


def status(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return edge_agent("--config", str(config), "status", "--json", env=env)


def sessions_of(config: Path) -> list[str]:
    result = status(config)
    assert result.returncode == 0, result.stderr
    return [s["session"] for s in json.loads(result.stdout)["sessions"]]


def audit_types(data: Path) -> list[str]:
    return [json.loads(line)["type"] for line in (data / "audit.jsonl").read_text().splitlines()]


def deleted_and_rechained(lines: list[bytes], index: int) -> list[bytes]:
    """Audit line `index` deleted and the log re-chained without the key, as anyone can: every
    later line renumbered, re-linked and re-hashed, the checkpoints that no longer verify dropped."""
    from edge.audit.log import canonical, entry_hash

    out = lines[:index]
    for raw in lines[index + 1 :]:
        entry = json.loads(raw)
        if entry["type"] == "checkpoint":
            continue
        previous = json.loads(out[-1])
        entry.update(seq=previous["seq"] + 1, prev=previous["hash"])
        entry["hash"] = entry_hash(entry)
        out.append(canonical(entry))
    return out


# -- time travel --------------------------------------------------------------------------


def libfaketime_env(monotonic: bool = False, **variables: str) -> dict[str, str]:
    """Variables that run a process under Debian's libfaketime (preloaded directly).

    Not the `faketime` wrapper: its library (0.9.10) makes /dev/shm/faketime_{shm,sem}_PID
    in every process and never removes them, and the wrapper refuses to start when a later
    run gets the same PID (once in CI, after thousands of processes); the library carries
    on. Callers remove the pair with `remove_faketime_leftovers(pid)`. The thread-safe (MT)
    build, because the agent reads the clock from several threads at once.
    `DONT_FAKE_MONOTONIC=1`: a real clock change never moves the monotonic clock. With
    `monotonic`, the monotonic clock is faked too (Debian's default: `faketime -f +10m CMD`
    moves it to the faked epoch, decades ahead of the kernel's uptime).
    """
    libraries = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    if not libraries:
        raise RuntimeError("libfaketime is missing: run scripts/setup.sh test")
    return {"LD_PRELOAD": str(libraries[0]), **({} if monotonic else {"DONT_FAKE_MONOTONIC": "1"}), **variables}


NTP_SHIM = r"""
#include <sys/timex.h>
int adjtimex(struct timex *buf) { buf->status = SYNCED ? 0 : STA_UNSYNC; return SYNCED ? TIME_OK : TIME_ERROR; }
"""


def ntp_env(synced: bool, env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (or this process's environment) with the kernel seeming NTP-synchronised, or
    not, to edge: a preloaded adjtimex (built here with gcc) answers instead of the kernel.
    Whether this machine runs an NTP daemon is not the tests' to choose or to change, and
    edge only asks the kernel (read-only), so the answer is the boundary faked."""
    assert SCRATCH is not None, "conftest sets the scratch folder"
    library = SCRATCH / f"ntp-{'synced' if synced else 'unsynced'}.so"
    if not library.exists():
        source = library.with_suffix(".c")
        source.write_text(NTP_SHIM)
        run_tool(["gcc", "-shared", "-fPIC", f"-DSYNCED={int(synced)}", "-o", str(library), str(source)])
    out = dict(os.environ if env is None else env)
    out["LD_PRELOAD"] = " ".join(filter(None, (out.get("LD_PRELOAD", ""), str(library))))
    return out


def remove_faketime_leftovers(pid: int) -> None:
    for leftover in (f"faketime_shm_{pid}", f"sem.faketime_sem_{pid}"):
        Path("/dev/shm", leftover).unlink(missing_ok=True)


def faketime(
    offset: str, *args: str, config: Path, monotonic: bool = False, synced: bool | None = None
) -> subprocess.CompletedProcess[str]:
    """Run edge-agent with its wall clock moved by `offset` (e.g. "+2h", "-1y"); `monotonic`
    fakes the monotonic clock too, `synced` says whether the kernel seems NTP-synchronised."""
    env = {**os.environ, **libfaketime_env(monotonic, FAKETIME=offset), "EDGE_CONFIG": str(config)}
    if synced is not None:
        env = ntp_env(synced, env)
    with subprocess.Popen(
        [sys.executable, "-m", "edge", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    remove_faketime_leftovers(process.pid)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


START = datetime(2026, 11, 28, 12, 0, 7, tzinfo=timezone.utc)


class FakeWall:
    """The wall clock and the monotonic clock, moved by hand (the `*_at_time` idea); the
    monotonic clock is also the kernel's uptime (a boot that began at mono 0)."""

    def __init__(self, start: datetime = START) -> None:
        self.wall = start.timestamp()
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def set_wall(self, instant: datetime) -> None:  # a clock change: monotonic does not move
        self.wall = instant.timestamp()


def wait_for(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


# -- the microphone ---------------------------------------------------------------------------


class MicAgent:
    """`edge-agent run --mic --json` in the background, ready once it says it is listening.
    With `as_json=False` it is the service's own command line, and `stop` returns its raw stdout."""

    command: tuple[str, ...] = ("run", "--mic")
    ready = "listening"

    def __init__(
        self, env: dict[str, str], config: Path, *args: str, as_json: bool = True, preexec_fn: Callable[[], None] | None = None
    ) -> None:
        self.as_json = as_json
        arguments = ["--config", str(config), *self.command, *(["--json"] if as_json else []), *args]
        self.process: subprocess.Popen[str] | WarmProcess
        if preexec_fn is None and WarmAgent.serves(env):
            self.process = WarmProcess(arguments, env)
        else:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge", *arguments],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
                preexec_fn=preexec_fn,
            )
        self.stderr = ""
        selector = selectors.DefaultSelector()
        assert self.process.stderr is not None
        selector.register(self.process.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        while self.ready not in self.stderr:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.process.kill()
                raise AssertionError(f"the agent did not start ({self.ready!r} never came):\n{self.stderr}{self.process.stderr.read()}")
            if selector.select(timeout=0.5):
                self.stderr += self.process.stderr.readline()
        time.sleep(0.3)  # the stream is open; let a few blocks flow

    def stop(self, sig: int = signal.SIGINT) -> tuple[Any, str, int]:
        self.process.send_signal(sig)
        out, err = self.process.communicate(timeout=60)
        code = self.process.wait()
        if not self.as_json:
            return out, self.stderr + err, code
        return [json.loads(line) for line in out.splitlines()], self.stderr + err, code


class ServeAgent(MicAgent):
    """`edge-agent serve` in the background, ready once every listener accepts clients."""

    command = ("serve",)
    ready = "edge-agent: wyoming: serving"

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None, preexec_fn: Callable[[], None] | None = None) -> None:
        super().__init__(env or dict(os.environ), config, *args, as_json=False, preexec_fn=preexec_fn)


class NotifySocket:
    """systemd's side of sd_notify: the datagram socket an agent under `Type=notify` sends
    its states to (READY=1, WATCHDOG=1, STOPPING=1)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def env(self, watchdog_seconds: float) -> dict[str, str]:
        """What systemd sets for a service with `WatchdogSec=`."""
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(int(watchdog_seconds * 1_000_000))}

    def states(self, seconds: float) -> list[str]:
        """Every state that arrives within `seconds`."""
        got, deadline = [], time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        return got

    def close(self) -> None:
        self.sock.close()


def play(env: dict[str, str], path: Path) -> None:
    subprocess.run(["paplay", str(path)], env=env, check=True, timeout=60)


# -- a Wyoming client, as Home Assistant is one --------------------------------------------


def wav_pcm(path: Path) -> tuple[bytes, int, int, int]:
    """(PCM, rate, width, channels) as the file holds them (libsndfile: sox writes 32-bit
    stereo as WAVE_FORMAT_EXTENSIBLE, which the standard library cannot read)."""
    samples, rate = soundfile.read(str(path), dtype="int32" if soundfile.info(str(path)).subtype == "PCM_32" else "int16", always_2d=True)
    return samples.tobytes(), rate, samples.dtype.itemsize, samples.shape[1]


async def wyoming_utterance(
    uri: str,
    path: Path,
    chunk_ms: int = 10,
    extra: dict[str, Any] | None = None,
    timeout: float = 60,
    live: bool = False,
    burst: float = 0.0,
) -> Event:
    """One utterance the way Home Assistant sends it: transcribe, audio-start, 10 ms chunks,
    audio-stop; the one event that answers (within `timeout` seconds of audio-stop). `live`:
    the chunks at the pace of speech, as a satellite streams them, after the first `burst`
    seconds sent at once (what it buffered); else as fast as they go."""
    pcm, rate, width, channels = wav_pcm(path)
    step = rate * chunk_ms // 1000 * width * channels  # whole frames, as Home Assistant sends
    client = AsyncClient.from_uri(uri)
    await client.connect()
    try:
        transcribe = Transcribe(language="ko").event()
        transcribe.data.update(extra or {})
        await client.write_event(transcribe)
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        began = time.monotonic()
        for number, index in enumerate(range(0, len(pcm), step)):
            if live:
                await asyncio.sleep(max(0.0, began + number * chunk_ms / 1000 - burst - time.monotonic()))
            await client.write_event(AudioChunk(rate=rate, width=width, channels=channels, audio=pcm[index : index + step]).event())
        await client.write_event(AudioStop().event())
        event = await asyncio.wait_for(client.read_event(), timeout)
        assert event is not None, "the server closed the connection without an answer"
        return event
    finally:
        await client.disconnect()


# -- in-process parts, built by the composition root ---------------------------------------------

PCM = bytes(range(256)) * 300
"""76,800 bytes of 'audio': more than one 64 KiB chunk."""


def traced_sql(monkeypatch: Any) -> list[str]:
    """The SQL statements every keystore connection opened from here on runs."""
    from edge.store import database

    statements: list[str] = []
    real = database.connect

    def traced(data_dir: Path, readonly: bool) -> Any:
        connection = real(data_dir, readonly)
        connection.set_trace_callback(statements.append)
        return connection

    monkeypatch.setattr(database, "connect", traced)
    return statements


def retention_parts(config: Any, wall: FakeWall) -> tuple[Any, Any, Any]:
    """(clock, keystore, shredder) for `config`, the clock moved by `wall`."""
    from edge import wiring

    clock = wiring.make_clock(config, wall=lambda: wall.wall, monotonic=lambda: wall.mono, boot=lambda: "boot-1", uptime=lambda: wall.mono)
    store = wiring.open_store(config)
    return clock, store[0], wiring.make_shredder(config, store=store, clock=clock)


def record_in_process(store: Any, clock: Any, config: Any, profile: str, rule: str = "given", policy: str | None = None) -> str:
    """One real sealed session: audio sealed in chunks, transcript sealed at the end; `rule`:
    how its profile was chosen (a TagRule's value); `policy`: the version it is taken under."""
    from edge import wiring
    from edge.audit.log import AuditLog
    from edge.policy import Tag
    from edge.transcript import Transcript, Word
    from edge.values import TagRule

    session_id = os.urandom(8).hex()
    sealed = wiring.make_recorder(store, AuditLog(store.data_dir), clock, policy=policy).begin(
        session_id, Tag(config.profile(profile), TagRule(rule))
    )
    sealed.write(PCM)
    sealed.finish(Transcript("메시지", (Word("메시지", 0.5, 1.0, 1.0),)))
    return session_id


def sealed_details(config: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """A log line's fields with its sealed details opened by the keys the device holds now
    (docs/FORMATS.md section 6, "Sealed details")."""
    from edge import wiring
    from edge.config import load_config
    from edge.store.details import readable

    return readable(entry["type"], entry["fields"], wiring.held_details_keys(load_config(config)))


def opened_fields(data: Path, event_type: str) -> list[dict[str, Any]]:
    """The fields of every `event_type` line of the data folder's log, their sealed details
    opened with the keys its device holds now (its config: household.toml beside the folder)."""
    from edge import wiring
    from edge.config import load_config
    from edge.store.details import readable

    log = data / "audit.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    entries = [entry for entry in entries if entry["type"] == event_type]
    if not any("sealed" in entry["fields"] for entry in entries):
        return [entry["fields"] for entry in entries]
    keys = wiring.held_details_keys(load_config(data.parent / "household.toml"))
    return [readable(event_type, entry["fields"], keys) for entry in entries]


def keystore_rows(data_dir: Path) -> list[tuple[Any, ...]]:
    """Every row of the keystore as stored (sealed): what "unchanged" means for a database,
    whose file bytes a checkpoint may move between the WAL and the main file."""
    import sqlite3
    from contextlib import closing

    at_rest = not (data_dir / "keystore.db-wal").exists()
    uri = f"file:{data_dir / 'keystore.db'}?mode=ro{'&immutable=1' if at_rest else ''}"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        return [row for table in ("meta", "buckets", "sessions") for row in db.execute(f"SELECT '{table}', * FROM {table} ORDER BY 2")]


def openable(store: Any, files: list[Path]) -> list[bool]:
    """Try every key the device holds now on each file."""
    from edge.crypto.age import decrypt
    from edge.errors import AgeError

    data = store.read()
    identities = [i for b in data.buckets.values() for i in store.identities(b)]
    results = []
    for path in files:
        try:
            decrypt(path.read_bytes(), identities)
            results.append(True)
        except (AgeError, FileNotFoundError):
            results.append(False)
    return results


def run_sealed(config: Any, model: Any, path: Path, profile: str | None) -> tuple[list[Any], Any]:
    """The real pipeline on a WAV file, sealing what `profile` keeps: (session records, keystore)."""
    from edge import wiring
    from edge.audio.wavfile import open_wav, read_pipeline_chunks

    store, audit = wiring.open_store(config)
    records: list[Any] = []
    recorder = wiring.make_recorder(store, audit, wiring.make_clock(config))
    agent = wiring.make_agent(config, model, records.append, recorder, profile)
    agent.run(read_pipeline_chunks(open_wav(path)))
    return records, store


# -- scans -----------------------------------------------------------------------------------


def speech_windows(pcm: bytes, size: int = 1024, stride: int = 512) -> list[bytes]:
    """1 KiB windows every 512 bytes (any stored run of 1.5 KiB contains one), skipping near-silence."""
    return [pcm[i : i + size] for i in range(0, len(pcm) - size, stride) if len(set(pcm[i : i + size])) >= 64]


def plaintext_files(folder: Path, pcm: bytes, words: list[str] | tuple[str, ...]) -> list[str]:
    """Every file under `folder` holding a window of `pcm` or one of `words` (UTF-8)."""
    windows = speech_windows(pcm)
    assert len(windows) > 20, "the scan needs speech to look for"
    hits = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        blob = path.read_bytes()
        if any(w in blob for w in windows) or any(word.encode() in blob for word in words):
            hits.append(str(path))
    return hits


class Swtpm:
    """A software TPM 2.0 (Debian's swtpm) on loopback, its NV state in `state`: stopping it
    and starting it again from the same folder is what a power cut does to a real TPM."""

    def __init__(self, state: Path) -> None:
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        self.port = 0
        """Server port (control: port + 1), chosen at the first start and kept, as a config names it."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def vault_toml(self) -> str:
        return f'backend = "tpm"\ntcti = "{self.tcti}"'

    def start(self) -> Swtpm:
        import socket

        if shutil.which("swtpm") is None:
            raise AssertionError("swtpm is not installed (apt-get install swtpm; scripts/setup.sh test does it)")
        for _attempt in range(20):
            if not self.port:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", 0))
                    port = probe.getsockname()[1]
            else:
                port = self.port
            if self._started(port):
                self.port = port
                return self
            time.sleep(0.1)
        raise AssertionError("swtpm did not start: no free port pair on loopback")

    def _started(self, port: int) -> bool:
        import socket

        command = ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state}"]
        command += ["--server", f"type=tcp,port={port},bindaddr=127.0.0.1"]
        command += ["--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1", "--flags", "not-need-init,startup-clear"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                problem = self.process.stderr.read().decode() if self.process.stderr else ""
                if "Address already in use" in problem:
                    return False
                raise AssertionError(f"swtpm did not start: {problem}")
            try:
                socket.create_connection(("127.0.0.1", port + 1), timeout=1).close()  # the control port: no TPM session
                return True
            except OSError:
                time.sleep(0.02)
        raise AssertionError("swtpm did not listen within 10 s")

    def kill(self) -> None:
        """The TPM disappears (SIGKILL: no orderly shutdown, as a pulled HAT or a power cut)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()


def without_persistent_keyrings(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run argv as on a Raspberry Pi OS kernel, which has no persistent keyrings: a seccomp
    filter (Debian's python3-seccomp, in the system Python) makes KEYCTL_GET_PERSISTENT fail
    with EOPNOTSUPP, as the kernel does without CONFIG_PERSISTENT_KEYRINGS; every other
    keyring call works."""
    program = (
        "import errno, os, sys, seccomp\n"
        "rules = seccomp.SyscallFilter(seccomp.ALLOW)\n"
        "rules.add_rule(seccomp.ERRNO(errno.EOPNOTSUPP), 'keyctl', seccomp.Arg(0, seccomp.EQ, 22))\n"
        "rules.load()\n"
        "os.execvp(sys.argv[1], sys.argv[1:])\n"
    )
    return subprocess.run(["/usr/bin/python3", "-c", program, *argv], capture_output=True, text=True, timeout=600, **kwargs)


def png_pixels(data: bytes) -> Any:
    """The pixels (rows, columns, RGB or RGBA) of an 8-bit non-interlaced PNG, such as
    Chromium's screenshots: the tests look at what a browser drew without an imaging library."""
    import struct
    import zlib

    import numpy as np

    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    at, compressed = 8, b""
    width = height = channels = 0
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and color in (2, 6), f"a PNG of depth {depth}, colour type {color}"
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            compressed += body
        at += 12 + length
    stride = width * channels
    raw = np.frombuffer(zlib.decompress(compressed), np.uint8).reshape(height, stride + 1)
    pixels = np.zeros((height, stride), np.uint8)
    above = np.zeros(stride, np.int64)
    for y in range(height):
        method, line = int(raw[y, 0]), raw[y, 1:].astype(np.int64)
        if method == 0:
            row = line
        elif method == 1:  # Sub: a running sum along each channel
            row = np.cumsum(line.reshape(width, channels), axis=0).reshape(-1) % 256
        elif method == 2:  # Up
            row = (line + above) % 256
        else:  # Average and Paeth depend on the byte just decoded: one at a time
            values, up, out = line.tolist(), above.tolist(), [0] * stride
            for i in range(stride):
                left = out[i - channels] if i >= channels else 0
                if method == 3:
                    out[i] = (values[i] + (left + up[i]) // 2) & 255
                    continue
                corner = up[i - channels] if i >= channels else 0
                guess = left + up[i] - corner
                near = min((abs(guess - left), 0, left), (abs(guess - up[i]), 1, up[i]), (abs(guess - corner), 2, corner))
                out[i] = (values[i] + near[2]) & 255
            row = np.array(out, np.int64)
        pixels[y] = row
        above = row
    return pixels.reshape(height, width, channels)


# -- household voices (espeak-ng speakers for the speaker encoder) ------------------------

HOUSEHOLD = {"parent": ("ko+m3", 50), "child": ("ko+f5", 95), "guest": ("ko+klatt4", 50)}
"""Who is enrolled, and their espeak-ng voice (voice, pitch)."""
STRANGERS = [("ko+f2", 50), ("ko+Alicia", 50)]
"""Voices nobody enrolled."""
ENROL = ["아버지에게 메시지를 보내 주세요", "라디오를 켜 주세요", "오늘 날씨를 알려 주세요"]
HELD_OUT = ["보안 위치를 알려 주세요", "라디오에서 메시지를 들려 주세요"]
GUEST = Retention("adult", "12h", "14d")


class Voices:
    """espeak-ng clips (16 kHz mono WAV), each made once per test run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def say(self, voice: tuple[str, int], text: str, pad: float = 0.4) -> Path:
        name, pitch = voice
        out = self.folder / f"{name.replace('+', '_')}-{pitch}-{abs(hash(text)) % 10**8}-{pad}.wav"
        if not out.exists():
            raw = out.with_suffix(".raw.wav")
            run_tool(["espeak-ng", "-v", name, "-p", str(pitch), "-w", str(raw), text])
            run_tool(["sox", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out), "pad", str(pad), str(pad)])
            raw.unlink()
        return out

    def altered(self, clip: Path, effects: tuple[str, ...]) -> Path:
        """`clip` through sox effects (e.g. ("pitch", "-300")): how a voice differs from its enrolment."""
        if not effects:
            return clip
        out = self.folder / f"{clip.stem}-{'_'.join(effects)}.wav"
        if not out.exists():
            run_tool(["sox", "-D", str(clip), str(out), *effects])
        return out

    def joined(self, parts: list[Path], gap: float = 1.5) -> Path:
        out = self.folder / f"joined-{abs(hash(tuple(map(str, parts)))) % 10**10}-{gap}.wav"
        if out.exists():
            return out
        silence = self.folder / f"silence-{gap}.wav"
        if not silence.exists():
            run_tool(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(silence), "trim", "0", str(gap)])
        sequence = [str(p) for part in parts for p in (part, silence)]
        run_tool(["sox", *sequence, str(out)])
        return out


def household_config(write_config: Any, **template: Any) -> Path:
    """The household's config file: parent, child and guest (`template`: household_toml's keywords)."""
    return cast(Path, write_config(others={"guest": GUEST}, child=replace(CHILD, inactive_after="2d"), **template))


def enrolled_household(write_config: Any, voices: Voices, encoder: Any, wall: FakeWall, **template: Any) -> tuple[Any, ...]:
    """The household enrolled by `encoder` (the child with consent): (config, wall, clock, keystore, shredder)."""
    from edge.config import load_config
    from edge.voice.enrollment import Clip, enroll

    config = load_config(household_config(write_config, **template))
    clock, store, shredder = retention_parts(config, wall)
    for profile, voice in HOUSEHOLD.items():
        clips = [Clip(text, pcm_of(voices.say(voice, text))) for text in ENROL]
        enroll(store, shredder.audit, config, encoder, profile, clips, consent=profile == "child", now=clock.now())
    return config, wall, clock, store, shredder
