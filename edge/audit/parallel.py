"""`audit verify` on every core: the log cut into chunks of whole lines, each checked by a
worker process (chain.check_range: parse, canonical form, hash, links, checkpoints), the
results taken back in file order, so the first bad line reported is the first in the file.

A worker starts its chunk from the line before it, as the planner read it (a `Seed`), and so
checks every link of its chunk itself, the first one included; the parent checks that each
chunk starts at the line number, and from the line, that the chunk before it ended on, and
applies what the data check needs in file order. At most two chunks per worker are in flight,
so memory stays bounded whatever the size of the log.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import NamedTuple

from edge.audit.chain import GENESIS, Chain, Problem, ScanOp, Seed, Sink, check_range, keys_of, seed_of
from edge.progress import Progress


def _cores() -> int:
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Parallel:
    """When and how verify spreads the work over processes."""

    workers: int = field(default_factory=_cores)
    from_bytes: int = 24 << 20
    """Smaller logs (about 50,000 lines) are checked in this process: starting workers would
    cost more than they save."""
    chunk_bytes: int = 8 << 20
    """At most; a smaller log is cut into four chunks per worker, so that none waits long for
    the last chunk."""

    def chunk_for(self, size: int) -> int:
        return max(1, min(self.chunk_bytes, size // (4 * self.workers)))

    def applies(self, size: int) -> bool:
        """Worth it, and safe: a forked worker has only the thread that forked it, so no other
        thread may be holding a lock it needs (verify is a command, with one thread)."""
        return self.workers > 1 and size >= self.from_bytes and threading.active_count() == 1


class Task(NamedTuple):
    """One chunk: bytes [start, end) of the open log `fd`, whose first line is `line`."""

    fd: int
    start: int
    end: int
    line: int
    seed: Seed
    log_id: str | None
    public_key: str | None


class Checked(NamedTuple):
    chain: Chain
    """The chunk's own lines (verified up to `problem`, if any)."""
    problem: Problem | None
    ops: list[ScanOp]


def check_chunks(fd: int, size: int, options: Parallel, sink: Sink, progress: Progress | None = None) -> tuple[Chain, Problem | None]:
    """The first `size` bytes of the log checked by worker processes: the chain of every line
    verified and the first bad line, if any; `sink` gets the data check's inputs in file order,
    `progress` (bytes checked, of `size`) each chunk as it is linked."""
    chain = Chain()
    tasks = plan(fd, size, options.chunk_for(size))
    context = multiprocessing.get_context("fork")  # the workers inherit the open log: nothing is reopened by name
    # gc.disable: a worker makes and drops millions of acyclic objects and lives for one verify
    with ProcessPoolExecutor(options.workers, mp_context=context, initializer=gc.disable) as pool:
        pending: deque[tuple[Task, Future[Checked]]] = deque()
        for task in islice(tasks, 2 * options.workers):
            pending.append((task, pool.submit(check_chunk, task)))
        while pending:
            task, future = pending.popleft()
            problem = _follows(chain, task) or _take(chain, future.result(), sink)
            if problem is not None:
                pool.shutdown(cancel_futures=True)
                return chain, problem
            if progress is not None:
                progress(task.end, size)
            for task in islice(tasks, 1):
                pending.append((task, pool.submit(check_chunk, task)))
    return chain, None


def check_chunk(task: Task) -> Checked:
    """In a worker: check one chunk, collecting the data check's inputs for the parent."""
    chain = Chain.after(task.seed, task.line, task.log_id, task.public_key)
    ops: list[ScanOp] = []
    problem = check_range(task.fd, task.start, task.end, chain, ops.append)
    return Checked(chain.without_seed(task.seed), problem, ops)


def _follows(chain: Chain, task: Task) -> Problem | None:
    """The link between chunks: the worker started from the line the planner read before its
    chunk, which must be the line the previous chunk verified last (it differs only if the log
    was rewritten while it was being verified)."""
    if chain.next_line != task.line or Seed(chain.previous, bytes(chain.hashes[-32:])) != task.seed:
        return Problem("the log changed while it was being verified: verify it again", task.line)
    return None


def _take(chain: Chain, checked: Checked, sink: Sink) -> Problem | None:
    for op in checked.ops:
        sink(op)
    chain.extend(checked.chain)
    return checked.problem


def plan(fd: int, size: int, chunk_bytes: int) -> Iterator[Task]:
    """Chunks of whole lines of about `chunk_bytes`, read once in order (to count lines): each
    with its first line's number, the seed the line before it leaves, and what line 1 says."""
    start, line, seed = 0, 1, GENESIS
    keys: tuple[str | None, str | None] = (None, None)  # the check of line 1 sets them itself
    while start < size:
        block = _whole_lines(fd, start, min(start + chunk_bytes, size), size)
        yield Task(fd, start, start + len(block), line, seed, *keys)
        lines = block[:-1] if block.endswith(b"\n") else block
        if line == 1:
            keys = keys_of(lines.partition(b"\n")[0])
        seed = seed_of(lines[lines.rfind(b"\n") + 1 :])
        start += len(block)
        line += lines.count(b"\n") + 1


def _whole_lines(fd: int, start: int, stop: int, size: int) -> bytes:
    """The bytes from `start` through the last newline before `stop`; through the next newline
    if there is none (a line longer than a chunk); or up to `size` (a torn last line included)."""
    parts: list[bytes] = []
    step = stop - start
    while True:
        data = os.pread(fd, min(step, size - start), start)
        start += len(data)
        newline = data.rfind(b"\n")
        if not data or start >= size or newline >= 0:
            parts.append(data if not data or start >= size else data[: newline + 1])
            return b"".join(parts)
        parts.append(data)
