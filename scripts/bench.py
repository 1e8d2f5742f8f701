"""edge benchmarks: what privacy costs over bare Vosk, and how shredding and verification scale.

Run with scripts/bench.sh (sets up, then runs this). Every comparison is a ratio
measured in the same run on the same machine; absolute times are printed for
context only. Prints one table, and the same as JSON with --json FILE.

    scripts/bench.sh [--quick] [--json FILE] [--pairs N] [--utterances K] [--repeat N] [--only WORD]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from edge import wiring
from edge.audit.log import AuditLog
from edge.config import Config, load_config
from edge.crypto.age import Identity, StreamWriter
from edge.crypto.vault import FileVault
from edge.events import AuditEvent, ConfigLoaded, SessionCreated, SessionSealed
from edge.pcm import FRAME_BYTES, PIPELINE_RATE
from edge.policy import Tag
from edge.stt.model_path import find_model
from edge.testing import file_vault, household_toml
from edge.testing import populate as populate_keystore
from edge.transcript import Transcript
from edge.values import TagRule

if TYPE_CHECKING:
    from edge.store.records import Voiceprint
    from edge.stt.recognizer import SpeechModel
    from edge.voice.encoder import SpeakerEncoder


PHRASES = ["라디오", "메시지", "아버지", "위치", "보안"]


@dataclass
class Row:
    measure: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""


class BenchError(SystemExit):
    """A measurement whose result is wrong: the bench stops and says which, exit 1 (never an
    `assert`, which `python -O` removes and which says nothing to the reader)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"bench: {message}")


def expect(holds: bool, message: str) -> None:
    """Stop the bench with `message` unless the result `holds`."""
    if not holds:
        raise BenchError(message)


# -- inputs -----------------------------------------------------------------------


def make_speech(folder: Path, seconds: float) -> Path:
    """About `seconds` of Korean speech (espeak-ng), short pauses, 16 kHz mono WAV."""
    parts = []
    for index, phrase in enumerate(PHRASES):
        path = folder / f"p{index}.wav"
        subprocess.run(["espeak-ng", "-v", "ko", "-w", str(path), phrase], check=True)
        parts.append(path)
    gap = folder / "gap.wav"
    subprocess.run(["sox", "-n", "-r", "22050", "-c", "1", str(gap), "trim", "0", "0.3"], check=True)
    sequence, length = [], 0.0
    while length < seconds:
        for path in parts:
            sequence += [str(path), str(gap)]
            length += float(subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True).stdout) + 0.3
    joined = folder / "speech.wav"
    subprocess.run(["sox", "-D", *sequence, "-r", str(PIPELINE_RATE), "-c", "1", "-b", "16", str(joined)], check=True)
    return joined


def write_config(folder: Path, data_dir: Path, mode: str = "always", grammar: list[str] | None = None) -> Path:
    """The tests' household template: parent 24h/30d, child 1h/7d, a file vault in `folder`."""
    path = folder / "household.toml"
    text = household_toml(data_dir, vault=file_vault(folder / "root.key"), mode=mode, grammar=grammar or [])
    path.write_text(text, encoding="utf-8")
    return path


def config_for(work: Path, data_dir: Path) -> Config:
    return load_config(write_config(work, data_dir))


def child_cpu(command: list[str]) -> tuple[float, float]:
    """(CPU seconds user+sys, wall seconds) of one command, with the children it waited for."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"bench: {' '.join(command)} failed:\n{stderr[-2000:]}")
    return usage.ru_utime + usage.ru_stime, wall


# -- 1. overhead against vosk-transcriber --------------------------------------------


def overhead(work: Path, speech: Path, pairs: int) -> list[Row]:
    model = find_model("auto")
    venv_bin = Path(sys.executable).parent
    edge_cpu, peer_cpu, edge_wall, ratios = [], [], [], []
    for pair in range(pairs):
        data = work / f"overhead-{pair}"
        config = write_config(work, data)
        edge_cmd = [str(venv_bin / "edge-agent"), "--config", str(config), "run", "--input", str(speech), "--profile", "parent"]
        peer_cmd = [str(venv_bin / "vosk-transcriber"), "--model", str(model), "-i", str(speech), "-o", str(work / "peer.txt")]
        first, second = (edge_cmd, peer_cmd) if pair % 2 == 0 else (peer_cmd, edge_cmd)  # alternate A/B
        (work / "peer.txt").unlink(missing_ok=True)
        a = child_cpu(first)
        b = child_cpu(second)
        if not (work / "peer.txt").exists():  # without ffmpeg it says so and exits 0, having decoded nothing
            raise SystemExit("bench: vosk-transcriber transcribed nothing: install ffmpeg (scripts/bench.sh does)")
        (edge_run, peer_run) = (a, b) if first is edge_cmd else (b, a)
        edge_cpu.append(edge_run[0])
        peer_cpu.append(peer_run[0])
        edge_wall.append(edge_run[1])
        ratios.append(edge_run[0] / peer_run[0])
        shutil.rmtree(data, ignore_errors=True)
    ratio = statistics.median(ratios)
    return [
        Row(
            "CPU time: edge-agent run / vosk-transcriber (median of pairs)",
            round(ratio, 3),
            "x",
            "<= 1.00",
            ratio <= 1.00,
            f"{pairs} A/B pairs; edge {statistics.median(edge_cpu):.1f} s, vosk-transcriber {statistics.median(peer_cpu):.1f} s CPU "
            f"for {audio_seconds(speech):.0f} s of speech; sealing, keystore and audit on",
        ),
        Row("edge-agent run: speed", round(audio_seconds(speech) / statistics.median(edge_wall), 1), "x real time"),
    ]


def audio_seconds(path: Path) -> float:
    return (path.stat().st_size - 44) / (2 * PIPELINE_RATE)


# -- 2. shred scale, 4. boot catch-up --------------------------------------------------


def populate(
    config: Config,
    sessions: int,
    vault: FileVault,
    span: timedelta,
    end: datetime,
    files: bool = True,
    before_end: timedelta = timedelta(days=30),
) -> int:
    """`sessions` sessions (edge.testing.populate; overdue at `end` unless `before_end` says otherwise)
    in the config's data folder. Returns the bucket count."""
    keystore, _audit = wiring.open_store(config, vault=vault)
    buckets = populate_keystore(keystore, sessions, span, end, config.device.data_dir if files else None, before_end)
    keystore.close()
    return buckets


def shred_scale(work: Path, sizes: list[int]) -> list[Row]:
    """Each size twice: the crypto-shred alone (keys destroyed, keystore re-sealed under a new
    root, audited; no files), and the whole purge including deleting the ciphertext files."""
    rows = []
    for sessions in sizes:
        for files in (False, True):
            data_dir = work / f"shred-{sessions}-{files}"
            config = config_for(work, data_dir)
            vault = FileVault(work / f"shred-{sessions}-{files}.key")
            buckets = populate(config, sessions, vault, timedelta(hours=48), datetime.now(timezone.utc), files)
            shredder = wiring.make_shredder(config, vault)
            start = time.perf_counter()
            report = shredder.sweep()
            seconds = time.perf_counter() - start
            shredded = sum(len(b.sessions) for b in report.buckets)
            expect(shredded == 2 * sessions, f"purge of {sessions:,} sessions shredded {shredded:,} of {2 * sessions:,} session keys")
            deleted = 2 * sessions if files else 0
            expect(
                report.files_deleted == deleted, f"purge of {sessions:,} sessions deleted {report.files_deleted:,} files, not {deleted:,}"
            )
            what = f"+ deleting {report.files_deleted:,} files" if files else "keys destroyed (crypto-shred)"
            target = "< 1 s" if sessions == 100_000 and not files else ""
            rows.append(
                Row(
                    f"purge {sessions:,} sessions / {buckets:,} buckets: {what}",
                    round(seconds, 3),
                    "s",
                    target,
                    seconds < 1 if target else None,
                    f"{seconds / buckets * 1e3:.2f} ms/bucket, {seconds / sessions * 1e6:.1f} us/session",
                )
            )
            shutil.rmtree(data_dir)
    return rows


def purge_vs_find(work: Path, sessions: int, pairs: int) -> list[Row]:
    """The whole purge of `sessions` overdue sessions and their 2 x `sessions` files in a clean
    folder (files-clean: as the agent's folder is after its first sweep, so the purge deletes
    by name and lists nothing) against `find -delete` of the same files, in A/B pairs: each
    pair restores the folder and its root key from one copy first, the order alternating."""
    data_dir, key = work / "pvf", work / "pvf.key"
    config = config_for(work, data_dir)
    wiring.make_shredder(config, FileVault(key)).sweep()  # an empty folder swept: clean
    populate(config, sessions, FileVault(key), timedelta(hours=48), datetime.now(timezone.utc))
    expect((data_dir / "files-clean").exists(), "the folder is not clean after populate")
    pristine = work / "pvf-pristine"
    shutil.copytree(data_dir, pristine, symlinks=True)
    shutil.copy2(key, work / "pvf-pristine.key")
    purge_s, find_s, beyond = [], [], []
    for pair in range(pairs):
        seconds = {}
        for what in ("purge", "find") if pair % 2 == 0 else ("find", "purge"):
            shutil.rmtree(data_dir)
            shutil.copytree(pristine, data_dir, symlinks=True)
            shutil.copy2(work / "pvf-pristine.key", key)
            subprocess.run(["sync"], check=True)
            start = time.perf_counter()
            if what == "purge":
                report = wiring.make_shredder(config, FileVault(key)).sweep()
                expect(report.files_deleted == 2 * sessions, f"the purge deleted {report.files_deleted:,} files, not {2 * sessions:,}")
            else:
                subprocess.run(["find", str(data_dir / "recordings"), str(data_dir / "transcripts"), "-type", "f", "-delete"], check=True)
            seconds[what] = time.perf_counter() - start
        purge_s.append(seconds["purge"])
        find_s.append(seconds["find"])
        beyond.append(seconds["purge"] - seconds["find"])
    shutil.rmtree(data_dir)
    shutil.rmtree(pristine)
    extra = statistics.median(beyond)
    ratios = [a / b for a, b in zip(purge_s, find_s, strict=True)]
    return [
        Row(
            f"purge {sessions:,} sessions + {2 * sessions:,} files, beyond find -delete of the same files",
            round(extra, 3),
            "s",
            "< 0.5 s",
            extra < 0.5,
            f"{pairs} A/B pairs, spread {min(beyond):.3f}-{max(beyond):.3f}; purge {statistics.median(purge_s):.2f} s, "
            f"find -delete {statistics.median(find_s):.2f} s (wall, medians); ratio {statistics.median(ratios):.2f} "
            f"(spread {min(ratios):.2f}-{max(ratios):.2f}); a clean folder (files-clean): deleted by name, nothing listed",
        )
    ]


