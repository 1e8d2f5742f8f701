"""`edge-agent voices enroll | list | forget`: the household's voiceprints.

Only embeddings are kept (sealed in the keystore), never the enrolment audio, and nothing
here prints a vector: `list` shows who is enrolled, when, from how much speech.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge import wiring
from edge.audio.wavfile import open_wav, read_pipeline_chunks
from edge.cli.base import Command, config_of, print_report
from edge.config import Config
from edge.errors import AudioError, UsageError
from edge.pcm import PIPELINE_RATE, SAMPLE_BYTES
from edge.policy import strictest_policy
from edge.retention.shredder import ForgetRequest
from edge.store.keystore import Access
from edge.store.records import Voiceprint

if TYPE_CHECKING:  # numpy: only the command that enrols imports it
    from edge.voice.enrollment import Clip

MIC_SECONDS = (3, 120)
"""The range `--seconds` accepts."""


def _enroll(args: argparse.Namespace) -> int:
    from edge.hardening import make_non_dumpable
    from edge.voice.encoder import SpeakerEncoder  # numpy and the weights: only when enrolling
    from edge.voice.enrollment import check_enrollable, enroll

    make_non_dumpable()  # it holds a person's speech and voiceprint: no core dump may keep them
    config = config_of(args)
    check_enrollable(config, args.profile, args.consent)  # before anyone speaks into the microphone
    if args.mic and args.seconds is None:
        raise UsageError("voices enroll --mic needs --seconds N: how long to record (e.g. --seconds 20)")
    if args.seconds is not None and not args.mic:
        raise UsageError("--seconds goes with --mic; with --input, the files' lengths are used")
    encoder = SpeakerEncoder.load()  # before any audio is read: a missing encoder fails first
    clips = [_read_file(Path(name)) for name in args.input] if args.input else [_record(config, args.seconds)]
    keystore, audit = wiring.open_store(config, Access.WRITE)
    voice = enroll(keystore, audit, config, encoder, args.profile, clips, args.consent, wiring.trusted_now(config))
    print(f"enrolled the voice of {voice.profile}: {voice.seconds:.1f} s of speech from {voice.utterances} clip(s); the audio was not kept")
    if not config.speaker.identify:
        print(f"sessions are not tagged by voice while [speaker] identify = false in {config.path}")
    return 0


def _read_file(path: Path) -> Clip:
    from edge.voice.enrollment import Clip

    info = open_wav(path)
    return Clip(str(path), b"".join(read_pipeline_chunks(info)))


def _record(config: Config, seconds: int) -> Clip:
    from edge.voice.enrollment import Clip

    audio = bytearray()
    for chunk in _mic_chunks(config, seconds, "speak now, in your normal voice"):
        audio += chunk
    pcm = bytes(audio)
    audio[:] = bytes(len(audio))
    return Clip("the microphone", pcm)


def _check_seconds(seconds: int) -> None:
    low, high = MIC_SECONDS
    if not low <= seconds <= high:
        raise UsageError(f"--seconds {seconds} is not allowed; use {low} to {high}")


def _mic_chunks(config: Config, seconds: int, prompt: str) -> Iterator[bytes]:
    """`seconds` of pipeline PCM from the microphone, as it comes (nothing is written anywhere)."""
    from edge.audio.mic import MicSource  # sounddevice: only when recording

    _check_seconds(seconds)
    wanted = seconds * PIPELINE_RATE * SAMPLE_BYTES
    heard = 0
    stop = threading.Event()
    print(f"recording {seconds} s from the microphone: {prompt} (nothing is written to disk)", file=sys.stderr)
    with MicSource(config.device.sample_rate, config.device.input_device) as mic:
        shown = 0
        for chunk in mic.chunks(stop):
            if heard >= wanted:
                break
            chunk = chunk[: wanted - heard]
            heard += len(chunk)
            yield chunk
            if heard // (PIPELINE_RATE * SAMPLE_BYTES) > shown and sys.stderr.isatty():
                shown = heard // (PIPELINE_RATE * SAMPLE_BYTES)
                print(f"\r{shown:3d}/{seconds} s", end="", file=sys.stderr, flush=True)
            if heard >= wanted:
                stop.set()
    if sys.stderr.isatty():
        print(file=sys.stderr)


HEADROOM = 0.05
"""`voices check --headroom` by default: how far below adult_threshold the suggestion keeps
every child clip's score with any adult's voiceprint. One voice's score moves about this much
between sentences (espeak-ng's voices: 0.88-0.96 to their own voiceprint); real voices in a
real room move more, so check with many clips."""
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
"""What `voices check` takes from a folder given to --input."""


def _check(args: argparse.Namespace) -> int:
    from edge.hardening import make_non_dumpable
    from edge.tagging.check import Source, check, check_labels, enrolled_for_check
    from edge.tagging.voice import tagging_encoder  # numpy and the weights: only when checking

    make_non_dumpable()  # it holds the household's speech and voiceprints: no core dump may keep them
    config = config_of(args)
    if not args.input and not args.mic:
        raise UsageError("voices check needs recordings: --input PROFILE=PATH [PROFILE=PATH ...] and/or --mic PROFILE --seconds N")
    labelled = [_labelled(value) for value in args.input or []]
    check_labels(config, [label for label, _path in labelled] + ([args.mic] if args.mic else []))
    if args.mic and args.seconds is None:
        raise UsageError("voices check --mic PROFILE needs --seconds N: how long to record (e.g. --seconds 30)")
    if args.seconds is not None and not args.mic:
        raise UsageError("--seconds goes with --mic; with --input, the files' lengths are used")
    if args.seconds is not None:
        _check_seconds(args.seconds)
    if not 0 <= args.headroom < 0.5:
        raise UsageError(f"--headroom {args.headroom} is not allowed; use a number from 0 to below 0.5 (default {HEADROOM})")
    files = [(label, file) for label, path in labelled for file in _audio_files(path)]
    infos = [(label, open_wav(file)) for label, file in files]  # every file is readable before anything is judged
    keystore, _audit = wiring.open_store(config, Access.READ)  # reads, writes nothing: not audited, like `voices list`
    voices = enrolled_for_check(config, keystore.read().voices)
    encoder = tagging_encoder()  # before the microphone opens: a missing encoder fails first
    sources = [Source(label, str(info.path), read_pipeline_chunks(info)) for label, info in infos]
    if args.mic:
        prompt = "say several sentences, with a pause between them, as you speak to the speaker"
        sources.append(Source(args.mic, "the microphone", _mic_chunks(config, args.seconds, prompt)))
    report = check(config, voices, encoder, sources, args.headroom)
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        for line in report.lines():
            print(line)
    return 1 if report.totals.child_as_adult else 0


def _labelled(value: str) -> tuple[str, Path]:
    label, equals, path = value.partition("=")
    if not equals or not label or not path:
        raise UsageError(f"--input {value!r}: expected PROFILE=FILE or PROFILE=FOLDER (e.g. child=clips/child), naming whose voice it is")
    return label, Path(path).expanduser()


def _audio_files(path: Path) -> list[Path]:
    """A file as it is; a folder's audio files (by name, not its subfolders)."""
    if not path.is_dir():
        return [path]  # open_wav names it if it is missing or not audio
    try:
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file() and not p.name.startswith("."))
    except OSError as exc:
        raise AudioError(f"{path}: cannot list the folder: {exc.strerror}") from None
    if not found:
        raise AudioError(f"{path}: holds no audio file ({', '.join(AUDIO_SUFFIXES)})")
    return found


