"""Debian servers serving the encrypted transports: Unbound (DoT + DoH, built with
nghttp2) and dnsdist (DoT + DoH), each with a throw-away certificate.

Not in :data:`.launch.SPECS`: those are the servers of the answer matrix. These
reuse its machinery (:func:`.launch.launch` with ``spec=``) and write the extra
ports they listen on to ``ports.json`` in their work directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from exporter.certs import make_self_signed

from .launch import HOST, RunningServer, ServerSpec, _dnsdist, _unbound, _write, free_port

#: dnsdist paths that answer like a broken DoH deployment (HTTPStatusAction).
WRONG_TYPE_PATH = "/wrongtype"
UNSUPPORTED_PATH = "/unsupported"


def ports(server: RunningServer) -> dict[str, int]:
    """The encrypted ports of a server started from here: tls, doh."""
    loaded: dict[str, int] = json.loads((server.workdir / "ports.json").read_text())
    return loaded


def certificate(server: RunningServer) -> str:
    """The CA file that verifies the server's certificate (it is self-signed)."""
    return str(server.workdir / "localhost.crt")


def _ports(workdir: Path) -> tuple[int, int]:
    tls, doh = free_port(), free_port()
    _write(workdir / "ports.json", json.dumps({"tls": tls, "doh": doh}))
    return tls, doh


def _unbound_encrypted(workdir: Path, port: int, backend: RunningServer | None) -> list[str]:
    """The matrix's Unbound (launch._unbound) plus a DoT and a DoH listener."""
    argv = _unbound(workdir, port, backend)
    cert, key = make_self_signed(workdir)
    tls, doh = _ports(workdir)
    conf = workdir / "unbound.conf"
    extra = f"""    interface: {HOST}@{tls}
    interface: {HOST}@{doh}
    tls-port: {tls}
    https-port: {doh}
    tls-service-key: "{key}"
    tls-service-pem: "{cert}"
    http-endpoint: "/dns-query"
"""
    conf.write_text(conf.read_text().replace("server:\n", "server:\n" + extra, 1))
    return argv


def _dnsdist_encrypted(workdir: Path, port: int, backend: RunningServer | None) -> list[str]:
    """The matrix's dnsdist (launch._dnsdist) plus DoT, DoH and two broken DoH paths."""
    argv = _dnsdist(workdir, port, backend)
    cert, key = make_self_signed(workdir)
    tls, doh = _ports(workdir)
    paths = f"{{'/dns-query', '{WRONG_TYPE_PATH}', '{UNSUPPORTED_PATH}'}}"
    with (workdir / "dnsdist.conf").open("a") as conf:
        conf.write(f"""addTLSLocal('{HOST}:{tls}', '{cert}', '{key}')
addDOHLocal('{HOST}:{doh}', '{cert}', '{key}', {paths})
-- A web page where DNS was expected, and a media type refused (RFC 8484 §4.2.1).
addAction(HTTPPathRule('{WRONG_TYPE_PATH}'),
          HTTPStatusAction(200, '<html>not DNS</html>', 'text/html'))
addAction(HTTPPathRule('{UNSUPPORTED_PATH}'), HTTPStatusAction(415, 'unsupported', 'text/plain'))
""")
    return argv


UNBOUND_ENCRYPTED = ServerSpec("unbound_encrypted", "unbound", "unbound", _unbound_encrypted)
DNSDIST_ENCRYPTED = ServerSpec("dnsdist_encrypted", "dnsdist", "dnsdist", _dnsdist_encrypted)
