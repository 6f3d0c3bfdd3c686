"""Property tests: hostile bytes and hostile YAML only ever produce typed results."""

from __future__ import annotations

import struct

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import Config, ConfigError, ProbeSpec, TsigKey, parse_config
from exporter.dso import DsoDecodeError, DsoMessage
from exporter.kinds import ProbeKind
from exporter.outcome import Outcome
from exporter.wire import WireRequest, build_request, read_reply

FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

_SPECS = [
    ProbeSpec(name="q", kind=ProbeKind.QUERY, qname="example.com."),
    ProbeSpec(name="axfr", kind=ProbeKind.AXFR, zone="example.com."),
    ProbeSpec(name="ixfr", kind=ProbeKind.IXFR, zone="example.com.", serial=7),
    ProbeSpec(name="update", kind=ProbeKind.UPDATE, zone="example.com."),
    ProbeSpec(name="opcode", kind=ProbeKind.OPCODE, opcode=15),
    ProbeSpec(name="signed", kind=ProbeKind.AXFR, zone="example.com.",
              tsig_key=TsigKey("k.", "hmac-sha256", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0")),
]  # fmt: skip
_REQUESTS = [build_request(spec, "example.com.", msg_id=0x1234) for spec in _SPECS]
_ZONE_WIRE = b"\x07example\x03com\x00"


def _header(request: WireRequest, flags_low: int, counts: tuple[int, int, int, int]) -> bytes:
    flags = 0x8000 | (request.opcode << 11) | (flags_low & 0x87FF)
    return struct.pack("!HHHHHH", request.msg_id, flags, *counts)


#: Bytes that get past the header checks (right ID, QR, opcode) so the fuzzing
#: reaches dnspython's parser and the question/TSIG checks, plus plain noise.
reply_bytes = st.one_of(
    st.binary(max_size=600),
    st.builds(
        lambda index, low, counts, body: (index, _header(_REQUESTS[index], low, counts) + body),
        st.integers(0, len(_REQUESTS) - 1),
        st.integers(0, 0xFFFF),
        st.tuples(*[st.integers(0, 3)] * 4),
        st.one_of(st.binary(max_size=300),
                  st.builds(lambda tail: _ZONE_WIRE + tail, st.binary(max_size=300))),
    ),
)


@FUZZ
@given(data=reply_bytes, transfer=st.booleans())
def test_read_reply_returns_an_outcome_for_any_bytes(
    data: bytes | tuple[int, bytes], transfer: bool
) -> None:
    if isinstance(data, tuple):
        index, wire = data
    else:
        index, wire = 0, data
    for transport in ("udp", "tcp"):
        outcome = read_reply(_REQUESTS[index], wire, transport, first_of_transfer=transfer)
        assert isinstance(outcome, Outcome)
        assert outcome.bytes_received == len(wire)


def _dso_header(flags: int, counts: tuple[int, int, int, int]) -> bytes:
    return struct.pack("!HHHHHH", 0x4321, (flags & 0x87FF) | (6 << 11), *counts)


dso_bytes = st.one_of(
    st.binary(max_size=400),
    st.builds(lambda flags, body: _dso_header(flags, (0, 0, 0, 0)) + body,
              st.integers(0, 0xFFFF), st.binary(max_size=300)),
    # TLVs with plausible types (known ones too) and lengths that may lie.
    st.builds(
        lambda flags, tlvs: _dso_header(flags, (0, 0, 0, 0)) + b"".join(
            struct.pack("!HH", t, n) + v for t, n, v in tlvs),
        st.integers(0, 0xFFFF),
        st.lists(st.tuples(st.sampled_from([0, 1, 2, 3, 0x40, 0x41, 0x42, 0x43, 0xF7FF]),
                           st.integers(0, 80), st.binary(max_size=80)), max_size=5),
    ),
)  # fmt: skip


@FUZZ
@given(dso_bytes)
def test_dso_decoder_raises_only_its_typed_error(wire: bytes) -> None:
    try:
        message = DsoMessage.from_wire(wire)
    except DsoDecodeError:
        return
    assert isinstance(message, DsoMessage)


# -- config ------------------------------------------------------------------------

_KEYS = ["targets", "probes", "defaults", "http", "scheduler", "tsig_keys", "name", "server",
         "zone", "kind", "qname", "qtype", "interval", "timeout", "transport", "use", "edns",
         "probe", "allow_adhoc", "adhoc_cidrs", "expect", "tsig_key", "dso", "fallback",
         "labels", "tls", "survey", "max_transfer_bytes", "<<"]  # fmt: skip
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["query", "axfr", "dso_keepalive", "udp", "tcp", "tls", "1m", "5s",
                     "127.0.0.1:53", "[::1]:53", "@", "SOA", "example.com.", "soa",
                     "hmac-sha256", "0x4000", "10.0.0.0/8", "authoritative"]),
)  # fmt: skip
yaml_trees = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=8)), children,
                        max_size=5),
    ),
    max_leaves=25,
)  # fmt: skip


def _assert_config_or_error(text: str) -> None:
    try:
        config: Config | ConfigError = parse_config(text, "fuzz.yml")
    except ConfigError as exc:
        config = exc
    if isinstance(config, ConfigError):
        # Located: the file always; the key may be "" for the document root.
        assert config.path == "fuzz.yml"
        assert str(config).startswith("fuzz.yml")
        assert isinstance(config.key, str)
    else:
        assert isinstance(config, Config)


@FUZZ
@given(yaml_trees)
def test_config_loader_gives_a_config_or_a_located_error_for_any_yaml_tree(tree: object) -> None:
    _assert_config_or_error(yaml.safe_dump(tree))


@FUZZ
@given(st.text(max_size=300))
def test_config_loader_gives_a_config_or_a_located_error_for_any_text(text: str) -> None:
    _assert_config_or_error(text)


@FUZZ
@given(st.lists(st.sampled_from([
    "targets:\n", "  - name: a\n", "    server: 127.0.0.1\n", "    probes: [soa]\n",
    "probes:\n", "  soa: {kind: query, qtype: SOA}\n", "  x: &a {<<: *a}\n", "- *b\n",
    "&b [*b]\n", "defaults: {interval: 0s}\n", "http: {probe: {adhoc_cidrs: [nonsense]}}\n",
    "\t", ":", "{", "[", "'", '"', "!!python/object:os.system\n", "? a\n", "%YAML 1.1\n",
    "---\n", "...\n", "a: !!binary AAA=\n", "b: 1e999\n", "c: .nan\n", "\x00", "\ufeff",
]), max_size=12))  # fmt: skip
def test_config_loader_survives_yaml_syntax_fragments(parts: list[str]) -> None:
    _assert_config_or_error("".join(parts))
