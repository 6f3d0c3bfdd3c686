"""When probes run: APScheduler drives one-second time slots; each slot launches
the (target, probe) pairs due in it at their exact due time.

One APScheduler job run costs about 250 CPU-us against about 90 for a bare
``loop.call_at`` (measured when the project was planned, issue 7; not re-measured
by bench/), so APScheduler owns the clock and the lifecycle while the
per-run work stays a heap pop and a ``call_at``. Each pair's phase inside its
interval comes from a stable hash, so 1,000 probes on the same interval spread
over it instead of firing in the same millisecond, and restarts keep the spread.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from exporter.config import ProbeSpec, SchedulerSettings, Target
from exporter.metrics import MetricsState
from exporter.probes import ProbeResult

log = logging.getLogger(__name__)

PairKey = tuple[str, str]
ProbeRunner = Callable[[Target, ProbeSpec], Awaitable[ProbeResult]]
SLOT_SECONDS = 1.0


def phase_fraction(target: str, probe: str) -> float:
    """Stable position in [0, 1) of a pair inside its interval."""
    return zlib.crc32(f"{target}\0{probe}".encode()) / 2**32


def first_due(now: float, interval: float, fraction: float, jitter: float) -> float:
    return now + interval * jitter * fraction


def next_due(previous_due: float, interval: float, now: float) -> float:
    """The next due time on the pair's grid that is not in the past: a stalled pair
    skips the runs it missed instead of firing them all at once."""
    due = previous_due + interval
    if due < now:
        missed = int((now - due) // interval) + 1
        due += missed * interval
    return due


@dataclass(slots=True)
class _Pair:
    target: Target
    spec: ProbeSpec
    due: float
    generation: int
    running: bool = False


@dataclass(order=True, slots=True)
class _Entry:
    due: float
    seq: int
    key: PairKey = field(compare=False)
    generation: int = field(compare=False)


class ProbeScheduler:
    """Runs every configured pair on its interval, never overlapping itself, under a
    global concurrency limit."""

    def __init__(self, state: MetricsState, runner: ProbeRunner,
                 settings: SchedulerSettings = SchedulerSettings()) -> None:  # fmt: skip
        self.state = state
        self.runner = runner
        self.settings = settings
        self._pairs: dict[PairKey, _Pair] = {}
        self._heap: list[_Entry] = []
        self._seq = 0
        self._generation = 0
        self._semaphore = asyncio.Semaphore(settings.max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False
        #: Due times before this were handed to the loop by the latest slot.
        self._horizon = 0.0
        self._aps: AsyncIOScheduler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- configuration ---------------------------------------------------------------

    def apply(self, pairs: Iterable[tuple[Target, ProbeSpec]],
              settings: SchedulerSettings | None = None) -> None:  # fmt: skip
        """Adopt a new pair set. Unchanged pairs keep their grid; new ones get a phase."""
        if settings is not None and settings != self.settings:
            if settings.max_concurrency != self.settings.max_concurrency:
                self._semaphore = asyncio.Semaphore(settings.max_concurrency)
            self.settings = settings
        now = time.time()
        self._generation += 1
        old = self._pairs
        self._pairs = {}
        for target, spec in pairs:
            key = (target.name, spec.name)
            previous = old.get(key)
            if previous is not None and previous.spec.interval == spec.interval:
                due, running = previous.due, previous.running
            else:
                fraction = phase_fraction(*key)
                due, running = first_due(now, spec.interval, fraction, self.settings.jitter), False
                if previous is not None:
                    running = previous.running
            pair = _Pair(target, spec, due, self._generation, running)
            self._pairs[key] = pair
            self._push(key, pair)

    def _push(self, key: PairKey, pair: _Pair) -> None:
        self._seq += 1
        heapq.heappush(self._heap, _Entry(pair.due, self._seq, key, pair.generation))

    @property
    def pair_count(self) -> int:
        return len(self._pairs)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._stopped = False
        self._loop = asyncio.get_running_loop()
        self._aps = AsyncIOScheduler(event_loop=self._loop)
        self._aps.add_job(self._slot, "interval", seconds=SLOT_SECONDS, id="dnsgap-slot",
                          max_instances=1, coalesce=True, misfire_grace_time=None)  # fmt: skip
        self._aps.start()
        self._tick()  # do not wait a whole slot for the first launches

    async def stop(self) -> None:
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the slot --------------------------------------------------------------------

    async def _slot(self) -> None:
        # APScheduler's AsyncIOExecutor runs plain functions in a thread pool; the slot
        # must run on the loop thread, which owns the heap and call_at (not
        # thread-safe: from a worker thread, launches raced _launch's heap pushes and
        # waited for the loop's next wake-up; at 50,000 pairs the loop stalled for
        # seconds, bench/README.md). A coroutine job runs on the loop itself.
        self._tick()

    def _tick(self) -> None:
        loop = self._loop
        if loop is None:
            return
        now_wall = time.time()
        now_loop = loop.time()
        horizon = now_wall + SLOT_SECONDS
        self._horizon = horizon
        heap = self._heap
        while heap and heap[0].due < horizon:
            entry = heapq.heappop(heap)
            pair = self._pairs.get(entry.key)
            if pair is None or pair.generation != entry.generation or pair.due != entry.due:
                continue  # removed or rescheduled by a reload
            loop.call_at(now_loop + max(0.0, entry.due - now_wall), self._launch,
                         entry.key, entry.due, pair.generation)  # fmt: skip

    def _launch(self, key: PairKey, due: float, generation: int) -> None:
        pair = self._pairs.get(key)
        if self._stopped or pair is None or pair.generation != generation:
            return
        now = time.time()
        pair.due = next_due(due, pair.spec.interval, now)
        if pair.due < self._horizon:
            # Intervals shorter than a slot: the slot that would pick this up has passed.
            loop = asyncio.get_running_loop()
            loop.call_at(loop.time() + (pair.due - now), self._launch, key, pair.due,
                         generation)  # fmt: skip
        else:
            self._push(key, pair)
        if pair.running:
            self.state.skipped["overlap"] += 1
            return
        pair.running = True
        task = asyncio.get_running_loop().create_task(self._run(key, pair, due))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: PairKey, pair: _Pair, due: float) -> None:
        try:
            async with self._semaphore:
                self.state.lateness.observe(max(0.0, time.time() - due))
                self.state.in_flight += 1
                try:
                    result = await self.runner(pair.target, pair.spec)
                finally:
                    self.state.in_flight -= 1
            self.state.record(key[0], key[1], result)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in a probe must cost one result, never the loop
            log.exception("probe %s/%s failed unexpectedly", *key)
        finally:
            current = self._pairs.get(key)
            if current is not None:
                current.running = False
            pair.running = False
