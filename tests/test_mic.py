"""The real microphone path: sounddevice recording a PulseAudio virtual microphone
while `paplay` speaks into it, driving a running `edge-agent run --mic`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from support import MicAgent, edge_agent, play, record, sessions_of

pytestmark = pytest.mark.mic


def test_mic_two_phrases_are_two_sessions(virtual_mic, speech, write_config):
    clip = speech.join(speech.say("메시지"), 1.0, speech.say("아버지"))
    agent = MicAgent(virtual_mic, write_config(mode="always"))
    play(virtual_mic, clip)
    time.sleep(1.5)  # trailing silence closes the second session
    sessions, stderr, code = agent.stop()
    assert code == 0, stderr
    assert [s["text"] for s in sessions] == ["메시지", "아버지"], stderr
    assert [s["end_reason"] for s in sessions] == ["silence", "silence"]
    first, second = sessions
    # Boundaries follow the clip's timeline: the speech onsets are ~2.3 s apart.
    onset_gap = second["words"][0]["start"] - first["words"][0]["start"]
    expected_gap = (speech.say("메시지").stat().st_size - 44) / 32000 + 1.0
    assert onset_gap == pytest.approx(expected_gap, abs=0.15)
    assert first["end"] < second["start"]
    assert "lost" not in stderr


def test_mic_wake_mode(virtual_mic, speech, write_config):
    clip = speech.join(speech.say("보안"), speech.say("라디오"), 0.5, speech.say("위치"))
    agent = MicAgent(virtual_mic, write_config(mode="wake"), "--profile", "child")
    play(virtual_mic, clip)
    time.sleep(1.5)
    sessions, stderr, code = agent.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert [(s["text"], s["profile"], s["rule"]) for s in sessions] == [("위치", "child", "given")]
    assert "wake phrase heard 1 time(s)" in stderr


def test_stop_finishes_the_session_in_progress(virtual_mic, speech, write_config):
    long_speech = speech.join(*[speech.say(p, pad=0.05) for p in ["라디오", "메시지", "아버지", "위치", "보안"] * 2])
    agent = MicAgent(virtual_mic, write_config(mode="always", max_session="1m"))
    player = subprocess.Popen(["paplay", str(long_speech)], env=virtual_mic)
    time.sleep(2.5)  # mid-speech
    sessions, stderr, code = agent.stop(signal.SIGTERM)
    player.wait(timeout=60)
    assert code == 0, stderr
    assert len(sessions) == 1 and sessions[0]["end_reason"] == "stopped"
    assert sessions[0]["text"].startswith("라디오 메시지")


def test_push_to_talk_by_signal(virtual_mic, speech, write_config):
    agent = MicAgent(virtual_mic, write_config(mode="push_to_talk"))
    play(virtual_mic, speech.say("보안"))  # no push yet: ignored
    time.sleep(1.2)  # paplay returns before capture has caught up; let that utterance end
    agent.process.send_signal(signal.SIGUSR1)
    time.sleep(0.2)
    play(virtual_mic, speech.say("아버지"))
    time.sleep(1.5)
    sessions, stderr, code = agent.stop()
    assert code == 0, stderr
    assert [(s["text"], s["end_reason"]) for s in sessions] == [("아버지", "silence")], stderr


def test_queue_is_bounded_and_overflow_is_counted(virtual_mic):
    """Nobody reads the queue: blocks beyond its bound are dropped and counted, not buffered."""
    from edge.audio.mic import BLOCK_SECONDS, MicSource

    with MicSource(16000, queue_seconds=0.3) as mic:
        time.sleep(1.5)
        stats = mic.stats
        queued = mic._queue.qsize()
    assert queued <= round(0.3 / BLOCK_SECONDS)
    assert stats.blocks > 30 and stats.dropped_blocks >= stats.blocks - queued - 2


def test_mic_chunks_drain_then_stop(virtual_mic, speech):
    from edge.audio.mic import MicSource

    stop = threading.Event()
    received = []
    with MicSource(16000) as mic:
        timer = threading.Timer(1.0, stop.set)
        timer.start()
        for chunk in mic.chunks(stop):
            received.append(chunk)
    total = sum(map(len, received)) / 32000
    assert 0.8 < total < 2.0


def test_missing_input_device_is_explained(virtual_mic, write_config):
    config = write_config(mode="always")
    text = config.read_text(encoding="utf-8").replace('model = "auto"', 'model = "auto"\ninput_device = "no-such-mic"')
    config.write_text(text, encoding="utf-8")
    env = {**virtual_mic, "EDGE_CONFIG": str(config)}
    result = subprocess.run([sys.executable, "-m", "edge", "run", "--mic"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1 and "no-such-mic" in result.stderr and "python -m sounddevice" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.environ.get("PULSE_SERVER")


def test_a_spoken_forget_on_the_microphone_forgets_the_speakers_last_session_only(virtual_mic, speech, write_config):
    """Rights by voice on the microphone path: "forget the last record" after a session forgets
    that session (keystore, files), leaves another profile's session alone, keeps nothing of
    itself, prints what it did as the session's text, and is audited with source voice."""
    config = write_config(mode="always")
    config.write_text(config.read_text() + '\n[voice_commands]\nforget_last = "마지막 기록 지워"\n', encoding="utf-8")
    childs = record(config, speech.say("아버지"), profile="child")
    agent = MicAgent(virtual_mic, config, "--profile", "parent")
    play(virtual_mic, speech.join(speech.say("메시지"), 1.0, speech.say("마지막 기록 지워")))
    time.sleep(1.5)  # trailing silence ends the command's session
    sessions, stderr, code = agent.stop()
    assert code == 0, stderr
    assert [(s["text"], s["profile"]) for s in sessions] == [("메시지", "parent"), ("Forgot your last request.", "parent")], stderr
    kept, command = sessions
    assert kept["audio_expires"] is not None and command["audio_expires"] is None and command["transcript_expires"] is None
    assert sessions_of(config) == childs  # the child's session survives; the parent's is gone
    data = config.parent / "data"
    assert sorted(p.name for p in (data / "recordings").iterdir()) == [f"{childs[0]}.wav.age"]
    entries = [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]
    spoken = [e["fields"] for e in entries if e["type"] == "voice.command"]
    assert [(c["command"], c["outcome"], c["profile"], c["through"], c["source"]) for c in spoken] == [
        ("forget_last", "forget", "parent", "microphone", "voice")
    ]
    fulfilled = [e["fields"] for e in entries if e["type"] == "forget.fulfilled"]
    assert [(f["request"], f["sessions"]) for f in fulfilled] == [(spoken[0]["request"], [kept["session"]])]
    assert command["session"] not in {e["fields"].get("session") for e in entries}  # the command was never a session
    verified = edge_agent("--config", str(config), "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
