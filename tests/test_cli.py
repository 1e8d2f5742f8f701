"""The command line, end to end, as a user runs it."""

import json
import subprocess
import sys

import pytest

from support import ROOT, edge_agent

COMMANDS = [[], ["transcribe"], ["run"], ["demo"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_every_command_has_help(command):
    result = edge_agent(*command, "--help")
    assert result.returncode == 0
    assert "usage: edge-agent" in result.stdout and len(result.stdout.splitlines()) > 4


def test_console_script_and_module_agree():
    script = ROOT / ".venv" / "bin" / "edge-agent"
    exe = script if script.exists() else None
    module = edge_agent("--version")
    assert module.returncode == 0 and module.stdout.startswith("edge ")
    if exe is not None:
        assert subprocess.run([str(exe), "--version"], capture_output=True, text=True).stdout == module.stdout


def test_transcribe_json(speech):
    result = edge_agent("transcribe", str(speech.say("위치")), "--grammar", "위치", "보안", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["text"] == "위치"
    assert [set(w) for w in data["words"]] == [{"word", "start", "end", "conf"}]


def test_transcribe_plain_text(speech):
    result = edge_agent("transcribe", str(speech.say("보안")), "--grammar", "위치", "보안")
    assert result.returncode == 0 and result.stdout == "보안\n"


def test_transcribe_rejects_unknown_grammar_word(speech):
    result = edge_agent("transcribe", str(speech.say("보안")), "--grammar", "보안", "qwertyuiop")
    assert result.returncode == 1 and "qwertyuiop" in result.stderr and "Traceback" not in result.stderr


def test_run_input_json_lines(speech, write_config):
    path = speech.join(speech.say("메시지"), 1.0, speech.say("아버지"))
    config = write_config(mode="always")
    result = edge_agent("--config", str(config), "run", "--input", str(path), "--json", "--profile", "parent")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["text"], r["profile"], r["rule"]) for r in lines] == [("메시지", "parent", "given"), ("아버지", "parent", "given")]
    assert len({r["session"] for r in lines}) == 2
    assert all(len(r["session"]) == 16 for r in lines)
    assert "2 session(s)" in result.stderr


def test_run_unknown_profile_fails_before_listening(speech, write_config):
    result = edge_agent("--config", str(write_config()), "run", "--input", str(speech.say("메시지")), "--profile", "grandma")
    assert result.returncode == 1
    assert "no profile named 'grandma'" in result.stderr and "parent, child" in result.stderr


USAGE_ERRORS = [
    (["run"], "one of the arguments --input --mic is required"),
    (["run", "--input", "a.wav", "--mic"], "not allowed with argument"),
    (["transcribe"], "the following arguments are required: WAV"),
    (["fly"], "invalid choice: 'fly'"),
]


@pytest.mark.parametrize("args,expected", USAGE_ERRORS, ids=lambda x: str(x))
def test_usage_errors_exit_2(args, expected):
    result = edge_agent(*args)
    assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr


def test_model_missing_is_explained(tmp_path, speech):
    config = tmp_path / "household.toml"
    config.write_text(
        (ROOT / "configs" / "household.example.toml")
        .read_text(encoding="utf-8")
        .replace('model = "auto"', f'model = "{tmp_path / "no-model"}"'),
        encoding="utf-8",
    )
    result = edge_agent("--config", str(config), "transcribe", str(speech.say("보안")))
    assert result.returncode == 1 and "does not exist" in result.stderr and "[device] model" in result.stderr


def test_demo_shows_the_wake_sessions():
    result = edge_agent("demo")
    assert result.returncode == 0, result.stderr
    sessions = [line for line in result.stdout.splitlines() if "[silence]" in line]
    assert len(sessions) == 2
    assert sessions[0].endswith("메시지") and sessions[1].endswith("위치")
    assert "child (given)" in sessions[0]
    assert "4 sealed file(s)" in result.stdout
    assert "root key was destroyed" in result.stdout


def test_python_dash_m_edge_runs_outside_the_repo(tmp_path):
    result = subprocess.run([sys.executable, "-m", "edge", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "transcribe" in result.stdout
