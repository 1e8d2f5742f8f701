"""Wyoming listeners' URIs (from [[wyoming]] or `serve --uri`): which are allowed, the
listener they make, and the checks across listeners."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from edge.config.settings import DeviceSettings, ListenerSettings
from edge.errors import ConfigError
from edge.values import ListenerTransport

MAX_SOCKET_PATH = 107
"""Longest Unix socket path Linux accepts (sun_path is 108 bytes with the final NUL)."""

TCP_REFUSED = (
    "edge opens no network socket (its service runs with PrivateNetwork=yes): serve a unix:// socket and let "
    "systemd-socket-proxyd bridge TCP to it; `sudo scripts/install.sh --wyoming PORT[:PROFILE]` sets that up "
    "(README: Use with Home Assistant)"
)
LISTENER_URIS = 'unix:///ABSOLUTE/PATH.sock or "stdio://"'


def listener_socket(uri: str, where: str, setting: str | None = None) -> tuple[ListenerTransport, Path | None]:
    """The transport and socket path a listener URI names; tcp:// and anything else refused.
    `where` starts each message (a config key with its file, or an option)."""
    parsed = urlparse(uri)
    if parsed.scheme == "tcp":
        raise ConfigError(f"{where} = {uri!r} is not allowed: {TCP_REFUSED}", setting=setting)
    if parsed.scheme == "stdio" and uri.rstrip("/") == "stdio:":
        return ListenerTransport.STDIO, None
    if parsed.scheme == "unix" and not parsed.netloc and parsed.path.startswith("/") and not parsed.query and not parsed.fragment:
        socket = Path(parsed.path)
        if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
            raise ConfigError(f"{where} = {uri!r} is not allowed; use a socket path of at most {MAX_SOCKET_PATH} bytes", setting=setting)
        return ListenerTransport.UNIX, socket
    raise ConfigError(f"{where} = {uri!r} is not allowed; use {LISTENER_URIS}", setting=setting)


AUDIO_PER_MINUTE = timedelta(minutes=2)
"""A listener's default allowance: two people speaking at once, all the time."""
LONGEST_AUDIO_PER_MINUTE = timedelta(hours=1)


def make_listener(
    uri: str,
    profile: str | None,
    name: str | None,
    where: str,
    setting: str | None = None,
    audio_per_minute: timedelta = AUDIO_PER_MINUTE,
    keep_unrecognised: bool = False,
) -> ListenerSettings:
    transport, socket = listener_socket(uri, where, setting)
    default_name = f"edge ({profile})" if profile else "edge"
    return ListenerSettings(
        uri=uri,
        transport=transport,
        socket=socket,
        profile=profile,
        name=name or default_name,
        audio_per_minute=audio_per_minute,
        keep_unrecognised=keep_unrecognised,
    )


def default_audio_per_minute(max_session: timedelta) -> timedelta:
    """The default allowance, never less than one whole session."""
    return max(AUDIO_PER_MINUTE, max_session)


def check_listeners(listeners: tuple[ListenerSettings, ...], device: DeviceSettings, where: str) -> None:
    """At most one stdio listener, no socket twice, none on the control socket."""
    if sum(1 for listener in listeners if listener.transport == ListenerTransport.STDIO) > 1:
        raise ConfigError(f'{where}: "stdio://" is named more than once; a process has one stdin and one stdout')
    sockets = [listener.socket for listener in listeners if listener.socket is not None]
    for socket in sockets:
        if sockets.count(socket) > 1:
            raise ConfigError(f"{where}: the socket {str(socket)!r} is named more than once; give each listener its own")
        if socket == device.control_socket:
            raise ConfigError(
                f"{where}: the socket {str(socket)!r} is the control socket ([device] control_socket); a Wyoming client "
                "must never reach the control socket (it can forget data): choose another path"
            )
