"""dnsgap_tls_cert_expiry_timestamp_seconds: the earliest notAfter of the chain a
DoT/DoH/DoQ server presented, kept across probes that could not read one."""

from __future__ import annotations

import time
from pathlib import Path

from exporter import certs
from exporter.causes import Cause
from exporter.config import ProbeSpec, Transport
from exporter.kinds import ProbeKind
from exporter.outcome import Outcome, WireEvent
from exporter.probes import ProbeResult
from tests.test_metrics import key, samples, state_for, target

DOH = ProbeSpec(name="doh", kind=ProbeKind.QUERY, transport=Transport.DOH)
NAME = "dnsgap_tls_cert_expiry_timestamp_seconds"


def _result(event: WireEvent, cause: Cause, not_after: float | None) -> ProbeResult:
    outcome = Outcome(event, 0 if event is WireEvent.REPLY else None, transport="doh",
                      cert_not_after=not_after)  # fmt: skip
    return ProbeResult(outcome, cause, cause is Cause.NONE, 0.004, time.time())


def test_the_series_appears_with_the_first_chain_and_outlives_a_failed_handshake() -> None:
    state = state_for(target("r", DOH))
    assert key(NAME, target="r", probe="doh") not in samples(state)
    state.record("r", "doh", _result(WireEvent.REPLY, Cause.NONE, 1_900_000_000.0))
    assert samples(state)[key(NAME, target="r", probe="doh")] == 1_900_000_000
    # Once the certificate expired the handshake fails and shows no chain: the last
    # known expiry stays, so the expiry alert keeps firing instead of going silent.
    state.record("r", "doh", _result(WireEvent.CERT_INVALID, Cause.TLS_CERTIFICATE_INVALID,
                                     None))  # fmt: skip
    assert samples(state)[key(NAME, target="r", probe="doh")] == 1_900_000_000


def test_the_earliest_expiry_of_the_chain_counts(tmp_path: Path) -> None:
    leaf, _ = certs.make_self_signed(tmp_path, "leaf.test", days=30)
    root, _ = certs.make_self_signed(tmp_path, "root.test", days=3)
    from cryptography import x509

    chain = [x509.load_pem_x509_certificate(p.read_bytes()) for p in (leaf, root)]
    earliest = certs.earliest(certs.x509_expiry(c) for c in chain)
    assert earliest is not None
    assert abs(earliest - (time.time() + 3 * 86400)) < 600
    assert certs.earliest([]) is None
