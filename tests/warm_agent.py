"""The tests' warm edge-agent: one process that imports edge and loads the real Vosk model
once, then forks a fresh child for each `python -m edge ARGS` that support.edge_agent runs.

Why: each `edge-agent run --input` loads PyPI's Korean model (230 MB of graphs, 3-5 s of
CPU) and every command imports edge (~1 s); the suite runs hundreds of them, and only a few
tests are about start-up. The child is a separate process that runs the real command line
(edge.cli.main) on the caller's stdin/stdout/stderr, environment, folder and umask; its
`make_model` hands out the model loaded here when the config names the same model (a model
that has never decoded, as a fresh process's is; the child's use of it is its own, copied on
write), and loads any other as usual. What edge reads as it loads (EDGE_CRASH_AT) is read
again in the child; what only a new process gets (LD_PRELOAD) makes support run a cold one.

Protocol (a Unix socket): the client sends one JSON line {"args", "env", "cwd", "umask"} with
its stdin, stdout and stderr as SCM_RIGHTS; the answer is two JSON lines, {"pid"} of the
command's process, then {"code"}: its exit status as subprocess reports it.
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import os
import select
import socket
import sys
import time
from pathlib import Path
from typing import Any


def main(path: str) -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as edge.cli.main sets it, before numpy loads
    import edge.cli  # noqa: F401  (every command's module, imported once)
    from edge.stt.model_path import find_model
    from edge.stt.recognizer import SpeechModel

    model = SpeechModel(find_model("auto"))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    print("ready", flush=True)
    parent = os.getppid()
    while os.getppid() == parent:  # a test run (or a script) that ended without stopping it: end too
        if not select.select([server], [], [], 1.0)[0]:
            _reap()
            continue
        connection, _ = server.accept()
        _reap()
        request, fds = _receive(connection)
        if os.fork() == 0:
            try:
                server.close()
                _wait_for_command(connection, fds)  # returns only in the command's process
            except BaseException:
                os._exit(1)
            _run_command(request, fds, model)  # ends as the process ends: SystemExit(code)
        connection.close()
        for fd in fds:
            os.close(fd)


def _reap() -> None:
    """Wait for the waiters that have ended (their CPU time then counts in this process's children's)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _receive(connection: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _address = socket.recv_fds(connection, 1 << 20, 3)
    while not data.endswith(b"\n"):
        more = connection.recv(1 << 20)
        if not more:
            break
        data += more
    return json.loads(data), fds


def _wait_for_command(connection: socket.socket, fds: list[int]) -> None:
    """Fork the command's process; here, tell the client its pid and then its exit status."""
    pid = os.fork()
    if pid == 0:
        connection.close()
        return
    try:
        for fd in fds:
            os.close(fd)  # the command's pipes end when the command does
        connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        _, status = os.waitpid(pid, 0)
        connection.sendall(json.dumps({"code": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    finally:
        os._exit(0)


def _run_command(request: dict[str, Any], fds: list[int], model: Any) -> None:
    """Become `python -m edge ARGS` as the client would have started it."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()  # TZ as the command's environment says
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    if os.environ.get("PYTHONFAULTHANDLER"):
        faulthandler.enable()  # as Python does at start with the variable set
    import edge
    import edge.faults

    importlib.reload(edge.faults)  # EDGE_CRASH_AT, read as edge loads (the crash points' globals are refilled in place)
    sys.argv = [str(Path(edge.__file__).parent / "__main__.py"), *request["args"]]
    _share_model(model)
    from edge.cli import main as edge_main

    raise SystemExit(edge_main(request["args"]))


def _share_model(model: Any) -> None:
    """wiring.make_model hands out the warm model when the config names the same one."""
    from edge import wiring
    from edge.stt.model_path import find_model
    from edge.stt.recognizer import SpeechModel

    def make_model(config: Any) -> SpeechModel:
        path = find_model(config.device.model, config.device.data_dir)
        if Path(path).resolve() == Path(model.path).resolve():
            return model  # type: ignore[no-any-return]
        return SpeechModel(path)

    wiring.make_model = make_model


if __name__ == "__main__":
    main(sys.argv[1])
