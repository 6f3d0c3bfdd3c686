"""When probes run: APScheduler drives one-second time slots; each slot launches
the (target, probe) pairs due in it at their exact due time.

One APScheduler job run costs about 250 CPU-us against about 90 for a bare
``loop.call_at`` (measured when the project was planned, issue 7; not re-measured
by bench/), so APScheduler owns the clock and the lifecycle while the
per-run work stays a heap pop and a ``call_at``. Each pair's phase inside its
interval comes from a stable hash, so 1,000 probes on the same interval spread
over it instead of firing in the same millisecond, and restarts keep the spread.

A probe starts at its due time or not at all: nothing queues behind a probe that
waits on a silent server. The bounds that protect the process (probes pending at
once, file descriptors) admit or refuse at once, fairly per target
(exporter/capacity.py), and every refusal is counted by reason on
``dnsgap_probes_skipped_total``.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from exporter import capacity
from exporter.capacity import Budget, DescriptorsExhausted
from exporter.config import ProbeSpec, SchedulerSettings, Target, Transport
from exporter.metrics import MetricsState
from exporter.probes import ProbeResult

log = logging.getLogger(__name__)

PairKey = tuple[str, str]
ProbeRunner = Callable[[Target, ProbeSpec], Awaitable[ProbeResult]]
SLOT_SECONDS = 1.0
#: Pairs due within this many seconds of each other start together, at the first
#: one's due time (the others up to this much early, never late): at a thousand
#: probes a second, a timer per 10 ms instead of a timer per probe, each of which
#: cost a twentieth of a probe's CPU.
LAUNCH_GRAIN = 0.01


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


def uses_descriptor(spec: ProbeSpec) -> bool:
    """A TCP/TLS exchange (DSO included) holds a file descriptor while it runs; a UDP
    probe waits on a shared socket."""
    return spec.transport is not Transport.UDP or spec.kind.is_transfer


def budgets(pairs: list[tuple[Target, ProbeSpec]], settings: SchedulerSettings,
            descriptors: int) -> tuple[capacity.Shares, capacity.Shares]:  # fmt: skip
    """(all pending probes, stream probes) shares for a pair set: sized from each
    pair's timeout / interval, the stream one also capped by the free descriptors."""
    demands = [(target.name, capacity.pair_demand(spec.interval, spec.timeout,
                                                   spec.fallback is not None))
               for target, spec in pairs]  # fmt: skip
    pending = capacity.plan(demands, settings.max_concurrency)
    streams = [item for item, (_, spec) in zip(demands, pairs, strict=True)
               if uses_descriptor(spec)]  # fmt: skip
    wanted = capacity.plan(streams)
    if settings.max_concurrency is not None:
        wanted = capacity.plan(streams, min(wanted.capacity, settings.max_concurrency))
    if descriptors < wanted.capacity:
        wanted = capacity.plan(streams, descriptors)
    return pending, wanted


@dataclass(slots=True)
class _Pair:
    target: Target
    spec: ProbeSpec
    due: float
    generation: int
    running: bool = False
    #: Counted against the descriptor budget while it runs.
    stream: bool = False


#: A heap entry: (due, seq, key, generation). A tuple, not an ordered dataclass:
#: tuples compare in C, and the heap compares them about 20 times per launch at
#: fleet size (a dataclass's generated __lt__ was a few percent of a probe's CPU).
#: ``seq`` is unique, so the comparison never reaches the key.
_Entry = tuple[float, int, PairKey, int]


