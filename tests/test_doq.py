"""DNS over QUIC (RFC 9250) probes against the aioquic test server (tests/doqserver.py):
real QUIC on loopback, one server per test on a free port."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from collections.abc import Awaitable, Callable

import pytest

from exporter.causes import Cause
from exporter.certs import make_self_signed
from exporter.config import (
    Config,
    ProbeSpec,
    SchedulerSettings,
    Target,
    TlsSettings,
    Transport,
)
from exporter.kinds import ProbeKind
from exporter.probes import ProbeResult, run_probe
from exporter.runtime import Exporter
from tests.doqserver import DoqServer


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    crt, key = make_self_signed(tmp_path_factory.mktemp("doq"), days=30)
    return str(crt), str(key)


def _probe(port: int, tls: TlsSettings, kind: ProbeKind = ProbeKind.QUERY,
           timeout: float = 1.5, **extra: object) -> tuple[Target, ProbeSpec]:  # fmt: skip
    spec = ProbeSpec(name=kind.value, kind=kind, transport=Transport.DOQ, qname="gap.test.",
                     timeout=timeout, interval=60.0, **extra)  # type: ignore[arg-type]
    target = Target(name="doq", host="127.0.0.1", port=port, probes=(spec,), zone="gap.test.",
                    tls=tls)  # fmt: skip
    return target, spec


def _run(cert: tuple[str, str], scenario: Callable[[DoqServer], Awaitable[object]],
         **server: object) -> object:  # fmt: skip
    async def main() -> object:
        async with await DoqServer.start(*cert, **server) as running:  # type: ignore[arg-type]
            return await scenario(running)

    return asyncio.run(main())


def test_doq_queries_share_one_connection_one_stream_each_with_message_id_0(
    cert: tuple[str, str],
) -> None:
    async def scenario(server: DoqServer) -> list[ProbeResult]:
        target, spec = _probe(server.port, TlsSettings(ca_file=cert[0]))
        results = [await run_probe(target, spec) for _ in range(3)]
        results += await asyncio.gather(*(run_probe(target, spec) for _ in range(3)))
        assert server.stats.handshakes == 1  # one QUIC connection for six probes
        # §4.2: the next client-initiated bidirectional stream each time (0, 4, 8, ...).
        assert sorted(server.stats.streams) == [0, 4, 8, 12, 16, 20]
        assert server.stats.query_ids == [0] * 6  # §4.2.1
        return results

    results = _run(cert, scenario)
    assert isinstance(results, list)
    for result in results:
        assert (result.cause, result.rcode_label, result.outcome.transport) == (
            Cause.NONE, "NOERROR", "doq")


def test_doq_reports_the_certificate_expiry(cert: tuple[str, str]) -> None:
    async def scenario(server: DoqServer) -> ProbeResult:
        return await run_probe(*_probe(server.port, TlsSettings(ca_file=cert[0])))

    result = _run(cert, scenario)
    assert isinstance(result, ProbeResult)
    assert result.outcome.cert_not_after is not None
    assert abs(result.outcome.cert_not_after - (time.time() + 30 * 86400)) < 3600
    assert result.as_json()["tls_cert_expiry_timestamp_seconds"] == result.outcome.cert_not_after


def test_doq_runs_the_other_classic_kinds(cert: tuple[str, str]) -> None:
    async def scenario(server: DoqServer) -> list[ProbeResult]:
        tls = TlsSettings(ca_file=cert[0])
        return [await run_probe(*_probe(server.port, tls, ProbeKind.UPDATE, zone="gap.test.")),
                await run_probe(*_probe(server.port, tls, ProbeKind.OPCODE, opcode=3)),
                await run_probe(*_probe(server.port, tls, ProbeKind.AXFR, zone="gap.test."))]

    results = _run(cert, scenario)
    assert isinstance(results, list)
    assert [(r.rcode_label, r.cause) for r in results] == [
        ("NOTIMP", Cause.NOT_IMPLEMENTED), ("NOTIMP", Cause.NOT_IMPLEMENTED),
        ("NOERROR", Cause.NONE)]  # fmt: skip


@pytest.mark.parametrize(
    ("server", "tls", "cause"),
    [
        ({"mode": "reset"}, "ca", Cause.STREAM_RESET),
        ({"mode": "silent"}, "ca", Cause.NO_RESPONSE),
        ({"mode": "version_negotiation"}, "ca", Cause.QUIC_VERSION_MISMATCH),
        ({"mode": "blackhole"}, "ca", Cause.QUIC_HANDSHAKE_TIMEOUT),
        ({"alpn": ["dot"]}, "ca", Cause.ALPN_NOT_OFFERED),
        ({}, "no-ca", Cause.TLS_CERTIFICATE_INVALID),
        ({}, "wrong-name", Cause.TLS_CERTIFICATE_INVALID),
    ],
    ids=["reset", "silent", "version-negotiation", "blackhole", "alpn", "unknown-ca",
         "wrong-name"],
)  # fmt: skip
def test_doq_transport_failures_have_their_own_cause(
    cert: tuple[str, str], server: dict[str, object], tls: str, cause: Cause
) -> None:
    settings = {
        "ca": TlsSettings(ca_file=cert[0]),
        "no-ca": TlsSettings(),
        "wrong-name": TlsSettings(ca_file=cert[0], server_name="other.test"),
    }[tls]

    async def scenario(running: DoqServer) -> ProbeResult:
        return await run_probe(*_probe(running.port, settings, timeout=1.0))

    result = _run(cert, scenario, **server)
    assert isinstance(result, ProbeResult)
    assert result.cause is cause, result.outcome
    assert result.outcome.transport == "doq"
    if cause is Cause.STREAM_RESET:
        assert result.outcome.details["stream_error"] == 0x4  # DOQ_EXCESSIVE_LOAD


def test_a_doq_probe_after_the_server_restarted_reconnects(cert: tuple[str, str]) -> None:
    async def scenario() -> tuple[ProbeResult, ProbeResult]:
        first = await DoqServer.start(*cert)
        target, spec = _probe(first.port, TlsSettings(ca_file=cert[0]))
        before = await run_probe(target, spec)
        first.close()
        await asyncio.sleep(0.2)  # aioquic releases the port on the next turns of the loop
        async with await DoqServer.start(*cert, port=first.port) as second:
            results = [await run_probe(target, spec) for _ in range(3)]
            assert second.stats.handshakes == 1
        return before, results[-1]

    before, after = asyncio.run(scenario())
    assert before.cause is Cause.NONE
    assert after.cause is Cause.NONE


def test_a_doq_connection_whose_query_timed_out_is_not_reused(cert: tuple[str, str]) -> None:
    # A server restarted without CONNECTION_CLOSE drops the old connection's packets:
    # after a timeout the next probe handshakes again instead of waiting on it.
    async def scenario(server: DoqServer) -> int:
        target, spec = _probe(server.port, TlsSettings(ca_file=cert[0]), timeout=0.5)
        for _ in range(2):
            assert (await run_probe(target, spec)).cause is Cause.NO_RESPONSE
        return server.stats.handshakes

    assert _run(cert, scenario, mode="silent") == 2


def test_stopping_during_a_handshake_leaves_no_socket_open(cert: tuple[str, str]) -> None:
    """Shutdown cancels a QUIC handshake under way (a server that never answers):
    its socket is closed then, not by a timer of a loop that is ending."""
    async def main() -> None:
        async with await DoqServer.start(*cert, mode="blackhole") as server:
            target, _ = _probe(server.port, TlsSettings(verify=False), timeout=5.0)
            exporter = Exporter(Config(targets=(target,),
                                       scheduler=SchedulerSettings(jitter=0.0)))  # fmt: skip
            exporter.start()
            assert server.raw is not None
            for _ in range(200):
                if server.raw.datagrams:
                    break
                await asyncio.sleep(0.02)
            assert server.raw.datagrams  # the handshake is under way
            await exporter.stop()

    gc.collect()  # what earlier tests left unclosed (their loops ended with a pool open)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        asyncio.run(main())
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
