"""The composition root: the one place where edge's parts are built from a config.

The service, the command line, the tests and the benchmarks all assemble what they
need here, so each part is made the same way everywhere. Every `make_*` (and `open_*`)
builds one part, and everything it depends on can be passed in, so a test (or the demo,
with its in-memory vault) swaps exactly one edge: the clock, the vault, the model.
Outside tests, edge's core classes (vaults, keystore, audit log, clock, shredder,
scheduler, recorder, agent, listeners, control socket) are constructed here and nowhere
else; `tests/test_layers.py` checks it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from edge.agent import Agent, SessionRecord
from edge.audit.adoption import adopt
from edge.audit.log import CHECKPOINT_V1, AuditLog, Checkpoint
from edge.audit.note import NoteError, SignedNote, parse_tree_head
from edge.audit.note import parse as parse_note
from edge.boot import boot_id
from edge.config import Config, ListenerSettings, VaultSettings
from edge.crypto.guarantee import GuaranteeLevel, Vault
from edge.crypto.vault import FileVault, KeyringVault, MemoryVault
from edge.disk.files import entries_in
from edge.disk.layout import is_own_name
from edge.disk.versioned import KEYSTORE_V2
from edge.errors import ConfigError, UsageError, VaultError
from edge.events import KeystoreMigrated, RootLost
from edge.progress import Meter, Progress
from edge.retention.clock import Reading, TrustedClock, read_uptime
from edge.retention.scheduler import RetentionService
from edge.retention.shredder import Shredder, ShredReport
from edge.spoken import SpokenCommands
from edge.store.keystore import MIGRATION_CHUNK, Access, Keystore
from edge.store.recorder import Recorder
from edge.stt.vocabulary import check_trigger_words
from edge.systemd import Notifier
from edge.tagging.voice import VoiceTagger
from edge.values import VaultBackend
from edge.written.terms import terms_of

if TYPE_CHECKING:
    from edge.audit.verify import Verification
    from edge.control.protocol import ControlServer
    from edge.stt.recognizer import SpeechModel
    from edge.wyoming.server import WyomingServer


def make_model(config: Config) -> SpeechModel:
    """Find and load the Vosk model named by [device] model (seconds and hundreds of MiB)."""
    from edge.stt.model_path import find_model  # only the commands that listen pay for Vosk
    from edge.stt.recognizer import SpeechModel

    return SpeechModel(find_model(config.device.model, config.device.data_dir))


@dataclass(frozen=True)
class Inventory:
    """The names at the top of a data folder: edge's own, and anything else."""

    own: tuple[str, ...]
    foreign: tuple[str, ...]


def inventory(config: Config, folder: Path | None = None) -> Inventory:
    """Sort what the data folder holds (`folder`: where it is when not where the config says,
    as under `install.sh --root`). The file vault's key is edge's when it lives there."""
    data_dir = config.device.data_dir
    vault_path = config.vault.path
    also: frozenset[str] = frozenset()
    if vault_path is not None and vault_path.parent.resolve() == data_dir.resolve():
        also = frozenset({vault_path.name, vault_path.name + ".next"})
    names = sorted(entries_in(folder if folder is not None else data_dir))
    return Inventory(tuple(n for n in names if is_own_name(n, also)), tuple(n for n in names if not is_own_name(n, also)))


