"""What the status page tells an operator about a fleet: the targets that answer none
of their probes (a dead server, a port nothing listens on) are named, as
DnsgapTargetUnreachable does, so that a dead part of the fleet reads as one line and
not as a row of "silent" cells; an expected gap asks for no fix. Real probes: a
reference server and a port nothing listens on."""

from __future__ import annotations

import asyncio
import re

from exporter.config import Config, ProbeSpec, Target
from exporter.kinds import ProbeKind
from exporter.metrics import MetricsState
from exporter.probes import run_probe
from exporter.refserver import ServerBehaviour
from exporter.refserver import start as start_refserver
from exporter.statuspage import EXPECTED_REMEDY, render_status_page
from tests.conftest import free_port

ZONE = "demo.example."
SPECS = (ProbeSpec(name="soa", kind=ProbeKind.QUERY, qname=ZONE, qtype="SOA", timeout=1.0),
         ProbeSpec(name="opcode3", kind=ProbeKind.OPCODE, opcode=3, timeout=1.0,
                   expect=frozenset({"not_implemented"})))  # fmt: skip


def _page(run: tuple[str, ...]) -> str:
    """The page after every probe of the targets in ``run`` ran once (the others
    pending): "alive" is a reference server, "dead" a port nothing listens on."""

    async def main() -> str:
        server = await start_refserver(ServerBehaviour())
        try:
            targets = (
                Target(name="alive", host="127.0.0.1", port=server.port, probes=SPECS,
                       zone=ZONE),
                Target(name="dead", host="127.0.0.1", port=free_port(), probes=SPECS,
                       zone=ZONE),
            )  # fmt: skip
            state = MetricsState()
            state.sync(Config(targets=targets), [(t, s) for t in targets for s in t.probes])
            for target in targets:
                if target.name in run:
                    for spec in target.probes:
                        state.record(target.name, spec.name, await run_probe(target, spec))
            return render_status_page(state.pairs.values(), reload_ok=True)
        finally:
            await server.close()

    return asyncio.run(main())


def test_a_target_that_answers_no_probe_is_named_unreachable_once() -> None:
    page = _page(("alive", "dead"))
    assert re.search(r"1 answering none of its probes \(unreachable\): dead\b", page), page[:800]
    row = re.search(r'<tr data-target="dead">.*?</tr>', page)
    assert row is not None
    assert "unreachable" in row.group(0)
    alive = re.search(r'<tr data-target="alive">.*?</tr>', page)
    assert alive is not None
    assert "unreachable" not in alive.group(0)


def test_a_target_not_probed_yet_is_pending_not_unreachable() -> None:
    page = _page(("alive",))
    assert "unreachable" not in page


def test_an_expected_gap_asks_for_no_fix() -> None:
    # NOTIMP to an unassigned opcode is what the probe expects: the NOTIMP
    # remediation ("enable zone transfers / dynamic updates") would send the
    # operator after a fix the server does not need.
    page = _page(("alive",))
    row = re.search(r'<tr class="expected" data-target="alive" data-probe="opcode3" '
                    r'data-cause="not_implemented">.*?</tr>', page)  # fmt: skip
    assert row is not None
    assert EXPECTED_REMEDY in row.group(0)
    assert "dynamic updates" not in row.group(0)