class NullAudit:
    """The audit log is not what the commit benchmark measures (it has its own rows)."""

    def append(self, event: AuditEvent) -> dict[str, object]:
        return {}

    def append_many(self, events: Sequence[AuditEvent], checkpoint: bool = False) -> list[dict[str, object]]:
        return []


def _written() -> int:
    """Bytes this process has passed to write() so far (/proc/self/io wchar)."""
    return int(next(line.split()[1] for line in Path("/proc/self/io").read_text().splitlines() if line.startswith("wchar")))


def commit_times(config: Config, vault: FileVault, sessions: int) -> tuple[list[float], float]:
    """The real recorder registering a session and marking it sealed (two transactions, each
    fsynced), `sessions` times, in the config's data folder: (seconds per transaction, bytes
    written per transaction)."""
    keystore, _ = wiring.open_store(config, vault=vault)
    recorder = wiring.make_recorder(keystore, NullAudit(), wiring.make_clock(config))  # type: ignore[arg-type]
    tag = Tag(config.profile("parent"), TagRule.GIVEN)
    keystore.read()
    keystore.checkpoint()
    times = []
    written = _written()
    for number in range(sessions):
        start = time.perf_counter()
        sealed = recorder.begin(f"f{number:015x}", tag)
        middle = time.perf_counter()
        sealed.finish(Transcript("", ()))
        times += [middle - start, time.perf_counter() - middle]
    per_commit = (_written() - written) / (2 * sessions)
    keystore.close()
    return times, per_commit


def commit_scale(work: Path, sizes: list[int], sessions: int = 200) -> list[Row]:
    """What the keystore costs per commit with N sessions already retained: the real recorder
    registers a session and marks it sealed (two transactions, each fsynced), `sessions` times."""
    rows: list[Row] = []
    baseline = None
    for retained in sizes:
        data_dir = work / f"commit-{retained}"
        config = config_for(work, data_dir)
        vault = FileVault(work / f"commit-{retained}.key")
        later = datetime.now(timezone.utc) + timedelta(hours=50)  # nothing due while it runs
        populate(config, retained, vault, timedelta(hours=48), later, files=False, before_end=timedelta(0))
        times, per_commit = commit_times(config, vault, sessions)
        median = statistics.median(times) * 1e3
        baseline = baseline or median
        target = "< 10 ms, < 64 KiB, <= 2x 1k" if retained == 100_000 else ""
        met = median < 10 and per_commit < 64 * 1024 and median <= 2 * baseline if target else None
        rows.append(
            Row(
                f"session commit with {retained:,} sessions retained (median)",
                round(median, 2),
                "ms",
                target,
                met,
                f"{per_commit / 1024:.1f} KiB written per commit (WAL frames, checkpoints, the sealed files' headers); "
                f"p90 {statistics.quantiles(times, n=10)[-1] * 1e3:.2f} ms; {median / baseline:.2f}x the first size",
            )
        )
        shutil.rmtree(data_dir)
    return rows


def million(work: Path, sessions: int = 1_000_000, commits: int = 200, keep: Path | None = None) -> list[Row]:
    """A keystore of `sessions` overdue sessions (keys only: no files), written by
    edge.testing.populate: a session commit in it (as commit_scale), then a purge of them all
    (keys destroyed, rows deleted, the root ratcheted, every shred logged). `keep`: a copy of
    the data folder and its root key made there before the purge (to profile it again)."""
    data_dir = work / "million"
    config = config_for(work, data_dir)
    vault_path = work / "million.key"
    vault = FileVault(vault_path)
    start = time.perf_counter()
    buckets = populate(config, sessions, vault, timedelta(hours=48), datetime.now(timezone.utc), files=False)
    made = time.perf_counter() - start
    times, per_commit = commit_times(config, vault, commits)  # new sessions, not due: the purge keeps them
    if keep is not None:
        shutil.copytree(data_dir, keep / "data")
        shutil.copy2(vault_path, keep / "root.key")
    shredder = wiring.make_shredder(config, vault)
    start = time.perf_counter()
    report = shredder.sweep()
    seconds = time.perf_counter() - start
    shredded = sum(len(b.sessions) for b in report.buckets)
    expect(shredded == 2 * sessions, f"purge of {sessions:,} sessions shredded {shredded:,} of {2 * sessions:,} session keys")
    size = sum(p.stat().st_size for p in data_dir.iterdir() if p.name.startswith("keystore.db"))
    shutil.rmtree(data_dir)
    median = statistics.median(times) * 1e3
    return [
        Row(
            f"session commit with {sessions:,} sessions retained (median)",
            round(median, 2),
            "ms",
            "< 10 ms",
            median < 10,
            f"{per_commit / 1024:.1f} KiB written per commit; p90 {statistics.quantiles(times, n=10)[-1] * 1e3:.2f} ms; "
            f"{commits} sessions, two transactions each; the keystore written by populate in {made:.0f} s",
        ),
        Row(
            f"purge {sessions:,} sessions / {buckets:,} buckets: keys destroyed (crypto-shred)",
            round(seconds, 3),
            "s",
            "< 5 s",
            seconds < 5,
            f"{seconds / sessions * 1e6:.1f} us/session; keystore {size / 2**20:.0f} MiB after it",
        ),
    ]


def boot_catch_up(work: Path, sessions: int) -> Row:
    data_dir = work / "boot"
    config = config_for(work, data_dir)
    vault = FileVault(work / "boot.key")
    populate(config, sessions, vault, timedelta(hours=48), datetime.now(timezone.utc))
    service = wiring.make_retention(wiring.make_shredder(config, vault), config, lambda report: None)
    start = time.perf_counter()
    service.catch_up()
    seconds = time.perf_counter() - start
    left = wiring.open_store(config, vault=vault)[0].read().sessions
    expect(not left, f"boot catch-up: {len(left):,} of {sessions:,} overdue sessions survived it")
    shutil.rmtree(data_dir)
    return Row(f"boot catch-up: {sessions:,} overdue sessions shredded before the mic opens", round(seconds, 3), "s", "< 1 s", seconds < 1)


def start_utterance(folder: Path) -> Path:
    """One short command (espeak-ng: about 1 s of speech, 0.2 s of silence before, 0.8 s after), 16 kHz mono."""
    spoken = folder / "one.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(spoken), COMMAND[0]], check=True)
    utterance = folder / "one-16k.wav"
    rate = ["-r", str(PIPELINE_RATE), "-c", "1", "-b", "16"]
    subprocess.run(["sox", str(spoken), *rate, str(utterance), "pad", "0.2", "0.8"], check=True)
    return utterance


def start_folder(work: Path, name: str, retained: int) -> Config:
    """A data folder (and its config) holding `retained` sessions, none due for 50 h, each with
    its two (empty) files, as a household's folder after a while."""
    folder = work / name
    folder.mkdir()
    config = load_config(write_config(folder, folder / "data"))
    vault = FileVault(folder / "root.key")
    if retained:
        later = datetime.now(timezone.utc) + timedelta(hours=50)
        populate(config, retained, vault, timedelta(hours=48), later, files=True, before_end=timedelta(0))
    return config


def agent_start(config: Config, vault: FileVault, model: SpeechModel) -> tuple[float, float]:
    """(CPU, wall) seconds of what an agent's start does before the microphone opens, the model
    already loaded: the composition root (the keystore opened as the agent, its page check),
    the keystore read, the catch-up sweep, the retention scheduler started (its jobs placed);
    then, untimed, the scheduler stopped and the keystore closed."""
    cpu, wall = time.process_time(), time.perf_counter()
    runtime = wiring.build_runtime(config, lambda _record: None, lambda _report: None, profile="parent", vault=vault, model=model)
    runtime.keystore.read()
    runtime.retention.catch_up()
    runtime.retention.start()
    spent = time.process_time() - cpu, time.perf_counter() - wall
    runtime.retention.stop()
    runtime.keystore.close()
    return spent


def start_scale(work: Path, retained: int, pairs: int) -> list[Row]:
    """A one-shot `run --input` of one short command, and an agent's start (in process, the model
    loaded once), with `retained` sessions (and their 2 x `retained` files) in the data folder
    against an empty one: A/B pairs, the order alternating, each folder warmed once first (its
    first sweep scans the files and leaves the files-clean marker, as any start after a clean one finds it)."""
    utterance = start_utterance(work)
    empty, full = start_folder(work, "start-empty", 0), start_folder(work, "start-full", retained)
    edge_agent = str(Path(sys.executable).parent / "edge-agent")

    def one_shot(config: Config) -> tuple[float, float]:
        return child_cpu([edge_agent, "--config", str(config.path), "run", "--input", str(utterance), "--profile", "parent"])

    first_full = one_shot(full)[0]  # its sweep scans the 2 x retained files once, then trusts files-clean
    one_shot(empty)
    model = wiring.make_model(full)
    agent_start(empty, FileVault(empty.path.parent / "root.key"), model)
    agent_start(full, FileVault(full.path.parent / "root.key"), model)
    runs: dict[str, list[float]] = {"run": [], "start": [], "start wall": []}
    seconds: dict[str, list[float]] = {"run empty": [], "run full": [], "start empty": [], "start full": [], "start unclean": []}
    for pair in range(pairs):
        order = (empty, full) if pair % 2 == 0 else (full, empty)
        cost = {id(config): one_shot(config)[0] for config in order}
        runs["run"].append(cost[id(full)] / cost[id(empty)])
        seconds["run empty"].append(cost[id(empty)])
        seconds["run full"].append(cost[id(full)])
        starts = {id(config): agent_start(config, FileVault(config.path.parent / "root.key"), model) for config in order}
        (full.device.data_dir / "keystore-at-rest").unlink()  # as after an unclean stop: the start checks every page
        unclean = agent_start(full, FileVault(full.path.parent / "root.key"), model)[0]
        seconds["start unclean"].append(unclean)
        runs["start"].append(starts[id(full)][0] / starts[id(empty)][0])
        runs["start wall"].append(starts[id(full)][1] / starts[id(empty)][1])
        seconds["start empty"].append(starts[id(empty)][0])
        seconds["start full"].append(starts[id(full)][0])
    for name in ("start-empty", "start-full"):
        shutil.rmtree(work / name)

    def spread(values: list[float]) -> str:
        return f"{pairs} A/B pairs, spread {min(values):.3f}-{max(values):.3f}"

    def ms(key: str) -> str:
        return f"{statistics.median(seconds[key]) * 1e3:.0f} ms"

    run, start, start_wall = (statistics.median(runs[key]) for key in ("run", "start", "start wall"))
    return [
        Row(
            f"start: run --input of one command, {retained:,} retained / empty folder (CPU)",
            round(run, 3),
            "x",
            "<= 1.10",
            run <= 1.10,
            f"{spread(runs['run'])}; {ms('run full')} vs {ms('run empty')} CPU, the model's load the most of both; "
            f"the first run after the folder was filled (no files-clean yet: its sweep scans {2 * retained:,} files) {first_full * 1e3:.0f} ms",
        ),
        Row(
            f"start: the agent's start before the mic opens, {retained:,} retained / empty (CPU)",
            round(start, 3),
            "x",
            "<= 1.10",
            start <= 1.10,
            f"{spread(runs['start'])}; {ms('start full')} vs {ms('start empty')} CPU (model loaded before; keystore opened "
            f"as the agent, read, catch-up sweep, scheduler started; after a clean stop, so no page check); wall ratio {start_wall:.2f}; "
            f"after an unclean stop (keystore-at-rest absent: PRAGMA quick_check) {ms('start unclean')}",
        ),
    ]


