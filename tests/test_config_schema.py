"""`dnsgap schema`: a JSON Schema of the config that every shipped config satisfies,
and that rejects the mistakes an editor should underline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from exporter.config import ConfigError, parse_config
from exporter.config.json_schema import config_schema
from exporter.demo import _DEMO_CONFIG, DEMO_SERVERS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "config").glob("*.yml"))
PRESETS = sorted((ROOT / "exporter" / "presets").glob("*.yml"))


def _validator(definition: str | None = None) -> jsonschema.Draft202012Validator:
    schema: dict[str, Any] = config_schema()
    if definition is not None:  # validate against one of the schema's $defs
        schema = {**schema, "$ref": f"#/$defs/{definition}"}
        for key in ("type", "properties", "additionalProperties", "patternProperties"):
            schema.pop(key, None)
    return jsonschema.Draft202012Validator(schema)


def _errors(document: object, definition: str | None = None) -> list[str]:
    found = _validator(definition).iter_errors(document)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found]


def test_dnsgap_schema_prints_a_valid_draft_2020_12_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "exporter", "schema"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    schema = json.loads(out.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == config_schema()
    assert set(schema["properties"]) == {
        "http", "scheduler", "defaults", "tsig_keys", "probes", "targets",
    }  # fmt: skip


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_config_satisfies_the_schema(path: Path) -> None:
    assert EXAMPLES, "config/*.yml is empty"
    text = path.read_text(encoding="utf-8")
    parse_config(text, str(path))  # the loader accepts it too
    assert _errors(yaml.safe_load(text)) == []


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_is_a_list_of_probes_the_schema_accepts(path: Path) -> None:
    assert _errors(yaml.safe_load(path.read_text(encoding="utf-8")), "preset") == []


def test_the_kubernetes_configmap_and_the_demo_config_satisfy_the_schema() -> None:
    docs = yaml.safe_load_all((ROOT / "deploy/kubernetes/configmap.yaml").read_text())
    configmap = next(d for d in docs if d and d.get("kind") == "ConfigMap")
    for text in configmap["data"].values():
        assert _errors(yaml.safe_load(text)) == []
    demo = _DEMO_CONFIG.format_map(dict.fromkeys(DEMO_SERVERS, 5300))
    assert _errors(yaml.safe_load(demo)) == []


def test_a_zone_target_satisfies_the_schema() -> None:
    text = """
targets:
  - zone: example.com
    discover: {resolver: "127.0.0.1:53", port: 5300, refresh_min: 1m, refresh_max: 1h}
    survey: authoritative
  - {zone: example.org, discover: true, probes: [{name: soa, kind: query, qname: "@"}]}
"""
    parse_config(text, "<test>")
    assert _errors(yaml.safe_load(text)) == []


def test_readme_config_snippets_satisfy_the_schema() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "targets:" in b]
    assert blocks
    for block in blocks:
        assert _errors(yaml.safe_load(block)) == [], block


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("targets: [{server: 192.0.2.1, probes: [{name: a, kind: query, timout: 5s}]}]",
         "targets/0/probes/0"),
        ("targets: [{server: 192.0.2.1, probes: [{name: a, kind: querry}]}]",
         "targets/0/probes/0"),
        ("targets: [{server: 192.0.2.1, probes: [{name: a, kind: query, transport: quic}]}]",
         "targets/0/probes/0"),
        ("targets: [{server: 192.0.2.1, probes: [{name: a, kind: query, interval: 5 minutes}]}]",
         "targets/0/probes/0"),
        ("targets: [{server: 192.0.2.1, survey: authoritativ}]", "targets/0/survey"),
        ("targets: [{name: x, probes: [{name: a, kind: query}]}]", "targets/0"),
        ("scheduler: {jitter: 2}", "scheduler/jitter"),
        ("tsig_keys: {k: {algorithm: hmac-sha256}}", "tsig_keys/k"),
        ("target: []", ""),
        ("targets: [{discover: true, probes: [{name: a, kind: query}]}]", "targets/0"),
        ("targets: [{zone: a., discover: {prot: 53}, probes: [{name: a, kind: query}]}]",
         "targets/0/discover"),
    ],
)  # fmt: skip
def test_the_schema_rejects_what_the_loader_rejects(text: str, where: str) -> None:
    with pytest.raises(ConfigError):
        parse_config(text, "<test>")
    errors = _errors(yaml.safe_load(text))
    assert errors, f"the schema accepted {text!r}"
    assert any(e.startswith(f"{where}:") for e in errors), errors
