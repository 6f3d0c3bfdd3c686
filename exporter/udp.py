"""UDP exchanges over a few shared sockets, replies matched by source and message ID.

A socket per probe costs a descriptor, a ``socket()``, ``connect()`` and ``close()``
and a selector registration per probe; at a thousand probes a second that is most
of what a probe costs beyond the DNS work itself (bench/README.md, "Local limits").
Here each event loop keeps a small pool of unconnected sockets per address family,
opened on first use and closed after a quiet minute. A waiting probe is a future,
a timer and an entry in a dict, not a descriptor.

What the per-probe connected socket gave for free, kept by hand:

- **Who may answer.** A reply counts only if it comes from the address and port
  the request went to, carries a message ID pending for that destination on that
  socket, and (when it has a question) repeats the request's question. IDs are
  random per request; one already pending (or recently timed out) for the same
  destination on a socket moves the request to another socket of the pool, so two
  probes of one server never share an ID.
- **ICMP errors.** ``IP_RECVERR`` / ``IPV6_RECVERR`` queue ICMP errors (port
  unreachable: ``connection_refused``) on the socket's error queue; read with
  ``MSG_ERRQUEUE``, each names the original destination (``msg_name``) and carries
  the original datagram, hence its message ID, so the error reaches the right probe.
- **Late replies.** The IDs of probes that timed out stay reserved for
  ``RETAIN_SECONDS``: a reply arriving that late is dropped, neither an answer nor
  a mismatch for the next probe of the same server.
- **Strays.** A datagram from a destination with a probe pending but an unknown ID
  (or the right ID and another question) is what the connected socket called a
  mismatched datagram: each waiting probe of that destination counts it, keeps
  listening, and is judged by it if nothing better arrives before its deadline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import math
import os
import socket
import struct
import time
import weakref
from dataclasses import dataclass, field

from exporter.capacity import DescriptorsExhausted, out_of_descriptors

#: Sockets per address family and event loop: more source ports against spoofing,
#: a wider ID space per destination.
POOL_SIZE = 4
#: Seconds a timed-out probe's ID stays reserved for its destination.
RETAIN_SECONDS = 30.0
#: A socket with nothing pending for this long is closed.
IDLE_SECONDS = 60.0
#: Datagrams with other IDs a probe counts before it stops listening: a flooding
#: server costs one result, never unbounded work.
MAX_STRAY_DATAGRAMS = 256
_MAX_DATAGRAM = 65535
#: Receive buffer asked for each shared socket: the replies of every probe in
#: flight land in it, where a socket per probe had a buffer each. The kernel caps
#: it at net.core.rmem_max (often 208 KiB: a few hundred replies).
RECEIVE_BUFFER = 4 * 1024 * 1024
#: Datagrams read per wake-up before other callbacks get the loop.
_BATCH = 64
#: Deadlines are checked on this grid (seconds): a probe times out up to this much
#: late, and a thousand probes a second cost at most 50 timer wake-ups, not a timer
#: each (a TimerHandle per probe was a twentieth of its CPU).
TIMER_GRAIN = 0.02

_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
#: struct sock_extended_err (linux/errqueue.h): ee_errno, origin, type, code, pad,
#: info, data.
_EXTENDED_ERR = struct.Struct("=IBBBBII")
_RECVERR_LEVELS = {(socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR)}
#: What an ICMP error leaves as a socket's pending error (port, host or network
#: unreachable, ...): from ``sendto`` on an unconnected socket it is an earlier
#: datagram's.
_ASYNC_ERRORS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                           errno.EHOSTDOWN, errno.ENETDOWN, errno.EPROTO, errno.EMSGSIZE,
                           errno.EACCES})

Destination = tuple[str, int]
_Deadlines = collections.deque[tuple[float, "asyncio.Future[bytes | None]"]]


def question_end(wire: bytes) -> int:
    """Offset just past the first question (name, type, class) of a message with one,
    else 0."""
    if len(wire) < 12 or wire[4:6] == b"\0\0":
        return 0
    pos = 12
    size = len(wire)
    while pos < size:
        length = wire[pos]
        if length == 0:
            pos += 1
            break
        if length >= 0xC0:  # a pointer ends the name (not in our requests)
            pos += 2
            break
        pos += length + 1
    end = pos + 4
    return end if end <= size else 0


def same_question(request: bytes, reply: bytes) -> bool:
    """A reply without a question section (some servers answer NOTIMP so) cannot be
    checked and passes; one with a question must repeat the request's, the name
    compared without regard to ASCII case (RFC 4343)."""
    if len(reply) < 12 or reply[4:6] == b"\0\0":
        return True
    end = question_end(request)
    if not end:
        return True
    theirs = reply[12:end]
    ours = request[12:end]
    if theirs == ours:
        return True
    return theirs[-4:] == ours[-4:] and theirs[:-4].lower() == ours[:-4].lower()


@dataclass(slots=True)
class _Waiter:
    future: asyncio.Future[bytes | None]
    request: bytes
    mismatched: int = 0
    last_mismatch: bytes | None = None

    def stray(self, data: bytes) -> None:
        self.mismatched += 1
        self.last_mismatch = data
        if self.mismatched >= MAX_STRAY_DATAGRAMS and not self.future.done():
            self.future.set_result(data)  # judged as mismatched by the reply reader


@dataclass(slots=True)
class _Shared:
    """One unconnected socket and the probes waiting on it."""

    sock: socket.socket
    pending: dict[Destination, dict[int, _Waiter]] = field(default_factory=dict)
    retired: dict[Destination, set[int]] = field(default_factory=dict)
    #: (expiry, destination, ID) in expiry order.
    retired_order: collections.deque[tuple[float, Destination, int]] = field(
        default_factory=collections.deque)
    waiting: int = 0
    last_used: float = 0.0
    closed: bool = False

    def taken(self, dest: Destination, msg_id: int) -> bool:
        ids = self.pending.get(dest)
        if ids is not None and msg_id in ids:
            return True
        retired = self.retired.get(dest)
        return retired is not None and msg_id in retired

    def retire(self, dest: Destination, msg_id: int, now: float) -> None:
        order = self.retired_order
        while order and order[0][0] <= now:
            _, old_dest, old_id = order.popleft()
            ids = self.retired.get(old_dest)
            if ids is not None:
                ids.discard(old_id)
                if not ids:
                    del self.retired[old_dest]
        self.retired.setdefault(dest, set()).add(msg_id)
        order.append((now + RETAIN_SECONDS, dest, msg_id))

    def on_readable(self) -> None:
        sock = self.sock
        for index in range(_BATCH):
            try:
                data, address = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                if index == 0:
                    # Woken with nothing to read: an error queue not yet read keeps
                    # the descriptor ready (EPOLLERR) even once the socket error
                    # has been reported.
                    self.read_errors()
                return
            except OSError:
                # An ICMP error reported by the socket (IP_RECVERR sets it): the
                # error queue says which request it answers.
                self.read_errors()
                continue
            self.deliver(data, (address[0], address[1]))

    def deliver(self, data: bytes, dest: Destination) -> None:
        ids = self.pending.get(dest)
        if ids is None:
            return  # nothing waits on that source: spoofed, or far too late
        waiter = ids.get(int.from_bytes(data[:2], "big")) if len(data) >= 2 else None
        if waiter is not None:
            if same_question(waiter.request, data):
                if not waiter.future.done():
                    waiter.future.set_result(data)
            else:
                waiter.stray(data)
            return
        retired = self.retired.get(dest)
        if retired is not None and len(data) >= 2 and int.from_bytes(data[:2], "big") in retired:
            return  # the reply to a probe that already timed out
        for other in list(ids.values()):
            other.stray(data)

    def send(self, wire: bytes, dest: Destination) -> None:
        """``sendto``, past an ICMP error that belongs to an earlier datagram.

        With IP_RECVERR an ICMP error also sets the socket's pending error, which
        the kernel returns from the next call on the socket, whoever makes it: on a
        shared socket, often another probe's ``sendto``. That error is routed to its
        own probe from the error queue, and the send is tried again; a second
        failure is this send's own.
        """
        try:
            self.sock.sendto(wire, dest)
        except (BlockingIOError, InterruptedError):
            raise
        except OSError as exc:
            if exc.errno not in _ASYNC_ERRORS:
                raise
            self.read_errors()
            self.sock.sendto(wire, dest)

    def read_errors(self) -> None:
        sock = self.sock
        while True:
            try:
                data, ancillary, _, address = sock.recvmsg(512, 512, _MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            code = errno.ECONNREFUSED
            for level, kind, payload in ancillary:
                if (level, kind) in _RECVERR_LEVELS and len(payload) >= _EXTENDED_ERR.size:
                    code = _EXTENDED_ERR.unpack_from(payload)[0] or code
            if not isinstance(address, tuple) or len(data) < 2:
                continue
            ids = self.pending.get((address[0], address[1]))
            waiter = ids.get(int.from_bytes(data[:2], "big")) if ids else None
            if waiter is not None and not waiter.future.done():
                waiter.future.set_exception(OSError(code, os.strerror(code)))


class _Pool:
    """The shared sockets of one event loop, and the deadlines of its probes."""

    def __init__(self) -> None:
        self.sockets: dict[socket.AddressFamily, list[_Shared]] = {}
        self.idle_check: asyncio.TimerHandle | None = None
        self.turn = 0
        #: (deadline, future) per timeout value: each queue is in deadline order,
        #: since every entry's deadline is its start plus the same timeout.
        self.deadlines: dict[float, _Deadlines] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf

    def expire_after(self, loop: asyncio.AbstractEventLoop, timeout: float,
                     future: asyncio.Future[bytes | None]) -> None:  # fmt: skip
        """Resolve ``future`` with None once ``timeout`` has passed (unless done)."""
        deadline = loop.time() + timeout
        queue = self.deadlines.get(timeout)
        if queue is None:
            queue = self.deadlines[timeout] = collections.deque()
        queue.append((deadline, future))
        if deadline < self.timer_at:
            self._arm(loop, deadline)

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        at = math.ceil(deadline / TIMER_GRAIN) * TIMER_GRAIN
        self.timer_at = at
        self.timer = loop.call_at(at, self.expire, loop)

    def expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer, self.timer_at = None, math.inf
        now = loop.time()
        earliest = math.inf
        for timeout, queue in list(self.deadlines.items()):
            while queue and queue[0][0] <= now:
                future = queue.popleft()[1]
                if not future.done():
                    future.set_result(None)
            if queue:
                earliest = min(earliest, queue[0][0])
            else:
                del self.deadlines[timeout]
        if earliest < math.inf:
            self._arm(loop, earliest)

    def pick(self, loop: asyncio.AbstractEventLoop, family: socket.AddressFamily,
             dest: Destination, msg_id: int) -> _Shared | None:  # fmt: skip
        """A socket on which (dest, msg_id) is free; None if taken on every one."""
        sockets = self.sockets.setdefault(family, [])
        self.turn = start = (self.turn + 1) % POOL_SIZE
        for step in range(POOL_SIZE):
            index = (start + step) % POOL_SIZE
            if index >= len(sockets):
                shared = self.open(loop, family)
                sockets.append(shared)
                return shared
            shared = sockets[index]
            if not shared.taken(dest, msg_id):
                return shared
        return None

    def open(self, loop: asyncio.AbstractEventLoop, family: socket.AddressFamily) -> _Shared:
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            if out_of_descriptors(exc):
                raise DescriptorsExhausted(str(exc)) from exc
            raise
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            with contextlib.suppress(OSError):  # not Linux: ICMP errors go unseen
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
            sock.bind(("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
        except OSError:
            sock.close()
            raise
        shared = _Shared(sock, last_used=time.monotonic())
        loop.add_reader(sock.fileno(), shared.on_readable)
        if self.idle_check is None:
            self.idle_check = loop.call_later(IDLE_SECONDS, self.close_idle, loop)
        return shared

    def close_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        self.idle_check = None
        now = time.monotonic()
        for family, sockets in list(self.sockets.items()):
            keep = []
            for shared in sockets:
                if shared.waiting == 0 and now - shared.last_used >= IDLE_SECONDS:
                    _close(loop, shared)
                else:
                    keep.append(shared)
            self.sockets[family] = keep
        if any(self.sockets.values()):
            self.idle_check = loop.call_later(IDLE_SECONDS, self.close_idle, loop)


def _close(loop: asyncio.AbstractEventLoop | None, shared: _Shared) -> None:
    if shared.closed:
        return
    shared.closed = True
    if loop is not None and not loop.is_closed():
        loop.remove_reader(shared.sock.fileno())
    shared.sock.close()


def _close_all(sockets: dict[socket.AddressFamily, list[_Shared]]) -> None:
    for group in sockets.values():
        for shared in group:
            _close(None, shared)


#: Pools by id() of their event loop (tests run many loops). A WeakKeyDictionary
#: lookup builds a weak reference per call, a tenth of a probe's CPU here; the
#: finalizer drops the entry when the loop is freed, before its id can be reused.
_pools: dict[int, _Pool] = {}


def _pool(loop: asyncio.AbstractEventLoop) -> _Pool:
    pool = _pools.get(id(loop))
    if pool is None:
        pool = _Pool()
        _pools[id(loop)] = pool
        # Close the sockets when the loop goes away (it cannot remove readers then).
        weakref.finalize(loop, _forget, id(loop), pool.sockets)
    return pool


def _forget(key: int, sockets: dict[socket.AddressFamily, list[_Shared]]) -> None:
    _pools.pop(key, None)
    _close_all(sockets)


class Busy(Exception):  # noqa: N818 - a rare state, not an error
    """The shared sockets cannot take this request now: its ID is pending for the
    destination on every one of them, or the socket's send buffer is full. The
    caller sends it on a socket of its own instead."""


async def exchange(family: socket.AddressFamily, dest: Destination, wire: bytes,
                   msg_id: int, timeout: float) -> tuple[bytes | None, int]:  # fmt: skip
    """Send ``wire`` to ``dest`` and wait up to ``timeout`` for its reply.

    Returns (reply, datagrams with other IDs seen); the reply is None if nothing
    came, or the last stray datagram if only strays came. Raises OSError for an ICMP
    error or a failed send, :class:`Busy` and :class:`DescriptorsExhausted`.
    """
    loop = asyncio.get_running_loop()
    pool = _pool(loop)
    shared = pool.pick(loop, family, dest, msg_id)
    if shared is None:
        raise Busy(f"ID {msg_id} pending for {dest} on every shared socket")
    future: asyncio.Future[bytes | None] = loop.create_future()
    waiter = _Waiter(future, wire)
    ids = shared.pending.get(dest)
    if ids is None:
        ids = shared.pending[dest] = {}
    ids[msg_id] = waiter
    shared.waiting += 1
    sent = False
    reply: bytes | None = None
    try:
        try:
            shared.send(wire, dest)
        except BlockingIOError as exc:
            # A full send buffer says nothing about the server: never a network
            # error for it.
            raise Busy("send buffer full") from exc
        sent = True
        pool.expire_after(loop, timeout, future)
        reply = await future
    finally:
        del ids[msg_id]
        if not ids:
            del shared.pending[dest]
        shared.waiting -= 1
        shared.last_used = time.monotonic()
        if reply is None and sent:
            shared.retire(dest, msg_id, shared.last_used)
    if reply is None:
        return waiter.last_mismatch, waiter.mismatched
    return reply, waiter.mismatched

