"""The Wyoming listeners of a running agent: an event loop on its own thread.

The loop only reads, checks and answers events; decoding, sealing and the keystore
run on worker threads, one per utterance, at most one utterance per core (the next
gets `error` code "busy"). So `describe` is answered at once even while every core
decodes, which Home Assistant needs (it gives up after 1 s).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import socket
import sys
import threading

from wyoming.info import AsrModel, AsrProgram, Attribution, Info

from edge import __version__
from edge.burst import BurstLog
from edge.config import ListenerSettings
from edge.disk import descriptors
from edge.disk.sockets import is_other_file, socket_answers
from edge.errors import ModelError, WyomingError
from edge.stt.model_path import model_identity
from edge.values import ListenerTransport
from edge.wyoming.allowance import AudioAllowance
from edge.wyoming.connection import Connection
from edge.wyoming.framing import Event
from edge.wyoming.settings import ServerSettings
from edge.wyoming.utterance import Household

log = logging.getLogger(__name__)

BACKLOG = 16
"""Connections the kernel queues per listener before edge accepts them (not edge's files)."""

_ACCEPT_RETRY = 0.1
"""Seconds an accept loop rests after the process ran out of descriptors, rather than spin."""


class WyomingServer:
    """Serves every listener until `stop()`; `start()` returns once they all accept clients."""

    def __init__(self, household: Household, listeners: tuple[ListenerSettings, ...], settings: ServerSettings | None = None) -> None:
        self.household = household
        self.listeners = listeners
        self.settings = settings or ServerSettings()
        self.limits = self.settings.limits
        model_name, language = model_identity(household.model.path)
        if language is None:
            raise ModelError(
                f"{household.model.path}: cannot tell which language this model speaks, which Home Assistant must be told; "
                "name its folder the way Vosk names models: vosk-model[-small]-LANG-VERSION (e.g. vosk-model-small-en-us-0.15)"
            )
        self.language = language
        self.model_name = model_name
        self._info = {listener.name: _info(listener, model_name, language) for listener in listeners}
        self.workers = concurrent.futures.ThreadPoolExecutor(max_workers=self.settings.slots, thread_name_prefix="edge-wyoming")
        self._busy = 0
        self.served = 0
        """Utterances ended so far (counted on the loop thread)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptors: list[asyncio.Task[None]] = []
        self._clients: set[asyncio.Task[None]] = set()
        self._open = 0
        """Client sockets open now (counted until each is closed, not until its task ends)."""
        self.cap = 0
        """Connections allowed at once: set by `start()` from the descriptor limit."""
        self._allowances = {listener.uri: AudioAllowance(listener.audio_per_minute.total_seconds()) for listener in listeners}
        self._turned_away = BurstLog(log, "wyoming: %d client(s) turned away: %d connection(s) are open, the most edge allows")
        self._out_of_descriptors = BurstLog(log, "wyoming: %d connection(s) could not be accepted: %s")
        self.stdio_closed = threading.Event()
        """Set when the stdio listener's client (the parent process) closed stdin."""

    def info_event(self, listener: ListenerSettings) -> Event:
        return self._info[listener.name]

    def take_slot(self) -> bool:
        """A core for one more utterance, if one is free (called on the loop thread only)."""
        if self._busy >= self.settings.slots:
            return False
        self._busy += 1
        return True

    def give_slot(self) -> None:
        self._busy -= 1

    def allowance(self, listener: ListenerSettings) -> AudioAllowance:
        """How much audio `listener` may still take in (its clients share it)."""
        return self._allowances[listener.uri]

    def start(self) -> None:
        """Bind every listener (refusing a socket another agent serves) and serve on a thread."""
        # edge accepts one connection at a time per listener and closes one over the cap before
        # accepting the next: one descriptor per listener is kept free for that.
        self.cap = descriptors.connection_cap(self.settings.max_clients, descriptors.RESERVED + len(self.listeners))
        if self.cap < 1:
            raise WyomingError(
                f"this process may open only {descriptors.limit()} files ({descriptors.in_use()} are open): too few to serve "
                f"a client and still keep {descriptors.RESERVED} for shredding on time; raise the limit (LimitNOFILE= in the "
                "service, ulimit -n in a shell)",
                "descriptors",
            )
        sockets: list[socket.socket] = []
        try:
            for listener in self.listeners:
                if listener.socket is not None:
                    sockets.append(self._bind(listener))
        except WyomingError:  # none left bound: each was ours only once bound
            unix = [listener.socket for listener in self.listeners if listener.socket is not None]
            for bound, path in zip(sockets, unix, strict=False):
                bound.close()
                path.unlink(missing_ok=True)
            raise
        self._loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(sockets, started), name="edge-wyoming-loop", daemon=True)
        self._thread.start()
        started.result()
        for listener in self.listeners:
            log.info(
                "wyoming: serving %s on %s (%s)",
                listener.name,
                listener.uri,
                f"profile {listener.profile}" if listener.profile else "active profile, else strictest",
            )
        log.info("wyoming: at most %d connection(s) at once (%d file descriptors kept for shredding)", self.cap, descriptors.RESERVED)

    def stop(self) -> None:
        """Stop accepting; sessions in progress end as "stopped" and are sealed as they are."""
        if self._loop is None or self._thread is None:
            return
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=60)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=60)
        self.workers.shutdown(wait=True)
        for listener in self.listeners:
            if listener.socket is not None:
                listener.socket.unlink(missing_ok=True)
        self._loop = None

    def _bind(self, listener: ListenerSettings) -> socket.socket:
        path = listener.socket
        assert path is not None
        where = f"Wyoming listener {listener.uri}"
        if socket_answers(path):
            raise WyomingError(f"{where}: another program already serves on {path}", "in-use")
        if is_other_file(path):
            raise WyomingError(f"{where}: {path} is a file that is not a socket; choose another path", "in-use")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.unlink(missing_ok=True)  # left by a crash: nothing answers on it
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(path))
            os.chmod(path, 0o660)  # its folder's group (edge-wyoming, set by the install) may connect
            server.listen(BACKLOG)
        except OSError as exc:
            raise WyomingError(f"{where}: cannot create {path}: {exc.strerror}; choose a folder this user may write", "in-use") from None
        server.setblocking(False)
        return server

    def _run(self, sockets: list[socket.socket], started: concurrent.futures.Future[None]) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._listen(sockets))
        except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
            started.set_exception(exc)
            return
        started.set_result(None)
        self._loop.run_forever()
        self._loop.close()

    async def _listen(self, sockets: list[socket.socket]) -> None:
        unix = [listener for listener in self.listeners if listener.socket is not None]
        loop = asyncio.get_running_loop()
        for listener, bound in zip(unix, sockets, strict=True):
            self._acceptors.append(loop.create_task(self._accept(listener, bound)))
        for listener in self.listeners:
            if listener.transport == ListenerTransport.STDIO:
                await self._serve_stdio(listener)

    async def _accept(self, listener: ListenerSettings, bound: socket.socket) -> None:
        """Accept clients one at a time. asyncio's own server accepts a batch per wake-up and
        closes a turned-away socket a few loop turns later, so a flood held many more
        descriptors than the cap; here a socket over the cap is closed before the next accept."""
        loop = asyncio.get_running_loop()
        with bound:
            while True:
                try:
                    accepted, _address = await loop.sock_accept(bound)
                except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: what the reserve is for
                    self._out_of_descriptors.count(exc.strerror)
                    await asyncio.sleep(_ACCEPT_RETRY)
                    continue
                if self._open >= self.cap:
                    accepted.close()  # at once: nothing to say, no descriptor held
                    self._turned_away.count(self._open)
                    continue
                self._open += 1
                task = loop.create_task(self._serve(listener, accepted))
                self._clients.add(task)
                task.add_done_callback(functools.partial(self._gone, client=accepted))

    def _gone(self, task: asyncio.Task[None], client: socket.socket) -> None:
        """A client's task ended, however (even cancelled before it began): its socket is
        closed (again, harmlessly, if closing finished) and no longer counts."""
        self._clients.discard(task)
        client.close()
        self._open -= 1
        if not task.cancelled() and (error := task.exception()) is not None:  # its type only: never what was said
            log.warning("wyoming: a connection ended on an error (%s)", type(error).__name__)

    async def _serve(self, listener: ListenerSettings, accepted: socket.socket) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=accepted, limit=self.limits.header_bytes)
        try:
            await Connection(self, listener, reader, writer).run()
        except asyncio.CancelledError:
            pass  # the server stops: this client's session ended as "stopped" on the way out
        finally:
            await close(writer, self.settings.close_grace)

    async def _serve_stdio(self, listener: ListenerSettings) -> None:
        """One client for the process's life: the program that started it (Rhasspy 3)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=self.limits.header_bytes)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(sys.stdout.fileno(), "wb"))
        writer = asyncio.StreamWriter(transport, protocol, None, loop)

        async def client() -> None:
            try:
                await Connection(self, listener, reader, writer).run()
            finally:
                writer.close()  # the parent's pipe: it reads until we exit
                self.stdio_closed.set()

        task = loop.create_task(client())
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)

    async def _shutdown(self) -> None:
        for acceptor in self._acceptors:
            acceptor.cancel()
        await asyncio.gather(*self._acceptors, return_exceptions=True)
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)


async def close(writer: asyncio.StreamWriter, grace: float) -> None:
    """Close a client's connection: what it was sent may still be delivered for `grace`
    seconds, then the socket is aborted. A plain close waits for a client that never reads
    for ever, and its descriptor with it."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), grace)
    except (TimeoutError, OSError):
        writer.transport.abort()
        # the descriptor is closed on the loop's next turn: until then the socket still counts
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(writer.wait_closed(), grace)


def _info(listener: ListenerSettings, model_name: str, language: str) -> Event:
    """One speech-to-text program per listener, with the one model loaded (installed: true)."""
    model = AsrModel(
        name=model_name,
        attribution=Attribution(name="Alpha Cephei (Vosk)", url="https://alphacephei.com/vosk/models"),
        installed=True,
        description=f"{model_name}, on this device",
        version=None,
        languages=[language],
    )
    program = AsrProgram(
        name=listener.name,
        attribution=Attribution(name="edge", url=""),  # nothing to link to off the device
        installed=True,
        description="On-device speech-to-text that seals, expires and audits every utterance",
        version=__version__,
        models=[model],
        supports_transcript_streaming=False,
        requires_external_vad=True,  # an utterance ends at the client's audio-stop: the client finds the end of speech
        prefers_auto_gain_enabled=True,  # Vosk does best on speech at a steady level
        prefers_noise_reduction_enabled=True,
    )
    return Info(asr=[program]).event()
