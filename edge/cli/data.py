"""`status` and `export`: what is kept, and the household's only way back to it."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from edge import wiring
from edge.audit.adoption import remembered
from edge.audit.history import fate_of
from edge.cli.base import Command, clock_state, config_of, log, print_status
from edge.cli.whatif import print_forecast, what_if_instant
from edge.config import Config
from edge.disk.outputs import check_output
from edge.errors import AgentNotRunning, ControlError, UsageError
from edge.instants import iso_utc
from edge.retention.clock import Reading
from edge.retention.forecast import forecast
from edge.retention.inactivity import notices
from edge.store.keystore import Access, Keystore
from edge.values import Purpose
from edge.written.notice import Notice
from edge.written.terms import terms_of


def _agent_state(config: Config) -> tuple[dict[str, Any] | None, str]:
    """The running agent's own view, or None and why there is none ("not running", or
    what kept it from answering: a hung agent is not called stopped)."""
    from edge.control.protocol import call  # only the commands that talk to the agent import the protocol

    try:
        answer = call(config.device.control_socket, "status")
    except AgentNotRunning:
        return None, "not running"
    except ControlError as exc:  # e.g. not in group edge, or hung: the rest of status still helps
        log.warning("cannot ask the running agent: %s", exc)
        return None, "not answering (see above)"
    answer.pop("ok", None)
    return answer, ""


def describe_agent(agent: dict[str, Any]) -> str:
    """What the running agent serves and how many sessions each part has taken, in words."""
    serves = []
    if agent.get("mode"):
        serves.append(f"the microphone in {agent['mode']} mode")
    if agent.get("wyoming"):
        serves.append("Wyoming listeners " + ", ".join(f'"{name}"' for name in agent["wyoming"]))
    active = agent["active_profile"] or "(none: the strictest profile)"
    counts = f"{agent['sessions']} session(s) so far"
    if agent.get("mode") and agent.get("wyoming"):
        counts += f": {agent['microphone_sessions']} from the microphone, {agent['wyoming_sessions']} over Wyoming"
    return f"running (pid {agent['pid']}; serving {' and '.join(serves) or 'nothing'}; active profile {active}; {counts})"


def _status(args: argparse.Namespace) -> int:
    config = config_of(args)
    store, _audit = wiring.open_store(config, Access.READ)
    if args.at is not None:
        now = wiring.trusted_now(config)
        at = what_if_instant(args.at, now, "--at")
        fates = forecast(config, store.read(), now)
        if args.json:
            print(
                json.dumps(
                    {
                        "now": iso_utc(now),
                        "at": iso_utc(at),
                        "shredded": [f.to_json() for f in fates if f.at <= at],
                        "kept": [f.to_json() for f in fates if f.at > at],
                    }
                )
            )
        else:
            print_forecast(fates, now, at)
        return 0
    agent, absent = _agent_state(config)
    if not args.json:
        print(f"agent: {describe_agent(agent) if agent is not None else absent}")
        print_status(store)
        policy, inactive = _policy_and_notices(config, store)
        print(
            f"policy: {policy['version'][:12]} "
            + (f"(in force since {policy['since']})" if policy["since"] else "(not adopted yet: the agent's next start adopts it)")
        )
        for notice in inactive:
            print(f"inactive: {notice.sentence()}")
        return 0
    data = store.read()
    sessions = [
        {
            "session": s.id,
            "profile": s.profile,
            "rule": s.rule,
            "child": s.child,
            "created": iso_utc(s.created),
            "audio_expires": iso_utc(s.audio_expires),
            "transcript_expires": iso_utc(s.transcript_expires),
            "audio_shredded": iso_utc(s.audio_shredded),
            "transcript_shredded": iso_utc(s.transcript_shredded),
            "state": s.state,
            "seconds": s.seconds,
        }
        for s in sorted(data.sessions.entries(), key=lambda s: s.created)
    ]
    reading, notes = clock_state(store, data)
    document: dict[str, Any] = {
        "vault": store.vault.level.to_json(),
        "clock": _clock_json(reading, notes),
        "root_lost": store.root_lost,
        "agent": agent,
        "buckets": len(data.buckets),
        "sessions": sessions,
        "voices": sorted(data.voices),
    }
    policy, inactive = _policy_and_notices(config, store)
    document["policy"] = policy
    document["inactive"] = [n.to_json() for n in inactive]
    print(json.dumps(document))
    return 0


def _policy_and_notices(config: Config, store: Keystore) -> tuple[dict[str, Any], list[Notice]]:
    """The written policy this config makes and since when it is in force (None: not adopted
    yet), and the profiles near their inactivity purge."""
    terms = terms_of(config, store.vault.level)
    adopted = remembered(wiring.open_audit(config))
    since = iso_utc(adopted.at) if adopted is not None and adopted.version == terms.version else None
    return {"version": terms.version, "since": since}, notices(config, store.read(), wiring.trusted_now(config))


def _clock_json(reading: Reading | None, notes: list[str]) -> dict[str, Any]:
    if reading is None:
        return {"notes": notes}
    return {
        "now": iso_utc(reading.now),
        "wall": iso_utc(reading.wall),
        "synced": reading.synced,
        "ahead_seconds": round(reading.set_back.total_seconds(), 3),
        "ran_ahead": reading.ran_ahead,
        "monotonic_refused": reading.impossible is not None,
        "uptime_known": reading.uptime_known,
        "notes": notes,
    }


def _export(args: argparse.Namespace) -> int:
    from edge.store.export import export_audio, export_identity  # only an export reads audio back

    config = config_of(args)
    if args.out:
        check_output(Path(args.out), config.device.data_dir)  # links, FIFOs, the data folder: refused first
        if os.path.isfile(args.out) and not args.force:
            raise UsageError(f"{args.out} exists already; add --force to replace it (nothing was exported)")
    store, audit = wiring.open_store(config)
    if args.session not in store.read().sessions:
        gone = fate_of(audit.entries(), args.session)
        said = f": {gone}" if gone else "; `edge-agent status` lists the sessions kept"
        raise UsageError(f"there is no retained session {args.session!r}{said}", session=args.session)
    if args.identity_out:
        bucket, members, expires = export_identity(store, audit, args.session, Path(args.identity_out), wiring.trusted_now(config))
        log.warning(
            "WARNING: %s opens every recording in bucket %s (%d session(s)) until %s. Keep it private and delete it after checking.",
            args.identity_out,
            bucket,
            members,
            expires.isoformat(),
        )
        return 0
    if not args.purpose:
        raise UsageError("export --out needs --purpose playback, review or training")
    exported = export_audio(store, audit, config, args.session, Path(args.out), Purpose(args.purpose), wiring.trusted_now(config))
    print(f"exported session {exported.session} ({exported.profile}, {exported.seconds:.1f} s) for {exported.purpose} to {exported.path}")
    return 0


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"vault": {...}, "clock": {...}, "sessions": [...]} (with --at: {"shredded": [...], "kept": [...]})',
    )
    parser.add_argument(
        "--at",
        metavar="WHEN",
        help="what-if: list what will have been shredded by WHEN (+DURATION such as +25h or +7d, or an ISO 8601 date or "
        "time) and what is still kept then, each with when and why (expiry, inactivity, an unfinished forget); changes nothing",
    )


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", required=True, metavar="ID", help="session id (see `edge-agent status`)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", metavar="FILE.wav", help="write the decrypted recording here (a new name or a regular file)")
    target.add_argument("--identity-out", metavar="FILE", help="write the bucket's age identity into this new file (0600)")
    parser.add_argument("--purpose", choices=[str(p) for p in Purpose], help="why (required with --out)")
    parser.add_argument("--force", action="store_true", help="replace the --out file if it exists")


COMMANDS = (
    Command(
        "status",
        "the vault's guarantee level and the retained sessions",
        "Show where the root key lives and what that guarantees, what is wrong with the clock, and every retained session with when its audio "
        "and transcript will be shredded. Read-only: it writes nothing.",
        _status,
        _status_arguments,
    ),
    Command(
        "export",
        "get a retained recording back, for a stated purpose",
        "Decrypt one retained recording to a WAV file for a stated purpose. Training is refused for child profiles "
        "and profiles without allow_training = true. With --identity-out, write the age identity that opens the "
        "session's bucket instead (for checking with `age -d`).",
        _export,
        _export_arguments,
    ),
)
