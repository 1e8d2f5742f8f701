"""edge-agent: the command line.

Every user mistake ends as one readable paragraph on stderr and a non-zero exit
code; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from edge import __version__, control, wiring
from edge.audio.wavfile import open_wav, read_pipeline_chunks
from edge.audit.commands import add_parser as add_audit_parser
from edge.config import BUILTIN_CONFIG, load_config, resolve_config_path
from edge.crypto.vault import MemoryVault
from edge.errors import EdgeError, UsageError
from edge.retention.shredder import ForgetRequest
from edge.service import print_report, refuse_text_into_journal, run_agent, session_printer
from edge.store.export import export_audio, export_identity
from edge.store.keystore import Access, iso_utc
from edge.stt.commands import add_parser as add_model_parser

DEMO_WAV = Path(__file__).parent / "data" / "demo.wav"


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(0o077)  # everything edge creates is private to its user
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        code = args.handler(args)
        sys.stdout.flush()  # here, so a closed pipe is caught below rather than at exit
        return code
    except EdgeError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge-agent status | head -1`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 2) instead of exiting from deep inside."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}\n{self.format_usage().strip()}\nSee `{self.prog} --help`.")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edge-agent",
        description="On-device privacy middleware for voice assistants: offline transcription, "
        "per-profile retention, verifiable deletion.",
    )
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="household config (TOML). Default: $EDGE_CONFIG, then /etc/edge/household.toml, "
        "then the built-in example config",
    )
    parser.set_defaults(handler=lambda _args: parser.print_help() or 0)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)

    transcribe = sub.add_parser(
        "transcribe",
        help="transcribe a WAV file offline; stores nothing",
        description="Transcribe a WAV file (any rate, channels, 8/16/24/32-bit PCM or float) "
        "with the local Vosk model. Nothing is stored.",
    )
    transcribe.add_argument("wav", metavar="WAV", help="the WAV file to transcribe")
    transcribe.add_argument(
        "--grammar",
        nargs="+",
        metavar="PHRASE",
        help="limit the output to these phrases (limited-vocabulary mode); default: free dictation",
    )
    transcribe.add_argument("--json", action="store_true", help='print {"text", "words": [{"word", "start", "end", "conf"}]}')
    transcribe.set_defaults(handler=_cmd_transcribe)

    run = sub.add_parser(
        "run",
        help="run the agent on a WAV file or the microphone",
        description="Split the audio into sessions (trigger mode from the config), tag each with a "
        "household profile and transcribe it. Ctrl-C / SIGTERM finish the session in progress and "
        "exit. In push_to_talk mode, SIGUSR1 opens a session (with --input, the file's start counts "
        "as one push).",
    )
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="WAV", help="read this WAV file, then exit")
    source.add_argument("--mic", action="store_true", help="listen to the microphone until stopped")
    run.add_argument(
        "--profile", metavar="NAME", help="tag sessions with this profile (until `edge-agent profile` says otherwise)"
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="one JSON line per finished session, with what was said (refused when stdout is the systemd "
        "journal); without it, no transcript text is printed",
    )
    run.set_defaults(handler=_cmd_run)

    status = sub.add_parser(
        "status",
        help="the vault's guarantee level and the retained sessions",
        description="Show where the root key lives and what that guarantees, and every retained "
        "session with when its audio and transcript will be shredded.",
    )
    status.add_argument("--json", action="store_true", help='print {"vault": {...}, "sessions": [...]}')
    status.set_defaults(handler=_cmd_status)

    export = sub.add_parser(
        "export",
        help="get a retained recording back, for a stated purpose",
        description="Decrypt one retained recording to a WAV file for a stated purpose. Training is "
        "refused for child profiles and profiles without allow_training = true. With --identity-out, "
        "write the age identity that opens the session's bucket instead (for checking with `age -d`).",
    )
    export.add_argument("--session", required=True, metavar="ID", help="session id (see `edge-agent status`)")
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", metavar="FILE.wav", help="write the decrypted recording here")
    target.add_argument("--identity-out", metavar="FILE", help="write the bucket's age identity here (0600)")
    export.add_argument("--purpose", choices=("playback", "review", "training"), help="why (required with --out)")
    export.set_defaults(handler=_cmd_export)

    purge = sub.add_parser(
        "purge",
        help="shred everything that is due now, and say what was shredded",
        description="Run what the agent's sweep runs: shred every retention bucket whose expiry has "
        "passed (by the clock that cannot be set back) and every child profile unused for its "
        "inactive_after, finish interrupted work, delete orphaned ciphertext.",
    )
    purge.set_defaults(handler=_cmd_purge)

    forget = sub.add_parser(
        "forget",
        help="forget sessions now: one, a profile, everything, or everything before a date",
        description="Forget retained sessions immediately. Afterwards no key on the device opens them, "
        "nor any copy of their files recovered from the storage. Asks for confirmation unless --yes.",
    )
    which = forget.add_mutually_exclusive_group(required=True)
    which.add_argument("--session", metavar="ID", help="one session")
    which.add_argument("--profile", metavar="NAME", help="every session of a profile")
    which.add_argument("--all", action="store_true", help="every session")
    which.add_argument(
        "--before", metavar="ISO8601", help="every session created before this instant (no zone given = local time)"
    )
    forget.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    forget.set_defaults(handler=_cmd_forget)

    profile = sub.add_parser(
        "profile",
        help="set who is speaking now, in the running agent",
        description="Tell the running agent which household profile the next sessions belong to "
        "(overrides [household] active_profile until the agent stops). --clear goes back to the config.",
    )
    who = profile.add_mutually_exclusive_group(required=True)
    who.add_argument("name", nargs="?", metavar="NAME", help="a profile from the config")
    who.add_argument("--clear", action="store_true", help="back to [household] active_profile")
    profile.set_defaults(handler=_cmd_profile)

    push = sub.add_parser(
        "push",
        help="push-to-talk: open a session in the running agent",
        description='Open a session now in the running agent (needs [trigger] mode = "push_to_talk"). '
        "It ends after trailing silence.",
    )
    push.set_defaults(handler=_cmd_push)

    add_audit_parser(sub, _Parser, _load_config)
    add_model_parser(sub, _Parser)

    doctor = sub.add_parser(
        "doctor",
        help="check the installation and explain what holds",
        description="Check the config, the model, the microphone, the vault and its guarantee level, "
        "the clock, swap, permissions, free space and the service's hardening. Each problem comes with "
        "a fix. Exit status 1 when something fails (warnings alone exit 0; --strict makes them fail).",
    )
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.add_argument("--strict", action="store_true", help="warnings fail too")
    doctor.add_argument("--no-mic", action="store_true", help="list input devices but do not open one")
    doctor.set_defaults(handler=_cmd_doctor)

    demo = sub.add_parser(
        "demo",
        help="run the pipeline on the bundled sample speech",
        description="Run the agent on the bundled sample speech with the config (default: the "
        "built-in example) and the installed Vosk model, and explain what happened.",
    )
    demo.set_defaults(handler=_cmd_demo)
    return parser


# -- commands -------------------------------------------------------------------


def _cmd_transcribe(args: argparse.Namespace) -> int:
    refuse_text_into_journal("transcribe")
    info = open_wav(Path(args.wav))
    config = _load_config(args)
    model = wiring.make_model(config)
    grammar = tuple(args.grammar or ())
    if grammar:
        model.check_grammar(grammar, "--grammar")
    decoder = model.decoder(grammar)
    for chunk in read_pipeline_chunks(info):
        decoder.feed(chunk)
    transcript = decoder.transcript()
    if args.json:
        print(json.dumps(transcript.to_json(), ensure_ascii=False))
    else:
        print(transcript.text)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load_config(args)
    return run_agent(config, args.input, args.profile, args.json)


def _cmd_demo(args: argparse.Namespace) -> int:
    """The pipeline on the bundled speech, isolated from any household: its own temporary
    data folder and control socket, and a root key that lives only in this process."""
    refuse_text_into_journal("demo")
    config = _load_config(args)
    vault = MemoryVault()
    with tempfile.TemporaryDirectory(prefix="edge-demo-") as scratch:
        data_dir = Path(scratch) / "data"
        device = replace(config.device, data_dir=data_dir, control_socket=Path(scratch) / "control.sock")
        config = replace(config, device=device, vault=replace(config.vault, backend="ram", path=None))
        trigger = config.trigger
        profile = next((p for p in config.profiles if p.is_child and p.keep_audio), config.profiles[0])
        print(f"edge demo: config {config.path}")
        print(f"  trigger: {trigger.mode}" + (f', wake phrase "{trigger.wake_phrase}"' if trigger.mode == "wake" else ""))
        print(f"  grammar: {', '.join(trigger.grammar) if trigger.grammar else '(free dictation)'}")
        print(f"  input:   {DEMO_WAV.name} (sample speech made with espeak-ng), spoken as profile {profile.name!r}")
        print(f"  data:    {data_dir} (a temporary folder, removed at the end; the root key lives in this process only)")
        code = run_agent(config, str(DEMO_WAV), profile.name, False, vault, session_printer(False, show_text=True))
        store, _audit = wiring.open_store(config, Access.READ, vault)
        _print_status(store)
        sealed = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*.age"))
        print(f"On disk: {len(sealed)} sealed file(s), each an age file that only its bucket's key opens:")
        for path in sealed:
            head = (data_dir / path).read_bytes()[:21].decode()
            print(f"  {path}  ({head}...)")
        print("Speech heard before the wake phrase was wiped from RAM, never written.")
        verification = wiring.verification(config, vault=vault)
        print(
            f"Audit log: {verification.entries} entries, {verification.checkpoints} signed checkpoint(s): "
            + ("verified (`edge-agent audit verify`)" if verification.ok else f"FAILED: {verification.problems[0]}")
        )
        for slot in ("current", "next"):
            vault.erase(slot)
        print("Demo over: its root key was destroyed, so none of those files can be opened again.")
        return code


def _cmd_profile(args: argparse.Namespace) -> int:
    config = _load_config(args)
    if args.name:
        config.profile(args.name)  # a clear error before asking the agent
    answer = control.call(config.device.control_socket, "profile", name=None if args.clear else args.name)
    print(f"active profile: {answer['active_profile'] or '(none: the strictest profile)'}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    config = _load_config(args)
    control.call(config.device.control_socket, "push")
    print("listening: speak now")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from edge.doctor import run_checks

    findings = run_checks(resolve_config_path(args.config), open_mic=not args.no_mic)
    if args.json:
        print(json.dumps([f.to_json() for f in findings], ensure_ascii=False))
    else:
        for finding in findings:
            print(f"{finding.status.upper():5} {finding.check:12} {finding.detail}")
            if finding.fix and finding.status != "ok":
                print(f"{'':18} fix: {finding.fix}")
    failing = {"fail", "warn"} if args.strict else {"fail"}
    return 1 if any(f.status in failing for f in findings) else 0


def _agent_state(config) -> dict | None:
    """The running agent's own view, or None when no agent answers."""
    try:
        return control.call(config.device.control_socket, "status")
    except control.AgentNotRunning:
        return None
    except control.ControlError as exc:  # e.g. not in group edge: the rest of status still helps
        print(f"edge-agent: cannot ask the running agent: {exc}", file=sys.stderr)
        return None