# -- 3. verify scale ---------------------------------------------------------------------


def write_log(data_dir: Path, entries: int) -> None:
    """A valid audit log of about `entries` lines (sessions created and sealed, and the
    checkpoint the log itself adds every 100), written through AuditLog in batches."""
    log = AuditLog(data_dir)
    seq = log.append(ConfigLoaded(path="/etc/edge/household.toml", sha256="0" * 64))["seq"]  # creates the log and its key
    while seq < entries:
        batch = [_session_event(number) for number in range(seq + 1, min(entries, seq + 10_000) + 1)]
        seq = log.append_many(batch)[-1]["seq"]


def write_signed_log(data_dir: Path, entries: int) -> None:
    """A valid audit log of about `entries` lines as edge writes it since issue 27: each
    session's session.created, then its session.sealed signed in the same write (a checkpoint
    per session, three lines in all). Written through `append_groups`, a few thousand
    sessions a write (one append per session would take an fsync each)."""
    log = AuditLog(data_dir)
    seq = log.append_many([ConfigLoaded(path="/etc/edge/household.toml", sha256="0" * 64)], checkpoint=True)[-1]["seq"]
    number = 1
    while seq < entries:
        sessions = min(3_000, (entries - seq) // 3 + 1)
        seq = log.append_groups([[_session_event(n), _session_event(n + 1)] for n in range(number, number + 2 * sessions, 2)])
        number += 2 * sessions


def _session_event(number: int) -> SessionCreated | SessionSealed:
    if number % 2:
        return _session_created(number)
    return SessionSealed(session=f"{number - 1:016x}", seconds=3.2, audio_sealed=True, transcript_sealed=True)


def _session_created(number: int) -> SessionCreated:
    """A child's session.created as an edge before the written policy wrote it."""
    return SessionCreated(
        session=f"{number:016x}",
        profile="child",
        rule="active",
        child=True,
        audio_expires="2099-11-28T21:00:00+00:00",
        transcript_expires="2099-12-05T20:00:00+00:00",
        audio_bucket="child.audio.20991128T210000Z",
        transcript_bucket="child.transcript.20991205T200000Z",
    )


def verify_scale(work: Path, sizes: list[int], signed_sizes: list[int]) -> list[Row]:
    """`sizes`: logs with a checkpoint every 100 lines (as edge wrote them before issue 27);
    `signed_sizes`: a checkpoint per session as well (as it writes them now)."""
    from edge.audit.verify import verify

    rows = []
    for entries, signed in [(n, False) for n in sizes] + [(n, True) for n in signed_sizes]:
        data_dir = work / f"verify-{entries}"
        (write_signed_log if signed else write_log)(data_dir, entries)
        start = time.perf_counter()
        result = verify(AuditLog(data_dir), None, datetime.now(timezone.utc), timedelta(seconds=62))
        seconds = time.perf_counter() - start
        expect(result.ok, f"audit verify of the {entries:,}-entry log found {result.problems[:1]}")
        expect(result.entries >= entries, f"audit verify read {result.entries:,} entries of {entries:,}")
        target = "< 10 s" if entries == 1_000_000 else ""
        rows.append(
            Row(
                f"audit verify: {entries:,} entries" + (", a checkpoint per session" if signed else ""),
                round(seconds, 3),
                "s",
                target,
                seconds < 10 if target else None,
                f"{seconds / result.entries * 1e6:.1f} us/entry, {result.checkpoints:,} signatures checked",
            )
        )
        shutil.rmtree(data_dir)
    return rows


def verify_cpu_ratio(work: Path, entries: int, pairs: int) -> Row:
    """What a checkpoint per session costs `audit verify`: its CPU per entry on a log written
    so against one with a checkpoint every 100 lines, in one process, in alternating pairs."""
    from edge.audit.verify import Parallel, verify

    logs = {False: work / "verify-every-100", True: work / "verify-per-session"}
    write_log(logs[False], entries)
    write_signed_log(logs[True], entries)
    cpu: dict[bool, list[float]] = {False: [], True: []}
    checkpoints = {}
    for pair in range(pairs):
        for signed in (False, True) if pair % 2 == 0 else (True, False):
            start = time.process_time()
            result = verify(AuditLog(logs[signed]), None, datetime.now(timezone.utc), timedelta(seconds=62), parallel=Parallel(workers=1))
            cpu[signed].append((time.process_time() - start) / result.entries)
            checkpoints[signed] = result.checkpoints
            expect(result.ok, f"audit verify of {logs[signed]} found {result.problems[:1]}")
    for folder in logs.values():
        shutil.rmtree(folder)
    ratios = [new / old for old, new in zip(cpu[False], cpu[True], strict=True)]
    return Row(
        f"audit verify CPU per entry: a checkpoint per session / one every 100 lines ({entries:,} entries)",
        round(statistics.median(ratios), 2),
        "x",
        "",
        None,
        f"{pairs} pairs in one process, spread {min(ratios):.2f}-{max(ratios):.2f}; {statistics.median(cpu[False]) * 1e6:.1f} vs "
        f"{statistics.median(cpu[True]) * 1e6:.1f} us/entry, {checkpoints[False]:,} vs {checkpoints[True]:,} signatures checked",
    )


# -- 5. memory, 6. sealing, 7. latency ---------------------------------------------------


_PEAK = (
    "import atexit, os, runpy, sys\n"
    "def report():\n"
    "    status = open('/proc/self/status').read()\n"
    "    kb = [status.split(key)[1].split()[0] for key in ('VmHWM:', 'VmRSS:')]\n"
    "    open(os.environ['BENCH_PEAK'], 'w').write(' '.join(kb))\n"
    "atexit.register(report)\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__') if sys.argv[0] != '-c' else exec(sys.argv[1])\n"
)


def peak_rss(work: Path, *args: str) -> float:
    """Peak RSS in MB of `python -m MODULE ARGS` or `python -c CODE`, read by the process itself
    (VmHWM: ru_maxrss of a child would include the parent's pages from before exec)."""
    return rss(work, *args)[0]


def rss(work: Path, *args: str) -> tuple[float, float]:
    """(peak, current at exit) RSS in MB of `python -m MODULE ARGS` or `python -c CODE`, as
    peak_rss reads them; the child's environment is this process's."""
    out = work / "peak"
    env = {**os.environ, "BENCH_PEAK": str(out)}
    result = subprocess.run([sys.executable, "-c", _PEAK, *args], env=env, capture_output=True, text=True, timeout=600)
    if not out.exists():
        raise SystemExit(f"bench: {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    peak, current = out.read_text().split()
    return int(peak) / 1024, int(current) / 1024


def memory(work: Path, speech: Path) -> list[Row]:
    model = find_model("auto")
    bare = peak_rss(work, "-c", "pass")
    loaded = peak_rss(work, "-c", f"import vosk; vosk.SetLogLevel(-1); vosk.Model({str(model)!r})")
    decoding = (  # what Vosk itself needs to transcribe this speech: the model and one recognizer
        "import vosk\nvosk.SetLogLevel(-1)\n"
        f"r = vosk.KaldiRecognizer(vosk.Model({str(model)!r}), 16000)\nr.SetWords(True)\n"
        f"pcm = open({str(speech)!r}, 'rb').read()[44:]\n"
        "for i in range(0, len(pcm), 960):\n    r.AcceptWaveform(pcm[i:i + 960])\nr.FinalResult()\n"
    )
    model_alone = peak_rss(work, "-c", decoding)
    config = write_config(work, work / "memory")
    retained = 100_000
    later = datetime.now(timezone.utc) + timedelta(hours=50)  # none of them due during the run: the agent keeps them all
    populate(load_config(config), retained, FileVault(work / "root.key"), timedelta(hours=48), later, files=False, before_end=timedelta(0))
    agent = peak_rss(work, "edge", "--config", str(config), "run", "--input", str(speech), "--profile", "child")
    without = agent - model_alone + bare
    shutil.rmtree(work / "memory", ignore_errors=True)
    return [
        Row(
            f"peak RSS: the agent without the model, {retained:,} sessions retained",
            round(without, 1),
            "MB",
            "<= 40 MB",
            without <= 40,
            f"agent {agent:.0f} MB - Vosk decoding the same speech alone {model_alone:.0f} MB + bare python {bare:.0f} MB",
        ),
        Row(
            "peak RSS: the Vosk model alone (loaded / decoding, in python)",
            round(model_alone, 1),
            "MB",
            "",
            None,
            f"loaded only: {loaded:.0f} MB",
        ),
    ]


def _status_mb(pid: int) -> tuple[float, float]:
    """(peak, current) RSS in MB of a running process (VmHWM, VmRSS)."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak, current = (int(status.split(key)[1].split()[0]) / 1024 for key in ("VmHWM:", "VmRSS:"))
    return peak, current


@contextlib.contextmanager
def virtual_mic(work: Path) -> Iterator[dict[str, str]]:
    """scripts/virtual-mic.sh in a folder of the bench's own (not the tests' default): the
    environment whose default source is its sink's monitor; stopped after."""
    script = Path(__file__).parent / "virtual-mic.sh"
    env = {**os.environ, "VMIC_DIR": str(work / "vmic")}
    up = subprocess.run([str(script), "up"], env=env, capture_output=True, text=True, check=False)
    if up.returncode != 0:
        raise BenchError(f"the virtual microphone did not start: {up.stderr.strip()}")
    for line in up.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    env["XDG_RUNTIME_DIR"] = str(work / "vmic" / "runtime")
    try:
        yield env
    finally:
        subprocess.run([str(script), "down"], env=env, capture_output=True, check=False)


def rss_of_agent(
    folder: Path, config: Path, command: list[str], env: dict[str, str], feed: Callable[[], None], ready: list[str]
) -> tuple[float, float, float]:
    """(RSS at rest after the start, peak RSS, RSS at rest after the sessions) in MB of a
    long-running agent: started, left 2 s, fed its sessions, left 2 s, then stopped (SIGINT)."""
    edge_agent = str(Path(sys.executable).parent / "edge-agent")
    log, out = folder / "agent.log", folder / "agent.out"
    with log.open("wb") as err, out.open("wb") as stdout:
        process = subprocess.Popen([edge_agent, "--config", str(config), *command], stdout=stdout, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 300
        while not all(word in log.read_text(errors="replace") for word in ready):
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{' '.join(command)} did not start:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        time.sleep(2)
        started = _status_mb(process.pid)[1]
        feed()
        time.sleep(2)
        peak, rest = _status_mb(process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    return started, peak, rest


def memory_table(work: Path) -> list[Row]:
    """Peak and resting RSS of `run --mic` (a virtual microphone: scripts/virtual-mic.sh),
    `serve` (one Wyoming listener) and both in one agent (`run --mic` with the listener), each
    without and with a voice enrolled (the speaker encoder loads only then), for the model
    here: two sessions each way it listens (the command played twice into the microphone, sent
    twice over Wyoming)."""
    folder = work / "memtable"
    utterance = make_utterance(work, 0.8)
    pcm = wav_pcm(utterance)
    sentences = []
    for number, sentence in enumerate(VOICE_SENTENCES[:3]):
        raw, wav = work / f"enrol-raw{number}.wav", work / f"enrol{number}.wav"
        subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), sentence], check=True, capture_output=True)
        subprocess.run(["sox", "-D", str(raw), "-r", str(PIPELINE_RATE), "-c", "1", "-b", "16", str(wav)], check=True, capture_output=True)
        sentences.append(str(wav))
    rows = []
    edge_agent = str(Path(sys.executable).parent / "edge-agent")
    with virtual_mic(work) as env:
        for voices in (False, True):
            for mode in ("run --mic", "serve", "both"):
                shutil.rmtree(folder, ignore_errors=True)
                config, uri = listener_config(folder)
                if voices:
                    subprocess.run(
                        [edge_agent, "--config", str(config), "voices", "enroll", "parent", "--input", *sentences],
                        check=True,
                        capture_output=True,
                        env=env,
                    )
                mic, wyoming = mode != "serve", mode != "run --mic"
                if mode == "run --mic":  # the microphone alone: the listener out of the config
                    config.write_text(config.read_text().split("\n[[wyoming]]")[0] + "\n")

                def feed(mic: bool = mic, wyoming: bool = wyoming, uri: str = uri, mode: str = mode) -> None:
                    for _ in range(2):
                        if mic:
                            subprocess.run(["paplay", str(utterance)], env=env, check=True, timeout=60)
                        if wyoming:
                            asyncio.run(send_utterance(uri, pcm, live=False))
                    if mic:
                        deadline = time.monotonic() + 120
                        while (folder / "agent.out").read_text().count("\n") < 2:
                            if time.monotonic() > deadline:
                                raise BenchError(f"{mode}: the microphone's sessions never came")
                            time.sleep(0.2)

                command = ["run", "--mic", "--json"] if mic else ["serve"]  # as the service runs: no --profile, so voices tag
                ready = (["listening"] if mic else []) + (["wyoming: serving"] if wyoming else [])
                started, peak, rest = rss_of_agent(folder, config, command, env, feed, ready)
                rows.append(
                    Row(
                        f"memory: {mode}, {'a voice enrolled' if voices else 'no voice'}: peak RSS",
                        round(peak, 1),
                        "MB",
                        "",
                        None,
                        f"at rest {started:.0f} MB after the start, {rest:.0f} MB after 2 sessions "
                        f"({'played into a virtual microphone' if mic else ''}{' and ' if mic and wyoming else ''}{'sent over Wyoming' if wyoming else ''} each)",
                    )
                )
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def sealing(work: Path) -> list[Row]:
    recipient = Identity.generate().recipient
    pcm = os.urandom(FRAME_BYTES) * 2000  # 60 s of "audio" in 30 ms frames
    total, start = 0, time.perf_counter()
    with (work / "seal.age").open("wb") as out:
        while time.perf_counter() - start < 2:
            writer = StreamWriter(out, recipient)
            for index in range(0, len(pcm), FRAME_BYTES):
                writer.write(pcm[index : index + FRAME_BYTES])
            writer.close()
            total += len(pcm)
            out.seek(0)
    seconds = time.perf_counter() - start
    mb_s = total / seconds / 1e6
    return [
        Row(
            "sealing throughput (30 ms frames, like the recorder)",
            round(mb_s, 1),
            "MB/s",
            "",
            None,
            f"{mb_s * 1e6 / (2 * PIPELINE_RATE):,.0f} x real time (audio is 0.032 MB/s)",
        )
    ]


