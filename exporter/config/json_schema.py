"""A JSON Schema (draft 2020-12) of the config file, for editors: ``dnsgap schema``.

Built from the loader's own key tables, so a key the loader knows and the
schema does not fails here, at build time, rather than drifting. The schema
describes canonical spellings (``udp``, ``NOERROR``, ``not_implemented``); the
loader is the authority and also checks what a schema cannot (timeout <=
interval, references to templates and TSIG keys, kind-specific keys).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from exporter.causes import RCODE_NAMES, Cause
from exporter.config.discovery import _DISCOVER_KEYS
from exporter.config.loading import (
    _ENDPOINT_KEYS,
    _HTTP_KEYS,
    _SCHEDULER_KEYS,
    _TOP_KEYS,
    _TSIG_KEYS,
)
from exporter.config.presets import _SURVEY_KEYS, SURVEY_PRESETS
from exporter.config.probe_specs import (
    _DEFAULTS_KEYS,
    _DOH_KEYS,
    _DSO_KEYS,
    _EDNS_KEYS,
    _FALLBACK_KEYS,
    _INLINE_KEYS,
    _PROBE_KEYS,
)
from exporter.config.scalars import _TSIG_ALGORITHMS
from exporter.config.schema import Transport
from exporter.config.targets import _TARGET_KEYS, _TLS_KEYS
from exporter.kinds import ProbeKind

Schema = dict[str, Any]

SCHEMA_ID = "https://dnsgap.invalid/schema/config.json"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/$defs/{name}"}


def _int(lo: int, hi: int, description: str = "") -> Schema:
    out: Schema = {"type": "integer", "minimum": lo, "maximum": hi}
    if description:
        out["description"] = description
    return out


def _bool(description: str = "") -> Schema:
    return {"type": "boolean", "description": description} if description else {"type": "boolean"}


def _string(description: str = "") -> Schema:
    out: Schema = {"type": "string", "minLength": 1}
    if description:
        out["description"] = description
    return out


def _object(keys: Sequence[str], types: Mapping[str, Schema], **extra: Any) -> Schema:
    """A closed mapping of exactly the loader's keys; a key without a type is a bug here."""
    missing = [k for k in keys if k not in types]
    if missing:
        raise KeyError(f"no JSON Schema for config keys {missing}")
    return {
        "type": "object",
        "properties": {k: types[k] for k in keys},
        "additionalProperties": False,
        **extra,
    }


_DURATION: Schema = {
    "description": "30s, 2m, 1m30s, 500ms, 1h, or a number of seconds",
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h))+\s*$"},
    ],
}
_DNS_NAME = _string("a domain name (a trailing dot is added); `@` is the target's zone")
_RRTYPE: Schema = {
    "description": "a record type like SOA, AAAA, TYPE65534, or a number",
    "anyOf": [_int(0, 65535), _string()],
}
_RRCLASS: Schema = {
    "description": "a class like IN, CH, CLASS3, or a number",
    "anyOf": [_int(0, 65535), _string()],
}
_EXPECT_ITEM: Schema = {
    "anyOf": [
        {"enum": sorted({c.value for c in Cause} | set(RCODE_NAMES.values()))},
        {"type": "string", "pattern": r"^RCODE\d{1,4}$"},
    ]
}

