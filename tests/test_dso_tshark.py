"""An independent decoder checks our DSO bytes: Wireshark's DNS dissector.

We capture loopback traffic to a sink listener of ours with ``tshark``, send
Keepalive, Retry Delay, Encryption Padding and SUBSCRIBE TLVs over TCP, and check
both our encoder and tshark's decode against bytes written out by hand from RFC
8490 and RFC 8765 (never against our own encoder's output). A missing tshark, or
one that cannot capture here, fails: CI installs it (scripts/install-system-deps.sh).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.dso import DsoMessage, Keepalive, Padding, RetryDelay, Subscribe, frame
from tests.support import require_binary

pytestmark = pytest.mark.slow

#: The three messages, as the RFCs lay them out (12-byte header: ID, flags, four
#: zero counts; then TLVs of type, length, value; all big-endian).
KEEPALIVE_HEX = (
    # RFC 8490 §5.4: DSO request header: ID 0x1111, QR=0, opcode 6 (0x3000), counts 0
    "1111" "3000" "0000" "0000" "0000" "0000"
    # §7.1: Keepalive TLV, type 1, length 8: inactivity 15000 ms, interval 3600000 ms
    "0001" "0008" "00003a98" "0036ee80"
    # §7.3: Encryption Padding TLV, type 3, length 7, seven zero bytes
    "0003" "0007" "00000000000000"
)
RETRY_DELAY_HEX = (
    # RFC 8490 §5.4 and §7.2.1: unidirectional (ID 0), opcode 6, RCODE 2 (SERVFAIL)
    "0000" "3002" "0000" "0000" "0000" "0000"
    # §7.2: Retry Delay TLV, type 2, length 4: 30000 ms
    "0002" "0004" "00007530"
)
SUBSCRIBE_HEX = (
    # RFC 8490 §5.4: DSO request header, ID 0x2222
    "2222" "3000" "0000" "0000" "0000" "0000"
    # RFC 8765 §6.2.1: SUBSCRIBE TLV, type 0x0040, length 22: the name uncompressed
    # (3 "www" 4 "demo" 7 "example" 0), TYPE A (1), CLASS IN (1)
    "0040" "0016" "03777777" "0464656d6f" "076578616d706c65" "00" "0001" "0001"
)
EXPECTED_HEX = [KEEPALIVE_HEX, RETRY_DELAY_HEX, SUBSCRIBE_HEX]

#: What we send: the same three messages, from our encoder.
MESSAGES = [
    DsoMessage(0x1111, tlvs=(Keepalive(15_000, 3_600_000), Padding.zeros(7))),
    DsoMessage(0, rcode=2, tlvs=(RetryDelay(30_000),)),
    DsoMessage(0x2222, tlvs=(Subscribe.of("www.demo.example.", 1),)),
]

FIELDS = [
    "tcp.payload",
    "dns.id",
    "dns.flags.opcode",
    "dns.flags.response",
    "dns.count.queries",
    "dns.count.answers",
    "dns.dso.tlv.type",
    "dns.dso.tlv.length",
    "dns.dso.tlv.keepalive.inactivity",
    "dns.dso.tlv.keepalive.interval",
    "dns.dso.tlv.retrydelay.retrydelay",
    "dns.dso.tlv.encpad.padding",
    "dns.dso.tlv.data",
]


class Sink:
    """A TCP listener on a free loopback port that reads and discards."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while conn.recv(65536):
                    pass

    def close(self) -> None:
        self.sock.close()


