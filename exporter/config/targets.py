"""The ``targets:`` section: servers, their zone, labels, TLS and probes.

Names starting with ``_`` are private to the ``exporter.config`` package.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import yaml

from exporter.config.discovery import _discovery
from exporter.config.located import _Ctx, _Src
from exporter.config.presets import _survey
from exporter.config.probe_specs import _Env, _probe_entry, resolve_zone_names
from exporter.config.scalars import _bool, _label_value, _opt_str, _str, _zone_name
from exporter.config.schema import (
    DEFAULT_PORTS,
    ENCRYPTED_TRANSPORTS,
    ProbeSpec,
    Target,
    TlsSettings,
    ZoneTarget,
)
from exporter.config.values import parse_server

_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


#: Label names the exporter's own metrics use (or Prometheus reserves).
RESERVED_LABELS = frozenset({
    "target", "probe", "kind", "rcode", "cause", "transport", "opcode", "server", "zone",
    "survey", "ns_name", "change", "dso_type", "instance", "job", "le", "quantile",
})  # fmt: skip


_TARGET_KEYS = ("name", "server", "discover", "zone", "tls", "labels", "role", "survey", "probes")
#: The server role a survey preset implies, when the target does not say
#: (docs/conformance.md: the role conformance checks).
ROLES = ("authoritative", "recursive")
PRESET_ROLES = {"authoritative": "authoritative", "compliance": "authoritative",
                 "recursive": "recursive"}  # fmt: skip


_TLS_KEYS = ("ca_file", "server_name", "cert_file", "key_file", "verify")


def _targets(ctx: _Ctx, src: _Src, env: _Env) -> list[Target | ZoneTarget]:
    out: list[Target | ZoneTarget] = []
    seen: dict[str, int] = {}
    zones: dict[str, int] = {}
    for index, item in enumerate(ctx.sequence(src.node, src.key) or []):
        target = _target(ctx, item, env)
        name = target.name if target else _peek_name(item.node)
        if name is not None and name in seen:
            first = f"{src.key}[{seen[name]}]"
            ctx.fail(
                item.node,
                f"{item.key}.name",
                f"expected a unique target name (got {name!r} again; first at {first})",
            )
            continue
        if name is not None:
            seen[name] = index
        if isinstance(target, ZoneTarget):
            if target.zone in zones:
                # The zone's own series (serials, discovery) are labelled by zone.
                ctx.fail(item.node, f"{item.key}.zone", f"expected each zone in one "
                         f"zone target (got {target.zone!r} again; first at "
                         f"{src.key}[{zones[target.zone]}])")  # fmt: skip
                continue
            zones[target.zone] = index
        if target is not None:
            out.append(target)
    return out


def _peek_name(node: yaml.Node) -> str | None:
    """A broken target's name (or server), so duplicates still show up."""
    if isinstance(node, yaml.MappingNode):
        found = {
            k.value: v.value
            for k, v in node.value
            if isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode)
        }
        name = found.get("name", found.get("server", found.get("zone")))
        return name if isinstance(name, str) else None
    return None


