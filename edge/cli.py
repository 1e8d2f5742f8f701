"""edge-agent: the command line.

Every user mistake ends as one readable paragraph on stderr and a non-zero exit
code; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from edge import __version__, wiring
from edge.agent import Agent
from edge.audio.mic import MicSource
from edge.audio.wavfile import open_wav, read_pipeline_chunks
from edge.audit.commands import add_parser as add_audit_parser
from edge.config import BUILTIN_CONFIG, load_config, resolve_config_path
from edge.errors import EdgeError, UsageError
from edge.retention.scheduler import RetentionService
from edge.retention.shredder import ForgetRequest, Shredder
from edge.store.export import export_audio, export_identity
from edge.store.keystore import iso_utc
from edge.store.recorder import Recorder

DEMO_WAV = Path(__file__).parent / "data" / "demo.wav"


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(0o077)  # everything edge creates is private to its user
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        return args.handler(args)
    except EdgeError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


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
    run.add_argument("--profile", metavar="NAME", help="tag every session with this profile")
    run.add_argument("--json", action="store_true", help="one JSON line per finished session")
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

    add_audit_parser(sub, _Parser, _load_config)

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
    return _run_agent(config, args.input, args.profile, args.json)


def _cmd_demo(args: argparse.Namespace) -> int:
    config = _load_config(args)
    with tempfile.TemporaryDirectory(prefix="edge-demo-") as scratch:
        config = replace(config, device=replace(config.device, data_dir=Path(scratch)))
        trigger = config.trigger
        profile = next((p for p in config.profiles if p.is_child and p.keep_audio), config.profiles[0])
        print(f"edge demo: config {config.path}")
        print(f"  trigger: {trigger.mode}" + (f', wake phrase "{trigger.wake_phrase}"' if trigger.mode == "wake" else ""))
        print(f"  grammar: {', '.join(trigger.grammar) if trigger.grammar else '(free dictation)'}")
        print(f"  input:   {DEMO_WAV.name} (sample speech made with espeak-ng), spoken as profile {profile.name!r}")
        print(f"  data:    {scratch} (a temporary folder, removed at the end)")
        code = _run_agent(config, str(DEMO_WAV), profile.name, False)
        store, _audit = wiring.open_store(config)
        _print_status(store)
        sealed = sorted(p.relative_to(scratch) for p in Path(scratch).rglob("*.age"))
        print(f"On disk: {len(sealed)} sealed file(s), each an age file that only its bucket's key opens:")
        for path in sealed:
            head = (Path(scratch) / path).read_bytes()[:21].decode()
            print(f"  {path}  ({head}...)")
        print("Speech heard before the wake phrase was wiped from RAM, never written.")
        verification = wiring.verification(config)
        print(
            f"Audit log: {verification.entries} entries, {verification.checkpoints} signed checkpoint(s): "
            + ("verified (`edge-agent audit verify`)" if verification.ok else f"FAILED: {verification.problems[0]}")
        )
        for slot in ("current", "next"):
            store.vault.erase(slot)
        print("Demo over: its root key was destroyed, so none of those files can be opened again.")
        return code


def _cmd_status(args: argparse.Namespace) -> int:
    store, _audit = wiring.open_store(_load_config(args))
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
        print(json.dumps({"vault": store.vault.level.to_json(), "buckets": len(data.buckets), "sessions": sessions}))
    else:
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
    _print_report(report)
    return 0


def _cmd_forget(args: argparse.Namespace) -> int:
    config = _load_config(args)
    request = ForgetRequest(
        session=args.session, profile=args.profile, everything=args.all, before=wiring.parse_instant(args.before, "--before")
    )
    shredder = wiring.make_shredder(config)
    data = shredder.keystore.read()
    if args.session and args.session not in data.sessions:
        raise UsageError(f"there is no retained session {args.session!r}; `edge-agent status` lists them")
    known = {p.name for p in config.profiles} | {b.profile for b in data.buckets.values()}
    if args.profile and args.profile not in known:
        raise UsageError(f"there is no profile {args.profile!r}; the profiles are: {', '.join(sorted(known))}")
    if not args.yes and not sys.stdin.isatty():
        raise UsageError("forget needs confirmation: run it in a terminal, or add --yes")
    declined = []

    def confirm(sessions) -> bool:
        if args.yes:
            return True
        profiles = sorted({s.profile for s in sessions})
        answer = input(
            f"Forget {request.describe()}: {len(sessions)} session(s) ({', '.join(profiles) or 'no sessions'})? "
            "This cannot be undone. [y/N] "
        )
        agreed = answer.strip().lower() in ("y", "yes")
        declined.extend([] if agreed else [True])
        return agreed

    report = shredder.forget(request, confirm)
    if declined:
        print("nothing was forgotten")
    elif report.empty:
        print(f"nothing to forget for {request.describe()}")
    _print_report(report)
    return 0


# -- helpers --------------------------------------------------------------------


def _print_report(report, stream=sys.stdout) -> None:
    """What a sweep or forget did, one line per bucket. No key material, no transcript text."""
    for item in report.buckets:
        seconds = item.late.total_seconds()
        timing = "on time" if 0 <= seconds < 1 else (f"late by {seconds:.0f}s" if seconds > 0 else "ahead of expiry")
        print(
            f"shredded {item.kind} bucket {item.bucket}: {len(item.sessions)} session(s), {item.reason}, {timing}",
            file=stream,
        )
    for bucket in report.rekeyed:
        print(f"re-keyed bucket {bucket}: its remaining sessions now open only with a new key", file=stream)
    if report.forgotten:
        print(f"forgot {len(report.forgotten)} session(s)", file=stream)
    if report.files_deleted:
        print(f"deleted {report.files_deleted} ciphertext file(s)", file=stream)
    reading = report.reading
    if not report.empty:
        note = "" if reading.synced else " (clock not NTP-synced)"
        if reading.set_back.total_seconds() > 2:
            note += f" (wall clock is {reading.set_back.total_seconds():.0f}s behind the trusted clock: set back?)"
        print(f"at {reading.now.isoformat(timespec='seconds')}{note}", file=stream, flush=True)


def _print_status(store) -> None:
    level = store.vault.level
    data = store.read()
    print(f"vault: {level.backend}: {level.summary}")
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


def _run_agent(config, input_wav: str | None, profile: str | None, as_json: bool) -> int:
    """The agent: catch up on retention, then listen (file or microphone) until done or stopped."""
    if profile:
        config.profile(profile)  # fail before any audio is heard
    info = open_wav(Path(input_wav)) if input_wav else None
    model = wiring.make_model(config)
    store, audit = wiring.open_store(config)
    audit.append("config.loaded", path=str(config.path), sha256=hashlib.sha256(config.path.read_bytes()).hexdigest())
    store.read()  # open the vault and keystore before any audio is heard
    if store.root_lost:
        print(
            "edge-agent: the vault's root key was gone (power-off with the keyring vault): everything "
            "retained before was shredded by that loss, and a fresh keystore was started.",
            file=sys.stderr,
        )
    clock = wiring.make_clock(config)
    retention = RetentionService(
        Shredder(store, clock, config, audit), clock, config.retention.sweep, lambda report: _print_report(report, sys.stderr)
    )
    retention.catch_up()  # everything already due is shredded before the microphone opens
    recorder = Recorder(store, clock.now, audit, on_new_bucket=retention.add_bucket)
    agent = Agent(config, model, _session_printer(as_json), given_profile=profile, recorder=recorder, clock=clock.now)
    level = store.vault.level
    audit.append(
        "agent.started",
        version=__version__,
        source="file" if info else "mic",
        vault=level.backend,
        level=level.to_json()["level"],
        survives_reboot=level.survives_reboot,
    )
    retention.start()
    try:
        summary, dropped = _listen(agent, config, info)
    finally:
        retention.stop()
        audit.append("agent.stopped", sessions=agent.summary.sessions, seconds=round(agent.segmenter.offset, 3))
        audit.checkpoint()
    sys.stdout.flush()
    print(
        f"edge-agent: {summary.sessions} session(s) from {summary.seconds:.1f} s of audio"
        + (f"; wake phrase heard {summary.wake_count} time(s)" if config.trigger.mode == "wake" else "")
        + (f"; WARNING: {dropped} audio block(s) lost because decoding fell behind" if dropped else ""),
        file=sys.stderr,
    )
    return 0


def _session_printer(as_json: bool):
    """One line per finished session (JSON), or a readable pair of lines."""

    def emit(record) -> None:
        if as_json:
            print(json.dumps(record.to_json(), ensure_ascii=False), flush=True)
            return
        kept = f"audio until {record.audio_expires}" if record.audio_expires else "audio not kept"
        kept += f", transcript until {record.transcript_expires}" if record.transcript_expires else ", transcript not kept"
        print(
            f"session {record.session}  {record.profile} ({record.rule})  "
            f"{record.start:6.2f}-{record.end:6.2f}s  [{record.end_reason}]  {record.text or '(nothing recognised)'}"
            f"\n    {kept}",
            flush=True,
        )

    return emit


def _listen(agent, config, info):
    """Feed the agent from the file or the microphone until the end or a stop signal."""
    stop = threading.Event()
    _install_signal_handlers(stop, agent)
    if info is not None:
        if config.trigger.mode == "push_to_talk":
            agent.push_to_talk()  # the start of the file counts as one push
        return agent.run(read_pipeline_chunks(info), stop), 0
    with MicSource(config.device.sample_rate, config.device.input_device) as source:
        print(f"edge-agent: listening on the microphone ({config.trigger.mode} mode); Ctrl-C to stop", file=sys.stderr, flush=True)
        summary = agent.run(source.chunks(stop), stop)
    return summary, source.stats.dropped_blocks + source.stats.input_overflows


def _install_signal_handlers(stop: threading.Event, agent) -> None:
    def request_stop(signum, _frame) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGUSR1, lambda _s, _f: agent.push_to_talk())
