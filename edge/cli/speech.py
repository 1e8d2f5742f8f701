"""`transcribe`, `run` and `demo`: the commands that listen."""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from edge import wiring
from edge.audio.wavfile import open_wav, read_pipeline_chunks
from edge.cli.base import Command, config_of, print_status, refuse_text_into_journal, session_printer
from edge.config import LISTENER_URIS, check_listeners, default_audio_per_minute, make_listener
from edge.errors import UsageError
from edge.service import run_agent, serve
from edge.store.keystore import Access
from edge.values import ListenerTransport, TriggerMode, VaultBackend

DEMO_WAV = Path(__file__).resolve().parent.parent / "data" / "demo.wav"


def _transcribe(args: argparse.Namespace) -> int:
    refuse_text_into_journal("transcribe")
    info = open_wav(Path(args.wav))
    config = config_of(args)
    model = wiring.make_model(config)
    grammar = tuple(args.grammar or ())
    if grammar:
        model.check_grammar(grammar, "--grammar")
    decoder = model.decoder(grammar)
    for chunk in read_pipeline_chunks(info):
        decoder.feed(chunk)
    transcript = decoder.transcript()
    print(json.dumps(transcript.to_json(), ensure_ascii=False) if args.json else transcript.text)
    return 0


def _transcribe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("wav", metavar="AUDIO", help="the audio file to transcribe (WAV, FLAC, Ogg, MP3)")
    parser.add_argument(
        "--grammar",
        nargs="+",
        metavar="PHRASE",
        help="limit the output to these phrases (limited-vocabulary mode); default: free dictation",
    )
    parser.add_argument("--json", action="store_true", help='print {"text", "words": [{"word", "start", "end", "conf"}]}')


def _run(args: argparse.Namespace) -> int:
    if args.json:
        refuse_text_into_journal("run --json")
    config = config_of(args)
    if args.mic and any(listener.transport == ListenerTransport.STDIO for listener in config.listeners):
        raise UsageError(
            f"{config.path}: a stdio:// listener is served by `edge-agent serve` only: beside the microphone, "
            "stdout carries the agent's own output. Give the listener a unix:// socket, or run `serve`."
        )
    return run_agent(config, args.input, args.profile, session_printer(args.json))


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="AUDIO", help="read this audio file (WAV, FLAC, Ogg, MP3), then exit")
    source.add_argument("--mic", action="store_true", help="listen to the microphone until stopped")
    parser.add_argument("--profile", metavar="NAME", help="tag sessions with this profile (until `edge-agent profile` says otherwise)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON line per finished session, with what was said (refused when stdout is the systemd "
        "journal); without it, no transcript text is printed",
    )


def _serve(args: argparse.Namespace) -> int:
    config = config_of(args)
    if args.profile and not args.uri:
        raise UsageError("--profile names who speaks through the listener --uri adds; give --uri too")
    listeners = config.listeners
    if args.uri:
        if args.profile:
            config.named_profile(args.profile, "--profile")
        per_minute = default_audio_per_minute(config.trigger.max_session)
        listeners += (make_listener(args.uri, args.profile, args.name, "--uri", audio_per_minute=per_minute),)
        check_listeners(listeners, config.device, "--uri")
    if not listeners:
        raise UsageError(
            f"nothing to serve: add a [[wyoming]] listener to {config.path} (README: Use with Home Assistant) "
            "or pass --uri unix:///PATH.sock"
        )
    if any(listener.transport == ListenerTransport.STDIO for listener in listeners):
        refuse_text_into_journal("a stdio:// listener")
    return serve(config, listeners)


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uri", metavar="URI", help=f"serve one more listener: {LISTENER_URIS} (never tcp://)")
    parser.add_argument(
        "--profile", metavar="NAME", help="who speaks through the --uri listener (default: the active profile, else the strictest)"
    )
    parser.add_argument("--name", metavar="NAME", help="the --uri listener's name, as Home Assistant shows it")


def _demo(args: argparse.Namespace) -> int:
    """The pipeline on the bundled speech, isolated from any household: its own temporary
    data folder and control socket, and a root key that lives only in this process."""
    refuse_text_into_journal("demo")
    config = config_of(args, quiet=True)
    with tempfile.TemporaryDirectory(prefix="edge-demo-") as scratch:
        data_dir = Path(scratch) / "data"
        device = replace(config.device, data_dir=data_dir, control_socket=Path(scratch) / "control.sock")
        config = replace(config, device=device, vault=replace(config.vault, backend=VaultBackend.RAM, path=None))
        vault = wiring.open_vault(config.vault, data_dir)  # in this process's memory only
        trigger = config.trigger
        profile = next((p for p in config.profiles if p.is_child and p.keep_audio), config.profiles[0])
        print(f"edge demo: config {config.path}")
        print(f"  trigger: {trigger.mode}" + (f', wake phrase "{trigger.wake_phrase}"' if trigger.mode == TriggerMode.WAKE else ""))
        print(f"  grammar: {', '.join(trigger.grammar) if trigger.grammar else '(free dictation)'}")
        print(f"  input:   {DEMO_WAV.name} (sample speech made with espeak-ng), spoken as profile {profile.name!r}")
        print(f"  data:    {data_dir} (a temporary folder, removed at the end; the root key lives in this process only)")
        code = run_agent(config, str(DEMO_WAV), profile.name, session_printer(False, show_text=True), vault)
        store, _audit = wiring.open_store(config, Access.READ, vault)
        print_status(store)
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


COMMANDS = (
    Command(
        "transcribe",
        "transcribe an audio file offline; stores nothing",
        "Transcribe an audio file (WAV of any rate, channels, 8/16/24/32-bit PCM or float; FLAC, Ogg Vorbis or Opus, MP3) with the local Vosk model. Nothing is stored.",
        _transcribe,
        _transcribe_arguments,
    ),
    Command(
        "run",
        "run the agent on an audio file or the microphone",
        "Split the audio into sessions (trigger mode from the config), tag each with a household profile and "
        "transcribe it. Ctrl-C / SIGTERM finish the session in progress and exit. In push_to_talk mode, SIGUSR1 "
        "opens a session (with --input, the file's start counts as one push).",
        _run,
        _run_arguments,
    ),
    Command(
        "serve",
        "serve speech-to-text to Home Assistant or Rhasspy over Wyoming (no microphone)",
        "Serve the Wyoming speech-to-text listeners of the config ([[wyoming]]) and --uri, until Ctrl-C / SIGTERM. "
        "Each utterance a client sends is one session: tagged with the listener's profile (else the active "
        "profile, else the strictest), sealed and expired by that profile's policy, audited, then answered "
        "with its transcript. `run --mic` serves the same listeners beside the microphone.",
        _serve,
        _serve_arguments,
    ),
    Command(
        "demo",
        "run the pipeline on the bundled sample speech",
        "Run the agent on the bundled sample speech with the config's trigger and profiles (default: the built-in "
        "example) and the installed Vosk model, in a temporary data folder with a root key held in memory, and "
        "explain what happened. It never touches a household's data or vault.",
        _demo,
    ),
)
