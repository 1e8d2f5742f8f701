"""What a client of the control socket may ask of a running agent (see docs/FORMATS.md
section 7 for the protocol): status, who is speaking, push-to-talk, purge, forget."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from edge import __version__
from edge.agent import Agent
from edge.config import Config
from edge.control.protocol import Handler
from edge.errors import ControlError
from edge.events import ProfileActive
from edge.instants import parse_instant
from edge.retention.shredder import ForgetRequest, Shredder
from edge.sink import AuditSink
from edge.values import TriggerMode


def agent_operations(
    config: Config,
    agent: Agent,
    shredder: Shredder,
    audit: AuditSink,
    microphone: bool,
    listeners: tuple[str, ...] = (),
    wyoming_sessions: Callable[[], int] = lambda: 0,
) -> dict[str, Handler]:
    """The handlers a running agent serves, by operation name. `microphone`: whether it
    listens to one; `listeners`: the Wyoming listeners it serves (names), whose utterances
    `wyoming_sessions` counts."""
    started = time.monotonic()

    def speaking() -> str | None:
        return agent.active_profile or agent.given_profile or config.household.active_profile

    def status(_args: dict[str, Any]) -> dict[str, Any]:
        served = wyoming_sessions()
        return {
            "pid": os.getpid(),
            "version": __version__,
            "mode": config.trigger.mode if microphone else None,
            "wyoming": list(listeners),
            "active_profile": speaking(),
            "given_profile": agent.given_profile,
            "sessions": agent.summary.sessions + served,
            "microphone_sessions": agent.summary.sessions,
            "wyoming_sessions": served,
            "uptime_seconds": round(time.monotonic() - started, 1),
        }

    def set_profile(args: dict[str, Any]) -> dict[str, Any]:
        name = args.get("name")
        if name is not None:
            config.profile(name)  # ConfigError names the profiles there are
        agent.active_profile = name  # beats the run's --profile: who speaks now
        audit.append(ProfileActive(profile=name or ""))  # an operation's end: signed in its write
        return {"active_profile": speaking()}

    def push(_args: dict[str, Any]) -> dict[str, Any]:
        if not microphone:
            raise ControlError(
                "this agent serves Wyoming listeners only (edge-agent serve) and has no microphone to push to talk on: "
                "there, the Wyoming client (Home Assistant) decides when to listen. push is for `edge-agent run --mic` "
                'with [trigger] mode = "push_to_talk"'
            )
        if config.trigger.mode != TriggerMode.PUSH_TO_TALK:
            raise ControlError(
                f'push needs [trigger] mode = "push_to_talk" in {config.path} (it is "{config.trigger.mode}")',
                setting="trigger.mode",
            )
        agent.push_to_talk()
        return {}

    def purge(_args: dict[str, Any]) -> dict[str, Any]:
        return shredder.sweep().to_json()

    def forget(args: dict[str, Any]) -> dict[str, Any]:
        if args.get("confirm") is not True:
            raise ControlError('forget cannot be undone: send "confirm": true with the request')
        request = ForgetRequest.checked(
            config,
            shredder.keystore.read(),
            session=args.get("session"),
            profile=args.get("profile"),
            everything=args.get("all", False),
            before=parse_instant(args.get("before"), "before"),
        )
        return shredder.forget(request).to_json()

    return {"status": status, "profile": set_profile, "push": push, "purge": purge, "forget": forget}
