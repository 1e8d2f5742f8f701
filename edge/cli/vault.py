"""`edge-agent vault migrate --to tpm`: move a data folder's root key into a TPM.

The keystore is re-sealed under a fresh root kept in the TPM, then the old vault's root
is destroyed; the audit log records the move. Nothing else in the folder changes: the
recordings stay sealed to their bucket keys, which the keystore holds.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from edge import wiring
from edge.cli.base import Command, config_of, refuse_running_agent
from edge.config import DEFAULT_NV_INDEX, DEFAULT_TCTI, NV_INDEX_FIRST, NV_INDEX_LAST, TCTI_KINDS, Config
from edge.crypto.guarantee import Vault
from edge.disk.files import exists_in
from edge.disk.layout import TPM_MARKER
from edge.errors import KeystoreError, UsageError, VaultError
from edge.events import VaultMigrated
from edge.store.keystore import Keystore
from edge.values import VaultBackend


def _migrate(args: argparse.Namespace) -> int:
    config = config_of(args)
    if config.vault.backend == VaultBackend.TPM:
        raise UsageError(f'{config.path}: [vault] backend is "tpm" already; there is nothing to move')
    refuse_running_agent(config, VaultError)
    target_settings = replace(config.vault, backend=VaultBackend.TPM, path=None, tcti=args.tcti, nv_index=args.nv_index)
    target = wiring.open_vault(target_settings, config.device.data_dir)  # a missing TPM fails here, before anything changes
    store, audit = wiring.open_store(config)
    old = store.vault.level
    sessions = _move(store, target, config)
    audit.append(VaultMigrated(backend=target.level.backend, previous=old.backend, sessions=sessions))
    print(
        f"moved the root key of {config.device.data_dir} from the {old.backend} vault into the TPM ({args.tcti}, "
        f"NV index {args.nv_index:#010x}); {sessions} retained session(s) still open, and the old root is destroyed"
    )
    if not old.crypto_erase:
        print(
            f"the old root key file ({config.vault.path}) was overwritten and deleted, but flash storage may keep "
            "old blocks: data shredded before this move may still open from a copy of the card made before it"
        )
    print(f'now set in {config.path}:\n\n[vault]\nbackend = "tpm"\ntcti = "{args.tcti}"\nnv_index = {args.nv_index:#010x}\n')
    print("(and remove a path line, if any); until the config names the TPM, every command refuses and nothing is wiped")
    return 0


def _move(store: Keystore, target: Vault, config: Config) -> int:
    """Move the root; if an earlier run was interrupted after its commit, the keystore opens
    only with the TPM's root by now: finish that run (destroy the old root) instead."""
    old = store.vault
    try:
        with store.transaction() as data:
            sessions = len(data.sessions)
            store.move_root(data, target)
        return sessions
    except (KeystoreError, VaultError) as failed:
        if not exists_in(config.device.data_dir, TPM_MARKER):
            raise
        try:
            resumed, _audit = wiring.open_store(config, vault=target)
            with resumed.transaction() as data:
                sessions = len(data.sessions)
        except (KeystoreError, VaultError):
            raise failed from None  # the TPM's root does not open it either: the first error says why
    for slot in ("next", "current"):
        old.erase(slot)
    old.scrub()
    return sessions


def _nv_index(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (write it in hex, e.g. {DEFAULT_NV_INDEX:#010x})") from None
    if not NV_INDEX_FIRST <= value <= NV_INDEX_LAST:
        raise argparse.ArgumentTypeError(f"{text} is outside the TPM owner's NV range {NV_INDEX_FIRST:#010x}-{NV_INDEX_LAST:#010x}")
    return value


def _tcti(text: str) -> str:
    if text.split(":", 1)[0] not in TCTI_KINDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TPM connection: write e.g. {DEFAULT_TCTI!r} (kinds: {', '.join(TCTI_KINDS)})")
    return text


def _migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, choices=[VaultBackend.TPM.value], help="the vault to move the root key into")
    parser.add_argument("--tcti", type=_tcti, default=DEFAULT_TCTI, help=f"how to reach the TPM (default {DEFAULT_TCTI})")
    parser.add_argument(
        "--nv-index",
        type=_nv_index,
        default=DEFAULT_NV_INDEX,
        help=f"NV index for the root and the next one (default {DEFAULT_NV_INDEX:#010x})",
    )


COMMANDS = (
    Command(
        "vault",
        "move the root key between vaults",
        "The vault holds the one secret that opens the keystore (README: guarantee levels).",
        subcommands=(
            Command(
                "migrate",
                "move this data folder's root key into a TPM (stop the agent first)",
                "Re-seal the keystore under a fresh root key kept in a TPM 2.0 NV index, then destroy the old "
                "vault's root key, and record the move in the audit log. Retained data stays retained; afterwards "
                'set [vault] backend = "tpm" in the config, as the command prints. Crash-safe: run it again if '
                "it was interrupted.",
                _migrate,
                _migrate_arguments,
            ),
        ),
    ),
)