class ProbeScheduler:
    """Runs every configured pair on its interval, never overlapping itself, within
    the pending-probe and descriptor budgets."""

    def __init__(self, state: MetricsState, runner: ProbeRunner,
                 settings: SchedulerSettings = SchedulerSettings()) -> None:  # fmt: skip
        self.state = state
        self.runner = runner
        self.settings = settings
        self._pairs: dict[PairKey, _Pair] = {}
        self._heap: list[_Entry] = []
        self._seq = 0
        self._generation = 0
        self._pending = Budget(capacity.Shares(0, {}))
        self._streams = Budget(capacity.Shares(0, {}))
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
        if settings is not None:
            self.configure(settings)
        pairs = list(pairs)
        self.reshape(*budgets(pairs, self.settings, capacity.descriptors_for_probes()))
        wanted = {(target.name, spec.name) for target, spec in pairs}
        self.remove([key for key in self._pairs if key not in wanted])
        self.upsert(pairs)

    # configure/reshape/remove/upsert are the steps of apply; a reload computes the
    # budgets off the loop and runs the rest in bounded batches (exporter.runtime)
    # so that 60,000 pairs never stall the loop.

    def configure(self, settings: SchedulerSettings) -> None:
        self.settings = settings

    def reshape(self, pending: capacity.Shares, streams: capacity.Shares) -> None:
        self._pending.reshape(pending)
        self._streams.reshape(streams)

    def remove(self, keys: Iterable[PairKey]) -> None:
        """Forget pairs; their heap entries are dropped when popped."""
        for key in keys:
            self._pairs.pop(key, None)

    def upsert(self, pairs: Iterable[tuple[Target, ProbeSpec]]) -> None:
        """Add or replace pairs. A pair whose interval is unchanged keeps its grid; a
        running one stays marked running (no overlap with its own run)."""
        now = time.time()
        self._generation += 1
        for target, spec in pairs:
            key = (target.name, spec.name)
            previous = self._pairs.get(key)
            if previous is not None and previous.spec.interval == spec.interval:
                due, running = previous.due, previous.running
            else:
                fraction = phase_fraction(*key)
                due, running = first_due(now, spec.interval, fraction, self.settings.jitter), False
                if previous is not None:
                    running = previous.running
            pair = _Pair(target, spec, due, self._generation, running, uses_descriptor(spec))
            self._pairs[key] = pair
            if self._loop is not None and due < self._horizon:
                # The slot that hands out this due time has passed: the heap would
                # hold the pair until the next slot, up to a second late.
                self._loop.call_at(self._loop.time() + max(0.0, due - now), self._launch,
                                   key, due, pair.generation)  # fmt: skip
            else:
                self._push(key, pair)

    def _push(self, key: PairKey, pair: _Pair) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (pair.due, self._seq, key, pair.generation))

    @property
    def pair_count(self) -> int:
        return len(self._pairs)

    @property
    def capacity(self) -> tuple[int, int]:
        """(pending probes, stream probes) the budgets admit at once."""
        return self._pending.capacity, self._streams.capacity

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._stopped = False
        self._rebase_overdue(time.time())
        self._loop = asyncio.get_running_loop()
        self._aps = AsyncIOScheduler(event_loop=self._loop)
        self._aps.add_job(self._slot, "interval", seconds=SLOT_SECONDS, id="dnsgap-slot",
                          max_instances=1, coalesce=True, misfire_grace_time=None)  # fmt: skip
        self._aps.start()
        self._tick()  # do not wait a whole slot for the first launches

    def _rebase_overdue(self, now: float) -> None:
        """Shift every due time by the time start-up took since the pairs were
        placed, if any fell due meanwhile.

        Loading a fleet's config takes seconds (20 s for 60,000 pairs here): the
        pairs whose phase fell in that time would all start in the first slot, the
        same burst on every interval after (their grid keeps it), enough to fill a
        shared socket's receive buffer or a configured bound at once.
        """
        if not self._heap or self._heap[0][0] >= now:
            return
        shift = now - min(pair.due for pair in self._pairs.values())
        heap = []
        for key, pair in self._pairs.items():
            pair.due += shift
            self._seq += 1
            heap.append((pair.due, self._seq, key, pair.generation))
        heapq.heapify(heap)
        self._heap = heap

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
        batches: dict[int, list[tuple[PairKey, float, int]]] = {}
        while heap and heap[0][0] < horizon:
            due, _, key, generation = heapq.heappop(heap)
            pair = self._pairs.get(key)
            if pair is None or pair.generation != generation or pair.due != due:
                continue  # removed or rescheduled by a reload
            delay = max(0.0, due - now_wall)
            grain = int(delay / LAUNCH_GRAIN)
            batch = batches.get(grain)
            if batch is None:  # the heap pops in due order: this one is the earliest
                batch = batches[grain] = []
                loop.call_at(now_loop + delay, self._launch_batch, batch)
            batch.append((key, due, generation))

    def _launch_batch(self, batch: list[tuple[PairKey, float, int]]) -> None:
        for key, due, generation in batch:
            self._launch(key, due, generation)

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
        skipped = self.state.skipped
        if pair.running:
            skipped["overlap"] += 1
            return
        name = key[0]
        if not self._pending.try_acquire(name):
            skipped["pending_limit"] += 1
            return
        stream = pair.stream
        if stream and not self._streams.try_acquire(name):
            self._pending.release(name)
            skipped["fd_limit"] += 1
            return
        pair.running = True
        self.state.lateness.observe(max(0.0, now - due))
        self.state.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._run(key, pair, stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: PairKey, pair: _Pair, stream: bool) -> None:
        try:
            result = await self.runner(pair.target, pair.spec)
            self.state.record(key[0], key[1], result)
        except asyncio.CancelledError:
            raise
        except DescriptorsExhausted:
            # Not a fact about the server: the process is out of descriptors.
            self.state.skipped["no_descriptors"] += 1
        except Exception:  # a bug in a probe must cost one result, never the loop
            log.exception("probe %s/%s failed unexpectedly", *key)
        finally:
            self.state.in_flight -= 1
            self._pending.release(key[0])
            if stream:
                self._streams.release(key[0])
            current = self._pairs.get(key)
            if current is not None:
                current.running = False
            pair.running = False
