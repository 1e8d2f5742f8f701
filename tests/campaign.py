"""The kill -9 campaign, shared by tests/test_faults.py (a quick run in CI) and
scripts/fault-campaign.py (the long run).

One data folder lives through every trial, like a device. A trial runs the real agent
on speech with a crash point armed at random (edge/faults.py: SIGKILL at the Nth time
the process reaches it), then restarts as a device would (`purge`), waits until what
that trial recorded is due, purges again, and checks the promises:
- no plaintext audio (any 1 KiB window of the spoken PCM) and no transcript word in any file;
- nothing past its retention opens with a key the device holds, and nothing overdue is held;
- the audit chain verifies, and what the log says agrees with the data;
- the trusted clock is no further ahead of the real time than the last jump asked.

A "monotonic jump" trial runs a purge under libfaketime with its monotonic clock faked too
(Debian's default: `faketime -f +Ns` puts CLOCK_MONOTONIC at the faked epoch, decades past
the kernel's uptime): the trusted clock must refuse that delta and move N s at most.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.faults import POINTS
from edge.retention.clock import TrustedClock

from support import ROOT, WORDS, Retention, WarmAgent, WarmProcess, faketime, household_toml, pcm_of, plaintext_files

HITS = {
    "audio.chunk": 70,  # one per 30 ms frame written: two phrases are about 80
    "session.finish": 2,
    "replace.temp": 5,
    "replace.renamed": 5,
    "ratchet.staged": 1,
    "shred.keys": 1,
    "shred.files": 3,
    "audit.torn": 6,
}
"""For each crash point, the armed hit is drawn from 1..this (a trial may not reach it)."""
RECORDING_POINTS = tuple(point for point in POINTS if not point.startswith(("migrate.", "rewind.")))
"""What recording and starting reach (migrate.filled only on a v1 folder: tests/test_keystore.py;
migrate.moved only in `vault migrate`: tests/test_tpm.py; rewind.* only in `clock rewind`:
tests/test_clock.py)."""
SHRED_POINTS = ("replace.temp", "replace.renamed", "ratchet.staged", "shred.keys", "shred.files", "audit.torn")
"""The crash points a purge of due data reaches."""
KEEP = 2.0
"""Seconds the campaign's profile keeps transcripts (audio: half of that)."""

HUNG = 120
"""Seconds after which a command of a trial is taken for hung (they take a few)."""
JUMP = "monotonic jump"
"""The fault of a purge whose monotonic clock lies (counted beside the crash points)."""
JUMP_MOST = 600
"""Seconds a jump moves the wall clock at most (`faketime -f +10m`)."""
PHASES = ("record", "shred", "jump")

PROFILES = {"child": Retention("child", "1s", "2s")}
"""The campaign's household: one child profile that keeps audio 1 s and transcripts 2 s."""


@dataclass
class Tally:
    trials: int = 0
    faults: int = 0
    """Trials in which the armed crash point was reached and the agent was killed."""
    by_point: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        points = ", ".join(f"{name} {count}" for name, count in sorted(self.by_point.items()))
        return f"{self.trials} trials, {self.faults} faults injected ({points}), {len(self.failures)} failures"


def make_clip(folder: Path) -> Path:
    """Two phrases with a second of silence between: two sessions per run."""
    parts = []
    for index, word in enumerate(WORDS):
        raw, out = folder / f"w{index}.raw.wav", folder / f"w{index}.wav"
        subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), word], check=True)
        subprocess.run(["sox", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out), "pad", "0.5", "1.0"], check=True)
        parts.append(str(out))
    clip = folder / "clip.wav"
    subprocess.run(["sox", *parts, str(clip)], check=True)
    return clip


