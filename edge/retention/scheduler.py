"""Retention on schedule while the agent runs (APScheduler 3.x).

Derived from the keystore: one `date` job at the earliest instant a bucket may expire (the
keystore's bound on the expiries: no bucket row is opened for it), placed again after every
sweep, and one per bucket made since the start, at its expiry.
`misfire_grace_time=None` and `coalesce=True` so a job missed while the device was
off runs once at start instead of being dropped (a grace time of 1 s silently drops it).

APScheduler waits on the wall clock, which can be set back. Jobs are therefore
placed at the wall-clock instant that corresponds to the *trusted* expiry, and a
watch thread (monotonic) re-places them and sweeps at once whenever the wall
clock jumps, so a clock set back never makes the device wait longer. The periodic
sweep is paced by that thread too, on the monotonic clock: an interval job would
not only follow the wall clock, APScheduler also lists every run an interval job
missed before it coalesces them, so a clock stepped forward by years (a Pi without
a real-time clock syncing NTP) kept its scheduler busy for seconds to hours.

Under systemd's watchdog the same thread asks the scheduler for a heartbeat job that
takes the data folder's lock and only then tells systemd the agent is alive: a stuck
scheduler, a dead watch thread or a writer hung holding the lock (which would stop every
shred, the backstop's too) all end the heartbeats, and systemd restarts the agent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger

from edge.disk.lock import DataLock
from edge.errors import EdgeError
from edge.retention.clock import TrustedClock
from edge.retention.shredder import Shredder, ShredReport
from edge.store.records import Bucket
from edge.systemd import Notifier

log = logging.getLogger(__name__)

WATCH_SECONDS = 1.0
"""How often the watch thread compares the wall clock with the trusted clock (and the
granularity of the periodic sweep)."""
JUMP = 2.0
"""Seconds the wall clock may step (against the monotonic clock) before jobs are re-placed."""
SWEEP_RETRY_SECONDS = 5.0
"""After a sweep that failed, the next job waits this long (not the periodic sweep's minutes)."""


class RetentionService:
    """Catch-up at start, then bucket jobs, a periodic sweep and a clock watch."""

    def __init__(
        self,
        shredder: Shredder,
        clock: TrustedClock,
        sweep_every: timedelta,
        on_report: Callable[[ShredReport], None],
        notifier: Notifier | None = None,
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
        self.notifier = notifier or Notifier(None, None)
        self._beating = threading.Event()  # a heartbeat job is queued or running
        self._to_place = threading.Event()
        """A sweep ended (or failed), or the clock stepped: the watch thread places the next job,
        and keeps trying every tick until one is placed (a job that added one itself could wait
        for the scheduler's lock while a shutdown holding it waits for the job)."""
        self._retry_after = 0.0
        """time.monotonic() before which a sweep that failed is not tried again by the next job."""

    def catch_up(self) -> ShredReport:
        """Shred everything already due, synchronously (before the microphone opens)."""
        report = self.shredder.sweep()
        self.on_report(report)
        return report

    def start(self) -> None:
        self._measure_clock()
        self._place_next()
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
        except EdgeError as exc:  # keep the agent running; say what went wrong, and try again soon
            log.error("retention sweep failed: %s", exc)
            self._retry_after = time.monotonic() + SWEEP_RETRY_SECONDS
            return
        except BaseException:
            self._retry_after = time.monotonic() + SWEEP_RETRY_SECONDS
            raise
        finally:
            self._to_place.set()  # whatever happened, the one job that ran is gone: place the next
        if not report.empty:
            self.on_report(report)

    def _place_next(self) -> None:
        """A job at the earliest instant a bucket kept may expire (one already past runs at
        once: it expired since the sweep looked), at the start and within a second of each
        sweep; after a sweep that failed, not before SWEEP_RETRY_SECONDS."""
        earliest = self.shredder.keystore.read().buckets.earliest_expiry()
        if earliest is None:
            return
        # an id per instant: the job that ran this sweep may not be removed yet, and must not take this one with it
        job = f"due:{earliest.isoformat()}"
        self._scheduler.add_job(self.sweep, DateTrigger(run_date=self._wall_time(earliest)), id=job, replace_existing=True)

    def _measure_clock(self) -> None:
        """Note how far the trusted clock is ahead of the wall clock, and the drift it held at.

        Both from one reading: taken apart, a clock stepped twice in quick succession
        (set back, then corrected by NTP) could pair the new drift with the old offset and
        leave every job a year late with no further jump to notice.
        """
        reading = self.clock.read()
        self._offset, self._drift = reading.now - reading.wall, reading.drift

    def _wall_time(self, trusted: datetime) -> datetime:
        """The wall-clock instant at which the trusted clock will read `trusted`."""
        return trusted - self._offset

    def _heartbeat(self) -> None:
        """Run by the scheduler: alive only if the data folder's lock can be taken now."""
        try:
            with DataLock(self.shredder.keystore.data_dir):
                pass
            self.notifier.alive()
        finally:
            self._beating.clear()

    def _watch(self) -> None:
        next_sweep, said = time.monotonic() + self.sweep_every.total_seconds(), ""
        beat_every, next_beat = self.notifier.beat_every, time.monotonic()
        while not self._stop.wait(min(WATCH_SECONDS, beat_every or WATCH_SECONDS)):  # monotonic
            try:
                if beat_every is not None and time.monotonic() >= next_beat and not self._beating.is_set():
                    next_beat = time.monotonic() + beat_every
                    self._beating.set()  # a heartbeat stuck behind a hung lock holder is never doubled
                    self._scheduler.add_job(self._heartbeat, id="heartbeat", replace_existing=True)
                jumped = abs(self.clock.read().drift - self._drift) > JUMP
                if jumped or time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.sweep_every.total_seconds()
                    self._scheduler.add_job(self.sweep, id="sweep-now", replace_existing=True)  # runs at once
                if jumped:
                    self._replace_jobs()
                if self._to_place.is_set() and time.monotonic() >= self._retry_after:
                    self._to_place.clear()
                    try:
                        self._place_next()
                    except BaseException:
                        self._to_place.set()  # tried again next tick: a lost placement would wait for the periodic sweep
                        raise
                said = ""
            except Exception as exc:  # an I/O error or a bug must not end retention: retry next tick
                message = f"the retention watch failed (retrying every second): {exc}"
                if message != said:  # once per distinct failure, not once a second
                    log.warning("%s", message)
                    said = message

    def _replace_jobs(self) -> None:
        """After a clock step: every bucket job at the wall instant of its trusted expiry, and
        the job at the earliest one."""
        self._measure_clock()
        self._to_place.set()  # placed by the watch thread, at the new offset
        buckets: Mapping[str, Bucket]
        try:
            buckets = self.shredder.keystore.read().buckets
        except Exception as exc:  # the sweep queued before this says what failed; the jobs stay
            log.error("cannot re-place retention jobs after a clock change: %s", exc)
            buckets = {}
        for job in self._scheduler.get_jobs():
            if job.id.startswith("bucket:"):
                bucket = buckets.get(job.id.split(":", 1)[1])
                if bucket is None:
                    job.remove()
                else:
                    job.reschedule(DateTrigger(run_date=self._wall_time(bucket.expires)))