def _target(ctx: _Ctx, src: _Src, env: _Env) -> Target | ZoneTarget | None:
    fields = ctx.mapping(src.node, src.key, _TARGET_KEYS)
    if fields is None:
        return None
    errors_before = len(ctx.errors)
    discover = fields.get("discover")
    if discover is not None and "server" in fields:
        ctx.fail(discover.node, discover.key, "expected either `server:` (one server) or "
                 "`discover:` (the zone's name servers) (got both)")  # fmt: skip
        return None
    if discover is not None and "zone" not in fields:
        ctx.fail(src.node, f"{src.key}.zone", "expected the zone whose name servers "
                 "`discover:` finds (missing)")  # fmt: skip
        return None
    if "server" not in fields and discover is None:
        ctx.fail(src.node, f"{src.key}.server", "expected host:port or a hostname (missing)")
        return None
    server = ctx.get(fields["server"], _str) if "server" in fields else None
    zone = ctx.get(fields["zone"], _zone_name) if "zone" in fields else "."
    zone = zone or "."
    default_name = server if discover is None else zone.rstrip(".") or "."
    name = ctx.get(fields["name"], _str) if "name" in fields else default_name
    labels = _labels(ctx, fields["labels"]) if "labels" in fields else {}

    probes: list[tuple[ProbeSpec, _Src]] = []
    survey: str | None = None
    if "survey" in fields:
        survey, surveyed = _survey(ctx, fields["survey"], env)
        probes.extend(surveyed)
    if "probes" in fields:
        for item in ctx.sequence(fields["probes"].node, fields["probes"].key) or []:
            spec = _probe_entry(ctx, item, env)
            if spec is not None:
                probes.append((spec, item))
    if "survey" not in fields and "probes" not in fields:
        ctx.fail(src.node, f"{src.key}.probes", "expected `probes:` or `survey:` (got neither)")
    role = PRESET_ROLES.get(survey or "")
    if "role" in fields:
        role = ctx.get(fields["role"], _str)
        if role not in ROLES:
            ctx.fail(fields["role"].node, fields["role"].key,
                     f"expected one of: {', '.join(ROLES)} (got {role!r})")  # fmt: skip
    specs = _unique_probes(ctx, probes)
    specs = [resolve_zone_names(s, zone) for s in specs]

    uses_tls = {s.transport in ENCRYPTED_TRANSPORTS for s in specs}
    if len(uses_tls) > 1:
        ctx.fail(
            src.node,
            src.key,
            "expected all probes of a target encrypted (tls, doh, doq) or none: a "
            "server port speaks either TLS or plain DNS; add a second target for the "
            "TLS port (got a mix)",
        )
    all_tls = uses_tls == {True}
    tls = TlsSettings()
    if "tls" in fields:
        tls = _tls(ctx, fields["tls"])
        if not all_tls and specs:
            ctx.fail(
                fields["tls"].node,
                fields["tls"].key,
                "expected `tls:` only on a target whose probes use transport tls, doh "
                "or doq (got probes over udp/tcp)",
            )
    if discover is not None:
        default_port, specs = _default_ports(specs)
        discovery = _discovery(ctx, discover, default_port)
        if len(ctx.errors) > errors_before or name is None or discovery is None:
            return None
        return ZoneTarget(name=name, zone=zone, discovery=discovery, probes=tuple(specs),
                          tls=tls, labels=labels, survey=survey,
                          role=role or "authoritative")  # fmt: skip
    host, port = "", 0
    if server is not None:
        try:
            host, port = parse_server(server, 0)
        except ValueError as exc:
            ctx.fail(
                fields["server"].node, fields["server"].key, f"expected {exc} (got {server!r})"
            )
    if port == 0:
        port, specs = _default_ports(specs)
    if len(ctx.errors) > errors_before or name is None:
        return None
    return Target(
        name=name,
        host=host,
        port=port,
        probes=tuple(specs),
        zone=zone,
        tls=tls,
        labels=labels,
        survey=survey,
        role=role,
    )


def _default_ports(specs: Sequence[ProbeSpec]) -> tuple[int, list[ProbeSpec]]:
    """A server without a port: each transport's own default (DoT 853/tcp, DoH 443,
    DoQ 853/udp), the target's port being that of the first probe's transport."""
    transports = [s.transport for s in specs]
    port = DEFAULT_PORTS[transports[0]] if transports else 53
    out = [
        s if s.port is not None or DEFAULT_PORTS[s.transport] == port
        else replace(s, port=DEFAULT_PORTS[s.transport])
        for s in specs
    ]  # fmt: skip
    return port, out


def _unique_probes(ctx: _Ctx, probes: Sequence[tuple[ProbeSpec, _Src]]) -> list[ProbeSpec]:
    seen: dict[str, str] = {}
    out: list[ProbeSpec] = []
    for spec, src in probes:
        if spec.name in seen:
            ctx.fail(
                src.node,
                src.key,
                f"expected a unique probe name in this target (got "
                f"{spec.name!r} again, first from {seen[spec.name]})",
            )
            continue
        seen[spec.name] = src.key
        out.append(spec)
    return out


def _labels(ctx: _Ctx, src: _Src) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (ctx.mapping(src.node, src.key, None) or {}).items():
        if not _LABEL_RE.fullmatch(name) or name.startswith("__"):
            ctx.fail(
                value.node,
                value.key,
                "expected a label name matching "
                f"[a-zA-Z_][a-zA-Z0-9_]*, not starting with __ (got {name!r})",
            )
        elif name in RESERVED_LABELS:
            reserved = ", ".join(sorted(RESERVED_LABELS))
            ctx.fail(
                value.node,
                value.key,
                "expected a label name the exporter does not "
                f"use itself ({reserved}) (got {name!r})",
            )
        elif (text := ctx.get(value, _label_value)) is not None:
            out[name] = text
    return out


def _tls(ctx: _Ctx, src: _Src) -> TlsSettings:
    fields = ctx.mapping(src.node, src.key, _TLS_KEYS) or {}
    values: dict[str, Any] = {}
    for name in ("ca_file", "server_name", "cert_file", "key_file"):
        if name in fields:
            values[name] = ctx.get(fields[name], _opt_str)
    if "verify" in fields:
        values["verify"] = ctx.get(fields["verify"], _bool)
    if ("cert_file" in values) != ("key_file" in values):
        ctx.fail(src.node, src.key, "expected cert_file and key_file together (got one)")
    return TlsSettings(**{k: v for k, v in values.items() if v is not None})
