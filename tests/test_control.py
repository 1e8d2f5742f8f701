"""The control socket: its message rules on a real Unix socket, and the CLI driving a
running agent (virtual microphone): push-to-talk, the active profile, status, forget."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from edge.control.protocol import ControlServer, call, parse_request
from edge.errors import AgentNotRunning, ControlError

from support import MicAgent, edge_agent, play


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b"", "not one line of UTF-8 JSON"),
        (b"\xff\xfe", "not one line of UTF-8 JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"op": "reboot"}', "unknown op 'reboot'"),
        (b'{"name": "child"}', "unknown op None"),
        (b'{"op": "push", "now": true}', "does not take 'now'"),
        (b'{"op": "profile", "name": 3}', "'name' has the wrong type"),
        (b'{"op": "forget", "all": 1}', "'all' has the wrong type"),
        (b'{"op": "forget", "session": true}', "'session' has the wrong type"),
        (b"[" * 100_000, "request longer than"),
        (b"[" * 4000, "not one line of UTF-8 JSON"),  # deep nesting within the size limit
        (b'{"op": "status", "x": ' + b'"a' * 3000 + b'"}', "request longer than"),
    ],
)
def test_malformed_requests_are_refused_by_name(raw, problem):
    with pytest.raises(ControlError, match=problem.replace("(", r"\(")):
        parse_request(raw)


def test_well_formed_requests_parse():
    assert parse_request(b'{"op": "profile", "name": null}').args == {"name": None}
    assert parse_request('{"op": "forget", "profile": "아이", "confirm": true}'.encode()).args == {"profile": "아이", "confirm": True}


@pytest.fixture
def served(tmp_path):
    seen = []

    def profile(args):
        seen.append(args)
        return {"active_profile": args["name"]}

    handlers = {
        "status": lambda args: {"state": "listening"},
        "profile": profile,
        "purge": lambda args: (_ for _ in ()).throw(ControlError("the keystore is busy")),
    }
    server = ControlServer(tmp_path / "run" / "control.sock", handlers)
    server.start()
    yield server, seen
    server.stop()


def test_requests_and_answers_over_a_real_socket(served):
    server, seen = served
    assert call(server.path, "status") == {"ok": True, "state": "listening"}
    assert call(server.path, "profile", name="child")["active_profile"] == "child"
    assert seen == [{"name": "child"}]
    with pytest.raises(ControlError, match="the agent refused: the keystore is busy"):
        call(server.path, "purge")
    with pytest.raises(ControlError, match="'push' is not available"):
        call(server.path, "push")
    mode = server.path.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) & 0o007 == 0  # never reachable by others


def test_garbage_and_silent_clients_do_not_stop_the_server(served):
    server, _ = served
    for garbage in (b"\x00" * 10_000, b"{" * 5000 + b"\n", b"not json\n"):
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(server.path))
            client.sendall(garbage)
            client.shutdown(socket.SHUT_WR)
            answer = json.loads(client.makefile("rb").readline())
            assert answer["ok"] is False and answer["error"]
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(str(server.path))  # connects, never sends: dropped after the client timeout
    try:
        assert call(server.path, "status")["state"] == "listening"
    finally:
        silent.close()


def test_a_second_server_is_refused_and_a_stale_socket_is_replaced(served, tmp_path):
    server, _ = served
    with pytest.raises(ControlError, match="another agent is already running"):
        ControlServer(server.path, {}).start()
    stale = tmp_path / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(stale))
    leftover.close()  # what a kill -9 leaves behind
    fresh = ControlServer(stale, {"status": lambda args: {"fresh": True}})
    fresh.start()
    try:
        assert call(stale, "status")["fresh"] is True
    finally:
        fresh.stop()
    assert not stale.exists()
    precious = tmp_path / "keystore"
    precious.write_bytes(b"data")
    with pytest.raises(ControlError, match="not a socket"):
        ControlServer(precious, {}).start()
    assert precious.read_bytes() == b"data"


def test_no_agent_is_explained(tmp_path):
    with pytest.raises(AgentNotRunning, match="no agent is running"):
        call(tmp_path / "none.sock", "status")
    result = edge_agent("push")
    assert result.returncode == 1 and "no agent is running" in result.stderr
    status = edge_agent("status")
    assert status.returncode == 0 and "agent: not running" in status.stdout


def test_status_says_a_hung_agent_did_not_answer_rather_than_wait(write_config, tmp_path):
    """A stopped agent (SIGSTOP, a deadlock) still has its socket: the kernel accepts and
    nothing answers. status says so within seconds and shows what the data folder holds;
    push refuses with the same reason."""
    config = write_config()
    (tmp_path / "data").mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(tmp_path / "data" / "control.sock"))
        silent.listen(4)  # never accepts: the kernel queues the clients, as for a stopped process
        status = edge_agent("--config", str(config), "status", timeout=30)
        push = edge_agent("--config", str(config), "push", timeout=30)
    assert status.returncode == 0 and "agent: not answering" in status.stdout and "no retained sessions" in status.stdout, status
    assert "did not answer within 5 s: it may be hung" in status.stderr, status.stderr
    assert push.returncode == 1 and "did not answer within 5 s" in push.stderr, push.stderr


def _edge(config: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return edge_agent("--config", str(config), *args, env=env)


@pytest.mark.mic
def test_cli_drives_a_running_agent(virtual_mic, speech, write_config):
    config = write_config(mode="push_to_talk", household='active_profile = "parent"')
    agent = MicAgent(virtual_mic, config)
    try:
        limits = Path(f"/proc/{agent.process.pid}/limits").read_text()
        assert any(line.startswith("Max core file size") and line.split()[4:6] == ["0", "0"] for line in limits.splitlines())

        status = json.loads(_edge(config, virtual_mic, "status", "--json").stdout)
        assert status["agent"]["mode"] == "push_to_talk" and status["agent"]["active_profile"] == "parent"

        switched = _edge(config, virtual_mic, "profile", "child")
        assert switched.returncode == 0 and "active profile: child" in switched.stdout
        unknown = _edge(config, virtual_mic, "profile", "grandma")
        assert unknown.returncode == 2 and "profile 'grandma'" in unknown.stderr and "no such profile" in unknown.stderr

        play(virtual_mic, speech.say("보안"))  # no push yet: not a session
        time.sleep(1.2)
        pushed = _edge(config, virtual_mic, "push")
        assert pushed.returncode == 0, pushed.stderr
        time.sleep(0.2)
        play(virtual_mic, speech.say("아버지"))
        time.sleep(1.5)

        status = json.loads(_edge(config, virtual_mic, "status", "--json").stdout)
        assert status["agent"]["sessions"] == 1
        [kept] = status["sessions"]
        assert (kept["profile"], kept["rule"]) == ("child", "active")

        answer = call(config.parent / "data" / "control.sock", "forget", session=kept["session"], confirm=True)
        assert answer["forgotten"] == 1
        with pytest.raises(ControlError, match='send "confirm": true'):
            call(config.parent / "data" / "control.sock", "forget", all=True)
        assert json.loads(_edge(config, virtual_mic, "status", "--json").stdout)["sessions"] == []
    finally:
        sessions, stderr, code = agent.stop()
    assert code == 0, stderr
    assert [(s["text"], s["profile"]) for s in sessions] == [("아버지", "child")]
    assert not (config.parent / "data" / "control.sock").exists()
    log = (config.parent / "data" / "audit.jsonl").read_text()
    assert '"type":"profile.active"' in log and "아버지" not in log
    after = _edge(config, virtual_mic, "push")
    assert after.returncode == 1 and "no agent is running" in after.stderr


def test_push_outside_push_to_talk_mode_is_refused(write_config):
    from edge.config import load_config
    from edge.control.operations import agent_operations

    handlers = agent_operations(load_config(write_config(mode="always")), agent=None, shredder=None, audit=None, microphone=True)  # type: ignore[arg-type]
    with pytest.raises(ControlError, match='mode = "push_to_talk"'):
        handlers["push"]({})


def test_a_failing_handler_is_answered_and_the_server_keeps_serving(tmp_path):
    def broken(_args):
        raise RuntimeError("a bug")

    server = ControlServer(tmp_path / "c.sock", {"purge": broken, "status": lambda args: {"alive": True}})
    server.start()
    try:
        with pytest.raises(ControlError, match="internal error"):
            call(server.path, "purge")
        assert call(server.path, "status")["alive"] is True
    finally:
        server.stop()
