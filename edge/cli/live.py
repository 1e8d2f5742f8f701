"""`profile` and `push`: talking to the running agent over its control socket."""

from __future__ import annotations

import argparse

from edge.cli.base import Command, config_of


def _profile(args: argparse.Namespace) -> int:
    from edge.control.protocol import call  # only the commands that talk to the agent import the protocol

    config = config_of(args)
    if args.name:
        config.named_profile(args.name, "profile")  # a clear error before asking the agent
    answer = call(config.device.control_socket, "profile", name=None if args.clear else args.name)
    print(f"active profile: {answer['active_profile'] or '(none: the strictest profile)'}")
    return 0


def _profile_arguments(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("name", nargs="?", metavar="NAME", help="a profile from the config")
    who.add_argument("--clear", action="store_true", help="back to the run's --profile, or [household] active_profile")


def _push(args: argparse.Namespace) -> int:
    from edge.control.protocol import call

    config = config_of(args)
    call(config.device.control_socket, "push")
    print("listening: speak now")
    return 0


COMMANDS = (
    Command(
        "profile",
        "set who is speaking now, in the running agent",
        "Tell the running agent which household profile the next sessions belong to (overrides the run's "
        "--profile and [household] active_profile until the agent stops). --clear goes back to those.",
        _profile,
        _profile_arguments,
    ),
    Command(
        "push",
        "push-to-talk: open a session in the running agent",
        'Open a session now in the running agent (needs [trigger] mode = "push_to_talk"). It ends after trailing silence.',
        _push,
    ),
)
