"""Factories that assemble edge's parts from a config: one place to swap one edge.

The command line and the agent both build what they need here, so a test (or a
future control socket) gets exactly the same wiring.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from edge.audit.log import AuditLog, Checkpoint
from edge.config import Config
from edge.crypto.vault import Vault, open_vault
from edge.errors import ConfigError, UsageError
from edge.retention.clock import TrustedClock
from edge.retention.shredder import Shredder
from edge.store.files import entries_in
from edge.store.keystore import Access, Keystore
from edge.store.layout import is_own_name

if TYPE_CHECKING:
    from edge.audit.verify import Verification


def make_model(config: Config):
    """Find and load the Vosk model named by [device] model (seconds and hundreds of MiB)."""
    from edge.stt.model_path import find_model
    from edge.stt.recognizer import SpeechModel

    return SpeechModel(find_model(config.device.model, config.device.data_dir))


def check_data_dir(config: Config) -> None:
    """Refuse a data folder that holds things edge did not make: edge deletes what it cannot
    account for in its own folders, so it must never share one (such as a home folder)."""
    data_dir = config.device.data_dir
    vault_path = config.vault.path
    also = frozenset()
    if vault_path is not None and vault_path.parent.resolve() == data_dir.resolve():
        also = frozenset({vault_path.name, vault_path.name + ".next"})
    foreign = sorted(name for name in entries_in(data_dir) if not is_own_name(name, also))
    if foreign:
        shown = ", ".join(repr(name) for name in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise ConfigError(
            f"{config.path}: [device] data_dir = {str(data_dir)!r} holds files edge did not make ({shown}). "
            "edge needs a folder of its own (it deletes what it cannot account for there): choose a new or "
            "empty folder."
        )


def open_store(config: Config, access: Access = Access.WRITE, vault: Vault | None = None) -> tuple[Keystore, AuditLog]:
    """The data folder's keystore and audit log; a lost root key is audited when the agent finds it.
    Read-only access (status, verify, report) writes nothing at all."""
    check_data_dir(config)
    audit = AuditLog(config.device.data_dir)
    vault = vault if vault is not None else open_vault(config.vault, config.device.data_dir)
    level = vault.level
    store = Keystore(
        config.device.data_dir,
        vault,
        on_root_lost=lambda reason: audit.append("root.lost", backend=level.backend, reason=reason),
        access=access,
    )
    if access is not Access.READ:
        audit.recover()
    return store, audit


def make_clock(config: Config) -> TrustedClock:
    return TrustedClock(config.device.data_dir)


def trusted_now(config: Config) -> datetime:
    """Now, by the clock that cannot be set back."""
    return make_clock(config).now()


def make_shredder(config: Config, vault: Vault | None = None) -> Shredder:
    store, audit = open_store(config, Access.WRITE, vault)
    return Shredder(store, make_clock(config), config, audit)


def verification(config: Config, witness_path: str | None = None, vault: Vault | None = None) -> Verification:
    """Verify the audit log and cross-check the data folder, read-only."""
    from edge.audit.verify import verify  # only the commands that verify pay for it
    witness = _read_witness(Path(witness_path)) if witness_path else None
    keystore, audit = open_store(config, Access.READ, vault)
    grace = config.retention.sweep + timedelta(seconds=2)  # a sweep may not have run yet
    return verify(audit, keystore, trusted_now(config), grace, witness)


def _read_witness(path: Path) -> Checkpoint:
    try:
        text = path.read_bytes()
        signature_path = path.with_name(path.name + ".sig")
        signature = signature_path.read_bytes() if signature_path.exists() else b""
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the witness: {exc.strerror}") from None
    return Checkpoint.parse(text, signature)


def parse_instant(text: str | None, option: str) -> datetime | None:
    """ISO 8601; without a zone it is the device's local time."""
    if text is None:
        return None
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not an ISO 8601 date or time, e.g. 2026-11-01 or 2026-11-01T18:00:00+01:00"
        ) from None
    return instant.astimezone() if instant.tzinfo is None else instant