_EDNS_TYPES: Mapping[str, Schema] = {
    "enabled": _bool("false sends no OPT record"),
    "version": _int(0, 255, "EDNS version (RFC 6891)"),
    "payload": _int(512, 65535, "advertised UDP payload size"),
    "do": _bool("the DNSSEC OK bit"),
    "flags": _int(0, 0x7FFF, "extra EDNS flag bits (DO is `do: true`)"),
    "options": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "code": _int(0, 65535, "option code"),
                "data": {
                    "description": 'hex digits like "00ff"',
                    "anyOf": [
                        {"type": "string", "pattern": "^([0-9a-fA-F]{2})*$"},
                        {"type": "null"},
                    ],
                },
            },
            "required": ["code"],
            "additionalProperties": False,
        },
    },
    "nsid": _bool("ask for NSID (RFC 5001)"),
}
_DSO_TYPES: Mapping[str, Schema] = {
    "inactivity_timeout": _DURATION,
    "keepalive_interval": _DURATION,
    "tlv_type": _int(1, 65535, "TLV type for dso_tlv: unassigned or experimental (the "
                     "assigned 1-3, 0x40-0x43 have their own kinds)"),
    "push_name": _DNS_NAME,
    "push_type": _RRTYPE,
    "push_class": _RRCLASS,
    "push_wait": _DURATION,
    "persistent": _bool("keep one DSO session per target open across probes"),
    "allow_udp": _bool("send DSO over UDP anyway"),
    "padding_block": _int(1, 65535, "padding block size for dso_padding"),
}
_DOH_TYPES: Mapping[str, Schema] = {
    "method": {"enum": ["GET", "POST", "get", "post"]},
    "path": {"type": "string", "pattern": "^/[^ #]*$"},
}
_FALLBACK_TYPES: Mapping[str, Schema] = {
    "kind": {"enum": [k.value for k in ProbeKind if not k.is_dso]},
    "qname": _DNS_NAME,
    "qtype": _RRTYPE,
}
_PROBE_TYPES: Mapping[str, Schema] = {
    "name": _string("the probe's name: the `probe` label"),
    "use": _string("a template under top-level `probes:`"),
    "kind": {"enum": [k.value for k in ProbeKind]},
    "transport": {"enum": [t.value for t in Transport]},
    "port": _int(1, 65535, "this probe's server port (default: the target's)"),
    "interval": _DURATION,
    "timeout": _DURATION,
    "qname": _DNS_NAME,
    "qtype": _RRTYPE,
    "qclass": _RRCLASS,
    "rd": _bool("recursion desired (default: set for query, clear for other kinds)"),
    "header_flags": {
        "description": "header bits to set besides RD",
        "type": "array", "items": {"enum": ["aa", "tc", "ra", "z", "ad", "cd"]},
    },
    "question": _bool("opcode kind: false sends the header alone"),
    "edns": {"anyOf": [_bool("false sends no OPT record"), _ref("edns")]},
    "zone": _DNS_NAME,
    "serial": _int(0, 2**32 - 1, "IXFR: the serial we claim to have"),
    "opcode": _int(0, 15, "opcode kind: the raw opcode"),
    "tcp_fallback": _bool("retry a truncated UDP reply over TCP"),
    "max_transfer_bytes": _int(512, 2**31 - 1),
    "expect": {
        "description": "rcode names (NOERROR) or cause names (none) that count as healthy",
        "anyOf": [_EXPECT_ITEM, {"type": "array", "items": _EXPECT_ITEM, "minItems": 1}],
    },
    "tsig_key": _string("a key under top-level `tsig_keys:`"),
    "dso": _ref("dso"),
    "doh": _ref("doh"),
    "fallback": _ref("fallback"),
    "allow_notify": _bool("required for notify probes and opcode 4: NOTIFY makes "
                          "secondaries refresh"),
}
_SURVEY_TYPES: Mapping[str, Schema] = {
    **_PROBE_TYPES,
    "preset": {"enum": list(SURVEY_PRESETS)},
    "exclude": {"type": "array", "items": _string("a probe of the preset to leave out")},
    "ports": {
        "description": "a server port per transport for the preset's probes",
        "type": "object",
        "propertyNames": {"enum": [t.value for t in Transport]},
        "additionalProperties": _int(1, 65535),
    },
}
_TLS_TYPES: Mapping[str, Schema] = {
    "ca_file": {"type": ["string", "null"]},
    "server_name": {"type": ["string", "null"]},
    "cert_file": {"type": ["string", "null"]},
    "key_file": {"type": ["string", "null"]},
    "verify": _bool(),
}
_TARGET_TYPES: Mapping[str, Schema] = {
    "name": _string("the `target` label (default: server)"),
    "server": _string("host:port, [v6]:port or a hostname (port 53; 853 for tls and doq, "
                      "443 for doh)"),
    "discover": {
        "description": "probe every address of the zone's name servers instead of one server",
        "anyOf": [{"const": True}, _ref("discover")],
    },
    "zone": _string("the zone `@` stands for in probe names"),
    "tls": _ref("tls"),
    "labels": {
        "type": "object",
        "propertyNames": {"pattern": "^(?!__)[a-zA-Z_][a-zA-Z0-9_]*$"},
        "additionalProperties": {"type": ["string", "number"]},
    },
    "role": {"enum": ["authoritative", "recursive"]},
    "survey": {"anyOf": [{"enum": list(SURVEY_PRESETS)}, _ref("survey")]},
    "probes": {"type": "array", "items": _ref("probe_entry")},
}
_DISCOVER_TYPES: Mapping[str, Schema] = {
    "resolver": _string("`system` (resolv.conf) or host:port of the resolver to ask"),
    "port": _int(1, 65535, "the port the discovered addresses are probed on"),
    "refresh_min": _DURATION,
    "refresh_max": _DURATION,
    "max_addresses": _int(1, 4096, "at most this many addresses per zone"),
    "parent": _bool("also ask the parent zone's servers for the delegation"),
    "timeout": _DURATION,
    "serial_interval": _DURATION,
}
_HTTP_TYPES: Mapping[str, Schema] = {
    "listen": _string("host:port, [v6]:port or :port"),
    "web_config_file": {"type": ["string", "null"]},
    "probe": _ref("probe_endpoint"),
}
_ENDPOINT_TYPES: Mapping[str, Schema] = {
    "allow_adhoc": _bool("/probe may name servers not in the config"),
    "adhoc_cidrs": {"type": "array", "items": _string("a network like 192.0.2.0/24")},
    "max_concurrency": _int(1, 65535),
    "max_per_client": _int(1, 65535),
    "max_queued": _int(0, 1_000_000),
    "max_queued_per_client": _int(0, 1_000_000),
}
_SCHEDULER_TYPES: Mapping[str, Schema] = {
    "max_concurrency": _int(1, 1_000_000),
    "jitter": {"type": "number", "minimum": 0, "maximum": 1},
    "duration_histogram": _bool(),
    "conformance_series": _bool("export dnsgap_conformance_violation and _total"),
}
_TSIG_TYPES: Mapping[str, Schema] = {
    "algorithm": {"enum": sorted(_TSIG_ALGORITHMS)},
    "secret": _string("base64"),
}
_TOP_TYPES: Mapping[str, Schema] = {
    "http": _ref("http"),
    "scheduler": _ref("scheduler"),
    "defaults": _ref("defaults"),
    "tsig_keys": {"type": "object", "additionalProperties": _ref("tsig_key")},
    "probes": {
        "type": "object",
        "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"},
        "additionalProperties": _ref("template"),
    },
    "targets": {"type": "array", "items": _ref("target")},
}