def _cmd_status(args: argparse.Namespace) -> int:
    config = _load_config(args)
    store, _audit = wiring.open_store(config, Access.READ)
    agent = _agent_state(config)
    if agent is not None:
        agent.pop("ok", None)
    if args.json:
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
                "state": s.state,
                "seconds": s.seconds,
            }
            for s in sorted(data.sessions.values(), key=lambda s: s.created)
        ]
        print(json.dumps({
            "vault": store.vault.level.to_json(), "root_lost": store.root_lost, "agent": agent,
            "buckets": len(data.buckets), "sessions": sessions,
        }))
    else:
        if agent is None:
            print("agent: not running")
        else:
            active = agent["active_profile"] or "(none: the strictest profile)"
            print(f"agent: running (pid {agent['pid']}, {agent['mode']} mode, active profile {active}, {agent['sessions']} session(s) so far)")
        _print_status(store)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    config = _load_config(args)
    store, audit = wiring.open_store(config)
    if args.identity_out:
        bucket, members, expires = export_identity(store, audit, args.session, Path(args.identity_out), wiring.trusted_now(config))
        print(
            f"edge-agent: WARNING: {args.identity_out} opens every recording in bucket {bucket} "
            f"({members} session(s)) until {expires.isoformat()}. Keep it private and delete it after checking.",
            file=sys.stderr,
        )
        return 0
    if not args.purpose:
        raise UsageError("export --out needs --purpose playback, review or training")
    exported = export_audio(store, audit, config, args.session, Path(args.out), args.purpose, wiring.trusted_now(config))
    print(f"exported session {exported.session} ({exported.profile}, {exported.seconds:.1f} s) for {exported.purpose} to {exported.path}")
    return 0


