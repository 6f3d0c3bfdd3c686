"""Admission of ``/probe`` requests: caps on the probes running at once, and a wait
for a free slot instead of a refusal.

Prometheus scrapes each ``/probe`` target on its own timer, spread over the scrape
interval, and records any non-2xx answer as a failed scrape (``up == 0``). Refusing
the request that finds the caps full therefore turns a busy moment into a false
outage. Such a request waits (first come, first served per client, round robin
between clients) until a slot frees or its scrape deadline passes. Only a client
with more requests waiting than any scrape pattern produces (one Prometheus has at
most one scrape per target outstanding) is refused at once, with 429.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from dataclasses import dataclass

from exporter.metrics import MetricsState

#: Answer this long before Prometheus' scrape timeout so the reply arrives in time.
SCRAPE_MARGIN_SECONDS = 0.5
#: A probe admitted this close to its deadline still gets this long to run.
MIN_PROBE_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Limits:
    #: Probes running at once, all clients together.
    max_running: int
    #: Probes running at once for one client address.
    max_running_per_client: int
    #: Requests waiting for a slot, all clients together.
    max_waiting: int
    #: Requests waiting for a slot from one client address.
    max_waiting_per_client: int


#: Refusal reason -> HTTP status: a full queue is the client's doing (429, retry
#: later); a deadline that passed in the queue is ours (503).
REFUSAL_STATUS = {"client_queue_full": 429, "queue_full": 429, "deadline": 503}
REFUSAL_TEXT = {
    "client_queue_full": "too many /probe requests waiting from {client}",
    "queue_full": "too many /probe requests waiting",
    "deadline": "no /probe slot came free before the scrape deadline",
}


def scrape_budget(header: str | None) -> float | None:
    """Seconds left to answer, from ``X-Prometheus-Scrape-Timeout-Seconds`` less a
    margin; None when the header is absent or not a usable number."""
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return max(MIN_PROBE_SECONDS, seconds - SCRAPE_MARGIN_SECONDS)


class ProbeAdmission:
    """Running and waiting /probe requests, counted in ``state`` for /metrics."""

    def __init__(self, state: MetricsState) -> None:
        self.state = state
        self.running = 0
        self.running_per_client: Counter[str] = Counter()
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        #: Clients with waiters, in round-robin order.
        self._order: deque[str] = deque()
        self._limits = Limits(1, 1, 0, 0)

    @property
    def waiting(self) -> int:
        return self.state.probe_requests_waiting

    def _can_run(self, client: str) -> bool:
        limits = self._limits
        return (self.running < limits.max_running
                and self.running_per_client[client] < limits.max_running_per_client)  # fmt: skip

    def _start(self, client: str) -> None:
        self.running += 1
        self.running_per_client[client] += 1

    async def acquire(self, client: str, limits: Limits, wait: float) -> str | None:
        """Take a slot for ``client``, waiting up to ``wait`` seconds; None once the
        caller holds a slot (it must :meth:`release` it), else the refusal reason."""
        self._limits = limits
        # Waiters of other clients never block this one: they wait only while their
        # own per-client cap or the global cap is full (see _grant).
        if client not in self._waiting and self._can_run(client):
            self._start(client)
            return None
        queue = self._waiting.get(client)
        if (0 if queue is None else len(queue)) >= limits.max_waiting_per_client:
            return self._refuse("client_queue_full")
        if self.state.probe_requests_waiting >= limits.max_waiting:
            return self._refuse("queue_full")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if queue is None:
            queue = self._waiting[client] = deque()
            self._order.append(client)
        queue.append(future)
        self.state.probe_requests_waiting += 1
        self.state.probe_requests_queued += 1
        try:
            async with asyncio.timeout(max(0.0, wait)):
                await future
        except (TimeoutError, asyncio.CancelledError) as exc:
            if future.done() and not future.cancelled():
                self.release(client)  # granted in the same instant: hand it on
            else:
                self._forget(client, future)
            if isinstance(exc, asyncio.CancelledError):
                raise  # the client went away
            return self._refuse("deadline")
        return None

    def release(self, client: str) -> None:
        self.running -= 1
        self.running_per_client[client] -= 1
        if self.running_per_client[client] <= 0:
            del self.running_per_client[client]
        self._grant()

    def _refuse(self, reason: str) -> str:
        refused = self.state.probe_requests_refused
        refused[reason] = refused.get(reason, 0) + 1
        return reason

    def _forget(self, client: str, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(client)
        if queue is None or future not in queue:
            return
        queue.remove(future)
        self.state.probe_requests_waiting -= 1
        if not queue:
            del self._waiting[client]
            self._order.remove(client)

    def _grant(self) -> None:
        """Hand free slots to waiting clients, one request per client in turn."""
        blocked = 0
        while self._order and blocked < len(self._order):
            if self.running >= self._limits.max_running:
                return
            client = self._order[0]
            self._order.rotate(-1)
            if self.running_per_client[client] >= self._limits.max_running_per_client:
                blocked += 1
                continue
            queue = self._waiting[client]
            future = queue.popleft()
            self.state.probe_requests_waiting -= 1
            if not queue:
                del self._waiting[client]
                self._order.remove(client)
            if future.done():
                continue  # its request was cancelled and is on its way out
            future.set_result(None)
            self._start(client)
            blocked = 0
