"""SOA serial arithmetic (RFC 1982): which serial is newer, and by how much.

Serials are 32-bit and wrap: 4294967295 + 1 is 0, and "newer" is defined only
for serials less than 2**31 apart (RFC 1982 §3.2). Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

SERIAL_BITS = 32
_MODULUS = 1 << SERIAL_BITS
_HALF = 1 << (SERIAL_BITS - 1)

K = TypeVar("K")


def serial_add(serial: int, n: int) -> int:
    """``serial + n`` (RFC 1982 §3.1: n in 0..2**31-1)."""
    if not 0 <= n < _HALF:
        raise ValueError(f"can only add 0..{_HALF - 1} to a serial, not {n}")
    return (serial + n) % _MODULUS


def serial_gt(a: int, b: int) -> bool:
    """``a > b`` in serial arithmetic (RFC 1982 §3.2); False for pairs 2**31 apart,
    whose order is undefined."""
    return (a < b and b - a > _HALF) or (a > b and a - b < _HALF)


def serial_distance(newer: int, older: int) -> int:
    """How many increments ``older`` is behind ``newer``: ``(newer - older) mod 2**32``."""
    return (newer - older) % _MODULUS


def newest(serials: Mapping[K, int]) -> int | None:
    """The serial that every other one is behind or equal to; None when the serials
    span 2**31 or more, where "newest" has no meaning (or when there are none)."""
    values = set(serials.values())
    for candidate in values:
        if all(v == candidate or serial_gt(candidate, v) for v in values):
            return candidate
    return None


def serials_behind(serials: Mapping[K, int]) -> dict[K, int]:
    """For each server, how far its serial is behind the newest one (0 for the newest);
    empty when no serial is newest (see :func:`newest`)."""
    top = newest(serials)
    if top is None:
        return {}
    return {key: serial_distance(top, value) for key, value in serials.items()}
