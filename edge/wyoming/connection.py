"""One client of a Wyoming listener: describe -> info; transcribe, audio-start,
audio-chunk..., audio-stop -> transcript. Any number of utterances, one at a time.

A bad event gets an `error` event (a code and a reason, never anything that was said)
and the connection is closed; nothing else is disturbed. A client that leaves
mid-utterance ends its session as "stopped": what was sealed stays registered and
expires on time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.info import Describe, SelectProgram
from wyoming.ping import Ping, Pong

from edge.config import ListenerSettings
from edge.disk.space import FLOOR_BYTES, below_floor
from edge.errors import EdgeError, WyomingError
from edge.events import SessionServed
from edge.store.details import DETAILS, seal
from edge.values import EndReason
from edge.wyoming.allowance import AudioAllowance
from edge.wyoming.audio import WireFormat
from edge.wyoming.framing import Event, EventReader, Limits, async_write_event
from edge.wyoming.settings import ServerSettings
from edge.wyoming.utterance import Household, Utterance

log = logging.getLogger(__name__)
Result = TypeVar("Result")

_FEED_SECONDS = 0.25
"""Audio gathered before it goes to a worker thread while the client streams at the pace of
speech (one hop per 250 ms, not per 10 ms chunk: the transcript waits for no more than this)."""
_AHEAD_FEED_SECONDS = 1.0
"""Audio gathered while it arrives faster than it is spoken (a recording sent whole, a
satellite's buffered audio): each hop wakes a worker and then the event loop, often on the other
core, whose caches hold none of Vosk's: with a hop every 250 ms an utterance sent whole cost
1.12-1.16x the file path's CPU on a 2-core machine, a second at a time 1.07-1.09x (docs/BENCHMARKS.md)."""
_TOLD_AT_STOP = frozenset({"busy", "rate", "storage", "unsupported-language"})
"""Refusals a well-behaved client gets as it begins or streams an utterance: the rest of the
utterance is read and dropped, and the error is sent after its audio-stop. Closed at once, the
client would see a connection reset instead (its kernel drops an unread answer when it keeps
sending), as Home Assistant did."""


class Serving(Protocol):
    """What a connection needs of the server that accepted it (edge.wyoming.server)."""

    served: int
    """Utterances ended so far (a connection counts its own)."""

    @property
    def household(self) -> Household: ...
    @property
    def settings(self) -> ServerSettings: ...
    @property
    def limits(self) -> Limits: ...
    @property
    def language(self) -> str: ...
    @property
    def model_name(self) -> str: ...
    @property
    def workers(self) -> concurrent.futures.Executor: ...

    def info_event(self, listener: ListenerSettings) -> Event: ...
    def take_slot(self) -> bool: ...
    def give_slot(self) -> None: ...
    def allowance(self, listener: ListenerSettings) -> AudioAllowance: ...


class Connection:
    def __init__(self, server: Serving, listener: ListenerSettings, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._server = server
        self._listener = listener
        self._events = EventReader(reader, server.limits)
        self._writer = writer
        self._utterance: Utterance | None = None
        self._wire: WireFormat | None = None
        self._pending = bytearray()
        self._feed_bytes = 0
        self._pending_since = 0.0
        """When (loop time) the first of the audio now pending arrived."""
        self._waiting: float | None = None
        """Since when (loop time) the next event is awaited; None while one is handled."""
        self._cut_off: WyomingError | None = None
        """Why the watch cut this client off (it stalled, or its utterance ran too long)."""
        self._streaming_since: float | None = None
        """When (loop time) the client's audio-start came; None outside an utterance."""
        self._refusal: WyomingError | None = None
        """Said after the audio-stop of the utterance it refused (see _TOLD_AT_STOP)."""

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
                    event = await self._events.read()
                except WyomingError as exc:
                    await self._refuse(exc)
                    return
                self._waiting = None
                if event is None or not await self._handle(event):
                    return
        except asyncio.CancelledError:
            if self._cut_off is None:
                raise  # the server is stopping
            stopped = EndReason.TIMEOUT
            await self._refuse(self._refusal or self._cut_off)
        except (ConnectionError, asyncio.IncompleteReadError):
            return  # the client left
        except Exception as exc:  # a defect of edge's: this client is told, the others go on
            log.error("wyoming %s: internal error (%s)", self._listener.name, type(exc).__name__)
            await self._refuse(WyomingError("edge failed on this request; see its log", "internal"))
        finally:
            watch.cancel()
            await self._end_utterance(stopped)

    async def _watch(self, task: asyncio.Task[None]) -> None:
        """The clock's limits, whatever the client sends: a client waited on for longer than the
        idle timeout is cut off, and so is an utterance that outlives max_session plus the idle
        timeout (a client sending pings, or audio a trickle at a time, must not hold a core for
        ever). Checked four times per idle timeout and at least once a second; one timer per
        connection, not one per event: a 10 ms audio chunk must cost next to nothing."""
        idle = self._server.settings.idle_timeout
        longest = self._server.household.config.trigger.max_session.total_seconds() + idle
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(idle / 4, 1.0))
            since, now = self._waiting, loop.time()
            if since is not None and now - since >= idle:
                self._cut_off = WyomingError(f"nothing was sent for {idle:g} s", "timeout")
            elif self._streaming_since is not None and now - self._streaming_since > longest:
                self._cut_off = WyomingError(f"the utterance went on for longer than {longest:g} s", "timeout")
            if self._cut_off is not None:
                task.cancel()
                return

    async def _handle(self, event: Event) -> bool:
        """False ends the connection."""
        if self._refusal is not None:  # the rest of a refused utterance: dropped until its audio-stop
            if AudioStop.is_type(event.type):
                await self._refuse(self._refusal)
                return False
            return True
        try:
            if AudioChunk.is_type(event.type):
                await self._chunk(event)
            elif Describe.is_type(event.type):
                await self._send(self._server.info_event(self._listener))
            elif Transcribe.is_type(event.type):
                if self._utterance is not None:
                    raise WyomingError("transcribe arrived inside an utterance; send audio-stop first", "protocol")
                self._check_language(event.data.get("language"))
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
            if exc.code in _TOLD_AT_STOP and not AudioStop.is_type(event.type):  # at its audio-stop: told now
                self._refusal = exc
                await self._end_utterance(EndReason.STOPPED)  # its core is free now
                return True
            await self._refuse(exc)
            return False
        return True

    def _check_language(self, asked: object) -> None:
        """A language the model does not speak is refused, never answered in another one
        (a Korean model hears English as Korean words). A region is not required to match:
        "ko-KR" is "ko"."""
        if asked is None or asked == "":
            return
        served = self._server.language
        if not isinstance(asked, str) or _primary(asked) != _primary(served):
            raise WyomingError(
                f"this listener transcribes {served} only (its model: {self._server.model_name}), not {str(asked)[:20]!r}; "
                f"choose {served} as the pipeline's speech-to-text language",
                "unsupported-language",
            )

    async def _start(self, event: Event) -> None:
        if self._utterance is not None:
            raise WyomingError("audio-start arrived inside an utterance; send audio-stop first", "protocol")
        wire = WireFormat.checked(event.data)
        self._streaming_since = asyncio.get_running_loop().time()
        if below_floor(self._server.household.config.device.data_dir):
            raise WyomingError(f"the speaker's storage has less than {FLOOR_BYTES >> 20} MiB free; edge takes no new audio", "storage")
        if self._server.allowance(self._listener).left() <= 0:
            raise WyomingError(self._over_allowance(), "rate")
        if not self._server.take_slot():
            raise WyomingError("every core is decoding another utterance; try again", "busy")
        try:
            self._utterance = await self._work(Utterance, self._server.household, self._listener, wire)
        except BaseException:
            if self._utterance is None:  # not made (or `_work` kept it at a shutdown): the slot is free
                self._server.give_slot()
            raise
        self._wire = wire
        self._feed_bytes = round(wire.rate * _FEED_SECONDS) * wire.frame_bytes

    async def _chunk(self, event: Event) -> None:
        if self._utterance is None or self._wire is None:
            raise WyomingError("audio-chunk arrived before audio-start", "protocol")
        data = event.data
        if (data.get("rate"), data.get("width"), data.get("channels")) != (self._wire.rate, self._wire.width, self._wire.channels):
            raise WyomingError("an audio-chunk's rate, width or channels differ from its audio-start", "bad-audio-format")
        audio = event.payload or b""
        if len(audio) % self._wire.frame_bytes:
            raise WyomingError(
                f"an audio chunk of {len(audio)} bytes is not whole {self._wire.frame_bytes}-byte frames", "bad-audio-format"
            )
        if not self._server.allowance(self._listener).take(len(audio) / (self._wire.rate * self._wire.frame_bytes)):
            raise WyomingError(self._over_allowance(), "rate")
        if not self._pending:
            self._pending_since = asyncio.get_running_loop().time()
        self._pending += audio
        if len(self._pending) >= self._feed_bytes and not self._arriving_fast():
            await self._feed()

    def _arriving_fast(self) -> bool:
        """Whether the audio pending came in less than half the time it lasts, and less than
        _AHEAD_FEED_SECONDS of it is gathered: then the hop waits for more. Judged on what is
        pending only, so a client that sent a burst and then streams live is handed over every
        250 ms again once the burst is taken (what arrived while the last hop was decoded is
        a small part of the next)."""
        assert self._wire is not None
        gathered = len(self._pending) / (self._wire.rate * self._wire.frame_bytes)
        fast = asyncio.get_running_loop().time() - self._pending_since < gathered / 2
        return fast and len(self._pending) < round(self._wire.rate * _AHEAD_FEED_SECONDS) * self._wire.frame_bytes

    async def _feed(self) -> None:
        assert self._utterance is not None
        audio = bytes(self._pending)
        self._pending.clear()
        if audio and not self._utterance.cut:
            await self._work(self._utterance.feed, audio)

    async def _stop(self) -> None:
        if self._utterance is None:
            raise WyomingError("audio-stop arrived before audio-start", "protocol")
        self._streaming_since = None
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

    def _over_allowance(self) -> str:
        per_minute = self._listener.audio_per_minute.total_seconds()
        return (
            f"this listener takes at most {per_minute:g} s of audio a minute (audio_per_minute), and its clients sent more; try again later"
        )

    async def _end_utterance(self, reason: EndReason) -> None:
        """The client left (or stalled, or broke the protocol) mid-utterance: what it sent
        last is sealed too, though less than a feed's worth."""
        if self._utterance is None:
            return
        try:
            await self._feed()
        except WyomingError:
            return  # it could not be sealed: `_work` abandoned the utterance and freed its core
        except Exception as exc:  # a defect of edge's: what was sealed before still ends as "stopped"
            log.error("wyoming %s: internal error (%s)", self._listener.name, type(exc).__name__)
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
        """Audited before the text is handed out: the log never claims less than left the device.
        What the utterance was (listener, length, characters, how it ended) is sealed under the
        session's details key when anything of it is kept, so it is forgotten with its data;
        of an utterance that keeps nothing the log says only that it was served, whose, and how
        the exchange ended."""
        seconds, key = utterance.seconds, utterance.details_key
        personal = {"listener": self._listener.name, "seconds": seconds, "characters": characters, "end_reason": str(reason)}
        sealed = seal(personal, key, utterance.session, SessionServed.event_type) if key is not None else None
        self._server.household.audit.append(  # a Wyoming session's last event: signed in the same write
            SessionServed(
                session=utterance.session,
                source="wyoming",
                profile=utterance.tag.profile.name,
                kept=utterance.kept,
                end_reason=None if sealed else reason,  # how the protocol ended, not who spoke: in clear when nothing is kept
                details=DETAILS if sealed else None,
                sealed=sealed,
            )
        )
        log.debug(  # not at info: the journal would keep it after the session is forgotten
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


def _primary(language: str) -> str:
    """The primary language subtag: "en" of "en-us", "EN_GB" and "en"."""
    return language.replace("_", "-").split("-")[0].strip().lower()
