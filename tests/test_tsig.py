"""TSIG-signed transfer and update probes against a real BIND (named -g on a free
loopback port) that allows AXFR and UPDATE only with the key: what each mistake
really looks like on the wire, and the cause dnsgap gives it."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from exporter.causes import Cause
from exporter.config import ProbeSpec, Target, Transport, TsigKey
from exporter.kinds import ProbeKind
from exporter.probes import ProbeResult, run_probe
from tests.realservers.launch import HOST, ZONE, ZONE_TEXT, bind_options, free_port, stop
from tests.support import require_binary

KEY_NAME = "dnsgap-xfr."
SECRET = base64.b64encode(b"dnsgap-tsig-test-secret-32-bytes").decode()
RIGHT = TsigKey(KEY_NAME, "hmac-sha256", SECRET)
WRONG_SECRET = TsigKey(KEY_NAME, "hmac-sha256", base64.b64encode(b"x" * 32).decode())
UNKNOWN_NAME = TsigKey("nobody-knows-me.", "hmac-sha256", SECRET)
WRONG_ALGORITHM = TsigKey(KEY_NAME, "hmac-sha512", SECRET)

pytestmark = pytest.mark.realserver


def _named_conf(workdir: Path, port: int) -> Path:
    zone = workdir / "gap.test.zone"
    zone.write_text(ZONE_TEXT)
    conf = workdir / "named.conf"
    conf.write_text(f"""key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{SECRET}"; }};
""" + bind_options(workdir, port) + f"""zone "{ZONE.rstrip('.')}" {{
    type primary;
    file "{zone}";
    allow-transfer {{ key "{KEY_NAME}"; }};
    allow-update {{ key "{KEY_NAME}"; }};
}};
""")
    return conf


def _answers(port: int) -> bool:
    query = dns.message.make_query(ZONE, "SOA")
    try:
        reply = dns.query.tcp(query, HOST, port=port, timeout=0.5)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR


@pytest.fixture(scope="module")
def bind_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    named = require_binary("named", "/usr/sbin/named")
    workdir = tmp_path_factory.mktemp("bind-tsig")
    workdir.chmod(0o755)
    log = workdir / "named.log"
    for _ in range(5):
        port = free_port()
        conf = _named_conf(workdir, port)
        with log.open("ab") as sink:
            process = subprocess.Popen([named, "-g", "-n", "1", "-c", str(conf)], cwd=workdir,
                                       stdin=subprocess.DEVNULL, stdout=sink,
                                       stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None and not _answers(port):
            time.sleep(0.1)
        if process.poll() is None and _answers(port):
            break
        stop(process)
    else:
        pytest.fail("named did not start:\n" + log.read_text()[-2000:])
    try:
        yield port
    finally:
        stop(process)


def probe(port: int, kind: ProbeKind, key: TsigKey | None,
          transport: Transport = Transport.TCP) -> ProbeResult:  # fmt: skip
    spec = ProbeSpec(name=kind.value, kind=kind, transport=transport, timeout=3.0, zone=ZONE,
                     tsig_key=key)  # fmt: skip
    target = Target(name="bind", host=HOST, port=port, probes=(spec,), zone=ZONE)
    return asyncio.run(run_probe(target, spec))


TRANSFER_AND_UPDATE = [(ProbeKind.AXFR, Transport.TCP), (ProbeKind.IXFR, Transport.TCP),
                       (ProbeKind.UPDATE, Transport.UDP), (ProbeKind.UPDATE, Transport.TCP)]
IDS = [f"{kind.value}-{transport.value}" for kind, transport in TRANSFER_AND_UPDATE]


@pytest.mark.parametrize(("kind", "transport"), TRANSFER_AND_UPDATE, ids=IDS)
def test_signed_with_the_right_key_bind_allows_it(
    bind_port: int, kind: ProbeKind, transport: Transport
) -> None:
    result = probe(bind_port, kind, RIGHT, transport)
    assert result.cause is Cause.NONE, result.as_json()
    assert result.outcome.tsig_error is None
    if kind is ProbeKind.UPDATE:
        # The prerequisite on a random name cannot hold: nothing changed.
        assert result.rcode_label == "NXRRSET"


@pytest.mark.parametrize(("kind", "transport"), TRANSFER_AND_UPDATE, ids=IDS)
def test_unsigned_bind_refuses(bind_port: int, kind: ProbeKind, transport: Transport) -> None:
    result = probe(bind_port, kind, None, transport)
    assert result.cause is Cause.REFUSED, result.as_json()
    assert result.rcode_label == "REFUSED"


@pytest.mark.parametrize(("key", "cause_and_tsig_error"), [
    # RFC 8945 §5.2.2: a MAC that does not verify gets NOTAUTH with TSIG error BADSIG.
    pytest.param(WRONG_SECRET, (Cause.BAD_SIGNATURE, 16), id="wrong-secret-is-badsig"),
    # RFC 8945 §5.2.1: an unknown key name gets NOTAUTH with TSIG error BADKEY.
    pytest.param(UNKNOWN_NAME, (Cause.BAD_KEY, 17), id="unknown-key-name-is-badkey"),
])  # fmt: skip
@pytest.mark.parametrize(("kind", "transport"), TRANSFER_AND_UPDATE, ids=IDS)
def test_a_key_bind_cannot_verify_gets_notauth_with_the_tsig_error(
    bind_port: int, kind: ProbeKind, transport: Transport, key: TsigKey,
    cause_and_tsig_error: tuple[Cause, int],
) -> None:
    result = probe(bind_port, kind, key, transport)
    assert (result.cause, result.outcome.tsig_error) == cause_and_tsig_error, result.as_json()
    assert result.rcode_label == "NOTAUTH"


def test_right_name_wrong_algorithm_is_a_bad_key(bind_port: int) -> None:
    # BIND looks keys up by name and algorithm: another algorithm is another key.
    result = probe(bind_port, ProbeKind.AXFR, WRONG_ALGORITHM)
    assert result.cause is Cause.BAD_KEY, result.as_json()


def test_tsig_failures_do_not_show_the_secret_in_the_result(bind_port: int) -> None:
    for key in (WRONG_SECRET, UNKNOWN_NAME):
        result = probe(bind_port, ProbeKind.AXFR, key)
        text = repr(result.as_json())
        assert key.secret not in text
        assert SECRET not in text
