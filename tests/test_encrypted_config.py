"""Config of the encrypted transports: doh/doq probes, their ports, `survey: encrypted`."""

from __future__ import annotations

import pytest

from exporter.config import ConfigError, DohSettings, Target, Transport, parse_config
from exporter.kinds import ProbeKind


def _target(body: str, server: str = "127.0.0.1") -> Target:
    text = f'targets:\n  - name: t\n    server: "{server}"\n{body}'
    return parse_config(text, "t.yml").targets[0]


def _error(body: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _target(body)
    return str(caught.value)


def test_the_encrypted_survey_uses_each_transports_default_port() -> None:
    target = _target("    survey: encrypted\n")
    ports = {p.name: (p.transport, p.port or target.port) for p in target.probes}
    assert ports == {"dot": (Transport.TLS, 853), "doh_post": (Transport.DOH, 443),
                     "doh_get": (Transport.DOH, 443), "doq": (Transport.DOQ, 853)}  # fmt: skip
    methods = {p.name: p.doh.method for p in target.probes if p.transport is Transport.DOH}
    assert methods == {"doh_post": "POST", "doh_get": "GET"}


def test_the_encrypted_survey_ports_can_be_moved_per_transport() -> None:
    target = _target("    survey: {preset: encrypted, ports: {doh: 8443, doq: 8853}}\n")
    ports = {p.name: p.port or target.port for p in target.probes}
    assert ports == {"dot": 853, "doh_post": 8443, "doh_get": 8443, "doq": 8853}


def test_a_port_in_the_server_is_every_probes_port_unless_a_probe_has_its_own() -> None:
    target = _target("""    probes:
      - {name: a, kind: query, transport: doh}
      - {name: b, kind: query, transport: doq, port: 8853}
""", server="127.0.0.1:8443")  # fmt: skip
    assert target.port == 8443
    assert [p.port for p in target.probes] == [None, 8853]


def test_doh_settings_parse_method_and_path() -> None:
    target = _target("""    probes:
      - {name: a, kind: query, transport: doh, doh: {method: get, path: /resolve}}
""")  # fmt: skip
    assert target.probes[0].doh == DohSettings("GET", "/resolve")


@pytest.mark.parametrize("transport", ["doh", "doq"])
@pytest.mark.parametrize("kind", [k.value for k in ProbeKind if k.is_dso])
def test_dso_over_doh_or_doq_is_a_config_error_with_the_reason(transport: str, kind: str) -> None:
    message = _error(f"    probes: [{{name: a, kind: {kind}, transport: {transport}}}]\n")
    assert "t.yml:4: targets[0].probes[0].transport" in message
    assert "RFC 8490" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("{name: a, kind: query, transport: tls, doh: {method: GET}}", "only with transport doh"),
        ("{name: a, kind: query, transport: doh, doh: {method: PUT}}", "GET or POST"),
        ("{name: a, kind: query, transport: doh, doh: {path: dns-query}}", "starting with /"),
        ("{name: a, kind: query, transport: doq, port: 0}", "a port 1-65535"),
        ("{name: a, kind: query, transport: doh}, {name: b, kind: query}", "encrypted"),
    ],
)
def test_bad_encrypted_transport_settings_are_located_errors(body: str, expected: str) -> None:
    assert expected in _error(f"    probes: [{body}]\n")


def test_classic_kinds_run_over_doh_and_doq() -> None:
    kinds = [k.value for k in ProbeKind if not k.is_dso and k is not ProbeKind.NOTIFY]
    for transport in ("doh", "doq"):
        body = "    probes:\n" + "".join(
            f"      - {{name: {k}, kind: {k}, transport: {transport}}}\n" for k in kinds)
        assert len(_target(body).probes) == len(kinds)
