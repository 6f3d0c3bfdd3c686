"""One place per probe kind: build the request, run the exchange, judge the outcome."""

from __future__ import annotations

import dataclasses
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from exporter import conformance
from exporter import transport as tx
from exporter.causes import Cause, answer_rcode, classify, rcode_label, rcode_name
from exporter.config import FallbackSettings, ProbeSpec, Target, TlsSettings, Transport
from exporter.kinds import ProbeKind
from exporter.outcome import Outcome, WireEvent
from exporter.wire import (
    WireRequest,
    build_request,
    first_record_end,
    is_truncated,
    read_reply,
    read_transfer_head,
    request_for,
)


@dataclass(frozen=True, slots=True)
class FallbackResult:
    """The traditional operation run because the preferred one was not available."""

    kind: ProbeKind
    cause: Cause
    rcode: int | None

    @property
    def ok(self) -> bool:
        return self.cause is Cause.NONE


@dataclass(frozen=True, slots=True)
class ProbeResult:
    outcome: Outcome
    cause: Cause
    success: bool
    duration: float
    started_at: float
    fallback: FallbackResult | None = None

    @property
    def rcode_label(self) -> str:
        """The bounded ``rcode`` label: ``none`` unless the server really answered."""
        return rcode_label(answer_rcode(self.outcome, self.cause))

    def as_json(self) -> dict[str, object]:
        """The CLI's ``--json`` object: stable keys, documented in the README."""
        outcome = self.outcome
        data: dict[str, object] = {
            "rcode": None if outcome.rcode is None else rcode_name(outcome.rcode),
            "rcode_value": outcome.rcode,
            "cause": self.cause.value,
            "success": self.success,
            "error": outcome.error,
            "event": outcome.event.value,
            "transport": outcome.transport,
            "reply_opcode": outcome.reply_opcode,
            "bytes_received": outcome.bytes_received,
            "duration_seconds": round(self.duration, 6),
        }
        if outcome.tsig_error is not None:
            data["tsig_error"] = rcode_name(outcome.tsig_error)
        if outcome.dso is not None:
            data["dso"] = dataclasses.asdict(outcome.dso)
        if self.fallback is not None:
            data["fallback"] = {
                "kind": self.fallback.kind.value,
                "cause": self.fallback.cause.value,
                "rcode": rcode_name(self.fallback.rcode),
            }
        if outcome.cert_not_after is not None:
            data["tls_cert_expiry_timestamp_seconds"] = outcome.cert_not_after
        if outcome.details:
            data["details"] = outcome.details
        data["violations"] = list(outcome.violations)
        return data


def meets_expectation(spec: ProbeSpec, outcome: Outcome, cause: Cause) -> bool:
    """An expected cause, or an expected rcode in the server's real answer to this
    request: the rcode of a mismatched reply, an echo or garbage never counts."""
    if cause.value in spec.expect:
        return True
    rcode = answer_rcode(outcome, cause)
    return rcode is not None and rcode_name(rcode) in spec.expect


class TlsContexts:
    """SSL contexts are costly to build: one per distinct TLS setting."""

    def __init__(self) -> None:
        self._contexts: dict[TlsSettings, ssl.SSLContext] = {}

    def get(self, settings: TlsSettings) -> ssl.SSLContext:
        context = self._contexts.get(settings)
        if context is None:
            context = tx.client_ssl_context(settings)
            self._contexts[settings] = context
        return context


_DEFAULT_TLS = TlsContexts()

DsoRunner = Callable[[Target, ProbeSpec, "ssl.SSLContext | None"], Awaitable[Outcome]]


def _with_checks(outcome: Outcome, target: Target, spec: ProbeSpec, request: WireRequest,
                 reply: bytes, *, udp_reply: bytes | None) -> Outcome:  # fmt: skip
    """The outcome with the conformance checks its reply violates (docs/conformance.md)."""
    if spec.kind not in conformance.CHECKED_KINDS:
        return outcome
    expectation = conformance.expectation_of(spec, target.role, target.zone)
    found = conformance.judge(request.wire, reply, expectation, udp_reply)
    return dataclasses.replace(outcome, violations=found) if found else outcome


async def exchange_classic(target: Target, spec: ProbeSpec, request: WireRequest,
                           contexts: TlsContexts) -> Outcome:  # fmt: skip
    """Send a classic request over the probe's transport and judge the reply."""
    transport = spec.transport
    if transport in _SESSION_TRANSPORTS:
        return await _exchange_session(target, spec, request)
    udp_reply: bytes | None = None
    if transport is Transport.UDP:
        result = await tx.udp_exchange(target.host, target.port, request.wire, request.msg_id,
                                       spec.timeout)  # fmt: skip
        if isinstance(result, Outcome):
            return result
        udp_reply = result.wire
        if is_truncated(result.wire) and result.wire[:2] == request.wire[:2]:
            if not spec.tcp_fallback:
                truncated = Outcome(WireEvent.TRUNCATED, error="TC set in UDP reply",
                                    transport="udp", bytes_received=len(result.wire))  # fmt: skip
                return _with_checks(truncated, target, spec, request, udp_reply,
                                    udp_reply=udp_reply)  # fmt: skip
            # RFC 7766 §5: a truncated UDP answer is retried over TCP.
            transport = Transport.TCP
        else:
            return _with_checks(read_reply(request, result.wire, "udp"), target, spec,
                                request, udp_reply, udp_reply=udp_reply)  # fmt: skip
    context = contexts.get(target.tls) if transport is Transport.TLS else None
    transfer = spec.kind.is_transfer
    # A transfer is judged from its header and first SOA: max_transfer_bytes bounds
    # what is read beyond them, and never turns a working transfer into `malformed`.
    result = await tx.stream_exchange(
        target.host, target.port, request.wire, spec.timeout,
        transport_name=transport.value, ssl_context=context,
        server_hostname=target.tls.server_name,
        max_bytes=min(spec.max_transfer_bytes, 65535) if transfer else 65535,
        needed=first_record_end if transfer else None,
    )  # fmt: skip
    if isinstance(result, Outcome):
        return result
    if result.length is not None:
        outcome = read_transfer_head(request, result.wire, result.length, transport.value)
    else:
        outcome = read_reply(request, result.wire, transport.value,
                             first_of_transfer=transfer)  # fmt: skip
    outcome = _with_expiry(outcome, result.cert_not_after)
    return _with_checks(outcome, target, spec, request, result.wire, udp_reply=udp_reply)


