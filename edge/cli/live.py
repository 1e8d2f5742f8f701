"""`profile` and `push`: talking to the running agent over its control socket."""

from __future__ import annotations

import argparse

from edge.cli.base import Command, config_of
from edge.errors import UsageError


def _profile(args: argparse.Namespace) -> int:
    from edge.control.protocol import call  # only the commands that talk to the agent import the protocol

    words = args.words or []
    if len(words) == 2 and words[0] == "keep":
        return _keep(args, words[1])
    if len(words) > 1 or (args.clear and words) or not (words or args.clear):
        raise UsageError(f"profile {' '.join(words)}: give one profile name, `keep NAME`, or --clear")
    name = words[0] if words else None
    config = config_of(args)
    if name:
        config.named_profile(name, "profile")  # a clear error before asking the agent
    answer = call(config.device.control_socket, "profile", name=None if args.clear else name)
    print(f"active profile: {answer['active_profile'] or '(none: the strictest profile)'}")
    return 0


def _keep(args: argparse.Namespace, name: str) -> int:
    """A parent objects to an inactivity purge: NAME counts as heard now (audited)."""
    from edge import wiring
    from edge.instants import iso_utc
    from edge.retention.inactivity import keep

    config = config_of(args)
    config.named_profile(name, "profile keep")
    store, audit = wiring.open_store(config)
    until = keep(store, audit, config, name, wiring.trusted_now(config))
    if until is None:
        print(f"nothing of {name} is kept (no session, no voiceprint): there is nothing to keep")
    else:
        print(
            f"{name} counts as heard now: its purge for inactivity moves to {iso_utc(until)}, if it stays unheard until then "
            "(each kept session still goes at its own expiry; profile.kept)"
        )
    return 0


def _profile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "words",
        nargs="*",
        metavar="NAME | keep NAME",
        help="NAME: a profile from the config, the running agent's active profile from now on; keep NAME: a parent objects "
        "to NAME's inactivity purge, so it counts as heard now (its inactive_after starts again; audited)",
    )
    parser.add_argument("--clear", action="store_true", help="back to the run's --profile, or [household] active_profile")


def _push(args: argparse.Namespace) -> int:
    from edge.control.protocol import call

    config = config_of(args)
    call(config.device.control_socket, "push")
    print("listening: speak now")
    return 0


COMMANDS = (
    Command(
        "profile",
        "set who is speaking now, in the running agent; or keep a profile from its inactivity purge",
        "Tell the running agent which household profile the next sessions belong to (overrides the run's "
        "--profile and [household] active_profile until the agent stops). --clear goes back to those. "
        "`profile keep NAME`: a parent objects to NAME's purge for inactivity; NAME counts as heard now (audited as "
        "profile.kept; no agent needed).",
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
