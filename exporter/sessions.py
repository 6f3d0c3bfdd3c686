"""Connections kept open between probes: one per server, shared by its probes.

DoH (exporter/doh.py) and DoQ (exporter/doq.py) both pay a handshake per
connection and carry many queries on one, so each keeps a :class:`SharedConnections`
per event loop: probes of a server that start together wait for the same
handshake, later ones find the connection open. Past ``limit`` servers, and for
servers no probe asked for ``idle`` seconds (a target a reload removed), the least
recently used connections are closed.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

from exporter.outcome import Outcome


class Connection(Protocol):
    @property
    def usable(self) -> bool:
        """False once the connection takes no new queries (closed, draining)."""

    def shut(self) -> None:
        """Close it; queries still waiting get their outcome."""


C = TypeVar("C", bound=Connection)


class SharedConnections(Generic[C]):
    def __init__(self, limit: int = 4096, idle: float = 3600.0) -> None:
        self.limit = limit
        self.idle = idle
        self._open: OrderedDict[Hashable, C] = OrderedDict()
        #: When each key was last asked for, in the same (LRU) order as _open.
        self._asked: OrderedDict[Hashable, float] = OrderedDict()
        self._connecting: dict[Hashable, asyncio.Task[C | Outcome]] = {}

    async def get(self, key: Hashable,
                  connect: Callable[[], Awaitable[C | Outcome]]) -> C | Outcome:  # fmt: skip
        """The open connection for ``key``, or a new one from ``connect`` (or why not).

        ``connect`` must bound itself in time (the starting probe's deadline): probes
        that join it wait through :func:`asyncio.shield`, so their own deadlines do
        not cancel it for the others.
        """
        self._asked[key] = now = time.monotonic()
        self._asked.move_to_end(key)
        self._prune(now)
        existing = self._open.get(key)
        if existing is not None and existing.usable:
            self._open.move_to_end(key)
            return existing
        task = self._connecting.get(key)
        if task is None:

            async def run() -> C | Outcome:
                return await connect()

            task = asyncio.get_running_loop().create_task(run())
            self._connecting[key] = task
            task.add_done_callback(lambda _t: self._connecting.pop(key, None))
        result = await asyncio.shield(task)
        if not isinstance(result, Outcome):
            self._open[key] = result
            self._open.move_to_end(key)
            while len(self._open) > self.limit:
                oldest_key, oldest = self._open.popitem(last=False)
                self._asked.pop(oldest_key, None)
                oldest.shut()
        return result

    def _prune(self, now: float) -> None:
        """Close the connections of servers nobody asked for in ``idle`` seconds."""
        while self._asked:
            key, asked = next(iter(self._asked.items()))
            if now - asked < self.idle:
                return
            del self._asked[key]
            connection = self._open.pop(key, None)
            if connection is not None:
                connection.shut()

    def forget(self, connection: C) -> None:
        """Close a connection and never hand it out again."""
        for key, known in list(self._open.items()):
            if known is connection:
                del self._open[key]
                self._asked.pop(key, None)
        connection.shut()

    @property
    def open_connections(self) -> int:
        return sum(1 for c in self._open.values() if c.usable)

    def close(self) -> None:
        for connection in self._open.values():
            connection.shut()
        self._open.clear()
        self._asked.clear()


_T = TypeVar("_T")


class PerLoop(Generic[_T]):
    """One object per running event loop (tests and the CLI each run their own loop;
    a connection belongs to the loop that opened it)."""

    def __init__(self, factory: Callable[[], _T]) -> None:
        self._factory = factory
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> _T:
        loop = asyncio.get_running_loop()
        found = self._by_loop.get(loop)
        if found is None:
            found = self._by_loop[loop] = self._factory()
        return found
