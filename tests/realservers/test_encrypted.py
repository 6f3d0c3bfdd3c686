"""DoT, DoH and DoQ against real servers: Debian's Unbound (built with nghttp2) and
dnsdist serve DoT and DoH with throw-away certificates; DoQ is the aioquic test
server in front of that same Unbound (no Debian server speaks DoQ yet)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from exporter import doh
from exporter.causes import Cause
from exporter.config import ProbeSpec, Target, parse_config
from exporter.probes import ProbeResult, run_probe
from tests.doqserver import DoqServer

from .encrypted import (
    DNSDIST_ENCRYPTED,
    UNBOUND_ENCRYPTED,
    UNSUPPORTED_PATH,
    WRONG_TYPE_PATH,
    certificate,
    ports,
)
from .launch import LaunchError, MissingServerError, RunningServer, ServerSpec, launch, stop


def _start(spec: ServerSpec, tmp_path_factory: pytest.TempPathFactory,
           backend: RunningServer | None = None) -> Iterator[RunningServer]:  # fmt: skip
    try:
        server = launch(spec.name, tmp_path_factory.mktemp(spec.name), backend, spec=spec)
    except (MissingServerError, LaunchError) as error:
        # A missing real server fails the suite: CI installs every one of them.
        pytest.fail(str(error), pytrace=False)
    try:
        yield server
    finally:
        stop(server.process)


@pytest.fixture(scope="module")
def unbound_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Unbound with DoT and DoH (`tls-port`, `https-port`, `http-endpoint`)."""
    yield from _start(UNBOUND_ENCRYPTED, tmp_path_factory)


@pytest.fixture(scope="module")
def dnsdist_tls(tmp_path_factory: pytest.TempPathFactory,
                nsd: RunningServer) -> Iterator[RunningServer]:  # fmt: skip
    """dnsdist with `addTLSLocal` and `addDOHLocal` in front of NSD."""
    yield from _start(DNSDIST_ENCRYPTED, tmp_path_factory, nsd)


def _config(server: RunningServer, probes: str, port: int | None = None) -> Target:
    text = f"""targets:
  - name: {server.name}
    server: "127.0.0.1{f':{port}' if port else ''}"
    zone: gap.test.
    tls: {{ca_file: "{certificate(server)}", server_name: localhost}}
    probes:
{probes}"""
    return parse_config(text, "<test>").targets[0]


def _probe(target: Target, name: str) -> ProbeSpec:
    return next(p for p in target.probes if p.name == name)


def _run_all(target: Target) -> dict[str, ProbeResult]:
    async def main() -> dict[str, ProbeResult]:
        return {spec.name: await run_probe(target, spec) for spec in target.probes}

    return asyncio.run(main())


def test_unbound_answers_doh_post_and_get_on_one_http2_connection(
    unbound_tls: RunningServer,
) -> None:
    target = _config(unbound_tls, """\
      - {name: post, kind: query, transport: doh, qname: "@", qtype: SOA}
      - {name: get, kind: query, transport: doh, doh: {method: GET}, qname: "@", qtype: SOA}
""", ports(unbound_tls)["doh"])  # fmt: skip

    async def main() -> list[ProbeResult]:
        results = [await run_probe(target, spec) for spec in target.probes * 5]
        assert doh.pool().open_connections == 1  # ten probes, one TLS handshake
        return results

    results = asyncio.run(main())
    for result in results:
        assert (result.cause, result.rcode_label, result.outcome.transport) == (
            Cause.NONE, "NOERROR", "doh"), result.outcome
        assert result.outcome.details["answers"] == 1
        assert result.outcome.cert_not_after is not None
        assert 80 * 86400 < result.outcome.cert_not_after - time.time() < 91 * 86400


def test_unbound_answers_a_wrong_doh_path_with_404(unbound_tls: RunningServer) -> None:
    target = _config(unbound_tls, """\
      - {name: q, kind: query, transport: doh, doh: {path: /resolve}, qname: "@"}
""", ports(unbound_tls)["doh"])  # fmt: skip
    result = _run_all(target)["q"]
    assert result.cause is Cause.HTTP_STATUS
    assert result.outcome.details["http_status"] == 404


