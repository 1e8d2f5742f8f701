"""Retention on schedule while the agent runs (APScheduler 3.x).

Derived from the keystore at start: one `date` job per bucket at its expiry,
plus a periodic sweep. `misfire_grace_time=None` and `coalesce=True` so a job
missed while the device was off runs once at start instead of being dropped
(a grace time of 1 s silently drops it).

APScheduler waits on the wall clock, which can be set back. Jobs are therefore
placed at the wall-clock instant that corresponds to the *trusted* expiry, and a
watch thread (monotonic) re-places them and sweeps at once whenever the wall
clock jumps, so a clock set back never makes the device wait longer.
"""

from __future__ import annotations

import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from edge.errors import EdgeError
from edge.retention.clock import TrustedClock
from edge.retention.shredder import ShredReport, Shredder
from edge.store.keystore import Bucket

WATCH_SECONDS = 1.0
"""How often the watch thread compares the wall clock with the trusted clock."""
JUMP = 2.0
"""Seconds the wall clock may step (against the monotonic clock) before jobs are re-placed."""


class RetentionService:
    """Catch-up at start, then bucket jobs, a periodic sweep and a clock watch."""

    def __init__(
        self,
        shredder: Shredder,
        clock: TrustedClock,
        sweep_every: timedelta,
        on_report: Callable[[ShredReport], None],
    ) -> None:
        self.shredder = shredder
        self.clock = clock
        self.sweep_every = sweep_every
        self.on_report = on_report
        self._scheduler = BackgroundScheduler(
            timezone=timezone.utc,
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        self._stop = threading.Event()
        self._watch_thread = threading.Thread(target=self._watch, name="edge-clock-watch", daemon=True)
        self._offset = timedelta(0)
        self._drift = 0.0

    def catch_up(self) -> ShredReport:
        """Shred everything already due, synchronously (before the microphone opens)."""
        report = self.shredder.sweep()
        self.on_report(report)
        return report

    def start(self) -> None:
        self._offset, self._drift = self._current_offset(), self.clock.drift()
        self._scheduler.add_job(self.sweep, IntervalTrigger(seconds=self.sweep_every.total_seconds()), id="sweep")
        for bucket in self.shredder.keystore.read().buckets.values():
            self.add_bucket(bucket)
        self._scheduler.start()
        self._watch_thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        if self._watch_thread.is_alive():
            self._watch_thread.join(timeout=5)

    def add_bucket(self, bucket: Bucket) -> None:
        """A job at the bucket's expiry (called for new buckets by the recorder)."""
        self._scheduler.add_job(
            self.sweep, DateTrigger(run_date=self._wall_time(bucket.expires)), id=f"bucket:{bucket.id}", replace_existing=True
        )

    def sweep(self) -> None:
        try:
            report = self.shredder.sweep()
        except EdgeError as exc:  # keep the agent running; say what went wrong
            print(f"edge-agent: retention sweep failed: {exc}", file=sys.stderr, flush=True)
            return
        if not report.empty:
            self.on_report(report)

    def _current_offset(self) -> timedelta:
        reading = self.clock.read()
        return reading.now - reading.wall

    def _wall_time(self, trusted: datetime) -> datetime:
        """The wall-clock instant at which the trusted clock will read `trusted`."""
        return trusted - self._offset

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):  # Event.wait runs on the monotonic clock
            drift = self.clock.drift()
            if abs(drift - self._drift) <= JUMP:
                continue
            self._drift, self._offset = drift, self._current_offset()
            try:
                buckets = self.shredder.keystore.read().buckets
            except EdgeError as exc:
                print(f"edge-agent: cannot re-place retention jobs after a clock change: {exc}", file=sys.stderr, flush=True)
                buckets = {}
            for job in self._scheduler.get_jobs():
                if job.id.startswith("bucket:"):
                    bucket = buckets.get(job.id.split(":", 1)[1])
                    if bucket is None:
                        job.remove()
                    else:
                        job.reschedule(DateTrigger(run_date=self._wall_time(bucket.expires)))
            self._scheduler.get_job("sweep").reschedule(IntervalTrigger(seconds=self.sweep_every.total_seconds()))
            self._scheduler.add_job(self.sweep, id="sweep-now", replace_existing=True)  # runs at once
            self._scheduler.wakeup()
