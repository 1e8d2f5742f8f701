"""How tests/vectors/keystore-v1 was made: with keystore v1 itself (edge at commit 51506a7),
through the real command line, so the migration is tested on what v1 really wrote.

    git worktree add /tmp/v1tree 51506a7 && python tests/vectors/keystore-v1/make.py

It leaves /tmp/v1gen/work/{data, root.key, root.key.next}: a file vault whose last ratchet
was interrupted, and a data folder holding sessions in every state: complete, still
"recording" (the agent was killed mid-session), with the audio already shredded and the
transcript kept, in buckets being re-keyed, and a forget request a crash interrupted.
Retention is 3650 days, so nothing in it expires before 2036.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

V1_TREE = Path("/tmp/v1tree")
WORK = Path("/tmp/v1gen/work")
sys.path[:0] = [str(V1_TREE / "tests"), str(V1_TREE)]

from support import Retention, Speech, file_vault, household_toml  # noqa: E402


def write_config(parent_audio: str) -> str:
    text = household_toml(
        WORK / "data",
        vault=file_vault(WORK / "root.key"),
        mode="always",
        household='max_child_audio = "3650d"\nmax_child_transcript = "3650d"',
        profiles={"parent": Retention("adult", parent_audio, "3650d"), "child": Retention("child", "3650d", "3650d")},
    )
    (WORK / "household.toml").write_text(text)
    return str(WORK / "household.toml")


def edge(*args: str, crash: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(V1_TREE), **({"EDGE_CRASH_AT": crash} if crash else {})}
    ran = subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, env=env)
    assert ran.returncode == (-9 if crash else 0), ran.stderr
    return ran


def main() -> None:
    os.umask(0o077)
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "speech").mkdir(parents=True)
    speech = Speech(WORK / "speech")
    clip = str(speech.join(speech.say("라디오"), 1.0, speech.say("메시지"), 1.0))
    config = write_config("2s")
    for _ in range(2):
        edge("--config", config, "run", "--input", clip, "--profile", "parent")
    time.sleep(3)
    edge("--config", config, "purge")  # the parent's audio is shredded, the transcripts stay
    config = write_config("3650d")
    edge("--config", config, "run", "--input", clip, "--profile", "parent")
    for _ in range(3):
        edge("--config", config, "run", "--input", clip, "--profile", "child")
    edge("--config", config, "run", "--input", clip, "--profile", "child", crash="audio.chunk:3")  # left "recording"
    sessions = json.loads(edge("--config", config, "status", "--json").stdout)["sessions"]
    child = next(s["session"] for s in sessions if s["profile"] == "child")
    edge("--config", config, "forget", "--session", child, "--yes", crash="ratchet.staged:1")  # pending, re-keying, staged root


if __name__ == "__main__":
    main()