def test_unbound_serves_dot_with_the_certificate_expiry(unbound_tls: RunningServer) -> None:
    target = _config(unbound_tls, """\
      - {name: dot, kind: query, transport: tls, qname: "@", qtype: SOA}
""", ports(unbound_tls)["tls"])  # fmt: skip
    result = _run_all(target)["dot"]
    assert (result.cause, result.rcode_label) == (Cause.NONE, "NOERROR")
    assert result.outcome.cert_not_after is not None


def test_unbound_doh_without_the_ca_is_an_invalid_certificate(
    unbound_tls: RunningServer,
) -> None:
    text = f"""targets:
  - name: u
    server: "127.0.0.1:{ports(unbound_tls)["doh"]}"
    probes: [{{name: q, kind: query, transport: doh}}]
"""
    result = _run_all(parse_config(text, "<test>").targets[0])["q"]
    assert result.cause is Cause.TLS_CERTIFICATE_INVALID


def test_dnsdist_answers_doh_and_its_broken_paths_have_their_causes(
    dnsdist_tls: RunningServer,
) -> None:
    target = _config(dnsdist_tls, f"""\
      - {{name: ok, kind: query, transport: doh, qname: "@", qtype: SOA}}
      - {{name: get, kind: query, transport: doh, doh: {{method: GET}}, qname: "@"}}
      - {{name: missing, kind: query, transport: doh, doh: {{path: /nowhere}}, qname: "@"}}
      - {{name: html, kind: query, transport: doh, doh: {{path: {WRONG_TYPE_PATH}}}}}
      - {{name: media, kind: query, transport: doh, doh: {{path: {UNSUPPORTED_PATH}}}}}
""", ports(dnsdist_tls)["doh"])  # fmt: skip
    results = _run_all(target)
    assert (results["ok"].cause, results["ok"].rcode_label) == (Cause.NONE, "NOERROR")
    assert results["get"].cause is Cause.NONE
    assert results["missing"].cause is Cause.HTTP_STATUS
    assert results["missing"].outcome.details["http_status"] == 404
    assert results["html"].cause is Cause.WRONG_CONTENT_TYPE
    assert results["html"].outcome.details["content_type"] == "text/html"
    assert results["media"].cause is Cause.HTTP_STATUS
    assert results["media"].outcome.details["http_status"] == 415


def test_doh_to_dnsdists_dot_port_is_alpn_not_offered(dnsdist_tls: RunningServer) -> None:
    # dnsdist's DoT listener negotiates no ALPN at all: no h2, so no DoH there.
    target = _config(dnsdist_tls, """\
      - {name: q, kind: query, transport: doh}
""", ports(dnsdist_tls)["tls"])  # fmt: skip
    result = _run_all(target)["q"]
    assert result.cause is Cause.ALPN_NOT_OFFERED
    assert result.outcome.cert_not_after is not None  # the handshake itself worked


def test_doq_to_a_plain_dns_port_is_a_quic_handshake_timeout(unbound_tls: RunningServer) -> None:
    target = _config(unbound_tls, """\
      - {name: q, kind: query, transport: doq, timeout: 1s}
""", unbound_tls.port)  # fmt: skip
    assert _run_all(target)["q"].cause is Cause.QUIC_HANDSHAKE_TIMEOUT


def test_the_encrypted_survey_finds_dot_doh_and_doq(unbound_tls: RunningServer) -> None:
    cert = certificate(unbound_tls)

    async def main() -> dict[str, ProbeResult]:
        key = str(unbound_tls.workdir / "localhost.key")
        async with await DoqServer.start(cert, key, backend=(unbound_tls.host,
                                                             unbound_tls.port)) as doq:  # fmt: skip
            found = ports(unbound_tls)
            text = f"""targets:
  - name: resolver
    server: 127.0.0.1
    zone: gap.test.
    tls: {{ca_file: "{cert}", server_name: localhost}}
    survey:
      preset: encrypted
      ports: {{tls: {found["tls"]}, doh: {found["doh"]}, doq: {doq.port}}}
"""
            target = parse_config(text, "<test>").targets[0]
            results = {s.name: await run_probe(target, s) for s in target.probes}
            assert doq.stats.query_ids == [0]
            return results

    results = asyncio.run(main())
    assert {name: r.cause for name, r in results.items()} == dict.fromkeys(
        ("dot", "doh_post", "doh_get", "doq"), Cause.NONE)
    assert {r.outcome.transport for r in results.values()} == {"tls", "doh", "doq"}
    assert len({r.outcome.cert_not_after for r in results.values()}) == 1
