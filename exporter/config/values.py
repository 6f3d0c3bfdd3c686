"""Text -> value parsers shared by the config loader, the CLI and ``GET /probe``.

Pure functions raising ValueError that says what was expected.
"""

from __future__ import annotations

import ipaddress
import math
import re

_DURATION_RE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+")


_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from ``30s``, ``2m``, ``1m30s``, ``500ms``, ``1h`` or a number of seconds.

    Raises ValueError; the result is finite and may be 0 (callers check ranges).
    """
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION_RE.fullmatch(value.strip()):
        seconds = sum(
            float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART_RE.findall(value)
        )
    else:
        raise ValueError("a duration like 30s, 2m, 500ms or a number of seconds")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a finite, non-negative duration")
    return seconds


_HOST_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _valid_hostname(host: str) -> bool:
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return 0 < len(host) <= 253 and all(_HOST_LABEL_RE.fullmatch(lbl) for lbl in labels)


def parse_server(text: str, default_port: int = 53) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``v4``, ``v6`` or ``hostname`` -> (host, port).

    Raises ValueError saying what was expected.
    """
    text = text.strip()
    port_text: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("[ipv6]:port")
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("an IPv6 address inside [brackets]") from None
    elif text.count(":") > 1:  # bare IPv6 literal, no port
        host = text
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("an IPv6 address (write [v6]:port to give a port)") from None
    else:
        host, sep, port_text_ = text.partition(":")
        port_text = port_text_ if sep else None
        if not _valid_hostname(host):
            raise ValueError("host:port, [ipv6]:port or a hostname")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError("a port 1-65535 after the colon")
    return host, int(port_text)
