"""edge-agent: the command line.

Every user mistake ends as one readable paragraph on stderr and a non-zero exit
code; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from edge import __version__
from edge.errors import EdgeError, UsageError

DEMO_WAV = Path(__file__).parent / "data" / "demo.wav"


def main(argv: Sequence[str] | None = None) -> int:
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
    from edge.audio.wavfile import open_wav, read_pipeline_chunks

    info = open_wav(Path(args.wav))
    config = _load_config(args)
    model = _make_model(config)
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
    return _run_agent(config, args.input, args.mic, args.profile, args.json)


def _cmd_demo(args: argparse.Namespace) -> int:
    config = _load_config(args)
    with tempfile.TemporaryDirectory(prefix="edge-demo-") as scratch:
        config = replace(config, device=replace(config.device, data_dir=Path(scratch)))
        trigger = config.trigger
        print(f"edge demo: config {config.path}")
        print(f"  trigger: {trigger.mode}" + (f', wake phrase "{trigger.wake_phrase}"' if trigger.mode == "wake" else ""))
        print(f"  grammar: {', '.join(trigger.grammar) if trigger.grammar else '(free dictation)'}")
        print(f"  input:   {DEMO_WAV.name} (sample speech made with espeak-ng)")
        code = _run_agent(config, str(DEMO_WAV), False, None, False)
        print(
            "Nothing was stored: audio lived only in RAM and was dropped when each session ended.\n"
            "Speech heard before the wake phrase was wiped from RAM without being transcribed."
        )
        return code


# -- helpers --------------------------------------------------------------------


def _load_config(args: argparse.Namespace):
    from edge.config import BUILTIN_CONFIG, load_config, resolve_config_path

    path = resolve_config_path(args.config)
    if path == BUILTIN_CONFIG and args.handler is not _cmd_demo:
        print(f"edge-agent: no config given; using the built-in example ({path})", file=sys.stderr)
    return load_config(path)


def _make_model(config):
    """Find and load the Vosk model named by [device] model (tests swap this edge)."""
    from edge.stt.model_path import find_model
    from edge.stt.recognizer import SpeechModel

    return SpeechModel(find_model(config.device.model, config.device.data_dir))


def _run_agent(config, input_wav: str | None, mic: bool, profile: str | None, as_json: bool) -> int:
    from edge.agent import Agent

    if profile:
        config.profile(profile)
    info = None
    if input_wav:
        from edge.audio.wavfile import open_wav

        info = open_wav(Path(input_wav))
    model = _make_model(config)

    def emit(record) -> None:
        if as_json:
            print(json.dumps(record.to_json(), ensure_ascii=False), flush=True)
        else:
            print(
                f"session {record.session}  {record.profile} ({record.rule})  "
                f"{record.start:6.2f}-{record.end:6.2f}s  [{record.end_reason}]  {record.text or '(nothing recognised)'}",
                flush=True,
            )

    agent = Agent(config, model, emit, given_profile=profile)
    stop = threading.Event()
    _install_signal_handlers(stop, agent)
    if info is not None:
        from edge.audio.wavfile import read_pipeline_chunks

        if config.trigger.mode == "push_to_talk":
            agent.push_to_talk()
        summary = agent.run(read_pipeline_chunks(info), stop)
        dropped = 0
    else:
        from edge.audio.mic import MicSource

        with MicSource(config.device.sample_rate, config.device.input_device) as source:
            print(f"edge-agent: listening on the microphone ({config.trigger.mode} mode); Ctrl-C to stop", file=sys.stderr, flush=True)
            summary = agent.run(source.chunks(stop), stop)
            dropped = source.stats.dropped_blocks + source.stats.input_overflows
    print(
        f"edge-agent: {summary.sessions} session(s) from {summary.seconds:.1f} s of audio"
        + (f"; wake phrase heard {summary.wake_count} time(s)" if config.trigger.mode == "wake" else "")
        + (f"; WARNING: {dropped} audio block(s) lost because decoding fell behind" if dropped else ""),
        file=sys.stderr,
    )
    return 0


def _install_signal_handlers(stop: threading.Event, agent) -> None:
    def request_stop(signum, _frame) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGUSR1, lambda _s, _f: agent.push_to_talk())