def _cmd_purge(args: argparse.Namespace) -> int:
    config = _load_config(args)
    report = wiring.make_shredder(config).sweep()
    if report.empty:
        print(f"nothing is due (at {report.reading.now.isoformat(timespec='seconds')})")
    print_report(report)
    return 0


def _cmd_forget(args: argparse.Namespace) -> int:
    config = _load_config(args)
    shredder = wiring.make_shredder(config)
    request = ForgetRequest.checked(
        config,
        shredder.keystore.read(),
        session=args.session,
        profile=args.profile,
        everything=args.all,
        before=wiring.parse_instant(args.before, "--before"),
    )
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("forget needs confirmation: run it in a terminal, or add --yes")
        sessions = shredder.matching(request)  # ask first, without the lock: recording and shredding go on
        if sessions:
            profiles = sorted({s.profile for s in sessions})
            answer = input(
                f"Forget {request.describe()}: {len(sessions)} session(s) ({', '.join(profiles)})? "
                "This cannot be undone. [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing was forgotten")
                return 0
    report = shredder.forget(request)
    if not report.forgotten and not report.buckets:
        print(f"nothing to forget for {request.describe()}")
    print_report(report)
    return 0


# -- helpers --------------------------------------------------------------------


def _print_status(store) -> None:
    level = store.vault.level
    data = store.read()
    print(f"vault: {level.backend}: {level.summary}")
    if store.root_lost:
        print(f"root key lost: {store.root_lost}; nothing retained before can be opened (the agent records this at its next start)")
    if not data.sessions:
        print("no retained sessions")
    for entry in sorted(data.sessions.values(), key=lambda s: s.created):
        audio = iso_utc(entry.audio_expires) or "not kept"
        text = iso_utc(entry.transcript_expires) or "not kept"
        print(f"session {entry.id}  {entry.profile} ({entry.rule})  audio until {audio}  transcript until {text}  [{entry.state}]")


def _load_config(args: argparse.Namespace):
    path = resolve_config_path(args.config)
    if path == BUILTIN_CONFIG and args.handler is not _cmd_demo:
        print(f"edge-agent: no config given; using the built-in example ({path})", file=sys.stderr)
    return load_config(path)
