"""The command line, end to end, as a user runs it."""

import json
import subprocess
import sys

import pytest

from support import ROOT, edge_agent

COMMANDS = [[], ["transcribe"], ["run"], ["demo"], ["voices"], ["voices", "enroll"], ["voices", "list"], ["voices", "forget"]]
COMMANDS += [["voices", "check"], ["policy"], ["profile"]]


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


def test_a_spoken_command_in_a_file_is_a_command_too(speech, write_config):
    """`run --input` is the microphone's pipeline: a command in the file forgets the session
    before it, and its audit line says it was heard in a file."""
    path = speech.join(speech.say("메시지"), 1.0, speech.say("마지막 기록 지워"))
    config = write_config(mode="always")
    config.write_text(config.read_text() + '\n[voice_commands]\nforget_last = "마지막 기록 지워"\n')
    result = edge_agent("--config", str(config), "run", "--input", str(path), "--json", "--profile", "parent")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in lines] == ["메시지", "Forgot your last request."]
    entries = [json.loads(line) for line in (config.parent / "data" / "audit.jsonl").read_text().splitlines()]
    assert [(e["fields"]["through"], e["fields"]["outcome"]) for e in entries if e["type"] == "voice.command"] == [("file", "forget")]


def test_run_unknown_profile_fails_before_listening(speech, write_config):
    result = edge_agent("--config", str(write_config()), "run", "--input", str(speech.say("메시지")), "--profile", "grandma")
    assert result.returncode == 2  # a command-line mistake (README)
    assert "--profile 'grandma'" in result.stderr and "no such profile" in result.stderr and "parent, child" in result.stderr


USAGE_ERRORS = [
    (["run"], "one of the arguments --input --mic is required"),
    (["run", "--input", "a.wav", "--mic"], "not allowed with argument"),
    (["transcribe"], "the following arguments are required: AUDIO"),
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


EXIT_CODES = [
    # a name or option on the command line that names nothing: 2
    (["run", "--input", "{clip}", "--profile", "grandma"], 2, "--profile 'grandma'"),
    (["forget", "--profile", "grandma", "--yes"], 2, "no profile 'grandma'"),
    (["export", "--session", "0000000000000000", "--out", "{folder}/x.wav", "--purpose", "playback"], 2, "no retained session"),
    (["voices", "forget", "grandma", "--yes"], 2, "no voice is enrolled for 'grandma'"),
    (["audit", "show", "--type", "shredd"], 2, "did you mean 'shred'?"),
    (["run", "--input", "{clip}", "--no-such-option"], 2, "unrecognized arguments"),
    (["--config", "{folder}/missing.toml"], 2, "usage: edge-agent"),  # no command at all
    # a problem with the input or the config: 1
    (["run", "--input", "{folder}/missing.wav"], 1, "missing.wav"),
    (["--config", "{folder}/missing.toml", "status"], 1, "edge-agent init FOLDER` writes a household config of your own"),
]


@pytest.mark.parametrize(("args", "code", "message"), EXIT_CODES, ids=lambda v: " ".join(v) if isinstance(v, list) else str(v))
def test_exit_codes_follow_the_readme(write_config, speech, tmp_path, args, code, message):
    """README: 1 for a problem with input, config, model or microphone; 2 for a command-line mistake."""
    config = write_config()
    values = {"clip": str(speech.say("메시지")), "folder": str(tmp_path)}
    full = [part.format(**values) for part in args]
    result = edge_agent(*([] if full[0] == "--config" else ["--config", str(config)]), *full)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_init_writes_a_household_of_ones_own_that_works(tmp_path):
    folder = tmp_path / "edge-try"
    made = edge_agent("init", str(folder))
    assert made.returncode == 0, made.stderr
    # what it says to try is typed as printed, from a clone (edge-agent is not on PATH here) ...
    [run, what_if] = [line.split("#")[0].split() for line in made.stdout.splitlines() if line.startswith("    ")]
    assert run[0] == ".venv/bin/edge-agent" and run[-2:] == ["--profile", "parent"], made.stdout
    kept = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0 and kept.stdout.count("parent (given)") == 2, kept.stderr  # ... and keeps something
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "data").iterdir()}
    forecast = subprocess.run(what_if, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert forecast.returncode == 0, forecast.stderr
    assert "shredded by then (1):" in forecast.stdout and "parent     audio       2 session(s)" in forecast.stdout
    assert "still kept then (1):" in forecast.stdout and "parent     transcript  2 session(s)" in forecast.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "data").iterdir()} == before  # a what-if writes nothing
    config = folder / "household.toml"
    assert config.stat().st_mode & 0o777 == 0o600 and folder.stat().st_mode & 0o777 == 0o700
    text = config.read_text(encoding="utf-8")
    assert f'data_dir = "{folder / "data"}"' in text and 'backend = "file"' in text and "/var/lib/edge" not in text
    ran = edge_agent("--config", str(config), "run", "--input", str(ROOT / "edge" / "data" / "demo.wav"))
    assert ran.returncode == 0, ran.stderr
    assert (folder / "root.key").exists() and (folder / "data" / "keystore.db").exists()
    again = edge_agent("init", str(folder))
    assert again.returncode == 2 and "exists already" in again.stderr and config.read_text(encoding="utf-8") == text