class Campaign:
    def __init__(self, folder: Path, clip: Path, seed: int) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.config = folder / "household.toml"
        self.config.write_text(household_toml(self.data, profiles=PROFILES), encoding="utf-8")
        self.clip = clip
        self.pcm = pcm_of(clip)
        self.random = random.Random(seed)
        self.tally = Tally()

    def edge(self, *args: str, crash: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "EDGE_CONFIG": str(self.config)}
        env.pop("EDGE_CRASH_AT", None)
        if crash:
            env["EDGE_CRASH_AT"] = crash
        env["PYTHONFAULTHANDLER"] = "1"  # a hung command is made to say where it hung (below)
        process: subprocess.Popen[str] | WarmProcess
        if WarmAgent.serves(env):
            process = WarmProcess(list(args), env)
        else:
            process = subprocess.Popen(
                [sys.executable, "-m", "edge", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
            )
        try:
            stdout, stderr = process.communicate(timeout=HUNG)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            stdout, stderr = process.communicate()
            raise AssertionError(f"edge-agent {' '.join(args)} hung for {HUNG} s:\n{stderr[-6000:]}") from None
        return subprocess.CompletedProcess(process.args, process.wait(), stdout, stderr)

    def trial(self, point: str | None = None, hit: int | None = None, phase: str | None = None) -> None:
        """One crash: while recording (the agent on speech) or while shredding (a purge of due
        data); or one monotonic jump (a purge whose monotonic clock is faked)."""
        phase = phase or self.random.choice(PHASES)
        if phase == "jump":
            self.jump()
            return
        point = point or self.random.choice(RECORDING_POINTS if phase == "record" else SHRED_POINTS)
        hit = hit or self.random.randint(1, HITS[point])
        label = f"trial {self.tally.trials + 1} ({phase}, {point}:{hit})"
        self.tally.trials += 1
        record = ("run", "--input", str(self.clip), "--profile", "child")
        if phase == "shred":
            clean = self.edge(*record)
            if clean.returncode != 0:
                self.tally.failures.append(f"{label}: the agent failed: {clean.stderr[-800:]}")
            time.sleep(KEEP + 1.2)
            crashed = self.edge("purge", crash=f"{point}:{hit}")
        else:
            crashed = self.edge(*record, crash=f"{point}:{hit}")
        if crashed.returncode == -9:
            self.tally.faults += 1
            self.tally.by_point[point] = self.tally.by_point.get(point, 0) + 1
        elif crashed.returncode != 0 or "Traceback" in crashed.stderr:
            self.tally.failures.append(f"{label}: failed without a crash: {crashed.stderr[-800:]}")
        self.recover(label)

    def jump(self, seconds: int | None = None) -> None:
        """A recording, then `faketime -f +Ns edge-agent purge` with the monotonic clock faked."""
        seconds = seconds or self.random.randint(1, JUMP_MOST)
        label = f"trial {self.tally.trials + 1} (jump +{seconds}s)"
        self.tally.trials += 1
        clean = self.edge("run", "--input", str(self.clip), "--profile", "child")
        if clean.returncode != 0:
            self.tally.failures.append(f"{label}: the agent failed: {clean.stderr[-800:]}")
        jumped = faketime(f"+{seconds}s", "purge", config=self.config, monotonic=True)
        self.tally.faults += 1
        self.tally.by_point[JUMP] = self.tally.by_point.get(JUMP, 0) + 1
        if jumped.returncode != 0 or "Traceback" in jumped.stderr:
            self.tally.failures.append(f"{label}: the purge failed: {jumped.stderr[-800:]}")
        self.recover(label)

    def recover(self, label: str) -> None:
        """Restart like a device (purge), let everything recorded fall due, purge, check."""
        first = self.edge("purge")
        if first.returncode != 0:
            self.tally.failures.append(f"{label}: purge after the crash failed: {first.stderr[-800:]}")
            return
        time.sleep(KEEP + 1.2)
        second = self.edge("purge")
        if second.returncode != 0:
            self.tally.failures.append(f"{label}: second purge failed: {second.stderr[-800:]}")
            return
        self.tally.failures.extend(f"{label}: {problem}" for problem in self.check())

    def check(self) -> list[str]:
        problems = []
        leaked = plaintext_files(self.data, self.pcm, WORDS)
        if leaked:
            problems.append(f"plaintext at rest in {leaked}")
        status = self.edge("status", "--json")
        if status.returncode != 0:
            return problems + [f"status failed: {status.stderr[-500:]}"]
        now = datetime.now(timezone.utc)
        for session in json.loads(status.stdout)["sessions"]:
            for kind in ("audio_expires", "transcript_expires"):
                if session[kind] and datetime.fromisoformat(session[kind]) < now:
                    problems.append(f"session {session['session']} is held past its {kind} {session[kind]}")
        ahead = (TrustedClock(self.data).now() - now).total_seconds()
        if ahead > JUMP_MOST + 5:
            problems.append(f"the trusted clock is {ahead:.0f} s ahead of the real time (a jump moves it {JUMP_MOST} s at most)")
        verify = self.edge("audit", "verify", "--json")
        result: dict[str, Any] = (
            json.loads(verify.stdout) if verify.stdout.strip() else {"ok": False, "problems": [{"message": verify.stderr}]}
        )
        if not result["ok"]:
            problems += [f"audit verify: {p['message']}" for p in result["problems"]]
        return problems
