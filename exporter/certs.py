"""When the certificates a DoT, DoH or DoQ server presents run out.

``dnsgap_tls_cert_expiry_timestamp_seconds`` is the earliest ``notAfter`` of the
whole chain the server sent, not only of its own certificate: an intermediate
that expires first breaks verification just as surely.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from datetime import datetime
from typing import Any


def earliest(not_afters: Iterable[float]) -> float | None:
    """The earliest of some expiry times (Unix seconds), None for none."""
    return min(not_afters, default=None)


def ssl_chain_expiry(ssl_object: Any) -> float | None:
    """Earliest ``notAfter`` of the chain a TLS peer presented, verified or not.

    Python 3.13 has ``SSLObject.get_unverified_chain()``; 3.11 and 3.12 carry the
    same method on the private ``_sslobj`` (an ``_ssl.Certificate`` list whose
    ``get_info()`` works even with verification off, unlike ``getpeercert()``).
    """
    if ssl_object is None:
        return None
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is None:  # pragma: no cover - every CPython >= 3.10 has one of the two
        return None
    try:
        chain = getter() or []
    except (ssl.SSLError, ValueError):
        return None
    times: list[float] = []
    for cert in chain:
        not_after = _not_after(cert)
        if not_after is not None:
            times.append(not_after)
    return earliest(times)


def _not_after(cert: Any) -> float | None:
    if isinstance(cert, bytes):  # 3.13's public method returns DER
        return x509_der_expiry(cert)
    try:
        text = cert.get_info().get("notAfter")
        return float(ssl.cert_time_to_seconds(text)) if text else None
    except (AttributeError, ValueError, TypeError):
        return None


def x509_der_expiry(der: bytes) -> float | None:
    from cryptography import x509

    try:
        return x509_expiry(x509.load_der_x509_certificate(der))
    except ValueError:
        return None


def x509_expiry(cert: Any) -> float:
    """``notAfter`` of a ``cryptography`` certificate (what aioquic hands us)."""
    moment: datetime = cert.not_valid_after_utc
    return moment.timestamp()
