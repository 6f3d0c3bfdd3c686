"""Scalar parsers: ``(ctx, node) -> value``, raising ``_WantError("what was expected")``.

Names starting with ``_`` are private to the ``exporter.config`` package.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import enum
import ipaddress
import re
from collections.abc import Callable
from typing import TypeVar

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import yaml

from exporter.causes import RCODE_NAMES, Cause
from exporter.config.located import _Ctx, _WantError
from exporter.config.schema import Transport
from exporter.config.values import parse_duration, parse_server
from exporter.kinds import ProbeKind

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


_TSIG_ALGORITHMS = {
    str(a).rstrip(".").lower(): a
    for a in (
        dns.tsig.HMAC_MD5,
        dns.tsig.HMAC_SHA1,
        dns.tsig.HMAC_SHA224,
        dns.tsig.HMAC_SHA256,
        dns.tsig.HMAC_SHA256_128,
        dns.tsig.HMAC_SHA384,
        dns.tsig.HMAC_SHA384_192,
        dns.tsig.HMAC_SHA512,
        dns.tsig.HMAC_SHA512_256,
    )
}


_EXPECT_NAMES = frozenset(c.value for c in Cause) | frozenset(RCODE_NAMES.values())


_RCODE_N_RE = re.compile(r"RCODE\d{1,4}")


def _str(ctx: _Ctx, node: yaml.Node) -> str:
    value = ctx.scalar(node)
    if not isinstance(value, str) or not value.strip():
        raise _WantError("a non-empty string (quote numbers and yes/no)")
    return value


def _opt_str(ctx: _Ctx, node: yaml.Node) -> str | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return None
    return _str(ctx, node)


def _bool(ctx: _Ctx, node: yaml.Node) -> bool:
    value = ctx.scalar(node)
    if not isinstance(value, bool):
        raise _WantError("true or false")
    return value


def _int_in(lo: int, hi: int, what: str = "an integer") -> Callable[[_Ctx, yaml.Node], int]:
    def parse(ctx: _Ctx, node: yaml.Node) -> int:
        value = ctx.scalar(node)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _WantError(f"{what} {lo}-{hi}")
        return value

    return parse


def _positive_duration(ctx: _Ctx, node: yaml.Node) -> float:
    try:
        seconds = parse_duration(ctx.scalar(node))
    except ValueError as exc:
        raise _WantError(str(exc)) from None
    if seconds <= 0:
        raise _WantError("a duration above zero")
    return seconds


def _duration(ctx: _Ctx, node: yaml.Node) -> float:
    try:
        return parse_duration(ctx.scalar(node))
    except ValueError as exc:
        raise _WantError(str(exc)) from None


def _fraction(ctx: _Ctx, node: yaml.Node) -> float:
    value = ctx.scalar(node)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _WantError("a number from 0 to 1")
    return float(value)


def _enum_of(enum_cls: type[_E]) -> Callable[[_Ctx, yaml.Node], _E]:
    def parse(ctx: _Ctx, node: yaml.Node) -> _E:
        value = ctx.scalar(node)
        names = ", ".join(str(m.value) for m in enum_cls)
        if not isinstance(value, str):
            raise _WantError(f"one of: {names}")
        try:
            return enum_cls(value.strip().lower())
        except ValueError:
            close = difflib.get_close_matches(value, [str(m.value) for m in enum_cls], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _WantError(f"one of: {names}{hint}") from None

    return parse


_E = TypeVar("_E", bound=enum.Enum)


_kind = _enum_of(ProbeKind)


_transport = _enum_of(Transport)


def _http_method(ctx: _Ctx, node: yaml.Node) -> str:
    """RFC 8484 §4.1: DoH servers must take both GET and POST."""
    value = ctx.scalar(node)
    if not isinstance(value, str) or value.strip().upper() not in ("GET", "POST"):
        raise _WantError("GET or POST")
    return value.strip().upper()


def _uri_path(ctx: _Ctx, node: yaml.Node) -> str:
    value = _str(ctx, node).strip()
    if not value.startswith("/") or any(c in value for c in " \t\r\n#"):
        raise _WantError("a URI path starting with / (like /dns-query)")
    return value


def _dns_name(ctx: _Ctx, node: yaml.Node) -> str:
    """An absolute domain name (trailing dot added), or ``@`` for the target's zone."""
    text = _str(ctx, node).strip()
    if text == "@":
        return text
    try:
        if text.endswith(".@"):  # relative to the target's zone; case kept (0x20 probes)
            return dns.name.from_text(text[:-2], origin=None).to_text() + ".@"
        return dns.name.from_text(text).to_text()
    except (dns.exception.DNSException, UnicodeError, ValueError):
        raise _WantError("a domain name") from None