def _start_capture(tshark: str, port: int, pcap: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [tshark, "-i", "lo", "-f", f"tcp port {port}", "-w", str(pcap)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 15
    seen = b""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if b"Capturing on" in line:
            # tshark says so a moment before the filter really sees packets.
            time.sleep(1.0)
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    pytest.fail(f"tshark cannot capture on lo here: {seen.decode(errors='replace')[-300:]}",
                pytrace=False)  # fmt: skip


def _stop_capture(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _decode(tshark: str, pcap: Path, port: int) -> list[dict[str, list[str]]]:
    cmd = [
        tshark,
        "-r",
        str(pcap),
        "-d",
        f"tcp.port=={port},dns",
        "-Y",
        "dns.flags.opcode == 6",
        "-T",
        "json",
    ]
    for name in FIELDS:
        cmd += ["-e", name]
    out = subprocess.run(cmd, check=True, capture_output=True, timeout=60).stdout
    packets: list[dict[str, Any]] = json.loads(out or b"[]")
    return [p["_source"]["layers"] for p in packets]


def _all(layers: list[dict[str, list[str]]], name: str) -> list[str]:
    return [value for layer in layers for value in layer.get(name, [])]


def _hex(value: str) -> str:
    return value.replace(":", "").lower()


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, list[str]]]:
    tshark = require_binary("tshark", "/usr/bin/tshark")
    pcap = tmp_path_factory.mktemp("tshark") / "dso.pcap"
    sink = Sink()
    capture = _start_capture(tshark, sink.port, pcap)
    try:
        with socket.create_connection(("127.0.0.1", sink.port)) as client:
            for message in MESSAGES:
                client.sendall(frame(message.to_wire()))
                time.sleep(0.05)  # separate segments, easier to read in a capture
        time.sleep(0.5)
    finally:
        _stop_capture(capture)
        sink.close()
    return _decode(tshark, pcap, sink.port)


def test_our_encoder_writes_the_bytes_the_rfcs_lay_out() -> None:
    assert [message.to_wire().hex() for message in MESSAGES] == EXPECTED_HEX


def test_tshark_captured_the_rfc_bytes_each_with_its_length_prefix(
    decoded: list[dict[str, list[str]]],
) -> None:
    expected = [f"{len(h) // 2:04x}{h}" for h in EXPECTED_HEX]  # RFC 1035 §4.2.2 framing
    assert [_hex(v) for v in _all(decoded, "tcp.payload")] == expected


def test_tshark_sees_three_dso_messages_with_the_rfc_ids(
    decoded: list[dict[str, list[str]]],
) -> None:
    assert [int(v, 0) for v in _all(decoded, "dns.id")] == [0x1111, 0x0000, 0x2222]
    assert set(_all(decoded, "dns.flags.opcode")) == {"6"}
    assert set(_all(decoded, "dns.count.queries")) == {"0"}


def test_tshark_decodes_tlv_types_and_lengths_as_written(
    decoded: list[dict[str, list[str]]],
) -> None:
    assert [int(v, 0) for v in _all(decoded, "dns.dso.tlv.type")] == [0x0001, 0x0003, 0x0002,
                                                                      0x0040]  # fmt: skip
    assert [int(v, 0) for v in _all(decoded, "dns.dso.tlv.length")] == [8, 7, 4, 22]


def test_tshark_decodes_keepalive_timers(decoded: list[dict[str, list[str]]]) -> None:
    # 0x00003a98 and 0x0036ee80 (RFC 8490 §7.1: milliseconds)
    assert _all(decoded, "dns.dso.tlv.keepalive.inactivity") == ["15000"]
    assert _all(decoded, "dns.dso.tlv.keepalive.interval") == ["3600000"]


def test_tshark_decodes_retry_delay(decoded: list[dict[str, list[str]]]) -> None:
    assert _all(decoded, "dns.dso.tlv.retrydelay.retrydelay") == ["30000"]  # 0x00007530


def test_tshark_decodes_padding(decoded: list[dict[str, list[str]]]) -> None:
    assert [_hex(v) for v in _all(decoded, "dns.dso.tlv.encpad.padding")] == ["00" * 7]


def test_tshark_shows_the_subscribe_value_as_written(
    decoded: list[dict[str, list[str]]],
) -> None:
    # Wireshark 4.0 has no SUBSCRIBE decoder; it shows the value as data.
    value = "03777777" "0464656d6f" "076578616d706c65" "00" "0001" "0001"  # RFC 8765 §6.2.1
    assert [_hex(v) for v in _all(decoded, "dns.dso.tlv.data")] == [value]
