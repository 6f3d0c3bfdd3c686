"""An independent decoder checks our DSO bytes: Wireshark's DNS dissector.

We capture loopback traffic to a sink listener of ours with ``tshark``, send
Keepalive, Retry Delay, Encryption Padding and SUBSCRIBE TLVs over TCP, and
assert that tshark decodes the TLV types and values we meant.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.dso import (
    DsoMessage,
    DsoType,
    Keepalive,
    Padding,
    RetryDelay,
    Subscribe,
    encode_tlv,
    frame,
)

TSHARK = shutil.which("tshark") or (
    "/usr/bin/tshark" if os.path.exists("/usr/bin/tshark") else None
)

pytestmark = [
    pytest.mark.skipif(TSHARK is None, reason="tshark is not installed"),
    pytest.mark.slow,
]

FIELDS = [
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


def _start_capture(port: int, pcap: Path) -> subprocess.Popen[bytes]:
    assert TSHARK is not None
    proc = subprocess.Popen(
        [TSHARK, "-i", "lo", "-f", f"tcp port {port}", "-w", str(pcap)],
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
    pytest.skip(f"tshark cannot capture on lo here: {seen.decode(errors='replace')[-300:]}")


def _stop_capture(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _decode(pcap: Path, port: int) -> list[dict[str, list[str]]]:
    assert TSHARK is not None
    cmd = [
        TSHARK,
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
    pcap = tmp_path_factory.mktemp("tshark") / "dso.pcap"
    sink = Sink()
    capture = _start_capture(sink.port, pcap)
    try:
        with socket.create_connection(("127.0.0.1", sink.port)) as client:
            for message in MESSAGES:
                client.sendall(frame(message.to_wire()))
                time.sleep(0.05)  # separate segments, easier to read in a capture
        time.sleep(0.5)
    finally:
        _stop_capture(capture)
        sink.close()
    return _decode(pcap, sink.port)


SUBSCRIBE = Subscribe.of("www.demo.example.", 1)
MESSAGES = [
    DsoMessage(0x1111, tlvs=(Keepalive(15_000, 3_600_000), Padding.zeros(7))),
    DsoMessage(0, rcode=2, tlvs=(RetryDelay(30_000),)),
    DsoMessage(0x2222, tlvs=(SUBSCRIBE,)),
]


def test_tshark_sees_three_dso_messages_with_our_ids(
    decoded: list[dict[str, list[str]]],
) -> None:
    ids = [int(v, 0) for v in _all(decoded, "dns.id")]
    assert ids == [0x1111, 0, 0x2222]
    assert set(_all(decoded, "dns.flags.opcode")) == {"6"}
    assert set(_all(decoded, "dns.count.queries")) == {"0"}


def test_tshark_decodes_tlv_types_in_order(decoded: list[dict[str, list[str]]]) -> None:
    types = [int(v, 0) for v in _all(decoded, "dns.dso.tlv.type")]
    assert types == [
        DsoType.KEEPALIVE,
        DsoType.ENCRYPTION_PADDING,
        DsoType.RETRY_DELAY,
        DsoType.SUBSCRIBE,
    ]
    lengths = [int(v, 0) for v in _all(decoded, "dns.dso.tlv.length")]
    assert lengths == [8, 7, 4, len(SUBSCRIBE.value_wire())]


def test_tshark_decodes_keepalive_timers(decoded: list[dict[str, list[str]]]) -> None:
    assert _all(decoded, "dns.dso.tlv.keepalive.inactivity") == ["15000"]
    assert _all(decoded, "dns.dso.tlv.keepalive.interval") == ["3600000"]


def test_tshark_decodes_retry_delay(decoded: list[dict[str, list[str]]]) -> None:
    assert _all(decoded, "dns.dso.tlv.retrydelay.retrydelay") == ["30000"]


def test_tshark_decodes_padding(decoded: list[dict[str, list[str]]]) -> None:
    assert [_hex(v) for v in _all(decoded, "dns.dso.tlv.encpad.padding")] == ["00" * 7]


def test_tshark_sees_subscribe_value_as_name_type_class(
    decoded: list[dict[str, list[str]]],
) -> None:
    # Wireshark 4.0 has no SUBSCRIBE decoder; it shows the value as data.
    data = [_hex(v) for v in _all(decoded, "dns.dso.tlv.data")]
    assert encode_tlv(SUBSCRIBE)[4:].hex() in data