def _list(args: argparse.Namespace) -> int:
    config = config_of(args)
    keystore, _audit = wiring.open_store(config, Access.READ)
    voices = sorted(keystore.read().voices.values(), key=lambda v: v.profile)
    rows = [_row(config, voice) for voice in voices]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    if not rows:
        print("no voice is enrolled; sessions are tagged by configuration only (`edge-agent voices enroll --help`)")
    for row in rows:
        consent = "  parent consented" if row["consent"] else ""
        print(
            f"{row['profile']} ({row['kind']}): enrolled {row['enrolled']} from {row['seconds']:.1f} s of speech in "
            f"{row['utterances']} clip(s){consent}; last heard {row['heard']}, shredded if unused until {row['shredded_if_unused']}"
        )
    return 0


def _row(config: Config, voice: Voiceprint) -> dict[str, Any]:
    """What `list` shows of one voiceprint: never the vector."""
    profile = next((p for p in config.profiles if p.name == voice.profile), None)
    inactive = profile.inactive_after if profile is not None else strictest_policy(config).inactive_after
    return {
        "profile": voice.profile,
        "kind": str(profile.kind) if profile is not None else "not in the config",
        "enrolled": _local(voice.enrolled),
        "seconds": voice.seconds,
        "utterances": voice.utterances,
        "consent": voice.consent,
        "heard": _local(voice.heard),
        "shredded_if_unused": _local(voice.heard + inactive),
    }


