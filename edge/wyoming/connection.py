"""One client of a Wyoming listener: describe -> info; transcribe, audio-start,
audio-chunk..., audio-stop -> transcript. Any number of utterances, one at a time.

A bad event gets an `error` event (a code and a reason, never anything that was said)
and the connection is closed; nothing else is disturbed. A client that leaves
mid-utterance ends its session as "stopped": what was sealed stays registered and
expires on time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.info import Describe, SelectProgram
from wyoming.ping import Ping, Pong

from edge.config import ListenerSettings
from edge.errors import EdgeError, WyomingError
from edge.values import EndReason
from edge.wyoming.audio import WireFormat
from edge.wyoming.framing import Event, async_write_event, read_event
from edge.wyoming.utterance import Utterance

if TYPE_CHECKING:
    from edge.wyoming.server import WyomingServer

log = logging.getLogger(__name__)
Result = TypeVar("Result")

_FEED_SECONDS = 0.25
"""Audio gathered before it goes to a worker thread (one hop per 250 ms, not per 10 ms chunk)."""


class Connection:
    def __init__(
        self, server: WyomingServer, listener: ListenerSettings, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._server = server
        self._listener = listener
        self._reader = reader
        self._writer = writer
        self._utterance: Utterance | None = None
        self._wire: WireFormat | None = None
        self._pending = bytearray()
        self._feed_bytes = 0
        self._waiting: float | None = None
        """Since when (loop time) the next event is awaited; None while one is handled."""
        self._stalled = False
        self._started = 0.0
        """When (loop time) the utterance began."""

    async def run(self) -> None:
        """Serve until the client leaves, misbehaves, stalls or the server stops."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        watch = loop.create_task(self._watch(task))
        stopped = EndReason.STOPPED
        try:
            while True:
                self._waiting = loop.time()
                try:
                    event = await read_event(self._reader, self._server.limits)
                except WyomingError as exc:
                    await self._refuse(exc)
                    return
                self._waiting = None
                if event is None or not await self._handle(event):
                    return
        except asyncio.CancelledError:
            if not self._stalled:
                raise  # the server is stopping
            stopped = EndReason.TIMEOUT
            await self._refuse(WyomingError(f"nothing was sent for {self._server.settings.idle_timeout:g} s", "timeout"))
        except (ConnectionError, asyncio.IncompleteReadError):
            return  # the client left
        except Exception as exc:  # a defect of edge's: this client is told, the others go on
            log.error("wyoming %s: internal error (%s)", self._listener.name, type(exc).__name__)
            await self._refuse(WyomingError("edge failed on this request; see its log", "internal"))
        finally:
            watch.cancel()
            await self._end_utterance(stopped)
            self._writer.close()

    async def _watch(self, task: asyncio.Task[None]) -> None:
        """The idle timeout: a client waited on for longer is cut off (checked four times per
        timeout, so a stall is noticed 1 to 1.25 timeouts after the last event). One timer per
        connection, not one per event: a 10 ms audio chunk must cost next to nothing."""
        idle = self._server.settings.idle_timeout
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(idle / 4)
            since = self._waiting
            if since is not None and loop.time() - since >= idle:
                self._stalled = True
                task.cancel()
                return

    async def _handle(self, event: Event) -> bool:
        """False ends the connection."""
        try:
            if AudioChunk.is_type(event.type):
                await self._chunk(event)
            elif Describe.is_type(event.type):
                await self._send(self._server.info_event(self._listener))
            elif Transcribe.is_type(event.type):
                if self._utterance is not None:
                    raise WyomingError("transcribe arrived inside an utterance; send audio-stop first", "protocol")
            elif AudioStart.is_type(event.type):
                await self._start(event)
            elif AudioStop.is_type(event.type):
                await self._stop()
            elif SelectProgram.is_type(event.type):
                name = event.data.get("name")
                if name != self._listener.name:
                    raise WyomingError(f"this listener serves one program, {self._listener.name!r}", "unknown-program")
            elif Ping.is_type(event.type):
                await self._send(Pong(text=Ping.from_event(event).text).event())
            # anything else is dropped, as the protocol asks of servers
        except WyomingError as exc:
            await self._refuse(exc)
            return False
        return True

    async def _start(self, event: Event) -> None:
        if self._utterance is not None:
            raise WyomingError("audio-start arrived inside an utterance; send audio-stop first", "protocol")
        wire = WireFormat.checked(event.data)
        if not self._server.take_slot():
            raise WyomingError("every core is decoding another utterance; try again", "busy")
        try:
            self._utterance = await self._work(Utterance, self._server.household, self._listener, wire)
        except BaseException:
            if self._utterance is None:  # not made (or `_work` kept it at a shutdown): the slot is free
                self._server.give_slot()
            raise
        self._started = asyncio.get_running_loop().time()
        self._wire = wire
        self._feed_bytes = round(wire.rate * _FEED_SECONDS) * wire.frame_bytes

    async def _chunk(self, event: Event) -> None:
        if self._utterance is None or self._wire is None:
            raise WyomingError("audio-chunk arrived before audio-start", "protocol")
        longest = self._server.household.config.trigger.max_session.total_seconds() + self._server.settings.idle_timeout
        if asyncio.get_running_loop().time() - self._started > longest:  # a trickle must not hold a core for ever
            raise WyomingError(f"the utterance went on for longer than {longest:g} s", "timeout")
        data = event.data
        if (data.get("rate"), data.get("width"), data.get("channels")) != (self._wire.rate, self._wire.width, self._wire.channels):
            raise WyomingError("an audio-chunk's rate, width or channels differ from its audio-start", "bad-audio-format")
        audio = event.payload or b""
        if len(audio) % self._wire.frame_bytes:
            raise WyomingError(
                f"an audio chunk of {len(audio)} bytes is not whole {self._wire.frame_bytes}-byte frames", "bad-audio-format"
            )
        self._pending += audio
        if len(self._pending) >= self._feed_bytes:
            await self._feed()

    async def _feed(self) -> None:
        assert self._utterance is not None
        audio = bytes(self._pending)
        self._pending.clear()
        if audio and not self._utterance.cut:
            await self._work(self._utterance.feed, audio)

    async def _stop(self) -> None:
        if self._utterance is None:
            raise WyomingError("audio-stop arrived before audio-start", "protocol")
        await self._feed()
        utterance, self._utterance = self._utterance, None
        try:
            transcript = await self._work(utterance.finish)
        except WyomingError:
            utterance.abandon()
            raise
        finally:
            self._server.give_slot()
        text = transcript.text
        await self._work(self._served, utterance, utterance.end_reason(None), len(text))
        self._server.served += 1
        await self._send(Transcript(text=text, language=self._server.language).event())

    async def _end_utterance(self, reason: EndReason) -> None:
        """The client left (or stalled, or broke the protocol) mid-utterance."""
        utterance, self._utterance = self._utterance, None
        if utterance is None:
            return
        try:
            await self._work(utterance.finish)
            await self._work(self._served, utterance, reason, 0)
            self._server.served += 1
        except Exception as exc:  # a full disk, say: logged, and the server goes on
            log.error("wyoming %s: session %s could not be closed: %s", self._listener.name, utterance.session, exc)
        finally:
            self._server.give_slot()

    def _served(self, utterance: Utterance, reason: EndReason, characters: int) -> None:
        """Audited before the text is handed out: the log never claims less than left the device."""
        self._server.household.audit.append(
            "session.served",
            session=utterance.session,
            source="wyoming",
            listener=self._listener.name,
            profile=utterance.tag.profile.name,
            seconds=utterance.seconds,
            characters=characters,
            end_reason=reason,
            checkpoint=True,  # a Wyoming session's last event: signed in the same write
        )
        log.info(
            "wyoming %s: session %s (%s, %.1f s): %d character(s) handed out",
            self._listener.name,
            utterance.session,
            utterance.tag.profile.name,
            utterance.seconds,
            characters,
        )

    async def _work(self, function: Callable[..., Result], *args: Any) -> Result:
        """Blocking work (Vosk, sealing, the keystore) on a worker thread; a storage failure
        ends the utterance with an error the client sees, never the server."""
        future = asyncio.get_running_loop().run_in_executor(self._server.workers, function, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:  # the server stops: the thread finishes what it began, so
            await asyncio.wait([future])  # nothing uses the utterance from two threads at once
            made = future.result() if not future.cancelled() and future.exception() is None else None
            if isinstance(made, Utterance):
                self._utterance = made  # registered: it ends as "stopped" like the others
            raise
        except WyomingError:
            raise
        except EdgeError as exc:
            log.error("wyoming %s: %s", self._listener.name, exc)
            self._abandon()
            raise WyomingError("edge could not seal this utterance, so it refuses to transcribe it", "storage") from None

    def _abandon(self) -> None:
        utterance, self._utterance = self._utterance, None
        if utterance is not None:
            utterance.abandon()
            self._server.give_slot()

    async def _refuse(self, error: WyomingError) -> None:
        log.warning("wyoming %s: refused a client: %s (%s)", self._listener.name, error, error.code)
        try:
            await self._send(Error(text=str(error), code=error.code).event())
        except (ConnectionError, RuntimeError):
            pass  # it is gone already

    async def _send(self, event: Event) -> None:
        """A client that stops reading is cut off after the idle timeout, like one that stops sending."""
        try:
            await asyncio.wait_for(async_write_event(event, self._writer), self._server.settings.idle_timeout)
        except TimeoutError:
            raise ConnectionResetError("the client stopped reading") from None
