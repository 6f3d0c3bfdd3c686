"""RFC 1982 serial arithmetic: the order wraps at 2**32 and is undefined at 2**31 apart."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.serial import newest, serial_add, serial_distance, serial_gt, serials_behind

SERIAL = st.integers(0, 2**32 - 1)
STEP = st.integers(1, 2**31 - 1)  # RFC 1982 §3.1: what may be added to a serial


def test_the_wrap_makes_zero_newer_than_the_largest_serial() -> None:
    assert serial_gt(0, 2**32 - 1)
    assert not serial_gt(2**32 - 1, 0)
    assert serial_distance(5, 2**32 - 3) == 8


def test_serials_exactly_half_the_space_apart_have_no_order() -> None:
    assert not serial_gt(0, 2**31)
    assert not serial_gt(2**31, 0)
    assert newest({"a": 0, "b": 2**31}) is None
    assert serials_behind({"a": 0, "b": 2**31}) == {}


def test_adding_more_than_half_the_space_is_refused() -> None:
    with pytest.raises(ValueError, match="can only add"):
        serial_add(1, 2**31)


@given(SERIAL, STEP)
def test_adding_a_step_gives_a_newer_serial_that_far_ahead(serial: int, step: int) -> None:
    later = serial_add(serial, step)
    assert serial_gt(later, serial)
    assert not serial_gt(serial, later)
    assert serial_distance(later, serial) == step


@given(SERIAL, SERIAL)
def test_at_most_one_of_two_serials_is_newer(a: int, b: int) -> None:
    assert not (serial_gt(a, b) and serial_gt(b, a))
    assert not serial_gt(a, a)


@given(SERIAL, st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=8))
def test_behind_is_the_distance_to_the_newest_and_zero_for_it(
    base: int, offsets: list[int]
) -> None:
    # Serials within one half of the space always have a newest one.
    serials = {f"ns{i}": serial_add(base, off) for i, off in enumerate(offsets)}
    behind = serials_behind(serials)
    top = max(offsets)
    assert newest(serials) == serial_add(base, top)
    assert behind == {f"ns{i}": top - off for i, off in enumerate(offsets)}
    assert min(behind.values()) == 0


@given(st.dictionaries(st.text(max_size=3), SERIAL, min_size=1, max_size=6), SERIAL)
def test_behind_does_not_change_when_every_serial_moves_by_the_same_amount(
    serials: dict[str, int], shift: int
) -> None:
    moved = {k: (v + shift) % 2**32 for k, v in serials.items()}
    assert serials_behind(moved) == serials_behind(serials)