def _local(instant: datetime) -> str:
    return instant.astimezone().isoformat(timespec="seconds")


def _forget(args: argparse.Namespace) -> int:
    config = config_of(args)
    shredder = wiring.make_shredder(config)
    request = ForgetRequest.checked(config, shredder.keystore.read(), voice=args.profile)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("voices forget needs confirmation: run it in a terminal, or add --yes")
        answer = input(f"Shred {request.describe()}? Sessions are then tagged without it. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing was forgotten")
            return 0
    print_report(shredder.forget(request))
    return 0


def _enroll_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("profile", metavar="PROFILE", help="the household profile whose voice this is")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="AUDIO", help="recordings of this person alone (WAV); several sentences are best")
    source.add_argument("--mic", action="store_true", help="record from the microphone (stop the agent first: it holds the microphone)")
    parser.add_argument("--seconds", type=int, metavar="N", help=f"with --mic: how long to record ({MIC_SECONDS[0]}-{MIC_SECONDS[1]})")
    parser.add_argument(
        "--consent",
        action="store_true",
        help="required for a child profile: you are the child's parent or guardian and agree that the child's voiceprint is kept (audited)",
    )


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="a JSON list of the enrolled voiceprints (never the vectors)")


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        nargs="+",
        action="extend",
        metavar="PROFILE=PATH",
        help="whose voice a recording is, and the recording: a file, or a folder of them (.wav, .flac, .ogg, .opus, .mp3); "
        "PROFILE is a profile of the config, or _unknown for someone with none (treated as a child). Never clips used to enrol",
    )
    parser.add_argument(
        "--mic", metavar="PROFILE", help="also record PROFILE from the microphone (stop the agent first: it holds the microphone)"
    )
    parser.add_argument("--seconds", type=int, metavar="N", help=f"with --mic: how long to record ({MIC_SECONDS[0]}-{MIC_SECONDS[1]})")
    parser.add_argument(
        "--headroom",
        type=float,
        default=HEADROOM,
        metavar="X",
        help="how far below adult_threshold the suggestion keeps every child clip's score with an adult's voiceprint (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")


def _forget_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("profile", metavar="PROFILE", help="whose voiceprint to shred")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")


COMMANDS = (
    Command(
        "voices",
        "enrol, list and forget household voices (sessions are then tagged by who speaks)",
        "Voiceprints let edge tag each session with the profile of whoever speaks. Only the voiceprint (256 "
        "numbers) is kept, sealed in the keystore like a recording; the enrolment audio never is. A voiceprint is "
        "shredded by `voices forget`, `forget --profile`, `forget --all`, and when its profile is unused for its "
        "inactive_after.",
        subcommands=(
            Command(
                "enroll",
                "enrol a profile's voice from recordings or the microphone",
                "Make PROFILE's voiceprint from at least 3 s of that person's speech (best: several sentences). "
                "Re-enrolling replaces the old voiceprint and destroys it. A child profile needs --consent.",
                _enroll,
                _enroll_arguments,
            ),
            Command(
                "check",
                "measure how the enrolled voices tag the household's own recordings",
                "Judge labelled recordings (not the ones used to enrol) as the agent would: each is cut into sessions at "
                "its pauses, and each session is judged by voice exactly as the tagger judges it, with the current "
                "[speaker] values and no other signal. Reports each clip's best and second-best score and what it "
                "would be tagged, how many are right, how many fall to the strictest policy, and how many child "
                "clips would be tagged as an adult; then the adult_threshold that keeps every child clip --headroom "
                "below any adult's voiceprint, and what it costs. Changes nothing and keeps no audio. Exit 1 when a "
                "child clip would be tagged as an adult.",
                _check,
                _check_arguments,
            ),
            Command("list", "list the enrolled voiceprints", "Who is enrolled, when, and from how much speech.", _list, _list_arguments),
            Command(
                "forget",
                "shred a profile's voiceprint now",
                "Shred PROFILE's voiceprint: no key on the device opens it afterwards, nor any copy of the keystore. "
                "The profile's sessions are kept. Asks for confirmation unless --yes.",
                _forget,
                _forget_arguments,
            ),
        ),
    ),
)