def check_data_dir(config: Config) -> None:
    """Refuse a data folder that holds things edge did not make: edge deletes what it cannot
    account for in its own folders, so it must never share one (such as a home folder)."""
    data_dir = config.device.data_dir
    foreign = inventory(config).foreign
    if foreign:
        shown = ", ".join(repr(name) for name in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise ConfigError(
            f"{config.path}: [device] data_dir = {str(data_dir)!r} holds files edge did not make ({shown}). "
            "edge needs a folder of its own (it deletes what it cannot account for there): choose a new or "
            "empty folder.",
            path=data_dir,
            setting="device.data_dir",
        )


def open_vault(settings: VaultSettings, data_dir: Path) -> Vault:
    """The vault [vault] names; `VaultBackend.RAM` (never configured: the demo's) gives a
    fresh one in this process's memory. Each backend's own module says what fails and why."""
    if settings.backend == VaultBackend.TPM:
        from edge.crypto.tpm import TpmVault  # tpm2-pytss: an optional extra, the TPM vault's alone

        return TpmVault(data_dir, settings.tcti, settings.nv_index)
    if settings.backend == VaultBackend.KEYRING:
        return KeyringVault(data_dir, settings.keyring)
    if settings.backend == VaultBackend.FILE and settings.path is not None:
        return FileVault(settings.path, data_dir)
    if settings.backend == VaultBackend.RAM:
        return MemoryVault()
    raise VaultError(f'[vault] backend = "{settings.backend}" is not available in this version of edge')


def guarantee_levels() -> dict[str, GuaranteeLevel]:
    """Every vault backend's guarantee level, by name (for certificates, which name the
    backend the log says held the root)."""
    from edge.crypto.tpm import TpmVault  # its module imports tpm2-pytss only when a TPM is used

    return {str(cls.level.backend): cls.level for cls in (KeyringVault, FileVault, MemoryVault, TpmVault)}


def open_audit(config: Config) -> AuditLog:
    """The audit log alone, without the keystore or the vault: for the commands that only
    read it or sign its head (show, report, checkpoint, export-key)."""
    return AuditLog(config.device.data_dir)


def open_store(config: Config, access: Access = Access.WRITE, vault: Vault | None = None) -> tuple[Keystore, AuditLog]:
    """The data folder's keystore and audit log; a lost root key is audited when the agent finds it.
    Read-only access (status, verify, report) writes nothing at all."""
    check_data_dir(config)
    audit = AuditLog(config.device.data_dir)
    vault = vault if vault is not None else open_vault(config.vault, config.device.data_dir)
    level = vault.level

    def root_lost(reason: str) -> None:
        audit.append(RootLost(backend=level.backend, reason=reason))

    def migrated(sessions: int, buckets: int) -> None:
        audit.append(KeystoreMigrated(version=KEYSTORE_V2.written(), sessions=sessions, buckets=buckets))

    converting = Meter("converting the keystore from format 1", "sessions", least=MIGRATION_CHUNK)  # silent off a terminal
    store = Keystore(
        config.device.data_dir, vault, on_root_lost=root_lost, access=access, on_migrated=migrated, migration_progress=converting
    )
    if access is not Access.READ:
        audit.recover()
        adopt(audit, terms_of(config, level))  # the policy every command and the agent run under is in the log first
    return store, audit


def make_clock(
    config: Config,
    wall: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    boot: Callable[[], str] = boot_id,
    uptime: Callable[[], float | None] = read_uptime,
) -> TrustedClock:
    """The clock that cannot be set back; tests pass their own wall, monotonic and uptime clocks."""
    return TrustedClock(config.device.data_dir, wall=wall, monotonic=monotonic, boot=boot, uptime=uptime)


def trusted_now(config: Config) -> datetime:
    """Now, by the clock that cannot be set back."""
    return make_clock(config).now()


def read_clock(data_dir: Path) -> Reading:
    """What the trusted clock of `data_dir` reads now, and what is wrong with it (status,
    doctor); StorageError when its mark is of another version."""
    return TrustedClock(data_dir).read()


def make_shredder(
    config: Config,
    vault: Vault | None = None,
    store: tuple[Keystore, AuditLog] | None = None,
    clock: TrustedClock | None = None,
    deleting: Progress | None = None,
) -> Shredder:
    keystore, audit = store if store is not None else open_store(config, Access.WRITE, vault)
    return Shredder(keystore, clock or make_clock(config), config, audit, deleting)


def make_retention(
    shredder: Shredder, config: Config, on_report: Callable[[ShredReport], None], notifier: Notifier | None = None
) -> RetentionService:
    """Shredding on schedule: a job per bucket, a periodic sweep, a clock watch, and (under
    systemd's watchdog) heartbeats that prove the scheduler runs and the data lock is free."""
    return RetentionService(shredder, shredder.clock, config.retention.sweep, on_report, notifier)


def make_recorder(
    keystore: Keystore, audit: AuditLog, clock: TrustedClock, retention: RetentionService | None = None, policy: str | None = None
) -> Recorder:
    """Seals what profiles keep; each new bucket gets its expiry job when `retention` runs;
    each session records `policy`, the version of the written policy it is taken under."""
    return Recorder(keystore, clock.now, audit, on_new_bucket=retention.add_bucket if retention else None, policy=policy)


def make_agent(
    config: Config,
    model: SpeechModel,
    on_session: Callable[[SessionRecord], None],
    recorder: Recorder | None = None,
    profile: str | None = None,
    clock: TrustedClock | None = None,
    spoken: SpokenCommands | None = None,
) -> Agent:
    """The pipeline: segmenter, tagger, recognizer and (with a recorder) sealing, tagging by
    voice once a voice is enrolled, and the spoken commands (with `spoken`)."""
    tagger = make_tagger(config, recorder.keystore) if recorder is not None else None
    if clock is None:
        return Agent(config, model, on_session, given_profile=profile, recorder=recorder, tagger=tagger, spoken=spoken)
    return Agent(config, model, on_session, given_profile=profile, recorder=recorder, clock=clock.now, tagger=tagger, spoken=spoken)


def make_spoken(config: Config, shredder: Shredder) -> SpokenCommands | None:
    """The household's spoken commands ([voice_commands]); None when none is set."""
    if not config.voice_commands.enabled:
        return None
    return SpokenCommands(config, shredder, shredder.audit, shredder.clock.now)


def make_tagger(config: Config, keystore: Keystore) -> VoiceTagger:
    """Tags sessions by the enrolled voices (the speaker encoder loads on first need)."""
    return VoiceTagger(config, keystore)


@dataclass
class Runtime:
    """Everything a running agent is made of, built by `build_runtime`."""

    config: Config
    model: SpeechModel
    keystore: Keystore
    audit: AuditLog
    clock: TrustedClock
    shredder: Shredder
    retention: RetentionService
    recorder: Recorder
    agent: Agent
    notifier: Notifier


def build_runtime(
    config: Config,
    on_session: Callable[[SessionRecord], None],
    on_report: Callable[[ShredReport], None],
    profile: str | None = None,
    vault: Vault | None = None,
    model: SpeechModel | None = None,
) -> Runtime:
    """The agent and all it needs, nothing started yet: the service decides the order
    (keystore opened and everything due shredded before the microphone opens)."""
    if profile:
        config.named_profile(profile, "--profile")  # fail before loading anything
    model = model if model is not None else make_model(config)
    check_trigger_words(config, model.vocabulary, model.path)  # before the data folder is opened
    keystore, audit = open_store(config, Access.AGENT, vault)
    clock = make_clock(config)
    shredder = make_shredder(config, store=(keystore, audit), clock=clock)
    notifier = Notifier.from_environment()
    retention = make_retention(shredder, config, on_report, notifier)
    recorder = make_recorder(keystore, audit, clock, retention, terms_of(config, keystore.vault.level).version)
    agent = make_agent(config, model, on_session, recorder, profile, clock, make_spoken(config, shredder))
    return Runtime(config, model, keystore, audit, clock, shredder, retention, recorder, agent, notifier)


def make_listeners(runtime: Runtime, listeners: tuple[ListenerSettings, ...]) -> WyomingServer:
    """The Wyoming listeners (not started), sharing the runtime's model, recorder, keystore,
    audit log and voice tagger; each session is tagged by the agent's active profile."""
    from edge.wyoming.server import WyomingServer  # asyncio and the protocol: the listeners' alone
    from edge.wyoming.utterance import Household

    agent = runtime.agent
    household = Household(
        runtime.config, runtime.model, runtime.recorder, runtime.audit, lambda: agent.active_profile, agent.tagger, agent.parts.spoken
    )
    return WyomingServer(household, listeners)


def make_control(runtime: Runtime, microphone: bool, listeners: WyomingServer | None) -> ControlServer:
    """A long-running agent's control socket (not started; only it pays for the imports):
    its status names what the agent serves and counts the sessions of each."""
    from edge.control.operations import agent_operations
    from edge.control.protocol import ControlServer

    operations = agent_operations(
        runtime.config,
        runtime.agent,
        runtime.shredder,
        runtime.audit,
        microphone=microphone,
        listeners=tuple(listener.name for listener in listeners.listeners) if listeners else (),
        wyoming_sessions=(lambda: listeners.served) if listeners else (lambda: 0),
    )
    return ControlServer(runtime.config.device.control_socket, operations)


def verification(
    config: Config, witness_path: str | None = None, vault: Vault | None = None, progress: Progress | None = None
) -> Verification:
    """Verify the audit log and cross-check the data folder, read-only (`progress`: bytes of
    the log checked, of all, as a long check goes on)."""
    from edge.audit.verify import verify  # only the commands that verify pay for it

    witness = _read_witness(Path(witness_path)) if witness_path else None
    keystore, audit = open_store(config, Access.READ, vault)
    grace = config.retention.sweep + timedelta(seconds=2)  # a sweep may not have run yet
    return verify(audit, keystore, trusted_now(config), grace, witness, progress=progress)


def held_details_keys(config: Config) -> dict[str, str]:
    """session -> the key its audit lines' sealed details open with, for every session the
    device holds now (read-only). EdgeError when the keystore cannot be read: the details are
    then unknown here, not forgotten."""
    keystore, _audit = open_store(config, Access.READ)
    data = keystore.read()
    return {entry.id: entry.details for entry in data.sessions.entries() if entry.details is not None}


def _read_witness(path: Path) -> Checkpoint | SignedNote:
    try:
        text = path.read_bytes()
        signature_path = path.with_name(path.name + ".sig")
        signature = signature_path.read_bytes() if signature_path.exists() else b""
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the witness: {exc.strerror}", path=path) from None
    if not text.startswith(CHECKPOINT_V1.encode()):
        try:
            signed = parse_note(text)
            parse_tree_head(signed.text)
            return signed
        except NoteError as exc:
            raise UsageError(
                f"{path}: not a witness: neither an edge audit checkpoint (v1) nor a C2SP checkpoint ({exc})", path=path
            ) from None
    return Checkpoint.parse(text, signature)