def test_messages_name_the_program_as_it_can_be_typed_here():
    """From a clone, `.venv/bin/edge-agent`; where PATH finds this very program (an installed
    device), the bare name."""
    import os

    from edge.invocation import program

    here = subprocess.run(
        [sys.executable, "-c", "from edge.invocation import program, python; print(program(), python())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert here.stdout.split() == [".venv/bin/edge-agent", ".venv/bin/python"], here.stdout + here.stderr
    on_path = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    installed = subprocess.run(
        [sys.executable, "-c", "from edge.invocation import program; print(program())"],
        cwd="/",
        env=on_path,
        capture_output=True,
        text=True,
    )
    assert installed.stdout.strip() == "edge-agent", installed.stderr
    assert program()  # in this process too


def test_status_at_tells_when_each_profile_goes_and_why(write_config, speech):
    from support import Retention, record

    config = write_config(parent=Retention("adult", "24h", "30d", inactive_after="2h"), child=Retention("child", "1h", "7d"))
    record(config, speech.say("메시지"), profile="child")
    record(config, speech.say("보안"), profile="parent")
    soon = json.loads(edge_agent("--config", str(config), "status", "--at", "+90m", "--json").stdout)
    gone = sorted((f["profile"], f["what"], f["reason"]) for f in soon["shredded"])
    assert gone == [("child", "audio", "expired")], soon
    later = json.loads(edge_agent("--config", str(config), "status", "--at", "+3h", "--json").stdout)
    assert sorted((f["profile"], f["what"], f["reason"]) for f in later["shredded"]) == [
        ("child", "audio", "expired"),
        ("parent", "audio", "inactive"),  # unheard for 2 h: before its 24 h expiry
        ("parent", "transcript", "inactive"),
    ]
    assert [(f["profile"], f["what"]) for f in later["kept"]] == [("child", "transcript")]
    text = edge_agent("--config", str(config), "status", "--at", "+3h").stdout
    assert "the profile unheard for inactive_after" in text and "its retention ends" in text
    for bad in ("+3", "tomorrow", "+-1h"):
        refused = edge_agent("--config", str(config), "status", "--at", bad)
        assert refused.returncode == 2 and "--at" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr


def test_exporting_a_forgotten_session_says_when_and_by_which_request(write_config, speech, tmp_path):
    from support import record

    config = write_config()
    [kept, gone] = record(config, speech.join(speech.say("메시지"), 1.0, speech.say("보안")))
    forgot = edge_agent("--config", str(config), "forget", "--session", gone, "--yes")
    assert forgot.returncode == 0, forgot.stderr
    out = ["--out", str(tmp_path / "x.wav"), "--purpose", "review"]
    refused = edge_agent("--config", str(config), "export", "--session", gone, *out)
    assert refused.returncode == 2 and f"there is no retained session '{gone}': it was forgotten at" in refused.stderr
    assert f"the request to forget session {gone}" in refused.stderr, refused.stderr
    assert edge_agent("--config", str(config), "export", "--session", kept, *out).returncode == 0


def test_purge_dry_run_lists_what_is_due_and_writes_nothing(write_config, speech):
    import time

    from support import Retention, record

    config = write_config(child=Retention("child", "2s", "1h"))
    record(config, speech.say("메시지"), profile="child")
    time.sleep(2.5)
    data = config.parent / "data"
    before = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    dry = edge_agent("--config", str(config), "purge", "--dry-run")
    assert dry.returncode == 0 and "shredded by then (1):" in dry.stdout and "overdue: at the next sweep" in dry.stdout, dry.stdout
    later = edge_agent("--config", str(config), "purge", "--dry-run", "--at", "+2h").stdout
    assert "shredded by then (2):" in later and "child      transcript" in later
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == before  # nothing written, not even the audit log
    assert "shredded audio bucket" in edge_agent("--config", str(config), "purge").stdout  # the real one does it
    alone = edge_agent("--config", str(config), "purge", "--at", "+1h")
    assert alone.returncode == 2 and "--at goes with --dry-run" in alone.stderr
