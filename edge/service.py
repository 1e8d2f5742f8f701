"""The long-running agent: catch up on retention, then listen until done or stopped.

Order matters and is the promise: the process is hardened, the vault and keystore
open, and everything already due is shredded before the microphone or a Wyoming
listener opens; the control socket (long-running agents only) lets the household
change the active profile, push to talk, and forget or purge while it runs.

What the agent logs never holds what was said: under systemd its output goes to the
journal, which keeps it on disk. Sessions go to `on_session`, which the caller chose
(the command line prints text only when `--json` asks for it).
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from edge import __version__, wiring
from edge.agent import Agent, RunSummary, SessionRecord
from edge.audio.wavfile import WavInfo, open_wav, read_pipeline_chunks
from edge.config import Config, ListenerSettings
from edge.errors import EdgeError, KeystoreError
from edge.events import AgentStarted, AgentStopped, ConfigLoaded, KeystoreUnreadable
from edge.hardening import make_non_dumpable
from edge.values import ListenerTransport, TriggerMode

if TYPE_CHECKING:
    from edge.control.protocol import ControlServer
    from edge.crypto.guarantee import Vault
    from edge.retention.shredder import ShredReport
    from edge.wyoming.server import WyomingServer

log = logging.getLogger(__name__)


def log_report(report: ShredReport) -> None:
    """What a shred did, one line per bucket (ids, counts, times: never content)."""
    for line in report.lines():
        log.info("%s", line)


def run_agent(
    config: Config,
    input_wav: str | None,
    profile: str | None,
    on_session: Callable[[SessionRecord], None],
    vault: Vault | None = None,
) -> int:
    """The agent on a WAV file (then exit) or the microphone (until SIGINT/SIGTERM), the
    microphone with the config's Wyoming listeners. `vault` replaces the config's (the demo's
    lives in memory)."""
    make_non_dumpable()
    if profile:
        config.named_profile(profile, "--profile")  # fail before any audio is heard
    info = open_wav(Path(input_wav)) if input_wav else None
    runtime = wiring.build_runtime(config, on_session, log_report, profile=profile, vault=vault)
    agent = runtime.agent
    if info is not None:
        agent.through = "file"
    _catch_up(runtime)
    # file runs are batch jobs and may overlap: no sockets
    control, listeners = _start_sockets(runtime, config.listeners, microphone=True) if info is None else (None, None)
    _started(runtime, "file" if info else "mic")
    try:
        summary, dropped = _listen(agent, config, info)
    finally:
        _stop(runtime, control, listeners)
    log.info(
        "%d session(s) from %.1f s of audio%s%s",
        summary.sessions,
        summary.seconds,
        f"; wake phrase heard {summary.wake_count} time(s)" if config.trigger.mode == TriggerMode.WAKE else "",
        f"; WARNING: {dropped} audio block(s) lost because decoding fell behind" if dropped else "",
    )
    return 0


def serve(config: Config, listeners: tuple[ListenerSettings, ...], vault: Vault | None = None) -> int:
    """Only the Wyoming listeners (no microphone), until SIGINT/SIGTERM, or until the parent
    closes stdin when stdio:// is all there is to serve."""
    make_non_dumpable()
    runtime = wiring.build_runtime(config, lambda _record: None, log_report, vault=vault)
    _catch_up(runtime)
    control, server = _start_sockets(runtime, listeners, microphone=False)
    assert server is not None
    _started(runtime, "wyoming")
    stop = threading.Event()
    _install_signal_handlers(stop, runtime.agent)
    stdio_only = all(listener.transport == ListenerTransport.STDIO for listener in listeners)
    try:
        while not stop.wait(0.2):
            if stdio_only and server.stdio_closed.is_set():
                break
    finally:
        _stop(runtime, control, server)
    log.info("%d Wyoming session(s)", server.served)
    return 0


