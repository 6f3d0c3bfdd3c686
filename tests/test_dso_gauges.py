"""The per-target DSO gauges: each shows the latest probe that it describes."""

from __future__ import annotations

import asyncio
import struct
import time

from exporter import dso_client
from exporter.causes import Cause
from exporter.config import Config, DsoSettings, ProbeSpec, Target, Transport
from exporter.dso import DsoMessage, Keepalive, RetryDelay, frame
from exporter.kinds import ProbeKind
from exporter.metrics import MetricsState
from exporter.outcome import DsoFacts, Outcome, WireEvent
from exporter.probes import ProbeResult, run_probe

DSOTYPENI = 11
#: RFC 8490 §7.2.2: an error response may carry a Retry Delay TLV; 100 ms here.
RETRY_MS = 100


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A DSO server that grants Keepalives and answers any other request type with
    DSOTYPENI plus a Retry Delay TLV, keeping the session open."""
    try:
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            request = DsoMessage.from_wire(await reader.readexactly(length))
            if not request.msg_id:
                continue  # unidirectional: nothing to answer
            if isinstance(request.primary, Keepalive):
                reply = request.response(0, (Keepalive(15_000, 15_000),))
            else:
                reply = request.response(DSOTYPENI, (RetryDelay(RETRY_MS),))
            writer.write(frame(reply.to_wire()))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _spec(kind: ProbeKind) -> ProbeSpec:
    return ProbeSpec(name=kind.value, kind=kind, transport=Transport.TCP, timeout=2.0,
                     interval=10.0, dso=DsoSettings(persistent=True))  # fmt: skip


def test_retry_delay_gauge_returns_to_zero_when_the_latest_probe_carried_none() -> None:
    tlv, keepalive = _spec(ProbeKind.DSO_TLV), _spec(ProbeKind.DSO_KEEPALIVE)

    async def main() -> tuple[ProbeResult, ProbeResult, MetricsState]:
        server = await asyncio.start_server(_serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        target = Target("dso", "127.0.0.1", port, (tlv, keepalive))
        state = MetricsState()
        state.sync(Config(targets=(target,)), [(target, tlv), (target, keepalive)])
        try:
            first = await run_probe(target, tlv)
            state.record("dso", tlv.name, first)
            assert state.dso["dso"].retry_delay == RETRY_MS / 1000
            await asyncio.sleep(2 * RETRY_MS / 1000)  # whatever the delay holds back
            second = await run_probe(target, keepalive)  # on the same session
            state.record("dso", keepalive.name, second)
            return first, second, state
        finally:
            await dso_client.close_all()
            server.close()
            await server.wait_closed()

    first, second, state = asyncio.run(main())
    assert first.cause is Cause.DSO_TYPE_NOT_IMPLEMENTED, first.as_json()
    assert first.outcome.dso is not None
    assert first.outcome.dso.retry_delay == RETRY_MS / 1000
    assert second.cause is Cause.NONE, second.as_json()
    assert second.outcome.details.get("persistent") is True
    # The Retry Delay came with the first probe's error response; the second carried none.
    assert second.outcome.dso is not None
    assert second.outcome.dso.retry_delay is None
    assert 'dnsgap_dso_retry_delay_seconds{target="dso"} 0\n' in state.render()


def test_held_back_probe_keeps_showing_the_delay_that_holds_it() -> None:
    spec = _spec(ProbeKind.DSO_KEEPALIVE)
    target = Target("dso", "127.0.0.1", 53, (spec,))
    state = MetricsState()
    state.sync(Config(targets=(target,)), [(target, spec)])

    def record(outcome: Outcome, cause: Cause) -> None:
        state.record("dso", spec.name, ProbeResult(outcome, cause, False, 0.01, time.time()))

    granted = DsoFacts(session_established=True, inactivity_timeout=15.0,
                       keepalive_interval=15.0, retry_delay=30.0)  # fmt: skip
    record(Outcome(WireEvent.CLOSED, transport="tcp", dso=granted), Cause.CONNECTION_CLOSED)
    held = DsoFacts(retry_delay=30.0)
    record(Outcome(WireEvent.NOT_SENT, transport="tcp", dso=held), Cause.NOT_SENT)
    text = state.render()
    assert 'dnsgap_dso_retry_delay_seconds{target="dso"} 30\n' in text
    assert 'dnsgap_dso_session_established{target="dso"} 0\n' in text
    # The timers stay those of the latest Keepalive TLV the server sent.
    assert 'dnsgap_dso_inactivity_timeout_seconds{target="dso"} 15\n' in text
