"""Which scheduled probes may start: bounds on probes pending at once, sized from the
pairs' rate x timeout and shared fairly per target.

A scheduled probe never waits for a slot: it starts at its due time or is refused at
once, and the refusal is counted under its own reason. What used to be a queue (a
semaphore of 256 slots) let the timeouts of silent servers hold every slot while
healthy targets' probes waited and were then skipped as overlaps (issue 11).

What a pending probe costs: a UDP probe waits on the exporter's shared socket
(exporter/udp.py) with a timer and a few kilobytes of task and future, so thousands
may wait at once; a TCP/TLS (or DSO) probe also holds a file descriptor. Two budgets
protect the process: one on all pending probes (memory), one on stream probes (file
descriptors, also capped by ``RLIMIT_NOFILE``).

Fairness: each target is guaranteed a share sized from its own demand (the sum over
its pairs of timeout / interval: how many of its probes are pending at once when
every one of them times out), and probes beyond a target's share borrow from a
common spare pool. A silent target, or a group of them on one dead server, can use
its own shares and the pool, never another target's share.
"""

from __future__ import annotations

import errno
import math
import os
import resource
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Probes a target may have pending whatever its demand: two probes of one healthy
#: target overlapping for a millisecond must never need the spare pool.
MIN_SHARE = 2
#: Headroom over the steady-state demand: phases cluster, fallbacks run a second
#: exchange after the first one timed out.
HEADROOM = 2.0
#: The spare pool shared by probes beyond their target's share.
SPARE = 64
#: File descriptors kept out of the stream budget: HTTP clients, DSO sessions, logs.
FD_RESERVE_MIN = 32
FD_RESERVE_FRACTION = 0.1


def pair_demand(interval: float, timeout: float, has_fallback: bool = False) -> float:
    """Probes of one pair pending at once, on average, if every one times out.

    A pair never overlaps itself (the scheduler skips a run while the previous one is
    going), so the demand is at most 1.
    """
    busy = timeout * (2 if has_fallback else 1)
    return min(1.0, busy / interval) if interval > 0 else 1.0


@dataclass(frozen=True, slots=True)
class Shares:
    """A budget's size: its capacity and the share guaranteed to each key."""

    capacity: int
    shares: Mapping[str, int]

    @property
    def spare(self) -> int:
        return self.capacity - sum(self.shares.values())


def plan(demands: Iterable[tuple[str, float]], limit: int | None = None,
         spare: int = SPARE) -> Shares:  # fmt: skip
    """Shares from (key, pair demand) items, several per key.

    Without ``limit`` the capacity is the sum of the shares plus the spare pool. With
    one (``scheduler.max_concurrency``, or the descriptors left), the shares shrink in
    proportion so that a quarter of it (at most ``spare``) stays as the pool.
    """
    total: dict[str, float] = {}
    pairs: dict[str, int] = {}
    for key, demand in demands:
        total[key] = total.get(key, 0.0) + demand
        pairs[key] = pairs.get(key, 0) + 1
    wanted = {key: min(pairs[key], max(MIN_SHARE, math.ceil(HEADROOM * total[key])))
              for key in total}  # fmt: skip
    reserved = sum(wanted.values())
    if limit is None:
        return Shares(reserved + spare, wanted)
    limit = max(0, limit)
    room = limit - min(spare, limit // 4)
    if reserved <= room:
        return Shares(limit, wanted)
    factor = room / reserved
    return Shares(limit, {key: math.floor(share * factor) for key, share in wanted.items()})


class Budget:
    """Pending probes per key, within guaranteed shares and a common spare pool.

    The invariant: the sum over keys of max(used, share) never exceeds the capacity,
    so a key within its share is always admitted, and borrowing beyond a share only
    takes from what no share has claimed.
    """

    __slots__ = ("_shares", "_unclaimed", "_used", "capacity", "total")

    def __init__(self, shares: Shares) -> None:
        self._used: dict[str, int] = {}
        self.total = 0
        self.capacity = 0
        self._shares: Mapping[str, int] = {}
        self._unclaimed = 0
        self.reshape(shares)

    def reshape(self, shares: Shares) -> None:
        """Adopt new shares (a reload); probes in flight stay counted."""
        self.capacity = shares.capacity
        self._shares = shares.shares
        used = self._used
        self._unclaimed = sum(max(0, share - used.get(key, 0))
                              for key, share in shares.shares.items())  # fmt: skip

    def try_acquire(self, key: str) -> bool:
        used = self._used.get(key, 0)
        if used < self._shares.get(key, 0):
            self._unclaimed -= 1
        elif self.total + self._unclaimed >= self.capacity:
            return False
        self._used[key] = used + 1
        self.total += 1
        return True

    def release(self, key: str) -> None:
        used = self._used[key] - 1
        if used:
            self._used[key] = used
        else:
            del self._used[key]
        self.total -= 1
        if used < self._shares.get(key, 0):
            self._unclaimed += 1

    def used(self, key: str) -> int:
        return self._used.get(key, 0)


# -- file descriptors ----------------------------------------------------------------

_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})


class DescriptorsExhausted(Exception):  # noqa: N818 - a state, not an error of the server
    """The process (EMFILE) or the system (ENFILE) has no file descriptor left.

    Not a fact about the server probed: the probe is skipped and counted
    (``reason="no_descriptors"``), never recorded as a network error.
    """


def out_of_descriptors(exc: BaseException) -> bool:
    """True if ``exc`` says the process or system ran out of file descriptors."""
    if not isinstance(exc, OSError):
        return False
    if exc.errno in _OUT_OF_DESCRIPTORS:
        return True
    # asyncio's create_connection folds the errors of several addresses into one.
    return exc.errno is None and "Too many open files" in str(exc)


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; (soft, hard) afterwards.

    The soft limit is often 1024 while the hard one is far higher; a fleet of
    TCP/TLS probes needs more, and nothing is gained by failing below the hard limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass  # a sandbox may forbid it; the budget below sizes from what we have
    return soft, hard


def open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0  # not Linux: the budget then relies on the reserve alone


def descriptors_for_probes() -> int:
    """File descriptors stream probes may hold: the soft limit minus those already
    open and a reserve for HTTP clients, DSO sessions and the like."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1_048_576
    reserve = max(FD_RESERVE_MIN, int(soft * FD_RESERVE_FRACTION))
    return max(0, soft - open_descriptors() - reserve)
