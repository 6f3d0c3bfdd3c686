"""The performance fast paths change nothing a user can see: pre-built requests
and memoised reply judgements give the same bytes and the same outcomes."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from exporter import wire
from exporter.config import EdnsSettings, ProbeSpec, TsigKey
from exporter.kinds import ProbeKind
from exporter.outcome import WireEvent
from exporter.wire import build_request, read_reply, request_for

ZONE = "gap.test."


def _spec(kind: ProbeKind, **kwargs: object) -> ProbeSpec:
    return ProbeSpec(name=kind.value, kind=kind, qname=ZONE, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", [
    _spec(ProbeKind.QUERY), _spec(ProbeKind.QUERY, edns=EdnsSettings(version=1, nsid=True)),
    _spec(ProbeKind.AXFR), _spec(ProbeKind.IXFR, serial=7), _spec(ProbeKind.NOTIFY),
    _spec(ProbeKind.OPCODE, opcode=3),
])  # fmt: skip
def test_templated_request_is_built_request_with_a_fresh_id(spec: ProbeSpec) -> None:
    first, second = request_for(spec, ZONE), request_for(spec, ZONE)
    built = build_request(spec, ZONE, msg_id=first.msg_id)
    assert first.wire == built.wire
    assert (first.msg_id, first.opcode, first.question) == (built.msg_id, built.opcode,
                                                            built.question)  # fmt: skip
    assert second.wire[2:] == first.wire[2:]
    assert int.from_bytes(second.wire[:2], "big") == second.msg_id


def test_update_requests_are_never_templated() -> None:
    spec = _spec(ProbeKind.UPDATE)
    # Each UPDATE names a fresh random owner (RFC 2136 prerequisite that cannot hold).
    assert request_for(spec, ZONE).wire[12:] != request_for(spec, ZONE).wire[12:]


def test_signed_requests_are_never_templated() -> None:
    key = TsigKey("k.", "hmac-sha256", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==")
    request = request_for(_spec(ProbeKind.AXFR, tsig_key=key), ZONE)
    assert request.keyring is not None
    assert request.message is not None


def _reply(request: wire.WireRequest, rcode: int = 0, **kwargs: object) -> bytes:
    query = dns.message.from_wire(request.wire)
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    for name, value in kwargs.items():
        setattr(reply, name, value)
    return reply.to_wire()


def _fresh(request: wire.WireRequest, data: bytes, transport: str = "udp") -> object:
    wire._judgements.clear()
    return read_reply(request, data, transport)


@pytest.mark.parametrize("rcode", [dns.rcode.NOERROR, dns.rcode.NOTIMP, dns.rcode.REFUSED,
                                   dns.rcode.BADVERS])  # fmt: skip
def test_memoised_judgement_equals_a_fresh_parse(rcode: int) -> None:
    spec = _spec(ProbeKind.QUERY, edns=EdnsSettings(version=1))
    request = request_for(spec, ZONE)
    data = _reply(request, rcode)
    fresh = _fresh(request, data)
    again = read_reply(request, data, "udp")  # from the memo
    assert again == fresh
    other = request_for(spec, ZONE)  # same bytes past the ID, another ID
    assert read_reply(other, other.wire[:2] + data[2:], "tcp") == _fresh(
        other, other.wire[:2] + data[2:], "tcp")


def test_memo_never_hides_an_id_or_question_mismatch() -> None:
    request = request_for(_spec(ProbeKind.QUERY), ZONE)
    data = _reply(request)
    read_reply(request, data, "udp")
    wrong_id = bytes([data[0] ^ 1]) + data[1:]
    assert read_reply(request, wrong_id, "udp").event is WireEvent.MISMATCHED
    other_question = request_for(_spec(ProbeKind.QUERY, qtype=1), ZONE)
    assert read_reply(other_question, other_question.wire[:2] + data[2:],
                      "udp").event is WireEvent.MISMATCHED  # fmt: skip


def test_memoised_outcomes_do_not_share_details() -> None:
    request = request_for(_spec(ProbeKind.QUERY), ZONE)
    data = _reply(request)
    first = read_reply(request, data, "udp")
    first.details["answers"] = 99
    assert read_reply(request, data, "udp").details["answers"] == 0


def test_malformed_reply_is_judged_malformed_every_time() -> None:
    request = request_for(_spec(ProbeKind.QUERY), ZONE)
    data = _reply(request)
    truncated_rr = data[:-3] if len(data) > 20 else data + b"\x00"
    header = bytearray(truncated_rr)
    header[7] = 1  # claim one answer record that is not there
    hostile = bytes(header)
    assert _fresh(request, hostile) == read_reply(request, hostile, "udp")
    assert read_reply(request, hostile, "udp").event is WireEvent.MALFORMED


def test_flags_in_details_match_the_reply() -> None:
    request = request_for(_spec(ProbeKind.QUERY), ZONE)
    data = _reply(request, flags=dns.flags.QR | dns.flags.AA)
    assert read_reply(request, data, "udp").details["flags"] == "QR AA"


def test_scheduler_slots_run_on_the_event_loop_thread() -> None:
    """APScheduler runs plain-function jobs in a thread pool; the slot touches the
    heap and loop.call_at, which only the loop thread may do."""
    import asyncio
    import threading

    from exporter.metrics import MetricsState
    from exporter.scheduler import ProbeScheduler

    async def main() -> set[int]:
        async def never(*_: object) -> object:
            raise AssertionError("no pairs, no probes")

        scheduler = ProbeScheduler(MetricsState(), never)  # type: ignore[arg-type]
        threads: set[int] = set()
        tick = scheduler._tick

        def recording_tick() -> None:
            threads.add(threading.get_ident())
            tick()

        scheduler._tick = recording_tick  # type: ignore[method-assign]
        scheduler.start()
        await asyncio.sleep(2.3)  # the start-up slot plus two APScheduler slots
        await scheduler.stop()
        return threads

    assert asyncio.run(main()) == {threading.get_ident()}
