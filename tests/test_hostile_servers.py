"""Every hostile-server mode (tests/hostile.py) yields a typed outcome within the
probe's deadline and byte cap, and a hostile target never delays the scheduled
probes of the others."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from typing import Any

import pytest

from exporter.causes import Cause
from exporter.config import Config, ProbeSpec, SchedulerSettings, Target, Transport
from exporter.kinds import ProbeKind
from exporter.metrics import MetricsState
from exporter.probes import ProbeResult, run_probe
from exporter.refserver import ServerBehaviour
from exporter.refserver import start as start_refserver
from exporter.runtime import Exporter
from tests.hostile import HostileServer, Mode

TIMEOUT = 0.6
#: Closing a stream session may wait up to a second for the peer (transport.py).
SLACK = 0.6
ZONE = "hostile.example."


def spec(kind: ProbeKind = ProbeKind.QUERY, transport: Transport = Transport.UDP,
         **changes: Any) -> ProbeSpec:  # fmt: skip
    return ProbeSpec(name=f"{kind.value}_{transport.value}", kind=kind, transport=transport,
                     timeout=TIMEOUT, interval=1.0, qname=ZONE, zone=ZONE,
                     **changes)  # fmt: skip


async def probe(server: HostileServer, probe_spec: ProbeSpec) -> ProbeResult:
    target = Target(name="hostile", host="127.0.0.1", port=server.port, probes=(probe_spec,),
                    zone=ZONE)  # fmt: skip
    return await run_probe(target, probe_spec)


def run_mode(mode: Mode, probe_spec: ProbeSpec, late_delay: float = 2.0,
             rcode: int = 3000) -> ProbeResult:  # fmt: skip
    async def main() -> ProbeResult:
        async with await HostileServer.start(mode) as server:
            server.late_delay, server.rcode = late_delay, rcode
            result = await probe(server, probe_spec)
            assert not server.stats.errors, server.stats.errors
            return result

    return asyncio.run(main())


def fresh_state(probe_spec: ProbeSpec) -> MetricsState:
    target = Target(name="hostile", host="127.0.0.1", port=53, probes=(probe_spec,), zone=ZONE)
    state = MetricsState()
    state.sync(Config(targets=(target,)), [(target, probe_spec)])
    return state


def assert_series_existed_at_zero(probe_spec: ProbeSpec, result: ProbeResult) -> None:
    """The counter series this result increments was there, at 0, before any probe ran
    (else ``increase()`` would miss this first occurrence)."""
    if result.cause is Cause.NONE:
        return
    responses = fresh_state(probe_spec).pairs[("hostile", probe_spec.name)].responses
    assert responses.get((result.rcode_label, result.cause.value)) == 0, (
        result.rcode_label, result.cause, sorted(responses))  # fmt: skip


UDP, TCP = Transport.UDP, Transport.TCP

#: (mode, transport, cause, substring of the outcome's error)
CLASSIC_CASES = [
    (Mode.GARBAGE, UDP, Cause.MALFORMED, "shorter than a DNS header"),
    (Mode.GARBAGE, TCP, Cause.MALFORMED, "shorter than a DNS header"),
    (Mode.GARBAGE_BODY, UDP, Cause.MALFORMED, "unparsable reply"),
    (Mode.GARBAGE_BODY, TCP, Cause.MALFORMED, "unparsable reply"),
    (Mode.WRONG_ID, UDP, Cause.MISMATCHED_REPLY, "reply ID"),
    (Mode.WRONG_ID, TCP, Cause.MISMATCHED_REPLY, "reply ID"),
    (Mode.WRONG_OPCODE, UDP, Cause.MISMATCHED_REPLY, "opcode"),
    (Mode.WRONG_OPCODE, TCP, Cause.MISMATCHED_REPLY, "opcode"),
    (Mode.WRONG_QUESTION, UDP, Cause.MISMATCHED_REPLY, "question"),
    (Mode.WRONG_QUESTION, TCP, Cause.MISMATCHED_REPLY, "question"),
    (Mode.POINTER_LOOP, UDP, Cause.MALFORMED, "unparsable reply"),
    (Mode.POINTER_LOOP, TCP, Cause.MALFORMED, "unparsable reply"),
    (Mode.DOUBLE_OPT, UDP, Cause.MALFORMED, "unparsable reply"),
    (Mode.DOUBLE_OPT, TCP, Cause.MALFORMED, "unparsable reply"),
    (Mode.QR0_ECHO, UDP, Cause.MISMATCHED_REPLY, "QR=0"),
    (Mode.QR0_ECHO, TCP, Cause.MISMATCHED_REPLY, "QR=0"),
    (Mode.SHORT_PREFIX, TCP, Cause.CONNECTION_CLOSED, "closed mid-message"),
    (Mode.STALL_PREFIX, TCP, Cause.NO_RESPONSE, "timed out"),
    (Mode.ACCEPT_NO_READ, TCP, Cause.NO_RESPONSE, "timed out"),
    (Mode.ACCEPT_NO_READ, UDP, Cause.NO_RESPONSE, "timed out"),
    (Mode.RST_MID_REPLY, TCP, Cause.CONNECTION_RESET, "reset"),
    (Mode.LATE_REPLY, UDP, Cause.NO_RESPONSE, "timed out"),
    (Mode.LATE_REPLY, TCP, Cause.NO_RESPONSE, "timed out"),
    (Mode.HEALTHY, UDP, Cause.NONE, None),
    (Mode.HEALTHY, TCP, Cause.NONE, None),
]


@pytest.mark.parametrize(("mode", "transport", "cause", "error"), CLASSIC_CASES,
                         ids=[f"{m.value}-{t.value}" for m, t, _, _ in CLASSIC_CASES])  # fmt: skip
def test_hostile_reply_becomes_a_typed_outcome_within_the_deadline(
    mode: Mode, transport: Transport, cause: Cause, error: str | None
) -> None:
    started = time.monotonic()
    probe_spec = spec(transport=transport)
    result = run_mode(mode, probe_spec)
    elapsed = time.monotonic() - started
    assert result.cause is cause, result.as_json()
    assert_series_existed_at_zero(probe_spec, result)
    if error is None:
        assert result.outcome.error is None
    else:
        assert error in (result.outcome.error or ""), result.as_json()
    assert result.duration <= TIMEOUT + SLACK
    assert elapsed <= TIMEOUT + SLACK + 0.5
    assert result.outcome.bytes_received <= 65535 + 2


def test_endless_axfr_is_classified_from_its_first_message_and_then_dropped() -> None:
    result = run_mode(Mode.ENDLESS_AXFR, spec(ProbeKind.AXFR, TCP))
    assert result.cause is Cause.NONE, result.as_json()
    assert result.outcome.bytes_received <= 65535 + 2
    assert result.duration <= TIMEOUT + SLACK


def test_endless_axfr_first_message_over_the_cap_is_judged_from_its_soa_not_buffered() -> None:
    result = run_mode(Mode.ENDLESS_AXFR, spec(ProbeKind.AXFR, TCP, max_transfer_bytes=1024))
    assert result.cause is Cause.NONE, result.as_json()
    assert result.outcome.details["first_message_bytes"] > 1024  # type: ignore[operator]
    # Only the cap's worth of the message was read: the rest was never buffered.
    assert result.outcome.bytes_received <= 1024
    assert result.duration <= TIMEOUT + SLACK


def test_stalled_65535_prefix_holds_no_more_than_the_cap() -> None:
    result = run_mode(Mode.STALL_PREFIX, spec(transport=TCP))
    assert result.cause is Cause.NO_RESPONSE
    assert result.outcome.bytes_received <= 65535 + 2


def test_truncated_udp_reply_is_retried_over_tcp_which_answers() -> None:
    result = run_mode(Mode.TC_UDP, spec(transport=UDP))
    assert result.cause is Cause.NONE, result.as_json()
    assert result.outcome.transport == "tcp"


def test_truncated_udp_reply_without_tcp_fallback_is_reported_truncated() -> None:
    result = run_mode(Mode.TC_UDP, spec(transport=UDP, tcp_fallback=False))
    assert result.cause is Cause.TRUNCATED
    assert result.outcome.event.value == "truncated"


def test_reply_after_the_timeout_is_not_counted_and_does_not_leak_into_next_probe() -> None:
    async def main() -> tuple[ProbeResult, ProbeResult]:
        async with await HostileServer.start(Mode.LATE_REPLY) as server:
            server.late_delay = TIMEOUT + 0.2
            late = await probe(server, spec())
            server.mode = Mode.HEALTHY
            await asyncio.sleep(0.3)  # the late reply lands on a closed socket
            healthy = await probe(server, spec())
            return late, healthy

    late, healthy = asyncio.run(main())
    assert late.cause is Cause.NO_RESPONSE
    assert healthy.cause is Cause.NONE


def test_update_and_ixfr_against_hostile_modes_stay_typed() -> None:
    for kind, transport in ((ProbeKind.UPDATE, UDP), (ProbeKind.IXFR, TCP),
                            (ProbeKind.OPCODE, UDP)):  # fmt: skip
        for mode in (Mode.POINTER_LOOP, Mode.QR0_ECHO, Mode.GARBAGE, Mode.WRONG_ID):
            result = run_mode(mode, spec(kind, transport))
            assert result.cause in {Cause.MALFORMED, Cause.MISMATCHED_REPLY}, (kind, mode)


#: Replies that are not the server's answer to our request, each carrying NOERROR.
NOT_ANSWERS = [(Mode.WRONG_OPCODE, UDP), (Mode.WRONG_OPCODE, TCP), (Mode.WRONG_ID, UDP),
               (Mode.WRONG_QUESTION, UDP), (Mode.QR0_ECHO, TCP)]  # fmt: skip


@pytest.mark.parametrize(("mode", "transport"), NOT_ANSWERS,
                         ids=[f"{m.value}-{t.value}" for m, t in NOT_ANSWERS])  # fmt: skip
def test_an_expected_rcode_is_not_met_by_a_reply_that_does_not_answer_the_request(
    mode: Mode, transport: Transport
) -> None:
    result = run_mode(mode, spec(transport=transport, expect=frozenset({"NOERROR"})))
    assert result.cause is Cause.MISMATCHED_REPLY, result.as_json()
    assert result.success is False
    # Nor does its rcode name the counter's rcode label: it answered something else.
    assert result.rcode_label == "none"


def test_an_expected_rcode_is_met_by_the_real_answer() -> None:
    result = run_mode(Mode.HEALTHY, spec(expect=frozenset({"NOERROR"})))
    assert (result.cause, result.success, result.rcode_label) == (Cause.NONE, True, "NOERROR")


def test_an_expected_noerror_is_not_met_by_a_dso_echo() -> None:
    probe_spec = spec(ProbeKind.DSO_KEEPALIVE, TCP, expect=frozenset({"NOERROR"}))

    async def main() -> ProbeResult:
        server = await start_refserver(ServerBehaviour(dso="echo"))
        try:
            target = Target(name="hostile", host="127.0.0.1", port=server.port,
                            probes=(probe_spec,), zone=ZONE)  # fmt: skip
            return await run_probe(target, probe_spec)
        finally:
            await server.close()

    result = asyncio.run(main())
    assert result.outcome.rcode == 0  # the echo carries NOERROR...
    assert result.cause is Cause.DSO_ECHOED, result.as_json()
    assert result.success is False  # ...which is no answer
    assert_series_existed_at_zero(probe_spec, result)


def test_unassigned_extended_rcodes_share_one_rcode_label_and_keep_their_value() -> None:
    probe_spec = spec()
    state = fresh_state(probe_spec)
    for rcode in (3000, 4000, 12):
        result = run_mode(Mode.EXTENDED_RCODE, probe_spec, rcode=rcode)
        assert (result.outcome.rcode, result.cause) == (rcode, Cause.UNEXPECTED_RCODE)
        assert result.rcode_label == "other"
        assert_series_existed_at_zero(probe_spec, result)
        state.record("hostile", probe_spec.name, result)
    pair = state.pairs[("hostile", probe_spec.name)]
    assert pair.responses[("other", "unexpected_rcode")] == 3
    assert not [label for label, _ in pair.responses if label.startswith("RCODE")]
    assert pair.last_rcode == 12
    text = state.render()
    assert 'dnsgap_probe_last_rcode{target="hostile",probe="query_udp"} 12' in text


# -- DSO -------------------------------------------------------------------------------

DSO_CASES = [
    (Mode.DSO_TRUNCATED_TLV, {Cause.MALFORMED}),
    (Mode.DSO_TLV_PAST_END, {Cause.MALFORMED}),
    (Mode.WRONG_ID, {Cause.MISMATCHED_REPLY, Cause.NO_RESPONSE}),
    (Mode.QR0_ECHO, {Cause.MISMATCHED_REPLY, Cause.DSO_ECHOED, Cause.MALFORMED}),
    (Mode.GARBAGE, {Cause.MALFORMED}),
    (Mode.SHORT_PREFIX, {Cause.CONNECTION_CLOSED}),
    (Mode.RST_MID_REPLY, {Cause.CONNECTION_RESET}),
    (Mode.ACCEPT_NO_READ, {Cause.NO_RESPONSE}),
    (Mode.STALL_PREFIX, {Cause.NO_RESPONSE, Cause.MALFORMED}),
    # Each unsolicited Keepalive is legal (RFC 8490 §7.1), thousands of them are an
    # attack: the client may find its response among them, give up at the deadline,
    # or stop reading at its own cap and call the stream malformed.
    (Mode.DSO_FLOOD, {Cause.NONE, Cause.NO_RESPONSE, Cause.MALFORMED}),
    (Mode.DSO_FLOOD_NO_REPLY, {Cause.NO_RESPONSE, Cause.MALFORMED}),
    (Mode.HEALTHY, {Cause.NONE}),
]


@pytest.mark.parametrize(("mode", "causes"), DSO_CASES, ids=[m.value for m, _ in DSO_CASES])
def test_hostile_dso_reply_becomes_a_typed_outcome_within_the_deadline(
    mode: Mode, causes: set[Cause]
) -> None:
    probe_spec = spec(ProbeKind.DSO_KEEPALIVE, TCP)
    result = run_mode(mode, probe_spec)
    assert result.cause in causes, result.as_json()
    assert_series_existed_at_zero(probe_spec, result)
    assert result.duration <= TIMEOUT + SLACK
    # The flood sends 5000 x 26 bytes; a bounded client stops well before.
    assert result.outcome.bytes_received <= 65535 + 2


# -- the scheduler keeps time for everyone else -------------------------------------------

#: Hostile modes a scheduled target runs alongside the healthy one.
SCHEDULED_MODES = (Mode.ACCEPT_NO_READ, Mode.STALL_PREFIX, Mode.ENDLESS_AXFR, Mode.LATE_REPLY,
                   Mode.RST_MID_REPLY, Mode.POINTER_LOOP, Mode.GARBAGE, Mode.WRONG_ID,
                   Mode.DOUBLE_OPT, Mode.SHORT_PREFIX, Mode.QR0_ECHO)  # fmt: skip


def test_hostile_targets_do_not_delay_the_scheduled_probes_of_a_healthy_target() -> None:
    interval, run_for = 0.5, 4.0

    async def main() -> tuple[Exporter, list[float]]:
        hostile = [await HostileServer.start(mode) for mode in SCHEDULED_MODES]
        healthy = await start_refserver(ServerBehaviour())
        targets = []
        for server in hostile:
            kinds = [(ProbeKind.AXFR, TCP)] if server.mode is Mode.ENDLESS_AXFR else [
                (ProbeKind.QUERY, UDP), (ProbeKind.QUERY, TCP)]  # fmt: skip
            probes = tuple(dataclasses.replace(spec(k, t), interval=interval, timeout=1.5)
                           for k, t in kinds)  # fmt: skip
            targets.append(Target(name=f"hostile-{server.mode.value}", host="127.0.0.1",
                                  port=server.port, probes=probes, zone=ZONE))  # fmt: skip
        good = dataclasses.replace(spec(), name="soa", qname="demo.example.", zone=None,
                                   interval=interval)  # fmt: skip
        targets.append(Target(name="healthy", host="127.0.0.1", port=healthy.port,
                              probes=(good,), zone="demo.example."))  # fmt: skip
        config = Config(targets=tuple(targets), scheduler=SchedulerSettings(jitter=0.0))
        exporter = Exporter(config)
        runs: list[float] = []
        exporter.start()
        try:
            deadline = time.time() + run_for
            last = None
            while time.time() < deadline:
                await asyncio.sleep(0.05)
                current = exporter.state.pairs[("healthy", "soa")].last_run
                if current is not None and current != last:
                    runs.append(current)
                    last = current
        finally:
            await exporter.stop()
            await healthy.close()
            for server in hostile:
                await server.close()
        return exporter, runs

    exporter, runs = asyncio.run(main())
    healthy = exporter.state.pairs[("healthy", "soa")]
    assert healthy.cause is Cause.NONE
    # Every 0.5 s for 4 s: 8 runs, give or take the edges.
    assert len(runs) >= 7, runs
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    # Slack for a shared 2-core machine: what must not happen is a hostile server
    # holding the healthy probe back by a whole timeout.
    assert max(gaps) < 0.5 + 0.3, gaps
    lateness = exporter.state.lateness
    cumulative = dict(lateness.cumulative())
    assert cumulative["0.05"] >= 0.95 * lateness.count, list(lateness.cumulative())
    assert cumulative["0.25"] == lateness.count, list(lateness.cumulative())
    # The hostile pairs ran too, and each ended as a typed cause.
    for target in exporter.config.targets:
        for probe_spec in target.probes:
            state = exporter.state.pairs[(target.name, probe_spec.name)]
            assert state.cause is not None, (target.name, probe_spec.name)
    assert exporter.state.pairs[("hostile-accept_no_read", "query_tcp")].cause is (
        Cause.NO_RESPONSE)  # fmt: skip
