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

from .launch import HOST, SOA_RDATA, RunningServer, ServerSpec, _write, free_port

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


def _unbound_encrypted(workdir: Path, port: int, _backend: RunningServer | None) -> list[str]:
    cert, key = make_self_signed(workdir)
    tls, doh = _ports(workdir)
    conf = _write(
        workdir / "unbound.conf",
        f"""server:
    interface: {HOST}@{port}
    interface: {HOST}@{tls}
    interface: {HOST}@{doh}
    port: {port}
    tls-port: {tls}
    https-port: {doh}
    tls-service-key: "{key}"
    tls-service-pem: "{cert}"
    http-endpoint: "/dns-query"
    do-ip6: no
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    local-zone: "gap.test." static
    local-data: "gap.test. 300 IN SOA {SOA_RDATA}"
    local-data: "gap.test. 300 IN NS ns1.gap.test."
    local-data: "ns1.gap.test. 300 IN A {HOST}"
    local-data: "www.gap.test. 300 IN A 192.0.2.1"
remote-control:
    control-enable: no
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@9
""",
    )
    return ["unbound", "-d", "-c", str(conf)]


def _dnsdist_encrypted(workdir: Path, port: int, backend: RunningServer | None) -> list[str]:
    if backend is None:
        raise ValueError("dnsdist needs a backend")
    cert, key = make_self_signed(workdir)
    tls, doh = _ports(workdir)
    conf = _write(
        workdir / "dnsdist.conf",
        f"""setLocal('{HOST}:{port}')
setACL({{'127.0.0.0/8'}})
setSecurityPollSuffix('')
newServer({{address='{backend.host}:{backend.port}', name='{backend.name}'}})
addTLSLocal('{HOST}:{tls}', '{cert}', '{key}')
addDOHLocal('{HOST}:{doh}', '{cert}', '{key}', {{'/dns-query', '{WRONG_TYPE_PATH}', '{UNSUPPORTED_PATH}'}})
-- A web page where DNS was expected, and a media type refused (RFC 8484 §4.2.1).
addAction(HTTPPathRule('{WRONG_TYPE_PATH}'), HTTPStatusAction(200, '<html>not DNS</html>', 'text/html'))
addAction(HTTPPathRule('{UNSUPPORTED_PATH}'), HTTPStatusAction(415, 'unsupported', 'text/plain'))
""",  # noqa: E501
    )
    return ["dnsdist", "--supervised", "--disable-syslog", "-C", str(conf)]


UNBOUND_ENCRYPTED = ServerSpec("unbound_encrypted", "unbound", "unbound", _unbound_encrypted)
DNSDIST_ENCRYPTED = ServerSpec("dnsdist_encrypted", "dnsdist", "dnsdist", _dnsdist_encrypted)
