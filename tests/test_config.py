"""The config loader: what loads, and how a bad config is reported (file:line: key)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import (
    Config,
    ConfigError,
    ConfigErrors,
    ProbeSpec,
    Transport,
    load_config,
    parse_config,
    parse_duration,
    parse_server,
    survey_probes,
)
from exporter.kinds import ProbeKind

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

AUTHORITATIVE_SURVEY = (
    "soa", "edns1", "edns_unknown_option", "edns_unknown_flag", "unknown_type",
    "aaaa", "qname_case", "upward_referral",
    "opcode3", "opcode7", "opcode8", "opcode9", "opcode10", "opcode11", "opcode12",
    "opcode13", "opcode14", "opcode15", "ixfr", "axfr", "update",
    "dso_keepalive", "dso_tlv", "dso_push",
)  # fmt: skip


def write(tmp_path: Path, text: str, name: str = "dnsgap.yml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


@pytest.fixture
def load_error(tmp_path: Path) -> Callable[[str], ConfigError]:
    """Write a config file, load it, return the error it must raise."""

    def load(text: str) -> ConfigError:
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, text))
        return info.value

    return load


#: The line :func:`probe_error` writes its one probe on.
PROBE_LINE = 5


@pytest.fixture
def probe_error(
    load_error: Callable[[str], ConfigError],
) -> Callable[[str], ConfigError]:
    """The error a config of one target with one probe (a YAML flow mapping) raises."""

    def load(probe_yaml: str) -> ConfigError:
        return load_error(f"""
            targets:
              - name: a
                server: 192.0.2.1
                probes:
                  - {probe_yaml}
        """)

    return load


def parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text).lstrip("\n"), "test.yml")


def probe(config: Config, target: int, name: str) -> ProbeSpec:
    return next(p for p in config.targets[target].probes if p.name == name)


# -- the shipped examples --------------------------------------------------------


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yml")), ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    config = load_config(str(path))
    assert config.targets
    assert config.source == str(path)


def test_example_config_shows_every_probe_kind() -> None:
    config = load_config(str(CONFIG_DIR / "example.yml"))
    kinds = {p.kind for t in config.targets for p in t.probes}
    assert kinds == set(ProbeKind)


# -- what a good config turns into -----------------------------------------------


def test_defaults_layer_under_templates_and_overrides_on_top() -> None:
    config = parse("""
        defaults: {interval: 2m, timeout: 3s}
        probes:
          soa: {kind: query, qname: "@", timeout: 4s}
        targets:
          - name: a
            server: 192.0.2.1
            zone: example.org
            probes: [soa, {use: soa, name: soa_tcp, transport: tcp, interval: 30s}]
    """)
    soa, soa_tcp = config.targets[0].probes
    assert (soa.interval, soa.timeout, soa.qname) == (120.0, 4.0, "example.org.")
    assert (soa_tcp.interval, soa_tcp.timeout, soa_tcp.transport) == (30.0, 4.0, Transport.TCP)
    assert config.probes["soa"].qname == "."  # ad-hoc /probe targets have the root zone


def test_server_forms_and_default_ports() -> None:
    assert parse_server("192.0.2.1") == ("192.0.2.1", 53)
    assert parse_server("192.0.2.1:5353") == ("192.0.2.1", 5353)
    assert parse_server("[2001:db8::1]:853") == ("2001:db8::1", 853)
    assert parse_server("2001:db8::1") == ("2001:db8::1", 53)
    assert parse_server("ns1.example.com", 853) == ("ns1.example.com", 853)
    config = parse("""
        targets:
          - {name: dot, server: "[::1]", probes: [{name: q, kind: query, transport: tls}]}
    """)
    assert config.targets[0].port == 853


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("2m", 120.0), ("500ms", 0.5), ("1m30s", 90.0), (15, 15.0), (0.25, 0.25)],
)
def test_durations_take_units_or_seconds(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_expect_defaults_follow_what_a_healthy_server_answers() -> None:
    config = parse("""
        targets:
          - name: a
            server: 192.0.2.1
            probes:
              - {name: q, kind: query}
              - {name: v1, kind: query, edns: {version: 1}}
              - {name: op, kind: opcode, opcode: 9}
              - {name: upd, kind: update}
              - {name: ka, kind: dso_keepalive}
              - {name: tlv, kind: dso_tlv}
              - {name: mine, kind: query, expect: [noerror, Refused]}
    """)
    expect = {p.name: p.expect for p in config.targets[0].probes}
    assert expect == {
        "q": {"none"}, "v1": {"bad_version"}, "op": {"not_implemented"}, "upd": {"none"},
        "ka": {"none"}, "tlv": {"dso_type_not_implemented"}, "mine": {"NOERROR", "REFUSED"},
    }  # fmt: skip


def test_connection_kinds_default_to_tcp_even_when_defaults_say_udp() -> None:
    config = parse("""
        defaults: {transport: udp}
        targets:
          - name: a
            server: 192.0.2.1
            probes: [{name: x, kind: axfr}, {name: d, kind: dso_keepalive}, {name: q, kind: query}]
    """)
    transports = [p.transport for p in config.targets[0].probes]
    assert transports == [Transport.TCP, Transport.TCP, Transport.UDP]


def test_authoritative_survey_expands_to_the_documented_probes() -> None:
    probes = {p.name: p for p in survey_probes("authoritative", "example.com")}
    assert tuple(probes) == AUTHORITATIVE_SURVEY
    assert probes["soa"].qname == "example.com."
    assert probes["edns1"].edns.version == 1
    assert probes["edns1"].expect == {"bad_version"}
    assert probes["edns_unknown_option"].edns.options
    assert probes["edns_unknown_flag"].edns.flags
    assert probes["unknown_type"].qtype not in (1, 6, 28)
    for n in (3, 7, 8, 9, 10, 11, 12, 13, 14, 15):
        op = probes[f"opcode{n}"]
        assert (op.kind, op.opcode, op.expect) == (ProbeKind.OPCODE, n, {"not_implemented"})
    assert probes["ixfr"].kind is ProbeKind.IXFR
    assert probes["update"].expect == {"none"}
    for name in ("dso_keepalive", "dso_tlv", "dso_push"):
        assert probes[name].transport is Transport.TCP
    assert probes["dso_push"].kind is ProbeKind.DSO_PUSH_SUBSCRIBE
    assert probes["dso_push"].dso.push_name == "example.com."


def test_a_query_probe_sets_rd_unless_told_and_other_kinds_never_do() -> None:
    config = parse("""
        targets:
          - name: r
            server: 127.0.0.1
            probes:
              - {name: plain, kind: query, qname: www.example.}
              - {name: norec, kind: query, qname: www.example., rd: false}
              - {name: op, kind: opcode, opcode: 3}
              - {name: xfr, kind: axfr}
              - {name: upd, kind: update}
    """)
    sends = {p.name: p.sends_rd for p in config.targets[0].probes}
    assert sends == {"plain": True, "norec": False, "op": False, "xfr": False, "upd": False}


def test_authoritative_survey_clears_rd_on_its_queries() -> None:
    # An authoritative server is asked without RD (dig +norec, genreport): explicit.
    for preset in ("authoritative", "compliance"):
        queries = [p for p in survey_probes(preset) if p.kind is ProbeKind.QUERY]
        assert queries
        assert {p.name for p in queries if p.sends_rd} <= {"rd", "nameserver01"}, preset


def test_recursive_survey_sets_rd_and_has_no_transfers_or_updates() -> None:
    probes = {p.name: p for p in survey_probes("recursive")}
    assert probes["soa"].recursion_desired
    assert not {"ixfr", "axfr", "update"} & set(probes)
    assert set(probes) <= set(AUTHORITATIVE_SURVEY)


def test_survey_takes_global_defaults_exclusions_and_extra_probes() -> None:
    config = parse("""
        defaults: {interval: 5m}
        targets:
          - name: ns
            server: 192.0.2.1
            zone: example.com
            survey: {preset: authoritative, exclude: [update], timeout: 2s}
            probes: [{name: www, kind: query, qname: www.example.com}]
    """)
    target = config.targets[0]
    names = [p.name for p in target.probes]
    assert "update" not in names
    assert names[-1] == "www"
    assert target.survey == "authoritative"
    assert all(p.interval == 300.0 for p in target.probes)
    assert probe(config, 0, "soa").timeout == 2.0


def test_yaml_merge_keys_and_extension_keys_work_for_fleets() -> None:
    config = parse("""
        x-base: &base {zone: example.net, probes: [{name: q, kind: query}]}
        targets:
          - {<<: *base, name: a, server: 192.0.2.1}
          - {<<: *base, name: b, server: 192.0.2.2}
    """)
    assert [t.zone for t in config.targets] == ["example.net.", "example.net."]


# -- how a bad config is reported -------------------------------------------------


def test_unknown_key_names_file_line_and_key(load_error: Callable[[str], ConfigError]) -> None:
    err = load_error("""
        targets:
          - name: a
            server: 192.0.2.1
            probes:
              - name: q
                kind: query
                timout: 2s
    """)
    assert err.path.endswith("dnsgap.yml")
    assert (err.line, err.key) == (7, "targets[0].probes[0].timout")
    assert str(err).startswith(f"{err.path}:7: targets[0].probes[0].timout: ")
    assert "did you mean 'timeout'" in str(err)


@pytest.mark.parametrize(
    "server", ["192.0.2.1:0", "192.0.2.1:70000", "[2001:db8::1", "[nonsense]:53", "a b", "x:y"]
)
def test_bad_address_is_reported_at_the_server_key(
    load_error: Callable[[str], ConfigError], server: str
) -> None:
    err = load_error(f"""
        targets:
          - name: a
            server: "{server}"
            probes: [{{name: q, kind: query}}]
    """)
    assert (err.line, err.key) == (3, "targets[0].server")


@pytest.mark.parametrize("interval", ["0s", "-5", "soon", "5x", "true"])
def test_bad_interval_is_rejected(load_error: Callable[[str], ConfigError], interval: str) -> None:
    err = load_error(f"""
        defaults:
          interval: {interval}
        targets: []
    """)
    assert (err.line, err.key) == (2, "defaults.interval")


def test_timeout_above_interval_is_rejected_where_the_timeout_is(
    load_error: Callable[[str], ConfigError],
) -> None:
    err = load_error("""
        targets:
          - name: a
            server: 192.0.2.1
            probes:
              - name: q
                kind: query
                interval: 10s
                timeout: 30s
    """)
    assert (err.line, err.key) == (8, "targets[0].probes[0].timeout")
    assert "timeout <= interval" in err.message


def test_unknown_kind_suggests_a_known_one(load_error: Callable[[str], ConfigError]) -> None:
    err = load_error("""
        probes:
          x: {kind: qeury}
        targets: []
    """)
    assert (err.line, err.key) == (2, "probes.x.kind")
    assert "did you mean 'query'" in err.message


def test_raw_opcode_4_is_a_notify_and_needs_the_same_opt_in(
    load_error: Callable[[str], ConfigError], probe_error: Callable[[str], ConfigError]
) -> None:
    err = probe_error("{name: n, kind: opcode, opcode: 4}")
    assert err.key == "targets[0].probes[0].allow_notify"
    assert "opcode 4 (NOTIFY)" in err.message
    # A template (what ad-hoc /probe requests run) is checked the same way.
    err = load_error("""
        probes:
          notify4: {kind: opcode, opcode: 4}
        targets: [{name: a, server: 192.0.2.1, probes: [{name: q, kind: query}]}]
    """)
    assert "allow_notify: true" in err.message
    opted_in = parse("""
        targets:
          - name: a
            server: 192.0.2.1
            probes: [{name: n, kind: opcode, opcode: 4, allow_notify: true}]
    """)
    assert opted_in.targets[0].probes[0].sends_notify


@pytest.mark.parametrize(("tlv_type", "hint"), [
    ("1", "use kind dso_keepalive"), ("2", "only a server sends"),
    ("3", "use kind dso_padding"), ("0x40", "use kind dso_push_subscribe"),
    ("0x41", "only a server sends"), ("0x42", "unidirectional"), ("0x43", "unidirectional"),
])  # fmt: skip
def test_dso_tlv_with_an_assigned_type_is_rejected_with_the_kind_to_use(
    probe_error: Callable[[str], ConfigError], tlv_type: str, hint: str
) -> None:
    err = probe_error(f"{{name: t, kind: dso_tlv, dso: {{tlv_type: {tlv_type}}}}}")
    assert err.key == "targets[0].probes[0].dso.tlv_type"
    assert hint in err.message
    assert "expected an unassigned or experimental DSO TLV type" in err.message


def test_dso_tlv_with_an_unassigned_or_experimental_type_is_accepted() -> None:
    config = parse("""
        targets:
          - name: a
            server: 192.0.2.1
            probes:
              - {name: t, kind: dso_tlv, dso: {tlv_type: 0x0004}}
              - {name: x, kind: dso_tlv, dso: {tlv_type: 0xF800}}
    """)
    assert [p.dso.tlv_type for p in config.targets[0].probes] == [4, 0xF800]


def test_unknown_template_is_named(load_error: Callable[[str], ConfigError]) -> None:
    err = load_error("""
        probes:
          soa: {kind: query}
        targets:
          - name: a
            server: 192.0.2.1
            probes: [soa, sao]
    """)
    assert (err.line, err.key) == (6, "targets[0].probes[1]")
    assert "did you mean 'soa'" in err.message


def test_duplicate_target_and_probe_names_are_rejected(
    load_error: Callable[[str], ConfigError],
) -> None:
    err = load_error("""
        targets:
          - name: a
            server: 192.0.2.1
            probes: [{name: q, kind: query}, {name: q, kind: query}]
          - name: a
            server: 192.0.2.2
            probes: [{name: q, kind: query}]
    """)
    assert isinstance(err, ConfigErrors)
    keys = [e.key for e in err.errors]
    assert keys == ["targets[0].probes[1]", "targets[1].name"]
    assert len(str(err).splitlines()) == 2


def test_duplicate_yaml_keys_are_rejected(load_error: Callable[[str], ConfigError]) -> None:
    err = load_error("""
        scheduler:
          jitter: 0.5
          jitter: 0.2
        targets: []
    """)
    assert (err.line, err.key) == (3, "scheduler.jitter")


@pytest.mark.parametrize(("probe_yaml", "key", "fragment"), [
    pytest.param("{name: q, kind: query, rd: maybe}", "rd", "expected true or false (got 'maybe')",
                 id="wrong-type-says-what-was-expected-and-what-came"),
    pytest.param("{name: o, kind: opcode, opcode: 16}", "opcode", "0-15", id="opcode-above-15"),
    pytest.param("{name: q, kind: query, qtype: BOGUS}", "qtype", "TYPE65534",
                 id="unknown-qtype-says-the-accepted-forms"),
    pytest.param("{name: q, kind: query, qclass: XX}", "qclass", "CH",
                 id="unknown-qclass-says-the-accepted-forms"),
    pytest.param("{name: q, kind: query, expect: [nope]}", "expect", "cause names",
                 id="expect-unknown-cause"),
    pytest.param("{name: q, kind: query, expect: NOTIMPL}", "expect", "did you mean 'NOTIMP'",
                 id="expect-misspelt-rcode-suggests-one"),
    pytest.param("{name: x, kind: axfr, tsig_key: missing}", "tsig_key", "tsig_keys",
                 id="tsig-key-not-in-tsig_keys"),
    pytest.param("{name: d, kind: dso_keepalive, transport: udp}", "transport", "allow_udp",
                 id="dso-over-udp-needs-allow_udp"),
    pytest.param("{name: x, kind: axfr, transport: udp}", "transport", "RFC 5936",
                 id="axfr-over-udp"),
    pytest.param("{name: q, kind: query, serial: 5}", "serial", "ixfr",
                 id="serial-only-for-ixfr"),
    pytest.param("{name: q, kind: query, edns: {options: [{code: 9, data: zz}]}}",
                 "edns.options[0].data", "hex", id="edns-option-data-not-hex"),
    pytest.param("{name: q, kind: query, qname: 'a..b'}", "qname", "domain name",
                 id="qname-with-an-empty-label"),
    pytest.param("{name: q, kind: query, transport: quic}", "transport", "udp, tcp, tls",
                 id="unknown-transport"),
    pytest.param("{name: n, kind: notify}", "allow_notify", "allow_notify: true",
                 id="notify-without-opt-in"),
])  # fmt: skip
def test_bad_probe_values_are_reported_at_their_key(
    probe_error: Callable[[str], ConfigError], probe_yaml: str, key: str, fragment: str
) -> None:
    err = probe_error(probe_yaml)
    assert (err.line, err.key) == (PROBE_LINE, f"targets[0].probes[0].{key}")
    assert fragment in err.message


def test_tls_settings_on_a_plain_target_are_rejected(
    load_error: Callable[[str], ConfigError],
) -> None:
    err = load_error("""
        targets:
          - name: a
            server: 192.0.2.1
            tls: {server_name: ns.example}
            probes: [{name: q, kind: query}]
    """)
    assert (err.line, err.key) == (4, "targets[0].tls")


@pytest.mark.parametrize("label", ["probe", "cause", "9lives", "__x", "has-dash"])
def test_bad_or_reserved_label_names_are_rejected(
    load_error: Callable[[str], ConfigError], label: str
) -> None:
    err = load_error(f"""
        targets:
          - name: a
            server: 192.0.2.1
            labels: {{"{label}": v}}
            probes: [{{name: q, kind: query}}]
    """)
    assert (err.line, err.key) == (4, f"targets[0].labels.{label}")


def test_yaml_syntax_error_names_the_line(load_error: Callable[[str], ConfigError]) -> None:
    err = load_error("""
        targets:
          - name: a
            server: [192.0.2.1
    """)
    assert err.path.endswith("dnsgap.yml")
    assert err.line is not None
    assert err.key == "(yaml)"
    # Says what was expected, like every other error, and where the unclosed
    # sequence began (the problem is only noticed at the end of the file).
    assert err.message.startswith("expected valid YAML ("), err.message
    assert "flow sequence at line 3" in err.message, err.message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a readable UTF-8 file"):
        load_config(str(tmp_path / "absent.yml"))


def test_several_errors_are_reported_together(load_error: Callable[[str], ConfigError]) -> None:
    err = load_error("""
        scheduler: {jitter: 3}
        http: {listen: "nowhere"}
        targets: []
    """)
    assert isinstance(err, ConfigErrors)
    assert [e.key for e in err.errors] == ["http.listen", "scheduler.jitter"]


# -- robustness: any text is a Config or a ConfigError ------------------------------

_KEYS = st.sampled_from([
    "targets", "probes", "defaults", "http", "scheduler", "tsig_keys", "name", "server",
    "kind", "interval", "timeout", "use", "survey", "zone", "edns", "dso", "labels", "tls",
    "expect", "qtype", "opcode", "transport", "<<", "preset", "x-a",
])  # fmt: skip
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=True),
    st.sampled_from(["query", "axfr", "notify", "dso_tlv", "30s", "0", "@", "soa",
                     "authoritative", "192.0.2.1:53", "[::1]", "udp", "tls", "NOTIMP"]),
    st.text(max_size=12),
)  # fmt: skip
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=25,
)


def _loads_or_config_error(text: str) -> None:
    try:
        config = parse_config(text, "fuzz.yml")
    except ConfigError as err:
        message = str(err)
    else:
        assert isinstance(config, Config)
        return
    assert message.startswith("fuzz.yml")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TREES)
def test_any_yaml_tree_gives_a_config_or_a_config_error(tree: object) -> None:
    _loads_or_config_error(yaml.safe_dump(tree))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("targets:-[]{}&*<>!|'\"#\n abc123@.%\t\x00")),
               max_size=80))  # fmt: skip
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    _loads_or_config_error(text)


def test_self_referencing_merge_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_config("a: &x {<<: *x}\n", "loop.yml")


def test_survey_transport_override_keeps_connection_kinds_on_tcp() -> None:
    config = parse("""
        targets:
          - server: 192.0.2.1
            survey: {preset: authoritative, transport: udp}
    """)
    on_tcp = {p.name for p in config.targets[0].probes if p.transport is Transport.TCP}
    assert on_tcp == {"ixfr", "axfr", "dso_keepalive", "dso_tlv", "dso_push"}


def test_survey_over_tls_moves_every_probe_and_the_default_port() -> None:
    config = parse("""
        targets:
          - server: 192.0.2.1
            tls: {server_name: ns1.example}
            survey: {preset: authoritative, transport: tls}
    """)
    target = config.targets[0]
    assert target.port == 853
    assert {p.transport for p in target.probes} == {Transport.TLS}


def test_a_rejected_tsig_secret_is_not_shown_in_the_error(
    load_error: Callable[[str], ConfigError],
) -> None:
    err = load_error("""
        tsig_keys:
          k: {algorithm: hmac-sha256, secret: "c2VjcmV0LXNlY3JldC1zZWNyZXQ"}
        targets: []
    """)
    assert (err.line, err.key) == (2, "tsig_keys.k.secret")
    assert "c2VjcmV0" not in str(err)
