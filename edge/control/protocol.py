"""The control socket's protocol and server: how the command line (or a household app)
talks to a running agent (what the agent answers: edge.control.operations).

One request per connection: a single line of JSON, `{"op": ..., ...}`, answered by a
single line `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. The socket is a
file (mode 0660, group `edge` when that group exists), so who may connect is decided
by the filesystem; anyone who can connect may change the active profile and forget
data, which is what the household's admins (root and group `edge`) should be able to.
Each client is served on a thread of its own (at most MAX_CLIENTS at once) and has
CLIENT_TIMEOUT seconds, in all, to send its request; a message is at most 4 KiB.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.burst import BurstLog
from edge.disk.sockets import is_other_file, socket_answers
from edge.errors import AgentNotRunning, ControlError, EdgeError

log = logging.getLogger(__name__)

MAX_MESSAGE = 4096
"""Bytes in one request or response line; longer requests are refused."""
CLIENT_TIMEOUT = 5.0
"""Seconds a connected client may take to send its whole request (a deadline, not per read)."""
MAX_CLIENTS = 8
"""Clients served at once; more are refused at once (bounded threads, bounded memory)."""
SOCKET_GROUP = "edge"

OPERATIONS: dict[str, dict[str, tuple[type, ...]]] = {
    "status": {},
    "profile": {"name": (str, type(None))},
    "push": {},
    "purge": {},
    "forget": {
        "session": (str,),
        "profile": (str,),
        "all": (bool,),
        "before": (str,),
        "confirm": (bool,),
    },
}
"""Every operation and the fields it accepts, with their JSON types."""


@dataclass(frozen=True)
class Request:
    op: str
    args: dict[str, Any]


Handler = Callable[[dict[str, Any]], dict[str, Any]]


def parse_request(raw: bytes) -> Request:
    """Validate one request line. Every defect is a ControlError naming what is wrong."""
    if len(raw) > MAX_MESSAGE:
        raise ControlError(f"request longer than {MAX_MESSAGE} bytes")
    try:
        message = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ControlError("request is not one line of UTF-8 JSON") from None
    if not isinstance(message, dict):
        raise ControlError('request must be a JSON object such as {"op": "status"}')
    op = message.pop("op", None)
    if not isinstance(op, str) or op not in OPERATIONS:
        raise ControlError(f"unknown op {op!r}; the ops are: {', '.join(OPERATIONS)}")
    fields = OPERATIONS[op]
    for key, value in message.items():
        if key not in fields:
            allowed = ", ".join(fields) or "none"
            raise ControlError(f"op {op!r} does not take {key!r}; it takes: {allowed}")
        kinds = fields[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ControlError(f"op {op!r}: {key!r} has the wrong type")
    return Request(op, message)


class ControlServer:
    """Serves requests on a Unix socket from a background thread until stopped."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        unknown = set(handlers) - set(OPERATIONS)
        if unknown:
            raise ValueError(f"handlers for unknown ops: {sorted(unknown)}")
        self.path = path
        self._handlers = handlers
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._out_of_resources = BurstLog(log, "control socket: %d request(s) could not be accepted: %s")

    def start(self) -> None:
        """Bind (replacing a stale socket, refusing a live one) and serve in the background."""
        if socket_answers(self.path):
            raise ControlError(f"{self.path}: another agent is already running on this control socket")
        if is_other_file(self.path):
            raise ControlError(f"{self.path}: [device] control_socket names a file that is not a socket; choose another path")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.path.unlink(missing_ok=True)
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(self.path))
            _share_with_group(self.path)
            server.listen(4)
        except OSError as exc:
            raise ControlError(
                f"{self.path}: cannot create the control socket: {exc.strerror}. Set [device] "
                "control_socket to a folder this user may write, or run the agent as its service user."
            ) from None
        server.settimeout(0.5)  # so stop() is noticed
        self._socket = server
        self._thread = threading.Thread(target=self._serve, name="edge-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
            self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        assert self._socket is not None
        while not self._stopping.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set() or self._socket.fileno() < 0:
                    return
                self._out_of_resources.count(exc.strerror)  # e.g. no descriptor left: try again, never give up the socket
                self._stopping.wait(0.5)
                continue
            if not self._slots.acquire(blocking=False):
                with connection:  # too many at once: say so rather than queue without bound
                    try:
                        connection.settimeout(1.0)
                        connection.sendall(_encode({"ok": False, "error": "the agent is busy; try again"}))
                    except OSError:
                        pass
                continue
            threading.Thread(target=self._client, args=(connection,), name="edge-control-client", daemon=True).start()

    def _client(self, connection: socket.socket) -> None:
        try:
            with connection:
                try:
                    raw = _read_line(connection, time.monotonic() + CLIENT_TIMEOUT)
                    response = self._respond(raw)
                    connection.settimeout(CLIENT_TIMEOUT)
                    connection.sendall(_encode(response))
                except OSError:
                    pass  # the client went away or was too slow
        finally:
            self._slots.release()

    def _respond(self, raw: bytes) -> dict[str, Any]:
        try:
            request = parse_request(raw)
            handler = self._handlers.get(request.op)
            if handler is None:
                raise ControlError(f"op {request.op!r} is not available in this agent")
            return {"ok": True, **handler(request.args)}
        except EdgeError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not silence the socket for good: say so, keep serving
            log.error("control request failed: %r", exc)
            return {"ok": False, "error": "the agent could not do that (an internal error; see its log)"}


QUICK_OPS = {"status": 5.0, "push": 5.0}
"""Seconds a live agent answers these in: they wait for no lock (`profile` is audited, so it
waits its turn behind a sweep). Past that it is hung, and the caller says so rather than wait."""

SLOW_OP = 60.0
"""Seconds for anything else: a forget of many buckets takes a while."""


def call(path: Path, op: str, **args: Any) -> dict[str, Any]:
    """Send one request to the agent listening on `path`; return its answer or raise."""
    within = QUICK_OPS.get(op, SLOW_OP)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(within)
    try:
        client.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        client.close()
        raise AgentNotRunning(f"no agent is running (nothing answers on {path})") from None
    except OSError as exc:
        client.close()
        raise ControlError(f"{path}: cannot reach the agent: {exc.strerror}") from None
    with client:
        try:
            client.sendall(_encode({"op": op, **args}))
            raw = _read_line(client)
        except TimeoutError:
            raise ControlError(
                f"{path}: the agent did not answer within {within:g} s: it may be hung (its log says why; "
                "restart it: sudo systemctl restart edge-agent)"
            ) from None
        except OSError as exc:
            raise ControlError(f"{path}: the agent did not answer: {exc.strerror or exc}") from None
    try:
        answer = json.loads(raw)
    except ValueError:
        raise ControlError(f"{path}: the agent's answer is not JSON") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, dict) else None
        raise ControlError(f"the agent refused: {error or 'no reason given'}")
    return answer


def _read_line(connection: socket.socket, deadline: float | None = None) -> bytes:
    """Up to MAX_MESSAGE + 1 bytes, ending at the first newline or when the peer stops sending.
    With a deadline (time.monotonic()), the whole line must arrive by then (TimeoutError)."""
    data = bytearray()
    while b"\n" not in data and len(data) <= MAX_MESSAGE:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request took too long")
            connection.settimeout(left)
        chunk = connection.recv(MAX_MESSAGE + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data.split(b"\n", 1)[0])


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _share_with_group(path: Path) -> None:
    """0660 and group `edge` when that group exists (the install script creates it). The
    service runs with group edge, so the socket has it already; no chown (the unit forbids it)."""
    try:
        gid = grp.getgrnam(SOCKET_GROUP).gr_gid
        if path.stat().st_gid != gid:
            os.chown(path, -1, gid)
        os.chmod(path, 0o660)
    except (KeyError, PermissionError):
        os.chmod(path, 0o600)  # no such group, or not ours to give: owner only