def config_schema() -> Schema:
    """The JSON Schema of a dnsgap config file."""
    inline = _object(
        _INLINE_KEYS,
        _PROBE_TYPES,
        # A template reference, or a name and a kind of its own.
        anyOf=[{"required": ["use"]}, {"required": ["name", "kind"]}],
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "dnsgap configuration",
        "description": "dnsgap.yml: the servers to probe and how (see config/README.md).",
        **_object(_TOP_KEYS, _TOP_TYPES, patternProperties={"^x-": {}}),
        "$defs": {
            "http": _object(_HTTP_KEYS, _HTTP_TYPES),
            "probe_endpoint": _object(_ENDPOINT_KEYS, _ENDPOINT_TYPES),
            "scheduler": _object(_SCHEDULER_KEYS, _SCHEDULER_TYPES),
            "tsig_key": _object(_TSIG_KEYS, _TSIG_TYPES, required=list(_TSIG_KEYS)),
            "edns": _object(_EDNS_KEYS, _EDNS_TYPES),
            "dso": _object(_DSO_KEYS, _DSO_TYPES),
            "doh": _object(_DOH_KEYS, _DOH_TYPES),
            "fallback": _object(_FALLBACK_KEYS, _FALLBACK_TYPES),
            "defaults": _object(_DEFAULTS_KEYS, _PROBE_TYPES),
            "template": _object(_PROBE_KEYS, _PROBE_TYPES, required=["kind"]),
            "inline_probe": inline,
            "probe_entry": {"anyOf": [_string("a template name"), _ref("inline_probe")]},
            "survey": _object(_SURVEY_KEYS, _SURVEY_TYPES, required=["preset"]),
            "tls": _object(_TLS_KEYS, _TLS_TYPES),
            "discover": _object(_DISCOVER_KEYS, _DISCOVER_TYPES),
            "target": _object(
                _TARGET_KEYS,
                _TARGET_TYPES,
                allOf=[
                    {"anyOf": [{"required": ["probes"]}, {"required": ["survey"]}]},
                    # One server, or a zone whose servers are discovered.
                    {"oneOf": [{"required": ["server"]}, {"required": ["discover", "zone"]}]},
                ],
            ),
            # A preset file (exporter/presets/*.yml) is a list of these.
            "preset": {"type": "array", "items": _ref("inline_probe")},
        },
    }
