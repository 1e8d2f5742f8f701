"""edge's Wyoming speech-to-text server against the peer, wyoming-vosk (issue 32 item 3).

Both servers get the same client (scripts/bench.py send_utterance: transcribe language=ko,
audio-start, 10 ms audio-chunks, audio-stop, one transcript; one utterance per connection,
one at a time, as fast as the server reads them unless --live), the same 16 kHz mono audio
and the same Vosk model files (the peer's data dir holds a symlink named
vosk-model-small-ko-0.22 to the model edge finds). Both run free dictation: edge's bench
config has an empty grammar (checked below); the peer runs without --limit-sentences /
--correct-sentences and with an empty --sentences-dir (checked below).

Per server run (a fresh server each time; start-up and model load are not counted): 2
warm-up utterances, then the server's CPU (utime+stime of every thread, /proc/PID/stat)
over N utterances, the wall time per utterance, RTF (wall / audio seconds), the median
audio-stop -> transcript latency, the transcripts, peak RSS (VmHWM) and thread count.
The servers alternate A/B over --pairs rounds; the headline is the median over rounds of
the ratio peer/edge of CPU per utterance.

wyoming-vosk is not on PyPI: scripts/bench-peer-setup.sh SOURCE puts a checkout of it
(rhasspy/wyoming-vosk; measured at aafdac2, version 1.5.0) in its own venv with its pinned
requirements, beside a data folder whose vosk-model-small-ko-0.22 is edge's model. Then:

    scripts/bench-peer-setup.sh ~/src/wyoming-vosk
    .venv/bin/python scripts/bench-peer.py [--utterances N] [--pairs P] [--wav FILE] [--live]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import bench  # noqa: E402  (scripts/bench.py, as it is)

from edge.config import load_config  # noqa: E402
from edge.pcm import PIPELINE_RATE  # noqa: E402
from edge.stt.model_path import find_model  # noqa: E402

PEER = Path(os.environ.get("EDGE_PEER", "/tmp/edge-peer"))
"""Where scripts/bench-peer-setup.sh put the peer (the same variable there)."""
PEER_PYTHON = PEER / "venv" / "bin" / "python"
PEER_DATA = PEER / "data"
PEER_SENTENCES = PEER / "sentences"  # empty: no ko.yaml, so no correction, no limit
PEER_DOWNLOAD = PEER / "download-must-not-exist"  # download_model() mkdirs it first
PEER_MODEL_NAME = "vosk-model-small-ko-0.22"  # wyoming_vosk/download.py MODELS["ko"][0]
WARMUP = 2


@dataclass
class Run:
    server: str
    cpu: float  # server CPU seconds per utterance
    wall: float  # client wall seconds per utterance (connect .. transcript)
    latencies: list[float]
    texts: list[str]
    hwm_kib: int
    threads: int
    warmup_texts: list[str]


def status(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    return "?"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def peer_command(port: int, debug: bool) -> list[str]:
    command = [
        str(PEER_PYTHON), "-m", "wyoming_vosk",
        "--uri", f"tcp://127.0.0.1:{port}",
        "--data-dir", str(PEER_DATA),
        "--download-dir", str(PEER_DOWNLOAD),
        "--sentences-dir", str(PEER_SENTENCES),
        "--language", "ko",
        "--preload-language", "ko",
    ]  # fmt: skip
    return command + (["--debug"] if debug else [])


@contextlib.contextmanager
def peer_serving(folder: Path, debug: bool) -> Iterator[tuple[int, str]]:
    """wyoming-vosk on a free TCP port, yielding (pid, uri) once it accepts; stopped with SIGINT."""
    port = free_port()
    log = folder / "peer.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(peer_command(port, debug), stdout=subprocess.DEVNULL, stderr=stderr, cwd=folder)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench-peer: wyoming-vosk did not start:\n{log.read_text(errors='replace')[-3000:]}")
            if "Ready" in log.read_text(errors="replace"):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            time.sleep(0.05)
        yield process.pid, f"tcp://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=30)
    if PEER_DOWNLOAD.exists():
        raise SystemExit(f"bench-peer: wyoming-vosk tried to download a model (it made {PEER_DOWNLOAD})")


def measure(server: str, pid: int, uri: str, pcm: bytes, count: int, live: bool) -> Run:
    """The same for both servers: WARMUP utterances, then CPU and wall over `count` of them."""
    warm = [asyncio.run(bench.send_utterance(uri, pcm, live=False))[0] for _ in range(WARMUP)]
    time.sleep(0.3)  # as bench.serve_run: the rest of start-up settles before the CPU is read
    before, start = bench.process_cpu(pid), time.perf_counter()
    answers = [asyncio.run(bench.send_utterance(uri, pcm, live)) for _ in range(count)]
    wall = (time.perf_counter() - start) / count
    time.sleep(0.2)  # as bench.serve_run: the server closes the last connection
    used = bench.process_cpu(pid) - before
    return Run(
        server,
        used / count,
        wall,
        [latency for _text, latency in answers],
        [text for text, _latency in answers],
        int(status(pid, "VmHWM").split()[0]),
        int(status(pid, "Threads")),
        warm,
    )


def run_edge(work: Path, pcm: bytes, count: int, live: bool) -> Run:
    folder = work / "edge"
    config, uri = bench.listener_config(folder)  # the bench's config, one [[wyoming]] listener (unix socket)
    grammar = load_config(config).trigger.grammar
    if grammar:
        raise SystemExit(f"bench-peer: edge's config has a grammar {grammar}: not free dictation")
    with bench.serving(config, folder) as pid:
        return measure("edge", pid, uri, pcm, count, live)


def run_peer(work: Path, pcm: bytes, count: int, live: bool, debug: bool) -> Run:
    folder = work / "peer"
    folder.mkdir()
    with peer_serving(folder, debug) as (pid, uri):
        run = measure("peer", pid, uri, pcm, count, live)
    if debug:
        print("  peer log (--peer-debug), the lines about the model:", file=sys.stderr)
        for line in (folder / "peer.log").read_text(errors="replace").splitlines():
            if any(k in line for k in ("Found", "Download", "Ready", "Loaded recognizer", "Transcript for")):
                print("   ", line[:200], file=sys.stderr)
    return run


def check_setup() -> Path:
    model = find_model("auto")
    link = PEER_DATA / PEER_MODEL_NAME
    if not link.is_dir() or link.resolve() != model.resolve():
        raise SystemExit(f"bench-peer: {link} must be a symlink to edge's model {model}: run scripts/bench-peer-setup.sh SOURCE first")
    if any(PEER_SENTENCES.iterdir()):
        raise SystemExit(f"bench-peer: {PEER_SENTENCES} must be empty (no sentence templates: free dictation)")
    if PEER_DOWNLOAD.exists():
        raise SystemExit(f"bench-peer: remove {PEER_DOWNLOAD} first (its existence marks a download attempt)")
    return model


def versions() -> str:
    peer = subprocess.run(
        [str(PEER_PYTHON), "-c", "import importlib.metadata as m; print(*(m.version(p) for p in ('wyoming_vosk', 'wyoming', 'vosk')))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    import importlib.metadata as m

    return (
        f"peer: wyoming-vosk {peer[0]} (wyoming {peer[1]}, vosk {peer[2]}); "
        f"edge: {m.version('edge')} (wyoming {m.version('wyoming')}, vosk {m.version('vosk')}); "
        f"edge git {subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", "-n", type=int, default=20, help="measured utterances per server run (default 20)")
    parser.add_argument("--pairs", type=int, default=3, help="A/B rounds, the order alternating (default 3)")
    parser.add_argument("--wav", type=Path, help="16 kHz mono 16-bit WAV (default: bench.make_utterance, espeak-ng, ~3.5 s)")
    parser.add_argument("--live", action="store_true", help="send 10 ms chunks at real-time pace (for latency), not as fast as possible")
    parser.add_argument("--peer-debug", action="store_true", help="run the peer with --debug and print its model/transcript log lines")
    parser.add_argument("--json", type=Path, help="also write the runs as JSON here")
    args = parser.parse_args()

    model = check_setup()
    info = bench.machine()
    print(f"bench-peer: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['date']}")
    print(f"model: {model} (peer: {PEER_DATA / PEER_MODEL_NAME} -> same folder)")
    print(versions())
    print("peer command:", " ".join(peer_command(0, args.peer_debug)).replace(":0 ", ":PORT "))
    with tempfile.TemporaryDirectory(prefix="edge-bench-peer-") as scratch:
        work = Path(scratch)
        if args.wav:
            pcm = bench.wav_pcm(args.wav)
            source = str(args.wav)
        else:
            silence_end = bench.config_for(work, work / "probe-data").trigger.silence_end.total_seconds()
            pcm = bench.wav_pcm(bench.make_utterance(work, silence_end))
            source = f"bench.make_utterance (espeak-ng '{' '.join(bench.COMMAND)}', trail {silence_end} s)"
        seconds = len(pcm) / (2 * PIPELINE_RATE)
        mode = "live (10 ms chunks at real-time pace)" if args.live else "as fast as possible"
        print(f"audio: {source}, {seconds:.2f} s; {args.utterances} utterances per run after {WARMUP} warm-up, {mode}, one at a time")
        print("grammar: none for both (edge config trigger.grammar = [], peer without --limit-sentences/--correct-sentences)")
        rounds: list[dict[str, Run]] = []
        for index in range(args.pairs):
            order = ("peer", "edge") if index % 2 == 0 else ("edge", "peer")
            runs = {}
            for server in order:
                where = work / f"round{index}"
                where.mkdir(exist_ok=True)
                if server == "edge":
                    runs[server] = run_edge(where, pcm, args.utterances, args.live)
                else:
                    runs[server] = run_peer(where, pcm, args.utterances, args.live, args.peer_debug)
                run = runs[server]
                print(
                    f"round {index + 1} {server:4}: CPU {run.cpu * 1e3:7.1f} ms/utt  wall {run.wall * 1e3:7.1f} ms/utt  "
                    f"RTF {run.wall / seconds:.3f}  latency med {statistics.median(run.latencies) * 1e3:6.1f} ms  "
                    f"VmHWM {run.hwm_kib / 1024:.0f} MiB  threads {run.threads}"
                )
            rounds.append(runs)

    print()
    for server in ("edge", "peer"):
        runs = [r[server] for r in rounds]
        texts = sorted({t for run in runs for t in run.texts + run.warmup_texts})
        print(
            f"{server}: CPU/utt median {statistics.median(r.cpu for r in runs) * 1e3:.1f} ms "
            f"(spread {min(r.cpu for r in runs) * 1e3:.1f}-{max(r.cpu for r in runs) * 1e3:.1f}), "
            f"wall/utt {statistics.median(r.wall for r in runs) * 1e3:.1f} ms, RTF {statistics.median(r.wall for r in runs) / seconds:.3f}, "
            f"latency median {statistics.median(x for r in runs for x in r.latencies) * 1e3:.1f} ms, "
            f"peak RSS max {max(r.hwm_kib for r in runs) / 1024:.0f} MiB"
        )
        print(f"  transcripts ({len(texts)} distinct): {json.dumps(texts, ensure_ascii=False)}")
    ratios = [r["peer"].cpu / r["edge"].cpu for r in rounds]
    print(
        f"\nCPU per utterance, peer/edge (median of {len(ratios)} A/B rounds): {statistics.median(ratios):.3f}x "
        f"(spread {min(ratios):.3f}-{max(ratios):.3f}; >1 means edge uses less)"
    )
    print(f"no download: {PEER_DOWNLOAD} never created; data dir holds only {sorted(p.name for p in PEER_DATA.iterdir())}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": info, "audio_seconds": seconds, "utterances": args.utterances, "live": args.live,
                 "rounds": [{k: vars(v) for k, v in r.items()} for r in rounds], "ratio_peer_over_edge": ratios},
                ensure_ascii=False, indent=1,
            ),
            encoding="utf-8",
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
