"""`edge-agent voices enroll | list | forget`: the household's voiceprints.

Only embeddings are kept (sealed in the keystore), never the enrolment audio, and nothing
here prints a vector: `list` shows who is enrolled, when, from how much speech.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge import wiring
from edge.audio.wavfile import open_wav, read_pipeline_chunks
from edge.cli.base import Command, config_of, print_report
from edge.config import Config
from edge.errors import UsageError
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
    from edge.audio.mic import MicSource  # sounddevice: only when recording
    from edge.voice.enrollment import Clip

    low, high = MIC_SECONDS
    if not low <= seconds <= high:
        raise UsageError(f"--seconds {seconds} is not allowed; use {low} to {high}")
    wanted = seconds * PIPELINE_RATE * SAMPLE_BYTES
    audio = bytearray()
    stop = threading.Event()
    print(f"recording {seconds} s from the microphone: speak now, in your normal voice (nothing is written to disk)", file=sys.stderr)
    with MicSource(config.device.sample_rate, config.device.input_device) as mic:
        shown = 0
        for chunk in mic.chunks(stop):
            audio += chunk
            heard = len(audio) // (PIPELINE_RATE * SAMPLE_BYTES)
            if heard > shown and sys.stderr.isatty():
                shown = heard
                print(f"\r{heard:3d}/{seconds} s", end="", file=sys.stderr, flush=True)
            if len(audio) >= wanted:
                stop.set()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    pcm = bytes(audio[:wanted])
    audio[:] = bytes(len(audio))
    return Clip("the microphone", pcm)


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