_SESSION_TRANSPORTS = frozenset({Transport.DOH, Transport.DOQ})


async def _exchange_session(target: Target, spec: ProbeSpec, request: WireRequest) -> Outcome:
    """DoH and DoQ: message ID 0 (RFC 8484 §4.1, RFC 9250 §4.2.1), one shared
    connection per server (exporter/doh.py, exporter/doq.py)."""
    if request.msg_id != 0:
        request = (request.with_id(0) if request.keyring is None
                   else build_request(spec, target.zone, msg_id=0))  # fmt: skip
    result = await tx.session_exchange(
        spec.transport.value, target.host, target.port, request.wire, spec.timeout,
        tls=target.tls, method=spec.doh.method, path=spec.doh.path,
    )  # fmt: skip
    if isinstance(result, Outcome):
        return result
    outcome = read_reply(request, result.wire, spec.transport.value,
                         first_of_transfer=spec.kind.is_transfer)  # fmt: skip
    outcome = _with_expiry(outcome, result.cert_not_after)
    return _with_checks(outcome, target, spec, request, result.wire, udp_reply=None)


def _with_expiry(outcome: Outcome, cert_not_after: float | None) -> Outcome:
    if cert_not_after is None:
        return outcome
    return dataclasses.replace(outcome, cert_not_after=cert_not_after)


async def _run_dso(target: Target, spec: ProbeSpec, contexts: TlsContexts) -> Outcome:
    from exporter import dso_client  # the DSO half lives on its own

    context = contexts.get(target.tls) if spec.transport is Transport.TLS else None
    outcome: Outcome = await dso_client.run_dso_probe(target, spec, context)
    return outcome


async def run_outcome(target: Target, spec: ProbeSpec,
                      contexts: TlsContexts = _DEFAULT_TLS) -> Outcome:  # fmt: skip
    """Run one probe and return what happened on the wire; never raises for server faults."""
    if spec.port is not None and spec.port != target.port:
        target = dataclasses.replace(target, port=spec.port)
    if spec.kind.is_dso:
        return await _run_dso(target, spec, contexts)
    if spec.sends_notify and not spec.allow_notify:
        # RFC 1996: a NOTIFY makes a secondary query its primary. The config and the
        # CLI refuse it without the opt-in; this refuses it however the spec was made.
        return Outcome(WireEvent.NOT_SENT, transport=spec.transport.value,
                       error="NOTIFY (opcode 4) without allow_notify: not sent")  # fmt: skip
    request = request_for(spec, target.zone)
    return await exchange_classic(target, spec, request, contexts)


def _fallback_spec(spec: ProbeSpec, fallback: FallbackSettings) -> ProbeSpec:
    if fallback.kind is ProbeKind.QUERY and spec.kind.is_dso:
        qname, qtype = spec.dso.push_name, spec.dso.push_type
    else:
        qname, qtype = spec.qname, spec.qtype
    return dataclasses.replace(
        spec, kind=fallback.kind, qname=fallback.qname or qname,
        qtype=fallback.qtype or qtype, fallback=None,
    )  # fmt: skip


_FALLBACK_TRIGGERS = frozenset({Cause.NOT_IMPLEMENTED, Cause.DSO_NOT_IMPLEMENTED,
                                Cause.DSO_TYPE_NOT_IMPLEMENTED, Cause.DSO_ECHOED})  # fmt: skip


async def run_probe(target: Target, spec: ProbeSpec,
                    contexts: TlsContexts = _DEFAULT_TLS) -> ProbeResult:  # fmt: skip
    """Run a probe and classify it; runs the configured fallback when the gap calls for it."""
    started_at = time.time()
    start = time.perf_counter()
    outcome = await run_outcome(target, spec, contexts)
    duration = time.perf_counter() - start
    cause = classify(spec.kind, outcome)
    fallback = None
    if spec.fallback is not None and cause in _FALLBACK_TRIGGERS:
        fb_spec = _fallback_spec(spec, spec.fallback)
        fb_outcome = await run_outcome(target, fb_spec, contexts)
        fallback = FallbackResult(fb_spec.kind, classify(fb_spec.kind, fb_outcome),
                                  fb_outcome.rcode)  # fmt: skip
    success = meets_expectation(spec, outcome, cause)
    return ProbeResult(outcome, cause, success, duration, started_at, fallback)
