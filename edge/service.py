"""The long-running agent: catch up on retention, then listen until done or stopped.

Order matters and is the promise: the process is hardened, the vault and keystore
open, and everything already due is shredded before the microphone opens; the
control socket (microphone runs only) lets the household change the active profile,
push to talk, and forget or purge while it runs.

What the agent prints never holds what was said: under systemd its output goes to
the journal, which keeps it on disk. Transcript text goes only to a consumer that
asked for it (`run --json` on a terminal or into a pipe), and `--json` refuses to
write into the journal.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from edge import __version__, wiring
from edge.agent import Agent, SessionRecord
from edge.audio.mic import MicSource
from edge.audio.wavfile import open_wav, read_pipeline_chunks
from edge.audit.log import AuditLog
from edge.config import Config
from edge.control import ControlError, ControlServer
from edge.crypto.vault import Vault
from edge.errors import EdgeError, UsageError
from edge.hardening import make_non_dumpable
from edge.retention.scheduler import RetentionService
from edge.retention.shredder import ForgetRequest, ShredReport, Shredder
from edge.store.lock import DataLock
from edge.store.keystore import Access, KeystoreError
from edge.store.recorder import Recorder

SessionSink = Callable[[SessionRecord], None]


def refuse_text_into_journal(what: str) -> None:
    """Transcript text must never reach the systemd journal, which stores it on disk in
    plaintext: refuse when stdout is the journal stream systemd gave this process."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    try:
        info = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return
    if device.isdigit() and inode.isdigit() and (info.st_dev, info.st_ino) == (int(device), int(inode)):
        raise UsageError(
            f"{what} prints what was said, and stdout is the systemd journal, which keeps it on disk in "
            "plaintext. Run it at a terminal or pipe its output to the program that needs the text "
            "(in a unit: drop --json)."
        )


def run_agent(
    config: Config,
    input_wav: str | None,
    profile: str | None,
    as_json: bool,
    vault: Vault | None = None,
    on_session: SessionSink | None = None,
) -> int:
    """The agent on a WAV file (then exit) or the microphone (until SIGINT/SIGTERM).
    `vault` replaces the config's (the demo's lives in memory); `on_session` the printer."""
    make_non_dumpable()
    if as_json:
        refuse_text_into_journal("run --json")
    if profile:
        config.profile(profile)  # fail before any audio is heard
    info = open_wav(Path(input_wav)) if input_wav else None
    model = wiring.make_model(config)
    store, audit = wiring.open_store(config, Access.AGENT, vault)
    audit.append("config.loaded", path=str(config.path), sha256=hashlib.sha256(config.path.read_bytes()).hexdigest())
    try:
        store.read()  # open the vault and keystore before any audio is heard
    except KeystoreError as exc:  # fail closed: record nothing we could not account for
        audit.append("keystore.unreadable", reason=str(exc)[:300])
        raise
    if store.root_lost:
        print(
            f"edge-agent: the vault's root key was gone ({store.root_lost}): everything retained before "
            "was shredded by that loss, and a fresh keystore was started.",
            file=sys.stderr,
        )
    clock = wiring.make_clock(config)
    shredder = Shredder(store, clock, config, audit)
    retention = RetentionService(shredder, clock, config.retention.sweep, lambda report: print_report(report, sys.stderr))
    retention.catch_up()  # everything already due is shredded before the microphone opens
    recorder = Recorder(store, clock.now, audit, on_new_bucket=retention.add_bucket)
    agent = Agent(config, model, on_session or session_printer(as_json), given_profile=profile, recorder=recorder, clock=clock.now)
    control = None
    if info is None:  # the long-running microphone agent; file runs are batch jobs and may overlap
        control = ControlServer(config.device.control_socket, control_handlers(config, agent, shredder, audit))
        with DataLock(config.device.data_dir):  # two agents starting at once: one gets the socket
            control.start()
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
        if control is not None:
            control.stop()
        retention.stop()
        try:
            audit.append("agent.stopped", sessions=agent.summary.sessions, seconds=round(agent.segmenter.offset, 3), checkpoint=True)
        except EdgeError as exc:  # e.g. a full disk: say so, but let the first error be the one reported
            print(f"edge-agent: could not log the stop: {exc}", file=sys.stderr)
    sys.stdout.flush()
    print(
        f"edge-agent: {summary.sessions} session(s) from {summary.seconds:.1f} s of audio"
        + (f"; wake phrase heard {summary.wake_count} time(s)" if config.trigger.mode == "wake" else "")
        + (f"; WARNING: {dropped} audio block(s) lost because decoding fell behind" if dropped else ""),
        file=sys.stderr,
    )
    return 0