def _zone_name(ctx: _Ctx, node: yaml.Node) -> str:
    name = _dns_name(ctx, node)
    if name == "@":
        raise _WantError("a domain name (`@` is only for probe names)")
    return name


def _mnemonic(from_text: Callable[[str], int], what: str) -> Callable[[_Ctx, yaml.Node], int]:
    """A 16-bit DNS number given as a mnemonic (``SOA``, ``TYPE65534``) or a number."""

    def parse(ctx: _Ctx, node: yaml.Node) -> int:
        value = ctx.scalar(node)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
            return value
        if isinstance(value, str):
            try:
                return int(from_text(value.strip()))
            except (dns.exception.DNSException, ValueError):
                pass
        raise _WantError(f"{what} or a number 0-65535")

    return parse


_rdtype = _mnemonic(dns.rdatatype.from_text, "a record type like SOA, AAAA, TYPE65534")


_rdclass = _mnemonic(dns.rdataclass.from_text, "a class like IN, CH, CLASS3")


def _hex(ctx: _Ctx, node: yaml.Node) -> bytes:
    value = ctx.scalar(node)
    if value is None:
        return b""
    if isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise _WantError('hex digits like "00ff" (quote them)')


def _expect(ctx: _Ctx, node: yaml.Node) -> frozenset[str]:
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    out: set[str] = set()
    for item in items:
        value = ctx.scalar(item)
        if not isinstance(value, str):
            raise _WantError("rcode names (NOERROR) or cause names (none, not_implemented)")
        text = value.strip()
        name = text.upper() if text.upper() in RCODE_NAMES.values() else text.lower()
        if name not in _EXPECT_NAMES and not _RCODE_N_RE.fullmatch(name.upper()):
            # Upper case looks like an rcode mnemonic, lower case like a cause.
            family = RCODE_NAMES.values() if text.isupper() else [c.value for c in Cause]
            close = difflib.get_close_matches(text, sorted(family), n=1)
            hint = f"; did you mean {close[0]!r} for {text!r}?" if close else f", not {text!r}"
            raise _WantError(f"rcode names (NOERROR) or cause names (none, not_implemented){hint}")
        out.add(name.upper() if _RCODE_N_RE.fullmatch(name.upper()) else name)
    if not out:
        raise _WantError("at least one rcode or cause name")
    return frozenset(out)


def _probe_name(ctx: _Ctx, node: yaml.Node) -> str:
    name = _str(ctx, node)
    if not _NAME_RE.fullmatch(name):
        raise _WantError("a name of letters, digits, '_', '.', '-'")
    return name


def _listen(ctx: _Ctx, node: yaml.Node) -> str:
    text = _str(ctx, node).strip()
    host_part, _, port = text.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _WantError("host:port with a port 1-65535 (host may be empty for all addresses)")
    if host_part:
        try:
            parse_server(text)
        except ValueError:
            raise _WantError("host:port or [ipv6]:port") from None
    return text


def _cidr(ctx: _Ctx, node: yaml.Node) -> str:
    text = _str(ctx, node).strip()
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError:
        raise _WantError("a network like 192.0.2.0/24 or 2001:db8::/32 (no host bits)") from None


def _label_value(ctx: _Ctx, node: yaml.Node) -> str:
    value = ctx.scalar(node)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _WantError("a string label value (quote yes/no/true/false)")
    return str(value)


def _tsig_algorithm(ctx: _Ctx, node: yaml.Node) -> str:
    text = _str(ctx, node).strip().lower().rstrip(".")
    if text not in _TSIG_ALGORITHMS:
        raise _WantError(f"one of: {', '.join(sorted(_TSIG_ALGORITHMS))}")
    return text


def _base64(ctx: _Ctx, node: yaml.Node) -> str:
    text = _str(ctx, node).strip()
    try:
        if base64.b64decode(text, validate=True):
            return text
    except (binascii.Error, ValueError):
        pass
    raise _WantError("a base64 secret")