def latency(work: Path, speech: Path) -> list[Row]:
    """In-process: from the frame that completes the trailing silence to the sealed file
    closed and to the transcript event. End of speech -> event adds [trigger] silence_end."""
    data = work / "latency"
    config = config_for(work, data)
    keystore, audit = wiring.open_store(config, vault=FileVault(work / "latency.key"))
    clock = wiring.make_clock(config)
    recorder = wiring.make_recorder(keystore, audit, clock)
    events: list[float] = []
    closes: list[float] = []
    agent = wiring.make_agent(
        config, wiring.make_model(config), lambda record: events.append(time.perf_counter()), recorder, "child", clock
    )
    runner = agent.segmenter.sink
    original_end = runner.end
    ends: list[float] = []

    def timed_end(offset: float, reason: str) -> None:
        ends.append(time.perf_counter())
        original_end(offset, reason)

    runner.end = timed_end
    original_begin = recorder.begin

    def timed_begin(session_id, tag):
        sealed = original_begin(session_id, tag)
        finish = sealed.finish

        def timed_finish(transcript):
            finish(transcript)
            closes.append(time.perf_counter())

        sealed.finish = timed_finish
        return sealed

    recorder.begin = timed_begin
    pcm = speech.read_bytes()[44:]
    agent.run(iter([pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]))
    to_close = [c - e for e, c in zip(ends, closes, strict=True)]
    to_event = [v - e for e, v in zip(ends, events, strict=True)]
    silence = config.trigger.silence_end.total_seconds() * 1000
    shutil.rmtree(data, ignore_errors=True)
    return [
        Row(
            "latency: session end -> sealed files closed (median)",
            round(statistics.median(to_close) * 1000, 1),
            "ms",
            "",
            None,
            f"{len(to_close)} sessions; end of speech -> here adds silence_end = {silence:.0f} ms",
        ),
        Row(
            "latency: session end -> transcript event (median)",
            round(statistics.median(to_event) * 1000, 1),
            "ms",
            "",
            None,
            f"p90 {sorted(to_event)[int(len(to_event) * 0.9)] * 1000:.1f} ms",
        ),
    ]


# -- 8. the Wyoming server against the file path -----------------------------------------------

COMMAND = ["메시지", "아버지", "위치"]
"""What each Wyoming utterance says: a short command, about 2.5 s of speech."""
CHUNK_MS = 10
"""Audio per audio-chunk event, as Home Assistant sends it."""
BETWEEN = 1.0
"""Seconds of silence before each utterance in the file the file path reads (each utterance
also ends in silence_end of silence): enough for the segmenter to end every session."""


def joined_utterances(utterance: bytes, count: int) -> bytes:
    """`count` utterances, each after about BETWEEN s of silence, so that each starts on a
    segmenter frame: every session (its pre-roll too) then holds the very same samples, cut
    into the same 30 ms frames as the server cuts the utterance. (The utterance is sent to the
    server as it is: a client's audio is rarely whole 30 ms frames.)"""
    gap = round(BETWEEN * PIPELINE_RATE) * 2
    gap += -gap % FRAME_BYTES
    return (bytes(gap) + utterance + bytes(-len(utterance) % FRAME_BYTES)) * count


def make_utterance(folder: Path, trail: float) -> Path:
    """One command as a satellite streams it: 0.2 s of silence, the phrases 0.3 s apart, and
    `trail` s of silence (its VAD ends the command on a silence). With trail = silence_end,
    this is about the audio a session of the file path seals (its 0.21 s pre-roll, the
    speech, the silence that ends it), so both paths keep the same per utterance. 16 kHz mono."""
    parts = []
    for index, phrase in enumerate(COMMAND):
        path = folder / f"command{index}.wav"
        subprocess.run(["espeak-ng", "-v", "ko", "-w", str(path), phrase], check=True)
        parts += [str(path), str(folder / "gap.wav")]
    subprocess.run(["sox", "-n", "-r", "22050", "-c", "1", str(folder / "gap.wav"), "trim", "0", "0.3"], check=True)
    utterance = folder / "utterance.wav"
    rate = ["-r", str(PIPELINE_RATE), "-c", "1", "-b", "16"]
    subprocess.run(["sox", *parts[:-1], *rate, str(utterance), "pad", "0.2", str(trail)], check=True)
    return utterance


def wav_pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        shape = (wav.getframerate(), wav.getsampwidth(), wav.getnchannels())
        expect(shape == (PIPELINE_RATE, 2, 1), f"{path}: {shape[0]} Hz, {shape[1]} bytes, {shape[2]} channels, not 16 kHz 16-bit mono")
        return wav.readframes(wav.getnframes())


def write_wav(path: Path, pcm: bytes) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(PIPELINE_RATE)
        wav.writeframes(pcm)
    return path