def control_handlers(config: Config, agent: Agent, shredder: Shredder, audit: AuditLog) -> dict[str, Any]:
    """What a control-socket client may ask of this running agent."""
    started = time.monotonic()

    def status(_args: dict) -> dict:
        return {
            "pid": os.getpid(),
            "version": __version__,
            "mode": config.trigger.mode,
            "active_profile": agent.active_profile or agent.given_profile or config.household.active_profile,
            "given_profile": agent.given_profile,
            "sessions": agent.summary.sessions,
            "uptime_seconds": round(time.monotonic() - started, 1),
        }

    def set_profile(args: dict) -> dict:
        name = args.get("name")
        if name is not None:
            config.profile(name)  # ConfigError names the profiles there are
        agent.active_profile = name  # beats the run's --profile: who speaks now
        audit.append("profile.active", profile=name or "")
        return {"active_profile": name or agent.given_profile or config.household.active_profile}

    def push(_args: dict) -> dict:
        if config.trigger.mode != "push_to_talk":
            raise ControlError(f'push needs [trigger] mode = "push_to_talk" in {config.path} (it is "{config.trigger.mode}")')
        agent.push_to_talk()
        return {}

    def purge(_args: dict) -> dict:
        return shredder.sweep().to_json()

    def forget(args: dict) -> dict:
        if args.get("confirm") is not True:
            raise ControlError('forget cannot be undone: send "confirm": true with the request')
        request = ForgetRequest.checked(
            config,
            shredder.keystore.read(),
            session=args.get("session"),
            profile=args.get("profile"),
            everything=args.get("all", False),
            before=wiring.parse_instant(args.get("before"), "before"),
        )
        return shredder.forget(request).to_json()

    return {"status": status, "profile": set_profile, "push": push, "purge": purge, "forget": forget}


def print_report(report: ShredReport, stream=None) -> None:
    for line in report.lines():
        print(line, file=stream or sys.stdout, flush=True)


def session_printer(as_json: bool, show_text: bool = False) -> SessionSink:
    """One line per finished session: JSON with the text (`--json`, asked for), or a readable
    pair of lines that says what was kept but never what was said (unless `show_text`: the
    demo, run by a person at a terminal)."""

    def emit(record: SessionRecord) -> None:
        if as_json:
            print(json.dumps(record.to_json(), ensure_ascii=False), flush=True)
            return
        kept = f"audio until {record.audio_expires}" if record.audio_expires else "audio not kept"
        kept += f", transcript until {record.transcript_expires}" if record.transcript_expires else ", transcript not kept"
        heard = f"{len(record.words)} word(s)" if record.words else "nothing recognised"
        if show_text and record.text:
            heard = record.text
        print(
            f"session {record.session}  {record.profile} ({record.rule})  "
            f"{record.start:6.2f}-{record.end:6.2f}s  [{record.end_reason}]  {heard}"
            f"\n    {kept}",
            flush=True,
        )

    return emit


def _listen(agent: Agent, config: Config, info):
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


def _install_signal_handlers(stop: threading.Event, agent: Agent) -> None:
    def request_stop(signum, _frame) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGUSR1, lambda _s, _f: agent.push_to_talk())
