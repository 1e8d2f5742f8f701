"""`edge-agent doctor`: check the installation and say honestly what holds.

Each check gives ok, warn (works, but a guarantee is weaker than it could be) or
fail (the agent will not work, or a promise is broken), with the offending path or
setting and a fix. Checks only read: no audio is kept, nothing is written.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from edge.config import BUILTIN_CONFIG, SYSTEM_CONFIG, Config, load_config
from edge.disk.files import exists_in
from edge.disk.layout import KEYSTORE, KEYSTORE_DB, MODELS
from edge.disk.space import FLOOR_BYTES, free_bytes
from edge.errors import EdgeError
from edge.invocation import python
from edge.stt.vocabulary import WAKE_PHRASE, check_trigger_words, read_word_table, search_command, trigger_phrases
from edge.values import VaultBackend

UNIT_PATH = Path("/etc/systemd/system/edge-agent.service")
MAX_EXPOSURE = 2.5
"""Highest `systemd-analyze security` exposure the unit may have."""
LOW_FREE = 1 << 30


class Status(StrEnum):
    """What a check found (printed upper-case, and as is in --json)."""

    OK = "ok"
    WARN = "warn"
    """Works, but a guarantee is weaker than it could be."""
    FAIL = "fail"
    """The agent will not work, or a promise is broken."""
    SKIP = "skip"
    """Not checked, as asked (or nothing to check it with)."""

    def fails(self, strict: bool) -> bool:
        """Whether the finding makes `doctor` exit 1 (`--strict`: warnings too)."""
        return self is Status.FAIL or (strict and self is Status.WARN)


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_checks(config_path: Path, unit_path: Path = UNIT_PATH, open_mic: bool = True) -> list[Finding]:
    try:
        config = load_config(config_path)
    except EdgeError as exc:
        return [Finding("config", Status.FAIL, str(exc), "fix the file, or pass --config with a valid one")]
    findings = [_config_file(config)]
    checks: list[Callable[[], Finding | list[Finding]]] = [
        lambda: _model(config),
        lambda: _vocabulary(config),
        lambda: _memory(config),
        lambda: _speaker(config),
        lambda: _microphone(config, open_mic),
        lambda: _vault(config),
        lambda: _clock(config),
        lambda: _inactive(config),
        _swap,
        lambda: _permissions(config),
        lambda: _free_space(config),
        lambda: _unit(unit_path),
    ]
    for check in checks:
        result = check()
        findings.extend(result if isinstance(result, list) else [result])
    return findings


def _config_file(config: Config) -> Finding:
    if config.path == BUILTIN_CONFIG:
        return Finding(
            "config",
            Status.WARN,
            f"no household config: using the built-in example ({config.path})",
            f"scripts/install.sh, or copy it to {SYSTEM_CONFIG} and set each profile's retention",
        )
    mode = config.path.stat().st_mode
    if mode & stat.S_IROTH:
        return Finding(
            "config",
            Status.WARN,
            f"{config.path} is readable by every user (mode {mode & 0o777:04o})",
            f"chmod 640 {config.path} (root:edge): profile names and retention are the household's business",
        )
    return Finding("config", Status.OK, f"{config.path}")


def _model(config: Config) -> Finding:
    from edge.stt.model_path import find_model

    try:
        path = find_model(config.device.model, config.device.data_dir)
    except EdgeError as exc:
        return Finding(
            "model", Status.FAIL, str(exc), "edge-agent model fetch vosk-model-small-en-us-0.15 (or another from `edge-agent model list`)"
        )
    return Finding("model", Status.OK, f"{path}")


def _vocabulary(config: Config) -> Finding:
    """The wake phrase and grammar against the model's word table: the check `run` and `serve`
    make at start, without loading the model (~0.3 s for PyPI's Korean model)."""
    from edge.stt.model_path import find_model

    try:
        path = find_model(config.device.model, config.device.data_dir)
    except EdgeError:
        return Finding("vocabulary", Status.SKIP, "no model found (see the model check)")
    try:
        table = read_word_table(path)
    except EdgeError as exc:
        return Finding("vocabulary", Status.WARN, f"{exc}; the agent checks the words when it loads the model")
    try:
        check_trigger_words(config, table, path)
    except EdgeError as exc:
        return Finding("vocabulary", Status.FAIL, str(exc), f"edit {config.path}: choose words `{search_command()} PREFIX` lists")
    found = trigger_phrases(config)
    checked = [_what(key, phrases) for key, _shown, phrases in found if not key.startswith("voice_commands.")]
    commands = [key for key, _shown, _phrases in found if key.startswith("voice_commands.")]
    if commands:
        checked.append(f"the {len(commands)} spoken command(s)")
    if not checked:
        return Finding("vocabulary", Status.OK, f"nothing to check: no wake phrase ({config.trigger.mode} mode) and no grammar")
    known = f"{len(table.words):,} words in {table.source}"
    return Finding("vocabulary", Status.OK, f"the model knows every word of {' and '.join(checked)} ({known})")


def _what(key: str, phrases: tuple[str, ...]) -> str:
    return "the wake phrase" if key == WAKE_PHRASE else f"the {len(phrases)} grammar phrase(s)"


MODEL_RSS_PER_DISK_BYTE = 2.4
"""A loaded Vosk model's resident memory over its size on disk (PyPI's Korean model: 253 MB
on disk, 610 MB peak RSS in `transcribe`, measured on x86_64; ~620 MB on arm64)."""
AGENT_RSS = 60 << 20
"""The agent without a model: Python, edge, PortAudio, the keystore."""
MEMORY_SHARE = 0.7
"""Above this share of the machine's memory the model leaves too little for the rest."""


def memory_finding(model: Path, meminfo: Path = Path("/proc/meminfo")) -> Finding:
    """Whether the model will fit this machine's memory (Raspberry Pi boards have 512 MB to 8 GB)."""
    size = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
    needed = int(size * MODEL_RSS_PER_DISK_BYTE) + AGENT_RSS
    total = _mem_total(meminfo)
    if total is None:
        return Finding("memory", Status.SKIP, f"{meminfo} gives no MemTotal; the agent needs about {needed >> 20} MB with this model")
    text = f"the agent needs about {needed >> 20} MB with this model ({size >> 20} MB on disk); this machine has {total >> 20} MB"
    if needed > total * MEMORY_SHARE:
        return Finding(
            "memory",
            Status.WARN if needed < total else Status.FAIL,
            text + ": it may not fit, and edge discourages swap (it would put audio on the card)",
            "a smaller model: edge-agent model fetch vosk-model-small-en-us-0.15 (the one for 1 GB boards), then set [device] model",
        )
    return Finding("memory", Status.OK, text)


def _mem_total(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _memory(config: Config) -> Finding:
    from edge.stt.model_path import find_model

    try:
        return memory_finding(find_model(config.device.model, config.device.data_dir))
    except EdgeError:
        return Finding("memory", Status.SKIP, "no model found (see the model check)")


def _speaker(config: Config) -> Finding:
    """The speaker encoder's weights, digest checked: without them, voices tag nothing."""
    from edge.voice.weights import find_weights, install_command, load_weights

    if not config.speaker.identify:
        return Finding("speaker", Status.OK, "tagging by voice is off ([speaker] identify = false)")
    try:
        load_weights()
    except EdgeError as exc:
        return Finding("speaker", Status.WARN, f"{exc}; sessions are tagged by configuration only", install_command())
    return Finding("speaker", Status.OK, f"speaker encoder weights verified ({find_weights()})")


def _microphone(config: Config, open_mic: bool) -> Finding:
    from edge.audio.mic import MicSource, import_sounddevice

    fix = (
        f"list devices with `{python()} -m sounddevice` or `arecord -l`; set [device] input_device and sample_rate "
        "(a running agent holds the microphone: then use --no-mic)"
    )
    try:
        sd = import_sounddevice()
        inputs = [d["name"] for d in sd.query_devices() if d["max_input_channels"] > 0]
    except (EdgeError, OSError) as exc:
        if not open_mic:
            return Finding("microphone", Status.SKIP, f"not checked (--no-mic); PortAudio is not usable: {exc}")
        return Finding("microphone", Status.FAIL, f"PortAudio is not usable: {exc}", "install libportaudio2")
    if not open_mic:  # asked not to: a Wyoming-only speaker may have no microphone at all
        listed = "inputs: " + ", ".join(inputs) if inputs else "no input device listed"
        return Finding("microphone", Status.SKIP, f"not checked (--no-mic); {listed}")
    if not inputs:
        return Finding("microphone", Status.FAIL, "no input device at all", fix)
    listed = "inputs: " + ", ".join(inputs)
    try:
        with MicSource(config.device.sample_rate, config.device.input_device) as mic:
            deadline = time.monotonic() + 3
            while mic.stats.blocks == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            blocks = mic.stats.blocks
    except EdgeError as exc:
        return Finding("microphone", Status.FAIL, f"{exc} ({listed})", fix)
    if blocks == 0:
        return Finding("microphone", Status.FAIL, f"the input opened but delivered no audio in 3 s ({listed})", fix)
    where = config.device.input_device or "the default input"
    return Finding("microphone", Status.OK, f"{where} delivers audio at {config.device.sample_rate} Hz (nothing kept); {listed}")


def _vault(config: Config) -> Finding:
    from edge import wiring
    from edge.crypto.vault import KeyringMarker

    data_dir = config.device.data_dir
    try:
        vault = wiring.open_vault(config.vault, data_dir)
        marker = KeyringMarker.load(data_dir) if config.vault.backend == VaultBackend.KEYRING else None
        if marker is not None and marker.uid != os.geteuid():
            level = vault.level
            return Finding(
                "vault",
                Status.OK,
                f"{level.backend}: the root key is in the kernel keyring of uid {marker.uid}, which this user "
                f"cannot see (expected when checking with sudo; run doctor as that user to check the key): {level.summary}",
            )
        found = vault.read("current") or vault.read("next")
        if found is None and (exists_in(data_dir, KEYSTORE_DB) or exists_in(data_dir, KEYSTORE)):
            reason = vault.why_missing()  # VaultError when it may only be invisible from here
            return Finding(
                "vault",
                Status.FAIL,
                f"{reason}: nothing retained before can be opened",
                "start the agent (systemctl start edge-agent): it records the loss and starts afresh",
            )
    except EdgeError as exc:
        return Finding("vault", Status.FAIL, str(exc), "see [vault] in the config and the README's guarantee levels")
    level = vault.level
    if config.vault.backend == VaultBackend.FILE:
        assert config.vault.path is not None
        problem = _too_open(config.vault.path, 0o600)
        if problem:
            return Finding("vault", Status.FAIL, problem, f"chmod 600 {config.vault.path}")
        return Finding("vault", Status.WARN, f"{level.backend}: {level.summary}", 'backend = "keyring" gives crypto-erase at power-off')
    if config.vault.backend == VaultBackend.TPM:
        return Finding(
            "vault", Status.OK, f"{level.backend} ({config.vault.tcti}, NV index {config.vault.nv_index:#010x}): {level.summary}"
        )
    return Finding("vault", Status.OK, f"{level.backend} ({config.vault.keyring}): {level.summary}")


def _clock(config: Config) -> Finding:
    """NTP sync, and whether the trusted clock ran ahead, was set back, or read a monotonic
    clock that lied (or cannot be checked): retention counts from it."""
    from edge import wiring
    from edge.retention.clock import read_uptime

    try:
        reading = wiring.read_clock(config.device.data_dir)
    except EdgeError as exc:
        return Finding("clock", Status.FAIL, str(exc), "update edge: the clock's mark was written by a newer one")
    notes = reading.notes()
    uptime = read_uptime()
    if uptime is not None and time.monotonic() > uptime + 1.0:
        notes.append(
            f"the monotonic clock ({time.monotonic():.0f} s) is ahead of the kernel's uptime ({uptime:.0f} s): /proc/uptime "
            "is virtualised (a container) or the monotonic clock is faked; the clock checks the time since its mark "
            "against the uptime, so a restart of the container counts as a reboot (the mark alone is the floor then)"
        )
    if reading.ran_ahead:
        return Finding("clock", Status.WARN, "; ".join(notes), "edge-agent clock rewind (stop the agent first)")
    if not reading.synced:
        notes.insert(0, "the clock is not NTP-synchronised: a clock set back never delays a shred, but one set forward shreds early")
        return Finding("clock", Status.WARN, "; ".join(notes), "enable time sync: systemctl enable --now systemd-timesyncd")
    if notes:
        return Finding("clock", Status.WARN, "synchronised (NTP); " + "; ".join(notes), "see docs/FORMATS.md section 8")
    return Finding("clock", Status.OK, "synchronised (NTP)")


def _inactive(config: Config) -> Finding:
    """Profiles near their purge for inactivity (the Alexa order's notice), with what keeps them."""
    from edge.retention.inactivity import notices
    from edge.store.keystore import Access
    from edge.wiring import open_store, trusted_now

    try:
        store, _audit = open_store(config, Access.READ)
        found = notices(config, store.read(), trusted_now(config))
    except EdgeError as exc:
        return Finding("inactive profiles", Status.SKIP, f"the keystore cannot be read here: {exc}")
    if not found:
        return Finding("inactive profiles", Status.OK, "no profile is near its purge for inactivity")
    keep = "; ".join(f"edge-agent profile keep {n.profile}" for n in found)
    return Finding("inactive profiles", Status.WARN, "; ".join(n.sentence() for n in found), f"if they are to be kept: {keep}")


def _swap() -> Finding:
    try:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        return Finding("swap", Status.OK, "no /proc/swaps: no swap")
    devices = [line.split()[0] for line in lines if line.strip()]
    on_disk = [d for d in devices if not d.startswith("/dev/zram")]
    if not on_disk:
        return Finding("swap", Status.OK, "no swap on disk" + (f" (zram only: {', '.join(devices)})" if devices else ""))
    return Finding(
        "swap",
        Status.WARN,
        f"swap on disk is on ({', '.join(on_disk)}): audio and keys held in RAM could be written to it",
        "swapoff -a and disable it (Raspberry Pi OS: systemctl disable --now dphys-swapfile), or use zram",
    )


def _too_open(path: Path, allowed: int, owner: int | None = None) -> str | None:
    """A message when `path` grants more than `allowed` or belongs to someone other than `owner`
    (default: this user)."""
    owner = os.geteuid() if owner is None else owner
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    extra = stat.S_IMODE(info.st_mode) & ~allowed
    if extra:
        return f"{path} has mode {stat.S_IMODE(info.st_mode):04o}; it must be {allowed:04o} or stricter"
    if info.st_uid != owner:
        return f"{path} belongs to uid {info.st_uid}, not to uid {owner}"
    return None


def _permissions(config: Config) -> Finding:
    data_dir = config.device.data_dir
    if not data_dir.exists():
        return Finding("permissions", Status.OK, f"{data_dir} does not exist yet; the agent creates it 0700")
    # The agent's user owns the folder (root may check it for them); everything inside is theirs.
    owner = data_dir.stat().st_uid if os.geteuid() == 0 else os.geteuid()
    problems: list[str] = []
    for path, allowed in _private_paths(data_dir):
        problem = _too_open(path, allowed, owner)
        if problem:
            problems.append(problem)
            if len(problems) > 5:
                break
    if problems:
        return Finding(
            "permissions",
            Status.FAIL,
            "; ".join(problems[:5]),
            f"chown -R <agent user> {data_dir} && chmod -R go-rwx {data_dir}",
        )
    return Finding("permissions", Status.OK, f"{data_dir} and everything in it is private to uid {owner}")


def _private_paths(data_dir: Path) -> Iterator[tuple[Path, int]]:
    """The data folder and everything in it, with the most each may allow (sockets: group access;
    models under DATA_DIR/models are public, like any Vosk model: readable, not writable, by others)."""
    yield data_dir, 0o700
    models = data_dir / MODELS
    for root, dirs, files in os.walk(data_dir):
        public = Path(root) == models or models in Path(root).parents
        yield from ((Path(root) / name, 0o755 if public or Path(root, name) == models else 0o700) for name in dirs)
        for name in files:
            path = Path(root) / name
            yield path, 0o777 if path.is_socket() else 0o644 if public else 0o600


def _free_space(config: Config) -> Finding:
    folder = config.device.data_dir
    while not folder.exists():
        folder = folder.parent
    free = free_bytes(folder)
    text = f"{free / (1 << 30):.1f} GiB free for {config.device.data_dir}"
    if free < FLOOR_BYTES:
        return Finding(
            "free space",
            Status.FAIL,
            text + f": Wyoming utterances are refused below {FLOOR_BYTES >> 20} MiB",
            "free space or move [device] data_dir",
        )
    if free < LOW_FREE:
        return Finding("free space", Status.WARN, text, "free space or move [device] data_dir")
    return Finding("free space", Status.OK, text)


def _unit(unit_path: Path) -> Finding:
    if not unit_path.exists():
        return Finding("service", Status.WARN, f"{unit_path} is not installed: nothing hardens or restarts the agent", "scripts/install.sh")
    exposure = unit_exposure(unit_path)
    if exposure is None:
        return Finding("service", Status.WARN, f"{unit_path}: systemd-analyze could not rate it", "install systemd 252 or newer")
    if exposure > MAX_EXPOSURE:
        return Finding(
            "service",
            Status.FAIL,
            f"{unit_path}: exposure {exposure} is above {MAX_EXPOSURE}",
            "restore the unit from configs/edge-agent.service (scripts/install.sh)",
        )
    return Finding("service", Status.OK, f"{unit_path}: exposure {exposure} (systemd-analyze security)")


def unit_exposure(unit_path: Path) -> float | None:
    """`systemd-analyze security --offline=yes` on the unit file: its overall exposure, 0-10."""
    try:
        result = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    return float(match.group(1)) if match else None
