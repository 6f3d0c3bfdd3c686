"""Connections kept open between probes: one per server, shared by its probes.

DoH (exporter/doh.py) and DoQ (exporter/doq.py) both pay a handshake per
connection and carry many queries on one, so each keeps a :class:`SharedConnections`
per event loop: probes of a server that start together wait for the same
handshake, later ones find the connection open. Past ``limit`` servers, and for
servers no probe asked for ``idle`` seconds (an ad-hoc ``/probe`` server), the least
recently used connections are closed.

A reload (or a zone's changed name servers) closes at once the connections of
servers no configured target uses any more (:func:`retain_servers`), and shutdown
closes every one (:func:`close_all`): a removed target's connection must not
linger for ``idle`` seconds, nor a stopped exporter leave transports unclosed.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from exporter.config import Target, TlsSettings, Transport
from exporter.outcome import Outcome

#: Transports whose connections are kept between probes, one per server.
SHARED_TRANSPORTS = frozenset({Transport.DOH, Transport.DOQ})


def server_key(host: str, port: int, settings: TlsSettings) -> Hashable:
    """What one shared connection serves: the server, its TLS name and TLS settings."""
    return (host, port, settings.server_name or host, settings)


def servers_in_use(targets: Iterable[Target]) -> dict[str, frozenset[Hashable]]:
    """The :func:`server_key` of every DoH and DoQ server the targets' probes use, by
    transport. Every probe of every target counts, not only this replica's shard:
    ``/probe`` runs the others."""
    found: dict[str, set[Hashable]] = {}
    for target in targets:
        for spec in target.probes:
            if spec.transport in SHARED_TRANSPORTS:
                port = target.port if spec.port is None else spec.port
                found.setdefault(spec.transport.value, set()).add(
                    server_key(target.host, port, target.tls))
    return {transport: frozenset(keys) for transport, keys in found.items()}


class Connection(Protocol):
    @property
    def usable(self) -> bool:
        """False once the connection takes no new queries (closed, draining)."""

    def shut(self) -> None:
        """Close it; queries still waiting get their outcome."""

    async def wait_released(self) -> None:
        """After :meth:`shut`: until its transport and tasks are gone (bounded)."""


C = TypeVar("C", bound=Connection)


class SharedConnections(Generic[C]):
    def __init__(self, limit: int = 4096, idle: float = 3600.0) -> None:
        self.limit = limit
        self.idle = idle
        self._open: OrderedDict[Hashable, C] = OrderedDict()
        #: When each key was last asked for, in the same (LRU) order as _open.
        self._asked: OrderedDict[Hashable, float] = OrderedDict()
        self._connecting: dict[Hashable, asyncio.Task[C | Outcome]] = {}
        #: Servers dropped by :meth:`retain` while a handshake to them was under way:
        #: the connection it brings is shut, not kept.
        self._dropped: set[Hashable] = set()
        #: Connections shut and not yet waited for (see :meth:`settle`).
        self._closing: set[C] = set()

    async def get(self, key: Hashable,
                  connect: Callable[[], Awaitable[C | Outcome]]) -> C | Outcome:  # fmt: skip
        """The open connection for ``key``, or a new one from ``connect`` (or why not).

        ``connect`` must bound itself in time (the starting probe's deadline): probes
        that join it wait through :func:`asyncio.shield`, so their own deadlines do
        not cancel it for the others.
        """
        self._asked[key] = now = time.monotonic()
        self._asked.move_to_end(key)
        self._dropped.discard(key)  # asked for again: a target uses it again
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
            task.add_done_callback(lambda _t: self._finished(key, task))
        result = await asyncio.shield(task)
        if not isinstance(result, Outcome):
            if not result.usable:
                return result  # dropped by a reload during the handshake (_finished)
            self._open[key] = result
            self._open.move_to_end(key)
            while len(self._open) > self.limit:
                oldest_key, oldest = self._open.popitem(last=False)
                self._asked.pop(oldest_key, None)
                self._shut(oldest)
        return result

    def _finished(self, key: Hashable, task: asyncio.Task[C | Outcome]) -> None:
        if self._connecting.get(key) is task:
            del self._connecting[key]
        if key not in self._dropped:
            return
        self._dropped.discard(key)
        if not task.cancelled() and task.exception() is None:
            result = task.result()
            if not isinstance(result, Outcome):
                # A handshake that ended after a reload dropped its server: no target
                # wants the connection (the probe that waited on it gets "closed",
                # and its removed pair records nothing).
                self._shut(result)

    def _shut(self, connection: C) -> None:
        connection.shut()
        self._closing.add(connection)

    def _prune(self, now: float) -> None:
        """Close the connections of servers nobody asked for in ``idle`` seconds."""
        while self._asked:
            key, asked = next(iter(self._asked.items()))
            if now - asked < self.idle:
                return
            del self._asked[key]
            connection = self._open.pop(key, None)
            if connection is not None:
                self._shut(connection)

    def forget(self, connection: C) -> None:
        """Close a connection and never hand it out again."""
        for key, known in list(self._open.items()):
            if known is connection:
                del self._open[key]
                self._asked.pop(key, None)
        self._shut(connection)

    def retain(self, keys: Collection[Hashable]) -> int:
        """Close the connections (open or being opened) of every server not in
        ``keys``; returns how many open ones were closed."""
        closed = 0
        for key in [key for key in self._open if key not in keys]:
            self._shut(self._open.pop(key))
            self._asked.pop(key, None)
            closed += 1
        for key in self._connecting:
            if key not in keys:
                self._dropped.add(key)
                self._asked.pop(key, None)
        return closed

    @property
    def open_connections(self) -> int:
        return sum(1 for c in self._open.values() if c.usable)

    def close(self) -> None:
        self.retain(())

    async def settle(self) -> None:
        """Wait until the connections shut so far have let go of their transports."""
        while self._closing:
            closing = list(self._closing)
            self._closing.clear()
            await asyncio.gather(*(connection.wait_released() for connection in closing))

    async def aclose(self) -> None:
        """Close every connection and wait for them (shutdown). Handshakes under way
        are cancelled: no probe is left to use them."""
        connecting = list(self._connecting.values())
        for task in connecting:
            task.cancel()
        await asyncio.gather(*connecting, return_exceptions=True)
        self.close()
        await self.settle()


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

    def current(self) -> _T | None:
        """This loop's object if one was made (without making one)."""
        return self._by_loop.get(asyncio.get_running_loop())


#: Each transport's per-loop pools (exporter/doh.py, exporter/doq.py register theirs
#: when first imported, so that an exporter without DoH or DoQ never imports h2 or
#: aioquic just to close nothing).
_SHARED: dict[str, PerLoop[SharedConnections[Any]]] = {}


def shared_pools(transport: Transport, limit: int) -> PerLoop[SharedConnections[Any]]:
    """The per-loop pools of one transport, registered for retain_servers/close_all."""
    pools = _SHARED.get(transport.value)
    if pools is None:
        pools = _SHARED[transport.value] = PerLoop(lambda: SharedConnections(limit))
    return pools


def _current_pools() -> Iterable[tuple[str, SharedConnections[Any]]]:
    for transport, per_loop in _SHARED.items():
        pool = per_loop.current()
        if pool is not None:
            yield transport, pool


async def retain_servers(in_use: Mapping[str, Collection[Hashable]]) -> int:
    """Close this loop's DoH and DoQ connections to servers no target uses any more
    (:func:`servers_in_use`): a removed target's, at a reload. Returns how many."""
    closed = 0
    for transport, pool in _current_pools():
        closed += pool.retain(in_use.get(transport, ()))
    for _, pool in _current_pools():
        await pool.settle()
    return closed


async def close_all() -> None:
    """Close every DoH and DoQ connection of this loop and wait for them (shutdown)."""
    for _, pool in _current_pools():
        await pool.aclose()
