"""One palette for what a (target, probe) cell shows, defined once.

The status page (exporter/statuspage.py) and the Grafana dashboards
(grafana/generate.py) both take their colours and short texts from here, so that
NOTIMP is the same red, and an expected answer looks expected, wherever an
operator reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.causes import Cause


@dataclass(frozen=True, slots=True)
class Swatch:
    #: Stable id: the status page's CSS class, the Grafana matrix cell's key.
    key: str
    #: Short text of a matrix cell.
    text: str
    #: Background colour, "#rrggbb"; light enough for black text on both.
    colour: str


#: The gaps an operator must tell apart at a glance, in legend order.
GAP_SWATCHES: dict[Cause, Swatch] = {
    Cause.NOT_IMPLEMENTED: Swatch("notimp", "NOTIMP", "#f4a6a6"),
    Cause.DSO_TYPE_NOT_IMPLEMENTED: Swatch("dsotypeni", "DSOTYPENI", "#c9b0ee"),
    Cause.DSO_NOT_IMPLEMENTED: Swatch("nodso", "no DSO", "#ffc285"),
    Cause.REFUSED: Swatch("refused", "REFUSED", "#fbe77a"),
    Cause.NO_RESPONSE: Swatch("silent", "silent", "#a9cbf2"),
}
#: Any other gap cause (SERVFAIL, FORMERR, a closed connection...): its own name, grey.
OTHER_GAP = Swatch("other", "other gap", "#dcdcdc")
#: The operation worked, as the probe expects.
OK = Swatch("ok", "ok", "#bfe8bf")
#: A gap the probe expects (NOTIMP to an unassigned opcode on a survey, BADVERS to EDNS
#: version 1, DSOTYPENI to an unassigned TLV type): the healthy answer, so green-ish,
#: with the cause's text and a check mark.
EXPECTED = Swatch("expected", "expected", "#d9f2c4")
#: The operation worked where the probe expects a refusal (an open AXFR or UPDATE).
HANDLED_UNEXPECTEDLY = Swatch("handled", "handled", "#ff8fc8")
#: Configured, no outcome yet.
PENDING = Swatch("pending", "pending", "#ffffff")
#: No gap, yet the reply violates a conformance check (docs/conformance.md): kresd's
#: NOERROR to EDNS version 1, a Z bit echoed. The cell shows the check's name.
VIOLATION = Swatch("violation", "violation", "#ff9e7a")

EXPECTED_MARK = "\u2713"  # check mark
UNEXPECTED_MARK = "\u2717"  # ballot x


def gap_swatch(cause: Cause) -> Swatch:
    """The swatch of a cause shown as an unexpected outcome."""
    if cause is Cause.NONE:
        return OK
    return GAP_SWATCHES.get(cause, OTHER_GAP)


def cell_text(cause: Cause, *, expected: bool) -> str:
    """What a matrix cell says for an outcome with ``cause``."""
    if cause is Cause.NONE:
        return OK.text if expected else f"{HANDLED_UNEXPECTEDLY.text} {UNEXPECTED_MARK}"
    swatch = GAP_SWATCHES.get(cause)
    name = swatch.text if swatch is not None else cause.value
    return f"{name} {EXPECTED_MARK}" if expected else name


def cell_swatch(cause: Cause | None, *, expected: bool) -> Swatch:
    """The swatch of a matrix cell: pending, expected, or the cause's own."""
    if cause is None:
        return PENDING
    if cause is Cause.NONE:
        return OK if expected else HANDLED_UNEXPECTEDLY
    return EXPECTED if expected else gap_swatch(cause)


#: Every swatch, in legend order.
LEGEND: tuple[Swatch, ...] = (*GAP_SWATCHES.values(), OTHER_GAP, OK, EXPECTED,
                              HANDLED_UNEXPECTEDLY, PENDING, VIOLATION)  # fmt: skip
