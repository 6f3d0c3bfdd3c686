"""When the certificates a DoT, DoH or DoQ server presents run out.

``dnsgap_tls_cert_expiry_timestamp_seconds`` is the earliest ``notAfter`` of the
whole chain the server sent, not only of its own certificate: an intermediate
that expires first breaks verification just as surely.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
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


def make_self_signed(directory: Path, name: str = "localhost", ip: str | None = "127.0.0.1",
                     days: float = 90.0) -> tuple[Path, Path]:  # fmt: skip
    """A throw-away certificate and key for ``name`` (and ``ip``) in ``directory``:
    the demo's DoT and DoQ servers present it, its probes trust it as their CA."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    alt: list[x509.GeneralName] = [x509.DNSName(name)]
    if ip:
        alt.append(x509.IPAddress(ipaddress.ip_address(ip)))
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    key_path.chmod(0o600)
    return cert_path, key_path
