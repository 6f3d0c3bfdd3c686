"""The one palette: what a (target, probe) cell says and which colour it has, on the
status page and in Grafana alike."""

from __future__ import annotations

import re

import pytest

from exporter.causes import Cause
from exporter.palette import (
    EXPECTED,
    GAP_SWATCHES,
    HANDLED_UNEXPECTEDLY,
    LEGEND,
    OK,
    OTHER_GAP,
    PENDING,
    cell_swatch,
    cell_text,
    gap_swatch,
)


def test_every_swatch_has_its_own_key_and_colour() -> None:
    assert len({s.key for s in LEGEND}) == len(LEGEND)
    assert len({s.colour for s in LEGEND}) == len(LEGEND)
    for swatch in LEGEND:
        assert re.fullmatch(r"#[0-9a-f]{6}", swatch.colour), swatch


@pytest.mark.parametrize(("cause", "expected", "swatch", "text"), [
    (None, False, PENDING, None),
    (Cause.NONE, True, OK, "ok"),
    (Cause.NONE, False, HANDLED_UNEXPECTEDLY, "handled \u2717"),
    (Cause.NOT_IMPLEMENTED, False, GAP_SWATCHES[Cause.NOT_IMPLEMENTED], "NOTIMP"),
    (Cause.NOT_IMPLEMENTED, True, EXPECTED, "NOTIMP \u2713"),
    (Cause.BAD_VERSION, True, EXPECTED, "bad_version \u2713"),
    (Cause.SERVER_FAILURE, False, OTHER_GAP, "server_failure"),
])  # fmt: skip
def test_a_cell_shows_pending_expected_or_its_cause(
    cause: Cause | None, expected: bool, swatch: object, text: str | None
) -> None:
    assert cell_swatch(cause, expected=expected) == swatch
    if cause is not None:
        assert cell_text(cause, expected=expected) == text


def test_gaps_without_a_swatch_of_their_own_share_the_other_gap_colour() -> None:
    assert gap_swatch(Cause.REFUSED) == GAP_SWATCHES[Cause.REFUSED]
    assert gap_swatch(Cause.FORMAT_ERROR) == OTHER_GAP
    assert gap_swatch(Cause.NONE) == OK