def _catch_up(runtime: wiring.Runtime) -> None:
    """Before any audio is heard: the vault and keystore open, and everything due is shredded."""
    config, keystore, audit = runtime.config, runtime.keystore, runtime.audit
    audit.append(ConfigLoaded(path=str(config.path.absolute()), sha256=hashlib.sha256(config.path.read_bytes()).hexdigest()))
    try:
        keystore.read()
    except KeystoreError as exc:  # fail closed: record nothing we could not account for
        audit.append(KeystoreUnreadable(reason=str(exc)[:300]))
        raise
    if keystore.root_lost:
        log.warning(
            "the vault's root key was gone (%s): everything retained before was shredded by that loss, and a fresh keystore was started.",
            keystore.root_lost,
        )
    runtime.retention.catch_up()


def _started(runtime: wiring.Runtime, source: str) -> None:
    level = runtime.keystore.vault.level
    runtime.audit.append(  # signed in its write: what the start logged, before any session begins
        AgentStarted(
            version=__version__,
            source=source,
            vault=level.backend,
            level=level.to_json()["level"],
            survives_reboot=level.survives_reboot,
        )
    )
    runtime.retention.start()
    runtime.notifier.ready()  # systemd (Type=notify): everything due is shredded, the sockets are up


def _stop(runtime: wiring.Runtime, control: ControlServer | None, listeners: WyomingServer | None) -> None:
    """Listeners first (their sessions end as "stopped" and are sealed), then the rest."""
    runtime.notifier.stopping()
    try:
        if listeners is not None:
            listeners.stop()
    finally:
        if control is not None:
            control.stop()
        runtime.retention.stop()
        agent = runtime.agent
        sessions = agent.summary.sessions + (listeners.served if listeners is not None else 0)
        try:
            runtime.audit.append(AgentStopped(sessions=sessions, seconds=round(agent.segmenter.offset, 3)))
        except EdgeError as exc:  # e.g. a full disk: say so, but let the first error be the one reported
            log.error("could not log the stop: %s", exc)
        try:
            runtime.keystore.close()  # at rest, marked so: the next start skips the page check
        except EdgeError as exc:
            log.error("could not close the keystore: %s", exc)


def _start_sockets(
    runtime: wiring.Runtime, listeners: tuple[ListenerSettings, ...], microphone: bool
) -> tuple[ControlServer, WyomingServer | None]:
    """The control socket, then the Wyoming listeners (if any); nothing left open if one fails."""
    server = wiring.make_listeners(runtime, listeners) if listeners else None
    control = _start_control(runtime, microphone, server)
    try:
        if server is not None:
            server.start()
        return control, server
    except BaseException:
        control.stop()
        raise


def _start_control(runtime: wiring.Runtime, microphone: bool, listeners: WyomingServer | None) -> ControlServer:
    """A long-running agent's control socket, started under the data-folder lock."""
    from edge.disk.lock import DataLock

    control = wiring.make_control(runtime, microphone, listeners)
    with DataLock(runtime.config.device.data_dir):  # two agents starting at once: one gets the socket
        control.start()
    return control


def _listen(agent: Agent, config: Config, info: WavInfo | None) -> tuple[RunSummary, int]:
    """Feed the agent from the file or the microphone until the end or a stop signal."""
    stop = threading.Event()
    _install_signal_handlers(stop, agent)
    if info is not None:
        if config.trigger.mode == TriggerMode.PUSH_TO_TALK:
            agent.push_to_talk()  # the start of the file counts as one push
        return agent.run(read_pipeline_chunks(info), stop), 0
    from edge.audio.mic import MicSource  # numpy, the resampler and PortAudio: the microphone's alone

    with MicSource(config.device.sample_rate, config.device.input_device) as source:
        log.info("listening on the microphone (%s mode); Ctrl-C to stop", config.trigger.mode)
        summary = agent.run(source.chunks(stop), stop)
    return summary, source.stats.dropped_blocks + source.stats.input_overflows


def _install_signal_handlers(stop: threading.Event, agent: Agent) -> None:
    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGUSR1, lambda _s, _f: agent.push_to_talk())