def listener_config(folder: Path) -> tuple[Path, str]:
    """The bench's config (mode "always", the same grammar) with a fresh data folder in
    `folder` and one [[wyoming]] listener there, profile parent as in the file runs (which
    ignore the listener): every run of this step uses the same config. (config, uri)"""
    folder.mkdir(parents=True)
    config = write_config(folder, folder / "data")
    uri = f"unix://{folder / 'stt.sock'}"
    with config.open("a", encoding="utf-8") as text:
        text.write(f'\n[[wyoming]]\nuri = "{uri}"\nprofile = "parent"\nname = "bench"\n')
    return config, uri


def file_per_session(folder: Path, utterance: bytes, count: int) -> tuple[float, list[str]]:
    """`edge-agent run --input` on count + 1 utterances: its CPU per session in the steady
    state, read from /proc as the first and the last session are printed (--json flushes one
    line per session), and what each said. So neither start-up (the model load is most of a
    short run) nor the first session's warm-up (a new recognizer and its graph cache) counts:
    a long-running agent pays both once, and divided by K they would make the ratio depend on K.
    Trailing silence keeps the agent running (on cheap VAD) while the last figure is read."""
    config, _uri = listener_config(folder)
    wav = write_wav(folder / "utterances.wav", joined_utterances(utterance, count + 1) + bytes(5 * 2 * PIPELINE_RATE))
    edge_agent = str(Path(sys.executable).parent / "edge-agent")
    command = [edge_agent, "--config", str(config), "run", "--input", str(wav), "--profile", "parent", "--json"]
    texts, marks = [], []
    with (folder / "run.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
    if process.stdout is None:
        raise BenchError(f"{' '.join(command)}: no standard output to read")
    for line in process.stdout:
        marks.append(process_cpu(process.pid))
        texts.append(json.loads(line)["text"])
    if process.wait(timeout=600) != 0 or len(texts) != count + 1:
        raise SystemExit(
            f"bench: {' '.join(command)} made {len(texts)} sessions of {count + 1}:\n{(folder / 'run.log').read_text()[-2000:]}"
        )
    return (marks[-1] - marks[0]) / count, texts


def process_cpu(pid: int) -> float:
    """CPU seconds (user + sys, every thread) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def serving(config: Path, folder: Path) -> Iterator[int]:
    """`edge-agent serve` with `config`, yielding its pid once it accepts clients (its log
    goes to a file: a pipe nobody reads could stall it); stopped with SIGINT, it must exit 0."""
    log = folder / "serve.log"
    command = [str(Path(sys.executable).parent / "edge-agent"), "--config", str(config), "serve"]
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while "wyoming: serving" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: edge-agent serve did not start:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        yield process.pid
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    if code != 0:
        raise SystemExit(f"bench: edge-agent serve exited {code}:\n{log.read_text(errors='replace')[-2000:]}")


async def send_utterance(uri: str, pcm: bytes, live: bool) -> tuple[str, float]:
    """One utterance the way Home Assistant sends it (transcribe, audio-start, 10 ms chunks,
    audio-stop): the transcript, and the seconds from writing audio-stop to reading it.
    `live`: the chunks at the pace of a microphone, as a satellite streams them (needed for
    the latency: sent faster, the server is still decoding when audio-stop is written);
    else as fast as the server reads them (the socket holds the client back)."""
    from wyoming.asr import Transcribe
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncClient

    step = PIPELINE_RATE * CHUNK_MS // 1000 * 2
    client = AsyncClient.from_uri(uri)
    await client.connect()
    try:
        await client.write_event(Transcribe(language="ko").event())
        await client.write_event(AudioStart(rate=PIPELINE_RATE, width=2, channels=1).event())
        start = time.perf_counter()
        for number, index in enumerate(range(0, len(pcm), step)):
            if live:
                await asyncio.sleep(max(0.0, start + number * CHUNK_MS / 1000 - time.perf_counter()))
            await client.write_event(AudioChunk(rate=PIPELINE_RATE, width=2, channels=1, audio=pcm[index : index + step]).event())
        stopped = time.perf_counter()
        await client.write_event(AudioStop().event())
        answer = await asyncio.wait_for(client.read_event(), 60)
        answered = time.perf_counter()
    finally:
        await client.disconnect()
    if answer is None or answer.type != "transcript":
        raise SystemExit(f"bench: the Wyoming server answered {answer} instead of a transcript")
    return answer.data["text"], answered - stopped


@dataclass
class Served:
    """One `edge-agent serve` run of K utterances."""

    cpu: float
    """The server's CPU seconds per utterance."""
    latencies: list[float]
    texts: list[str]
    together: list[float] = field(default_factory=list)
    """Latencies with CLIENTS clients sending at once (live runs only), after the CPU was read."""


CLIENTS = os.cpu_count() or 1
"""Clients sending at once in the concurrent latency: one per core, as many as the server
decodes at once (ServerSettings.slots)."""


async def send_together(uri: str, pcm: bytes) -> list[tuple[str, float]]:
    """CLIENTS clients sending the utterance live, all starting at once: their audio-stops
    come together, the worst case for the latency."""
    return list(await asyncio.gather(*(send_utterance(uri, pcm, live=True) for _ in range(CLIENTS))))


def serve_run(folder: Path, pcm: bytes, count: int, live: bool) -> Served:
    """`count` utterances, one at a time, to a fresh server after one to warm it up. Its CPU
    is read from /proc before the first and after the last, so neither start-up nor the model
    load nor the warm-up counts, as in file_per_session. Sent live, the server then also takes
    about `count` utterances CLIENTS at a time (send_together), for the latency only."""
    config, uri = listener_config(folder)
    with serving(config, folder) as pid:
        asyncio.run(send_utterance(uri, pcm, live=False))  # the warm-up, as in file_per_session
        time.sleep(0.3)  # the rest of start-up: the agent.started record, the retention thread
        before = process_cpu(pid)
        answers = [asyncio.run(send_utterance(uri, pcm, live)) for _ in range(count)]
        time.sleep(0.2)  # the server closes the last connection
        used = process_cpu(pid) - before
        rounds = max(1, count // CLIENTS) if live else 0
        together = [answer for _ in range(rounds) for answer in asyncio.run(send_together(uri, pcm))]
    texts = [text for text, _latency in answers + together]
    return Served(used / count, [latency for _text, latency in answers], texts, [latency for _text, latency in together])


def vosk_pace(pcm: bytes, pairs: int) -> list[float]:
    """Vosk alone, in this process, one recognizer reused as edge does: thread CPU of the
    utterance fed in 125 ms chunks at real-time pace / fed at once, per pair. The machine's
    own price of live audio (caches and clocks gone cold in the gaps, it seems), which any
    live source pays: it tells that part of the live ratio from the server's own."""
    from edge.stt.recognizer import SpeechModel

    model = SpeechModel(find_model("auto"))

    def decode(pace: float) -> float:
        decoder = model.decoder(())
        start = time.thread_time()
        for index in range(0, len(pcm), 4000):
            time.sleep(pace)
            decoder.feed(pcm[index : index + 4000])
        decoder.transcript()
        return time.thread_time() - start

    decode(0)  # the recognizer and its graph cache
    return [decode(0.125) / decode(0) for _ in range(pairs)]


@dataclass
class WyomingPair:
    """One A/B pair: the file path and two servers on the same utterances."""

    file_cpu: float
    """`run --input`: CPU seconds per session, start-up left out."""
    file_texts: list[str]
    fast: Served
    """Utterances sent as fast as the server reads them: like for like with the file path."""
    live: Served
    """Utterances sent at the pace of a microphone, as Home Assistant does."""

    @property
    def texts(self) -> set[str]:
        return {*self.file_texts, *self.fast.texts, *self.live.texts}


def wyoming_pair(folder: Path, pcm: bytes, count: int, file_first: bool) -> WyomingPair:
    """The file path and the two servers, the file path first or last (A/B, as overhead() does)."""
    if file_first:
        file_cpu, texts = file_per_session(folder / "file", pcm, count)
        fast = serve_run(folder / "fast", pcm, count, live=False)
        live = serve_run(folder / "live", pcm, count, live=True)
    else:
        live = serve_run(folder / "live", pcm, count, live=True)
        fast = serve_run(folder / "fast", pcm, count, live=False)
        file_cpu, texts = file_per_session(folder / "file", pcm, count)
    shutil.rmtree(folder, ignore_errors=True)
    return WyomingPair(file_cpu, texts, fast, live)


def wyoming(work: Path, utterances: int, pairs: int) -> list[Row]:
    """Wyoming against `run --input` on the same utterances, CPU per utterance in A/B pairs,
    and the latency. The target compares like with like: both paths take the audio as fast as
    they can. Sent live, as Home Assistant does, the server also pays what live audio costs
    on this machine (vosk_pace), which `run --mic` would pay as well."""
    silence_end = config_for(work, work / "wyoming-data").trigger.silence_end.total_seconds()
    pcm = wav_pcm(make_utterance(work, silence_end))
    runs = [wyoming_pair(work / f"wyoming-{pair}", pcm, utterances, pair % 2 == 0) for pair in range(pairs)]
    return wyoming_rows(runs, vosk_pace(pcm, min(utterances, 5)), utterances, len(pcm) / (2 * PIPELINE_RATE))


def wyoming_in_process(work: Path, pairs: int) -> list[Row]:
    """Where the Wyoming path's extra CPU is not: its utterance's own work (the VAD, Vosk,
    sealing, the keystore, the audit; edge.wyoming.utterance.Utterance fed 10 ms chunks) against
    the file path's (the agent's pipeline, Agent.run, on the same audio), in this one process,
    one thread, no event loop or hand-offs: CPU (time.process_time) per utterance in A/B pairs,
    after one warm-up of each, and the seconds of audio each handed to Vosk."""
    from edge.config import load_config as load
    from edge.stt.recognizer import SpeechModel
    from edge.wyoming.audio import WireFormat
    from edge.wyoming.utterance import Household, Utterance

    config_path, _uri = listener_config(Path(tempfile.mkdtemp(prefix="in-process-", dir=work)) / "run")
    config = load(config_path)
    model = SpeechModel(find_model("auto"))
    runtime = wiring.build_runtime(config, lambda _record: None, lambda _record: None, model=model)
    runtime.keystore.read()
    household = Household(config, model, runtime.recorder, runtime.audit, lambda: runtime.agent.active_profile, runtime.agent.tagger)
    pcm = wav_pcm(make_utterance(work, config.trigger.silence_end.total_seconds()))

    def by_wyoming() -> None:
        utterance = Utterance(household, config.listeners[0], WireFormat(rate=PIPELINE_RATE, width=2, channels=1))
        step = PIPELINE_RATE * 2 * CHUNK_MS // 1000
        for start in range(0, len(pcm), step):
            utterance.feed(pcm[start : start + step])
        utterance.finish()

    def by_file() -> None:
        runtime.agent.run([pcm[start : start + 4000] for start in range(0, len(pcm), 4000)])

    def measured(run: Callable[[], None]) -> tuple[float, int]:
        before, start = model.decoded_bytes(), time.process_time()
        run()
        return time.process_time() - start, model.decoded_bytes() - before

    measured(by_wyoming), measured(by_file)  # warm-ups: a recognizer and its graph cache each
    ratios, fed = [], {"wyoming": 0, "file": 0}
    for pair in range(pairs):
        order = (("wyoming", by_wyoming), ("file", by_file)) if pair % 2 == 0 else (("file", by_file), ("wyoming", by_wyoming))
        cpu = {}
        for name, run in order:
            cpu[name], fed[name] = measured(run)
        ratios.append(cpu["wyoming"] / cpu["file"])
    seconds = {name: count / (2 * PIPELINE_RATE) for name, count in fed.items()}
    return [
        Row(
            "CPU per utterance, in one process: Wyoming's utterance / the file path's session",
            round(statistics.median(ratios), 3),
            "x",
            note=f"{pairs} A/B pairs, spread {min(ratios):.3f}-{max(ratios):.3f}; the same {len(pcm) / (2 * PIPELINE_RATE):.1f} s utterance, "
            f"audio handed to Vosk {seconds['wyoming']:.2f} s and {seconds['file']:.2f} s; no server around it",
        )
    ]


def wyoming_rows(runs: list[WyomingPair], vosk: list[float], utterances: int, seconds: float) -> list[Row]:
    fast = [run.fast.cpu / run.file_cpu for run in runs]
    live = [run.live.cpu / run.file_cpu for run in runs]
    latencies = [latency for run in runs for latency in run.live.latencies]
    texts = set().union(*(run.texts for run in runs))
    same = "the same text in both paths" if len(texts) == 1 else f"texts differ: {sorted(texts)} (synthetic speech)"
    what = f"{len(runs)} A/B pairs of {utterances} utterances of {seconds:.1f} s"
    latency_note = f"{len(latencies)} utterances of {seconds:.1f} s, {CHUNK_MS} ms chunks sent live, one at a time"
    together = [latency for run in runs for latency in run.live.together]
    slower = [p90(run.live.together) / p90(run.live.latencies) for run in runs]

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1e3:.0f} ms"

    def spread(values: list[float]) -> str:
        return f"spread {min(values):.3f}-{max(values):.3f}"

    return [
        Row(
            "CPU per utterance: Wyoming serve / run --input (median of pairs)",
            round(statistics.median(fast), 3),
            "x",
            "<= 1.05",
            statistics.median(fast) <= 1.05,
            f"{what}, both as fast as they go; {spread(fast)}; "
            f"Wyoming {ms([run.fast.cpu for run in runs])}, file {ms([run.file_cpu for run in runs])} CPU each; {same}",
        ),
        Row(
            "CPU per utterance: Wyoming sent live / run --input (median of pairs)",
            round(statistics.median(live), 3),
            "x",
            "",
            None,
            f"{what}, {CHUNK_MS} ms chunks at real-time pace; {spread(live)}; Wyoming {ms([run.live.cpu for run in runs])} CPU each",
        ),
        Row(
            "Vosk alone: CPU of audio fed live / at once (median)",
            round(statistics.median(vosk), 3),
            "x",
            "",
            None,
            f"{len(vosk)} pairs, the same utterance in 125 ms chunks; {spread(vosk)}: what live audio costs here, whoever decodes it",
        ),
        Row(
            "Wyoming latency: audio-stop -> transcript (median)", round(statistics.median(latencies) * 1e3, 1), "ms", "", None, latency_note
        ),
        Row("Wyoming latency: audio-stop -> transcript (p90)", round(p90(latencies) * 1e3, 1), "ms", "", None, latency_note),
        Row(
            f"Wyoming latency p90: {CLIENTS} clients at once / one at a time",
            round(p90(together) / p90(latencies), 3),
            "x",
            "<= 2",
            p90(together) <= 2 * p90(latencies),
            f"the same server and utterance, same run: p90 {p90(together) * 1e3:.1f} ms of {len(together)} utterances sent "
            f"{CLIENTS} at once (their audio-stops together) vs {p90(latencies) * 1e3:.1f} ms; per pair {spread(slower)}",
        ),
    ]


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


# -- 9. the speaker encoder (issue 13) ---------------------------------------------------------

VOICE_SENTENCES = ["아버지에게 메시지를 보내 주세요", "라디오를 켜 주세요", "오늘 날씨를 알려 주세요", "보안 위치를 알려 주세요"]
"""What the voice step's sessions say, one sentence after another (espeak-ng's pauses only)."""
VOICE_SECONDS = (2, 4, 8)
"""Session lengths the encoder's CPU is measured on."""


def voice_speech(work: Path, seconds: float, voice: tuple[str, int] = ("ko", 50), sentences: Sequence[str] = VOICE_SENTENCES) -> bytes:
    """`seconds` of espeak-ng `voice` (voice, pitch) saying `sentences` back to back, as pipeline PCM.
    Every shorter session of the step is a prefix of it."""
    pcm, raw, out, number = b"", work / "voice-raw.wav", work / "voice.wav", 0
    while len(pcm) < seconds * 2 * PIPELINE_RATE:
        sentence = sentences[number % len(sentences)]
        subprocess.run(["espeak-ng", "-v", voice[0], "-p", str(voice[1]), "-w", str(raw), sentence], check=True, capture_output=True)
        subprocess.run(["sox", "-D", str(raw), "-r", str(PIPELINE_RATE), "-c", "1", "-b", "16", str(out)], check=True, capture_output=True)
        pcm, number = pcm + wav_pcm(out), number + 1
    return pcm[: int(seconds * PIPELINE_RATE) * 2]


def one_thread() -> None:
    """The voice step measures one core, as edge-agent runs (it sets OPENBLAS_NUM_THREADS=1).
    numpy and Vosk (its own OpenBLAS inside libvosk) read it when loaded, and this process
    loaded numpy at import: it has to come from outside. The children inherit it."""
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        raise SystemExit(
            "bench: the voice step needs OPENBLAS_NUM_THREADS=1, as edge-agent sets it: scripts/bench.sh exports it, "
            "or run OPENBLAS_NUM_THREADS=1 .venv/bin/python scripts/bench.py --only voice"
        )


def cpu_seconds(run: Callable[[bytes], object], pcm: bytes) -> float:
    """CPU seconds (user + sys, the whole process: one thread here) of run(pcm)."""
    start = time.process_time()
    run(pcm)
    return time.process_time() - start


def decode_session(model: SpeechModel, pcm: bytes) -> None:
    """Vosk on one session as the agent decodes it: free dictation (no grammar), a reused
    recognizer, 125 ms (4000-byte) chunks, then FinalResult."""
    decoder = model.decoder(())
    for index in range(0, len(pcm), 4000):
        decoder.feed(pcm[index : index + 4000])
    decoder.transcript()


@dataclass(frozen=True)
class Embedder:
    """One way of embedding a session: an encoder, and how much of the session it judges."""

    encoder: SpeakerEncoder
    judged: int | None = None
    """Bytes from the session's start (None: all of it)."""

    def __call__(self, pcm: bytes) -> object:
        return self.encoder.embed(pcm[: self.judged])

    def partials(self, pcm: bytes) -> int:
        from edge.voice.features import preprocess

        return len(self.encoder.partial_starts(len(preprocess(pcm[: self.judged]))))


VOICE_ENROL = ["라디오에서 메시지를 들려 주세요", "아버지에게 전화해 주세요", "불을 꺼 주세요"]
"""What the voice step's household is enrolled from: none of VOICE_SENTENCES."""


@dataclass(frozen=True)
class Tagged:
    """A session judged as the agent's tagging judges it (edge.tagging.voice.judge_session:
    the first partials, the rest only when those are not a clear match) against `voices`."""

    encoder: SpeakerEncoder
    voices: dict[str, Voiceprint]
    config: Config

    def __call__(self, pcm: bytes) -> object:
        from edge.tagging.voice import judge_session

        return judge_session(self.encoder, pcm, self.voices, self.config)

    def partials(self, pcm: bytes) -> int:
        """How many partials it embeds for `pcm`."""
        from edge.tagging.voice import session_mels
        from edge.voice.identify import EARLY_PARTIALS, early_match

        mels = session_mels(self.encoder, pcm)
        if len(mels) > EARLY_PARTIALS and early_match(self.encoder.embed_partials(mels[:EARLY_PARTIALS]), self.voices, self.config):
            return EARLY_PARTIALS
        return len(mels)


def household_voices(work: Path, voices: dict[str, tuple[str, int]]) -> dict[str, Voiceprint]:
    """Voiceprints of the bench config's profiles, each from 6 s of VOICE_ENROL in an espeak-ng
    voice (the encoder's print, as enrolment stores it; the keystore is not what the step measures)."""
    from edge.store.records import Voiceprint
    from edge.voice.encoder import SpeakerEncoder
    from edge.voice.identify import ENCODER_ID, vector_bytes

    now, encoder = datetime.now(timezone.utc), SpeakerEncoder.load()  # enrolment's settings
    prints = {}
    for profile, voice in voices.items():
        vector = encoder.embed(voice_speech(work, 6, voice, VOICE_ENROL))  # its 6 s judged whole
        prints[profile] = Voiceprint(profile, now, now, 6.0, len(VOICE_ENROL), True, ENCODER_ID, vector_bytes(vector))
    return prints


def tagged_ways(work: Path) -> dict[str, Tagged]:
    """What the agent's tagging runs on the step's sessions (spoken by espeak-ng's `ko`): with
    that voice enrolled as the parent's (a household member's voice), and with a household
    whose voices are others (a stranger's). The child is `ko+f5` at pitch 95 in both."""
    from edge.tagging.voice import EMBED_SECONDS, tagging_encoder, tagging_settings

    encoder, config = tagging_encoder(), config_for(work, work / "voice-data")
    ways = {}
    for how, parent in (("a household member's voice", ("ko", 50)), ("a stranger's", ("ko+m3", 50))):
        voices = household_voices(work, {"parent": parent, "child": ("ko+f5", 95)})
        ways[f"as tagged ({tagging_settings().rate:g}/s, first {EMBED_SECONDS:g} s), {how}"] = Tagged(encoder, voices, config)
    return ways


def embedders() -> dict[str, Embedder]:
    """The whole embedding of a session: at resemblyzer's rate, and at 1.0 partials a second
    (what tagging judges a session of up to EMBED_SECONDS on, when it needs all its partials)."""
    from edge.voice.encoder import EncoderSettings, SpeakerEncoder

    return {
        f"{EncoderSettings().rate:g} partials/s (resemblyzer's)": Embedder(SpeakerEncoder.load()),
        "1.0 partials/s, all": Embedder(SpeakerEncoder.load(settings=EncoderSettings(rate=1.0))),
    }


@dataclass
class EmbedCost:
    """One session's A/B pairs: CPU seconds of Vosk decoding it, and of each way of embedding it."""

    vosk: list[float]
    embed: dict[str, list[float]]

    def ratios(self, how: str) -> list[float]:
        return [embed / vosk for embed, vosk in zip(self.embed[how], self.vosk, strict=True)]


def embed_cost(model: SpeechModel, ways: dict[str, Embedder | Tagged], pcm: bytes, pairs: int) -> EmbedCost:
    """`pairs` rounds of Vosk decoding `pcm` and every way embedding it, Vosk first or last
    in turn (the machine's noise then falls on both sides of each ratio)."""
    cost = EmbedCost([], {how: [] for how in ways})
    for pair in range(pairs):
        if pair % 2:
            cost.vosk.append(cpu_seconds(functools.partial(decode_session, model), pcm))
        for how, embed in ways.items():
            cost.embed[how].append(cpu_seconds(embed, pcm))
        if not pair % 2:
            cost.vosk.append(cpu_seconds(functools.partial(decode_session, model), pcm))
    return cost


def voice(work: Path, pairs: int) -> list[Row]:
    """The speaker encoder: its CPU per session against Vosk's on the same session, where
    its time goes (the RSS it adds: voice_memory, the next step)."""
    from edge.stt.recognizer import SpeechModel

    one_thread()

    model, full = SpeechModel(find_model("auto")), embedders()
    ways: dict[str, Embedder | Tagged] = {**full, **tagged_ways(work)}
    speech = voice_speech(work, max(VOICE_SECONDS))
    decode_session(model, speech)  # warm: the recognizer and its graph cache (these sentences), as a running agent's are
    for embed in ways.values():
        embed(speech)  # warm: numpy's first calls, the mel filters
    rows = []
    for seconds in VOICE_SECONDS:
        pcm = speech[: seconds * 2 * PIPELINE_RATE]
        cost = embed_cost(model, ways, pcm, pairs)
        rows += [embed_row(seconds, how, cost, ways[how].partials(pcm), pairs) for how in ways]
    default = next(iter(full.values()))
    rows.append(embed_split(default.encoder, speech[: 4 * 2 * PIPELINE_RATE], max(pairs, 5)))
    return rows


def voice_memory(work: Path) -> list[Row]:
    """The voice step's RSS rows, a step of their own (`--only "voice: memory"`) as they need
    none of its CPU pairs."""
    one_thread()
    from edge.tagging.voice import EMBED_SECONDS

    return voice_rss(work, voice_speech(work, max(VOICE_SECONDS))[: int(EMBED_SECONDS * PIPELINE_RATE) * 2])


def embed_row(seconds: int, how: str, cost: EmbedCost, partials: int, pairs: int) -> Row:
    ratios = cost.ratios(how)
    ratio = statistics.median(ratios)
    return Row(
        f"voice: embedding CPU / Vosk CPU, {seconds} s session, {how}",
        round(ratio, 3),
        "x",
        "<= 0.10",
        ratio <= 0.10,
        f"{pairs} pairs, spread {min(ratios):.3f}-{max(ratios):.3f}; embedding {statistics.median(cost.embed[how]) * 1e3:.0f} ms "
        f"({partials} partial{'s' * (partials != 1)}), Vosk {statistics.median(cost.vosk) * 1e3:.0f} ms CPU",
    )


def embed_split(encoder: SpeakerEncoder, pcm: bytes, repeats: int) -> Row:
    """Where one embedding's CPU goes (median of `repeats`): preparing the audio (volume, VAD
    trim), the mel spectrogram, the 3-layer LSTM over all partials at once; and, of the LSTM,
    its matrix products alone (lstm_products): what is left is the gates' element-wise work."""
    import numpy as np

    from edge.voice.features import HOP, mel_spectrogram, preprocess

    frames = encoder.settings.partial_frames
    wav = preprocess(pcm)
    starts = encoder.partial_starts(len(wav))
    padded = np.pad(wav, (0, max(0, (starts[-1] + frames) * HOP - len(wav))))
    spectrogram = mel_spectrogram(padded)
    mels = np.stack([spectrogram[s : s + frames] for s in starts])
    recurrent, projections = lstm_products(len(starts), frames)

    def ms(run: Callable[[], object]) -> float:
        return statistics.median(cpu_seconds(lambda _pcm: run(), pcm) for _ in range(repeats)) * 1e3

    whole, prepare, mel = ms(lambda: encoder.embed(pcm)), ms(lambda: preprocess(pcm)), ms(lambda: mel_spectrogram(padded))
    lstm, steps, inputs = ms(lambda: encoder.embed_partials(mels)), ms(recurrent), ms(projections)
    return Row(
        f"voice: the LSTM's share of one embedding's CPU, {len(pcm) // (2 * PIPELINE_RATE)} s session, {encoder.settings.rate:g} partials/s",
        round(lstm / whole * 100, 1),
        "%",
        "",
        None,
        f"embedding {whole:.1f} ms: audio prepared {prepare:.1f} ms, mel spectrogram {mel:.1f} ms, LSTM {lstm:.1f} ms for {len(starts)} "
        f"partials at once (its 3 x {frames} recurrent products {steps:.1f} ms, {steps / (3 * frames) * 1e3:.0f} us a step; "
        f"input projections {inputs:.1f} ms; the gates the rest); median of {repeats}",
    )


def lstm_products(partials: int, frames: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """The encoder's matrix products on random float32 values of the same shapes: the 3 x
    `frames` recurrent steps, (partials x 256) @ (256 x 1024) each; and the 3 input
    projections, one product each over all steps (40 mel bands in, then 256)."""
    import numpy as np

    from edge.voice.encoder import HIDDEN, LAYERS
    from edge.voice.features import N_MELS

    rng = np.random.default_rng(0)
    state, recurrent_w = rng.random((partials, HIDDEN), np.float32), rng.random((HIDDEN, 4 * HIDDEN), np.float32)
    gates = np.empty((partials, 4 * HIDDEN), np.float32)
    inputs = [rng.random((frames * partials, width), np.float32) for width in (N_MELS, *[HIDDEN] * (LAYERS - 1))]
    input_w = [rng.random((x.shape[1], 4 * HIDDEN), np.float32) for x in inputs]

    def recurrent() -> None:
        for _step in range(LAYERS * frames):
            np.matmul(state, recurrent_w, out=gates)

    def projections() -> None:
        for x, w in zip(inputs, input_w, strict=True):
            x @ w

    return recurrent, projections


def voice_rss(work: Path, pcm: bytes) -> list[Row]:
    """RSS (peak, and current at exit) of three children: one loads the Vosk model; one also
    imports the encoder's code (numpy, webrtcvad: every edge-agent imports them already, as
    edge.wiring imports edge.tagging.voice); one also loads the encoder with the tagging
    settings and embeds `pcm` (the part of a session the agent judges)."""
    from edge.tagging.voice import tagging_settings

    wav = write_wav(work / "voice-rss.wav", pcm)
    vosk_only = f"import vosk\nvosk.SetLogLevel(-1)\nmodel = vosk.Model({str(find_model('auto'))!r})\n"
    imported = vosk_only + "from edge.voice.encoder import EncoderSettings, SpeakerEncoder\n"
    encoder = imported + (
        f"encoder = SpeakerEncoder.load(settings=EncoderSettings(**{asdict(tagging_settings())!r}))\n"
        f"voiceprint = encoder.embed(open({str(wav)!r}, 'rb').read()[44:])\n"
    )
    (bare_peak, bare_now), (code_peak, code_now), (peak, now) = (rss(work, "-c", code) for code in (vosk_only, imported, encoder))
    rows = []
    for what, bare, code, used in (("peak RSS", bare_peak, code_peak, peak), ("RSS at rest", bare_now, code_now, now)):
        rows.append(
            Row(
                f"voice: {what} added by the speaker encoder (loaded, one session judged)",
                round(used - bare, 1),
                "MB",
                "<= 30 MB",
                used - bare <= 30,
                f"over the Vosk model alone, {bare:.0f} MB: its code imported (numpy, webrtcvad) {code - bare:.1f} MB, "
                f"then loaded and one session judged {used - code:.1f} MB",
            )
        )
    return rows


# -- 10. signing the audit log at the end of every session and command ---------------------------


def tail_signing(work: Path, sessions: int, commands: int) -> list[Row]:
    """What signing the audit log's tail costs (docs/FORMATS.md section 6, "The tail"): the CPU
    of the signature a session's last event carries (session.sealed, in its own write: the
    key, the log's id, Ed25519, the checkpoint's line), against the CPU per session of the same
    in-process run, on short commands as a satellite sends them (the worst case: the shorter
    the session, the larger the share); and against the CPU of a short command (`edge-agent
    status`), as one signature is what a command that wrote something pays at its end."""
    folder = work / "tail"
    folder.mkdir()
    config = load_config(write_config(folder, folder / "data"))
    keystore, audit = wiring.open_store(config)
    clock = wiring.make_clock(config)
    ended: list[float] = []
    recorder = wiring.make_recorder(keystore, audit, clock)
    agent = wiring.make_agent(
        config, wiring.make_model(config), lambda _record: ended.append(time.process_time()), recorder, "parent", clock
    )
    utterance = wav_pcm(make_utterance(folder, config.trigger.silence_end.total_seconds()))
    pcm = joined_utterances(utterance, sessions + 1)
    agent.run(iter([pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]))
    if len(ended) != sessions + 1:
        raise BenchError(f"{len(ended)} sessions, not {sessions + 1}")
    per_session = (ended[-1] - ended[0]) / sessions  # steady state: not the first session's warm-up
    signatures = []
    for _ in range(sessions + 1):  # a checkpoint alone: the signature and its line (an upper bound of its share)
        start = time.process_time()
        audit.checkpoint()
        signatures.append(time.process_time() - start)
    signature = statistics.median(signatures[1:])
    edge_agent = str(Path(sys.executable).parent / "edge-agent")
    command = statistics.median(child_cpu([edge_agent, "--config", str(config.path), "status"])[0] for _ in range(commands))
    keystore.close()
    policy = policy_cost(folder / "policy", config, max(commands, 5))
    caps = cap_cost()
    shutil.rmtree(folder)
    share, command_share = signature / per_session * 100, signature / command * 100
    return [
        Row(
            "policy version: session.created with it / the session's CPU",
            round(policy.per_session / per_session * 100, 3),
            "%",
            "<= 1%",
            policy.worst / per_session <= 0.01,
            f"{policy.per_session * 1e6:.1f} us CPU more a session (median of {max(commands, 5)} pairs of {POLICY_EVENTS} appends, "
            f"spread {policy.spread}; met if the largest is): the written policy's version and the trusted start in the audit line; "
            f"the version itself is computed once a start ({policy.once * 1e3:.1f} ms, {policy.once / per_session * 100:.2f}% of one session)",
        ),
        Row(
            "connection caps: per Wyoming connection / the session's CPU",
            round(caps.per_connection / per_session * 100, 4),
            "%",
            "<= 1%",
            caps.per_connection / per_session <= 0.01,
            f"{caps.per_connection * 1e6:.1f} us CPU a connection (the cap's check and count, its task's done-callback: "
            f"the lines the cap added, replayed {CAP_CONNECTIONS:,} times), at most one connection per utterance; "
            f"the cap itself computed once a start ({caps.once * 1e6:.0f} us: the descriptor limit and those in use)",
        ),
        Row(
            "audit: signing each session's end / the session's CPU",
            round(share, 3),
            "%",
            "<= 1%",
            share <= 1,
            f"{signature * 1e6:.0f} us CPU a signature with its line (median of {len(signatures) - 1} checkpoints; edge signs "
            f"in the write of the session's last event: no second write or fsync), {per_session * 1e3:.0f} ms CPU a session of "
            f"{len(utterance) / (2 * PIPELINE_RATE):.1f} s ({sessions} sessions in process); a Wyoming utterance signs twice "
            "(session.sealed, session.served)",
        ),
        Row(
            "audit: signing a command's end / a short command's CPU",
            round(command_share, 3),
            "%",
            "<= 1%",
            command_share <= 1,
            f"`edge-agent status`: {command * 1e3:.0f} ms CPU (median of {commands}), mostly Python's start and imports; "
            "a command that wrote something pays one signature (and one fsync) at its end",
        ),
    ]


POLICY_EVENTS = 5000
"""session.created events appended each way per pair of the policy row."""
CAP_CONNECTIONS = 20_000
"""Connections the cap's bookkeeping is replayed for."""


@dataclass
class Cost:
    per_session: float
    once: float
    spread: str = ""
    worst: float = 0.0
    """The largest of the pairs' figures: what the target is held to (the median is within the noise)."""

    @property
    def per_connection(self) -> float:
        return self.per_session


def policy_cost(folder: Path, config: Config, pairs: int) -> Cost:
    """What recording the written policy's version costs a session: session.created appended
    (to a real audit log, in batches: the appends, not the fsyncs, are what differ) with the
    policy and the trusted start, against the same event without them (a log older than the
    policy), alternating, CPU per event; and the version's computation once a start."""
    from edge.written.terms import terms_of

    folder.mkdir()
    log = AuditLog(folder)

    def event(number: int, policy: str | None) -> SessionCreated:
        created = "2099-11-21T21:00:00+00:00" if policy is not None else None
        return dataclasses.replace(_session_created(number), policy=policy, created=created)

    start = time.process_time()
    version = terms_of(config, FileVault(folder / "root.key").level).version
    once = time.process_time() - start
    differences = []
    for pair in range(pairs):
        cost = {}
        for policy in (version, None) if pair % 2 == 0 else (None, version):
            events = [event(pair * 10 * POLICY_EVENTS + n, policy) for n in range(POLICY_EVENTS)]
            start = time.process_time()
            for at in range(0, len(events), 100):
                log.append_many(events[at : at + 100])
            cost[policy is None] = (time.process_time() - start) / POLICY_EVENTS
        differences.append(cost[False] - cost[True])
    return Cost(statistics.median(differences), once, f"{min(differences) * 1e6:.1f}-{max(differences) * 1e6:.1f} us", max(differences))


def cap_cost() -> Cost:
    """The lines the Wyoming connection cap added per connection (edge.wyoming.server: the
    check against the cap and the count, the accepted task's done-callback that closes the
    socket again and uncounts it), replayed on real tasks and sockets in an event loop, CPU
    per connection; and the cap's computation once a start (edge.disk.descriptors)."""
    from edge.disk import descriptors

    start = time.process_time()
    descriptors.connection_cap(64, descriptors.RESERVED + 1)
    once = time.process_time() - start

    async def replay() -> float:
        loop = asyncio.get_running_loop()
        clients: set[asyncio.Task[None]] = set()
        state = {"open": 0}
        left, right = socket.socketpair()
        right.close()

        def gone(task: asyncio.Task[None], client: socket.socket) -> None:
            clients.discard(task)
            client.close()
            state["open"] -= 1
            if not task.cancelled() and task.exception() is not None:
                raise BenchError("a task failed")

        async def serve() -> None:
            return None

        tasks = [loop.create_task(serve()) for _ in range(CAP_CONNECTIONS)]
        await asyncio.gather(*tasks)
        start = time.process_time()
        for task in tasks:
            if state["open"] >= CAP_CONNECTIONS:  # as the cap's check (never reached here: every connection is replayed)
                continue
            state["open"] += 1
            clients.add(task)
            task.add_done_callback(functools.partial(gone, client=left))  # done already: called on the next loop turn
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        spent = time.process_time() - start
        left.close()
        expect(not clients and state["open"] == 0, "the replayed connections were not all uncounted")
        return spent / CAP_CONNECTIONS

    return Cost(asyncio.run(replay()), once)


# -- main ----------------------------------------------------------------------------------


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith(("model name", "Model"))
        ),
        platform.machine(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer pairs (about two minutes)")
    parser.add_argument("--pairs", type=int, help="A/B pairs for the CPU ratios (default 5; 2 with --quick)")
    parser.add_argument("--utterances", type=int, help="Wyoming utterances per run (default 10; 4 with --quick)")
    parser.add_argument("--only", metavar="WORD", help="run only the steps whose name contains WORD (e.g. wyoming)")
    parser.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="run every step N times: median and spread (min-max)")
    args = parser.parse_args()
    os.umask(0o077)
    pairs = args.pairs or (2 if args.quick else 5)
    utterances = args.utterances or (4 if args.quick else 10)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as scratch:
        work = Path(scratch)
        speech = functools.cache(lambda: make_speech(work, 20 if args.quick else 60))  # made once, if a step asks
        steps = [
            ("overhead vs vosk-transcriber", lambda: overhead(work, speech(), pairs)),
            ("commit scale", lambda: commit_scale(work, [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000])),
            ("shred scale", lambda: shred_scale(work, [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000])),
            ("boot catch-up", lambda: [boot_catch_up(work, 10_000)]),
            ("purge vs find -delete", lambda: purge_vs_find(work, 10_000 if args.quick else 100_000, min(pairs, 3))),
            ("scale to a million", lambda: million(work, 100_000 if args.quick else 1_000_000)),
            ("start scale", lambda: start_scale(work, 10_000 if args.quick else 100_000, pairs)),
            (
                "verify scale",
                lambda: (
                    verify_scale(
                        work,
                        [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000],
                        [100_000] if args.quick else [100_000, 1_000_000],
                    )
                    + [verify_cpu_ratio(work, 100_000, pairs)]
                ),
            ),
            ("memory", lambda: memory(work, speech())),
            ("memory table", lambda: memory_table(work)),
            ("sealing", lambda: sealing(work)),
            ("latency", lambda: latency(work, speech())),
            ("wyoming vs run --input", lambda: wyoming(work, utterances, pairs)),
            ("wyoming in one process", lambda: wyoming_in_process(work, max(pairs, 10))),
            ("voice: speaker encoder", lambda: voice(work, pairs)),
            ("voice: memory", lambda: voice_memory(work)),
            ("tail signing", lambda: tail_signing(work, utterances, pairs)),
        ]
        for name, step in steps:
            if args.only and args.only not in name:
                continue
            runs = []
            for run in range(args.repeat):
                print(f"bench: {name} ({run + 1}/{args.repeat}) ...", file=sys.stderr, flush=True)
                runs.append(step())
            rows.extend(combine(runs))
    print_table(rows)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine(), "rows": [asdict(r) for r in rows]}, indent=1, ensure_ascii=False) + "\n"
        )
    return 0 if all(r.met is not False for r in rows) else 1


def combine(runs: list[list[Row]]) -> list[Row]:
    """One row per measure: the median of the runs, their spread in the note, met if the median meets it."""
    if len(runs) == 1:
        return runs[0]
    combined = []
    for same in zip(*runs, strict=True):
        values = [row.value for row in same]
        median = statistics.median(values)
        middle = min(same, key=lambda row: abs(row.value - median))
        met = None if middle.met is None else sum(bool(row.met) for row in same) * 2 > len(same)
        spread = f"median of {len(values)} runs, spread {min(values):g}-{max(values):g}"
        combined.append(Row(middle.measure, round(median, 3), middle.unit, middle.target, met, f"{spread}; {middle.note}"))
    return combined


def print_table(rows: list[Row]) -> None:
    info = machine()
    print(f"edge benchmarks: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['date']}")
    width = max(len(r.measure) for r in rows)
    for row in rows:
        verdict = "" if row.met is None else ("met" if row.met else "MISSED")
        print(f"{row.measure:{width}}  {row.value:>10} {row.unit:11} {row.target:9} {verdict:6} {row.note}")


if __name__ == "__main__":
    sys.exit(main())
