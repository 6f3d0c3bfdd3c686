"""Probe specs: layers of probe fields (defaults, templates, inline entries,
survey overrides) merged into :class:`ProbeSpec`, and the checks that span fields.

Names starting with ``_`` are private to the ``exporter.config`` package.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import yaml

from exporter.config.located import _Ctx, _Src, _WantError
from exporter.config.scalars import (
    _NAME_RE,
    _bool,
    _dns_name,
    _duration,
    _expect,
    _hex,
    _http_method,
    _int_in,
    _kind,
    _positive_duration,
    _probe_name,
    _rdclass,
    _rdtype,
    _str,
    _transport,
    _uri_path,
)
from exporter.config.schema import (
    DohSettings,
    DsoSettings,
    EdnsSettings,
    FallbackSettings,
    ProbeSpec,
    Transport,
    TsigKey,
)
from exporter.kinds import ProbeKind


def resolve_zone_names(spec: ProbeSpec, zone: str) -> ProbeSpec:
    """Replace ``@`` (the target's zone, as in zone files) in a probe's names."""

    def at(name: str) -> str:
        if name.endswith(".@"):  # a name under the zone: "www.@"
            return name[:-1] + ("" if zone == "." else zone)
        return zone if name == "@" else name

    fallback = spec.fallback
    if fallback is not None and fallback.qname == "@":
        fallback = replace(fallback, qname=zone)
    return replace(
        spec,
        qname=at(spec.qname),
        zone=None if spec.zone is None else at(spec.zone),
        dso=replace(spec.dso, push_name=at(spec.dso.push_name)),
        fallback=fallback,
    )


def default_expect(spec: ProbeSpec) -> frozenset[str]:
    """What a healthy server answers to this probe, when the config does not say."""
    if spec.kind is ProbeKind.QUERY and spec.edns.enabled and spec.edns.version >= 1:
        return frozenset({"bad_version"})  # RFC 6891 §6.1.3
    if spec.kind is ProbeKind.OPCODE and spec.opcode not in _IMPLEMENTED_OPCODES:
        return frozenset({"not_implemented"})  # RFC 1035 §4.1.1, RFC 3425 for IQUERY
    if spec.kind is ProbeKind.DSO_TLV and spec.dso.tlv_type not in _IMPLEMENTED_DSO_TYPES:
        return frozenset({"dso_type_not_implemented"})  # RFC 8490 §5.1.1
    return frozenset({"none"})


# QUERY, NOTIFY, UPDATE, DSO: a header-only message with these is judged on its merits.
_IMPLEMENTED_OPCODES = frozenset({0, 4, 5, 6})

#: DSO TLV types an RFC assigns, and why a ``dso_tlv`` probe cannot send them with a
#: made-up body: a DSO server would reset the session or answer the malformed
#: request, which says nothing about the type. The dedicated kinds send valid ones.
_ASSIGNED_DSO_TYPES: Mapping[int, str] = {
    0x0001: "Keepalive (RFC 8490 §7.1): use kind dso_keepalive",
    0x0002: "Retry Delay, which only a server sends (RFC 8490 §7.2)",
    0x0003: "Encryption Padding, never a primary TLV (RFC 8490 §7.3): use kind dso_padding",
    0x0040: "SUBSCRIBE (RFC 8765 §6.2): use kind dso_push_subscribe",
    0x0041: "PUSH, which only a server sends (RFC 8765 §6.3)",
    0x0042: "UNSUBSCRIBE, a unidirectional message (RFC 8765 §6.4) that "
            "dso_push_subscribe sends",
    0x0043: "RECONFIRM, a unidirectional message (RFC 8765 §6.5)",
}  # fmt: skip


def dso_tlv_type_problem(tlv_type: int) -> str | None:
    """Why ``dso_tlv`` cannot probe this TLV type, or None when it can (unassigned
    and experimental types: their answer is DSOTYPENI or an implementation's own)."""
    why = _ASSIGNED_DSO_TYPES.get(tlv_type)
    if why is None:
        return None
    return (f"an unassigned or experimental DSO TLV type for dso_tlv; {tlv_type:#06x} is "
            f"{why} (got {tlv_type:#06x})")  # fmt: skip


# Keepalive, Retry Delay, Padding, and the DNS Push types (RFC 8490, RFC 8765).
_IMPLEMENTED_DSO_TYPES = frozenset({0x0001, 0x0002, 0x0003, 0x0040, 0x0041, 0x0042, 0x0043})


_EDNS_KEYS = ("enabled", "version", "payload", "do", "flags", "options", "nsid")


_DSO_KEYS = ("inactivity_timeout", "keepalive_interval", "tlv_type", "push_name", "push_type",
             "push_class", "push_wait", "persistent", "allow_udp", "padding_block")  # fmt: skip


_FALLBACK_KEYS = ("kind", "qname", "qtype")


_DOH_KEYS = ("method", "path")


_PROBE_KEYS = ("kind", "transport", "port", "interval", "timeout", "qname", "qtype", "qclass",
               "rd", "header_flags", "question", "edns", "zone", "serial", "opcode",
               "tcp_fallback", "max_transfer_bytes", "expect", "tsig_key", "dso", "doh",
               "fallback", "allow_notify")  # fmt: skip


_DEFAULTS_KEYS = tuple(k for k in _PROBE_KEYS if k != "kind")


_INLINE_KEYS = ("name", "use", *_PROBE_KEYS)


_DSO_KINDS = frozenset(k for k in ProbeKind if k.is_dso)


#: Keys that only mean something for some kinds; set elsewhere they are a mistake.
_KIND_ONLY: Mapping[str, frozenset[ProbeKind]] = {
    "serial": frozenset({ProbeKind.IXFR}),
    "opcode": frozenset({ProbeKind.OPCODE}),
    "question": frozenset({ProbeKind.OPCODE}),
    "header_flags": frozenset({ProbeKind.QUERY, ProbeKind.OPCODE}),
    "allow_notify": frozenset({ProbeKind.NOTIFY, ProbeKind.OPCODE}),
    "max_transfer_bytes": frozenset({ProbeKind.IXFR, ProbeKind.AXFR}),
    "zone": frozenset({ProbeKind.IXFR, ProbeKind.AXFR, ProbeKind.UPDATE, ProbeKind.NOTIFY}),
    "fallback": _DSO_KINDS | {ProbeKind.IXFR},
    **{f"dso.{k}": _DSO_KINDS for k in _DSO_KEYS},
}


#: Kinds that need a connection: RFC 8490 §5.1 (DSO), RFC 5936 §4.2 (AXFR). IXFR
#: may use UDP (RFC 1995 §2) but is usually answered over TCP, hence its default.
_CONNECTION_KINDS = _DSO_KINDS | {ProbeKind.AXFR}


_TCP_BY_DEFAULT = _CONNECTION_KINDS | {ProbeKind.IXFR}


#: Parses one YAML value, raising _WantError.
_Parser = Callable[[_Ctx, yaml.Node], Any]


#: One config layer of probe fields, flattened: "edns.version" -> where it was set.
_Layer = dict[str, _Src]


class _Env(NamedTuple):
    defaults: _Layer
    templates: Mapping[str, tuple[_Layer, ProbeSpec | None]]
    tsig_keys: Mapping[str, TsigKey]


def _layer(ctx: _Ctx, src: _Src, allowed: Sequence[str]) -> _Layer | None:
    """Probe fields of one mapping, with edns/dso flattened so layers merge per sub-key."""
    fields = ctx.mapping(src.node, src.key, allowed)
    if fields is None:
        return None
    out: _Layer = {}
    for name, sub in fields.items():
        if name == "edns" and isinstance(sub.node, yaml.ScalarNode):
            out["edns.enabled"] = sub  # `edns: false` shorthand
        elif name in ("edns", "dso", "doh"):
            allowed_inner = {"edns": _EDNS_KEYS, "dso": _DSO_KEYS, "doh": _DOH_KEYS}[name]
            inner = ctx.mapping(sub.node, sub.key, allowed_inner)
            out.update({f"{name}.{k}": v for k, v in (inner or {}).items()})
        else:
            out[name] = sub
    return out


def _templates(
    ctx: _Ctx, src: _Src, defaults: _Layer, keys: Mapping[str, TsigKey]
) -> dict[str, tuple[_Layer, ProbeSpec | None]]:
    out: dict[str, tuple[_Layer, ProbeSpec | None]] = {}
    for name, entry in (ctx.mapping(src.node, src.key, None) or {}).items():
        if not _NAME_RE.fullmatch(name):
            ctx.fail(entry.node, entry.key, "expected a template name of letters, digits, _.-")
        layer = _layer(ctx, entry, _PROBE_KEYS)
        if layer is None:
            continue
        spec = _build_probe(ctx, name, entry, [(defaults, False), (layer, True)], keys)
        out[name] = (layer, spec)
    return out


def _probe_entry(ctx: _Ctx, src: _Src, env: _Env) -> ProbeSpec | None:
    """One item of a target's ``probes:``: a template name, or an inline mapping."""
    if isinstance(src.node, yaml.ScalarNode):
        ref = ctx.get(src, _str)
        if ref is None:
            return None
        if ref not in env.templates:
            ctx.fail(src.node, src.key, _unknown_template(ref, env))
            return None
        return env.templates[ref][1]
    layer = _layer(ctx, src, _INLINE_KEYS)
    if layer is None:
        return None
    layers: list[tuple[_Layer, bool]] = [(env.defaults, False)]
    name: str | None = None
    if "use" in layer:
        used = ctx.get(layer.pop("use"), _str)
        if used is None:
            return None
        if used not in env.templates:
            ctx.fail(src.node, f"{src.key}.use", _unknown_template(used, env))
            return None
        layers.append((env.templates[used][0], True))
        name = used
    if "name" in layer:
        name = ctx.get(layer.pop("name"), _probe_name)
    elif name is None:
        ctx.fail(src.node, f"{src.key}.name", "expected a probe name (missing)")
    layers.append((layer, True))
    if name is None:
        return None
    return _build_probe(ctx, name, src, layers, env.tsig_keys)


def _unknown_template(name: str, env: _Env) -> str:
    known = sorted(env.templates)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (
        f"expected the name of a template under top-level `probes:` ({hint}"
        f"defined: {', '.join(known) or 'none'}) (got {name!r})"
    )


#: Header bits a probe may set besides RD (`rd:`), by their dig/genreport names.
HEADER_FLAGS: Mapping[str, int] = {"aa": 0x0400, "tc": 0x0200, "ra": 0x0080, "z": 0x0040,
                                   "ad": 0x0020, "cd": 0x0010}  # fmt: skip


def _header_flags(ctx: _Ctx, node: yaml.Node) -> int:
    if not isinstance(node, yaml.SequenceNode):
        raise _WantError(f"a list of header flags ({', '.join(HEADER_FLAGS)})")
    bits = 0
    for item in node.value:
        name = str(ctx.scalar(item)).lower()
        if name not in HEADER_FLAGS:
            raise _WantError(f"header flags among {', '.join(HEADER_FLAGS)} (RD is `rd:`; "
                             f"got {name!r})")  # fmt: skip
        bits |= HEADER_FLAGS[name]
    return bits


#: Config key -> (ProbeSpec field, parser) for the flat fields.
_PROBE_FIELDS: Mapping[str, tuple[str, _Parser]] = {
    "interval": ("interval", _positive_duration),
    "timeout": ("timeout", _positive_duration),
    "qname": ("qname", _dns_name),
    "qtype": ("qtype", _rdtype),
    "qclass": ("qclass", _rdclass),
    "rd": ("recursion_desired", _bool),
    "header_flags": ("header_flags", _header_flags),
    "question": ("question", _bool),
    "zone": ("zone", _dns_name),
    "serial": ("serial", _int_in(0, 2**32 - 1)),
    "opcode": ("opcode", _int_in(0, 15, "an opcode")),
    "tcp_fallback": ("tcp_fallback", _bool),
    "max_transfer_bytes": ("max_transfer_bytes", _int_in(512, 2**31 - 1, "a byte count")),
    "expect": ("expect", _expect),
    "allow_notify": ("allow_notify", _bool),
    "port": ("port", _int_in(1, 65535, "a port")),
}


_DOH_FIELDS: Mapping[str, tuple[str, _Parser]] = {
    "method": ("method", _http_method),
    "path": ("path", _uri_path),
}


_EDNS_FIELDS: Mapping[str, tuple[str, _Parser]] = {
    "enabled": ("enabled", _bool),
    "version": ("version", _int_in(0, 255, "an EDNS version")),
    "payload": ("payload", _int_in(512, 65535, "a UDP payload size")),
    "do": ("dnssec_ok", _bool),
    "flags": ("flags", _int_in(0, 0x7FFF, "EDNS flag bits (DO is `do: true`)")),
    "nsid": ("nsid", _bool),
}


_DSO_FIELDS: Mapping[str, tuple[str, _Parser]] = {
    "inactivity_timeout": ("inactivity_timeout", _duration),
    "keepalive_interval": ("keepalive_interval", _duration),
    "tlv_type": ("tlv_type", _int_in(1, 65535, "a DSO TLV type")),
    "push_name": ("push_name", _dns_name),
    "push_type": ("push_type", _rdtype),
    "push_class": ("push_class", _rdclass),
    "push_wait": ("push_wait", _duration),
    "persistent": ("persistent", _bool),
    "allow_udp": ("allow_udp", _bool),
    "padding_block": ("padding_block", _int_in(1, 65535, "a block size")),
}


def _fields(
    ctx: _Ctx, merged: _Layer, prefix: str, table: Mapping[str, tuple[str, _Parser]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (attr, parse) in table.items():
        src = merged.get(prefix + key)
        if src is not None and (value := ctx.get(src, parse)) is not None:
            out[attr] = value
    return out


def _build_probe(
    ctx: _Ctx,
    name: str,
    where: _Src,
    layers: Sequence[tuple[_Layer, bool]],
    keys: Mapping[str, TsigKey],
) -> ProbeSpec | None:
    """Merge layers, later wins. The flag says "set for this probe" rather than "a
    default for many probes"; only the former gets kind-specific checks."""
    merged: _Layer = {}
    explicit: set[str] = set()
    for layer, is_explicit in layers:
        merged.update(layer)
        if is_explicit:
            explicit.update(layer)
        else:
            explicit.difference_update(layer)
    errors_before = len(ctx.errors)
    if "kind" not in merged:
        ctx.fail(where.node, f"{where.key}.kind", "expected a probe kind (missing)")
        return None
    kind = ctx.get(merged["kind"], _kind)
    if kind is None:
        return None
    for key in sorted(explicit):
        allowed = _KIND_ONLY.get(key)
        if allowed is not None and kind not in allowed:
            kinds = ", ".join(sorted(k.value for k in allowed))
            src = merged[key]
            ctx.fail(src.node, src.key, f"expected only for kinds {kinds} (got kind {kind.value})")

    values = _probe_values(ctx, merged, keys)
    values["transport"] = _probe_transport(ctx, kind, merged, explicit)
    if len(ctx.errors) > errors_before:
        return None
    spec = ProbeSpec(name=name, kind=kind, **values)
    if "expect" not in merged:
        spec = replace(spec, expect=default_expect(spec))
    _check_probe(ctx, spec, merged, where, explicit)
    return spec if len(ctx.errors) == errors_before else None


def _probe_values(ctx: _Ctx, merged: _Layer, keys: Mapping[str, TsigKey]) -> dict[str, Any]:
    """ProbeSpec keyword arguments from merged layers (all but name, kind, transport)."""
    values = _fields(ctx, merged, "", _PROBE_FIELDS)
    edns = EdnsSettings(**_fields(ctx, merged, "edns.", _EDNS_FIELDS))
    if "edns.options" in merged:
        edns = replace(edns, options=_edns_options(ctx, merged["edns.options"]))
    values["edns"] = edns
    values["dso"] = DsoSettings(**_fields(ctx, merged, "dso.", _DSO_FIELDS))
    values["doh"] = DohSettings(**_fields(ctx, merged, "doh.", _DOH_FIELDS))
    if "tsig_key" in merged:
        values["tsig_key"] = _tsig_ref(ctx, merged["tsig_key"], keys)
    if "fallback" in merged:
        values["fallback"] = _fallback(ctx, merged["fallback"])
    return values


def _check_defaults(ctx: _Ctx, defaults: _Layer, keys: Mapping[str, TsigKey]) -> None:
    """Report bad defaults even when no probe uses them (errors are de-duplicated)."""
    values = _probe_values(ctx, defaults, keys)
    if "transport" in defaults:
        ctx.get(defaults["transport"], _transport)
    timeout, interval = values.get("timeout"), values.get("interval")
    if timeout is not None and interval is not None and timeout > interval:
        src = defaults["timeout"]
        ctx.fail(
            src.node,
            src.key,
            f"expected timeout <= interval (got timeout {timeout:g}s, interval {interval:g}s)",
        )


def _probe_transport(ctx: _Ctx, kind: ProbeKind, merged: _Layer, explicit: set[str]) -> Transport:
    default = Transport.TCP if kind in _TCP_BY_DEFAULT else Transport.UDP
    if "transport" not in merged:
        return default
    transport = ctx.get(merged["transport"], _transport) or default
    # A global `defaults: {transport: udp}` means "plain DNS", not "DSO over UDP".
    if "transport" not in explicit and transport is Transport.UDP:
        return default
    return transport


def _check_probe(ctx: _Ctx, spec: ProbeSpec, merged: _Layer, where: _Src,
                 explicit: set[str]) -> None:  # fmt: skip
    def at(key: str) -> _Src:
        return merged.get(key) or _Src(where.node, f"{where.key}.{key}")

    if spec.timeout > spec.interval:
        src = at("timeout") if "timeout" in merged else at("interval")
        ctx.fail(
            src.node,
            src.key,
            f"expected timeout <= interval (got timeout {spec.timeout:g}s, "
            f"interval {spec.interval:g}s)",
        )
    if spec.sends_notify and not spec.allow_notify:
        src = at("allow_notify")
        what = "a notify probe" if spec.kind is ProbeKind.NOTIFY else "opcode 4 (NOTIFY)"
        ctx.fail(
            src.node,
            src.key,
            f"expected `allow_notify: true` for {what}: NOTIFY makes a secondary "
            "query its primary (RFC 1996) (got no opt-in)",
        )
    if spec.kind is ProbeKind.DSO_TLV and (why := dso_tlv_type_problem(spec.dso.tlv_type)):
        src = at("dso.tlv_type")
        ctx.fail(src.node, src.key, f"expected {why}")
    if spec.transport is Transport.UDP and spec.kind.is_dso and not spec.dso.allow_udp:
        src = at("transport")
        ctx.fail(
            src.node,
            src.key,
            "expected tcp or tls: DSO needs a connection (RFC 8490 §5.1); set "
            "`dso: {allow_udp: true}` to send it over UDP anyway (got udp)",
        )
    if spec.transport in (Transport.DOH, Transport.DOQ) and spec.kind.is_dso:
        src = at("transport")
        ctx.fail(
            src.node,
            src.key,
            "expected tcp or tls: RFC 8490 defines DSO sessions over TCP and TLS only; "
            "DoH maps one query to one HTTP exchange (RFC 8484 §4.1) and DoQ leaves out "
            f"the server-initiated messages DSO needs (RFC 9250 §1) (got {spec.transport})",
        )
    doh_keys = sorted(k for k in merged if k.startswith("doh."))
    if doh_keys and spec.transport is not Transport.DOH and doh_keys[0] in explicit:
        src = merged[doh_keys[0]]
        ctx.fail(src.node, src.key,
                 f"expected only with transport doh (got transport {spec.transport})")  # fmt: skip
    if spec.transport is Transport.UDP and spec.kind is ProbeKind.AXFR:
        src = at("transport")
        ctx.fail(
            src.node,
            src.key,
            "expected tcp or tls: AXFR needs a connection (RFC 5936 §4.2) (got udp)",
        )
    if spec.dso.keepalive_interval <= 0 or spec.dso.inactivity_timeout < 0:
        src = at("dso.keepalive_interval")
        ctx.fail(src.node, src.key, "expected a keepalive interval above zero (got 0)")


def _edns_options(ctx: _Ctx, src: _Src) -> tuple[tuple[int, bytes], ...]:
    out: list[tuple[int, bytes]] = []
    for item in ctx.sequence(src.node, src.key) or []:
        fields = ctx.mapping(item.node, item.key, ("code", "data"))
        if fields is None:
            continue
        if "code" not in fields:
            ctx.fail(item.node, f"{item.key}.code", "expected an option code (missing)")
            continue
        code = ctx.get(fields["code"], _int_in(0, 65535, "an option code"))
        data = ctx.get(fields["data"], _hex) if "data" in fields else b""
        if code is not None and data is not None:
            out.append((code, data))
    return tuple(out)


def _tsig_ref(ctx: _Ctx, src: _Src, keys: Mapping[str, TsigKey]) -> TsigKey | None:
    name = ctx.get(src, _str)
    if name is None:
        return None
    if name not in keys:
        defined = ", ".join(sorted(keys)) or "none"
        ctx.fail(
            src.node,
            src.key,
            f"expected a key defined under top-level `tsig_keys:` (defined: {defined}) "
            f"(got {name!r})",
        )
        return None
    return keys[name]


def _fallback(ctx: _Ctx, src: _Src) -> FallbackSettings | None:
    fields = ctx.mapping(src.node, src.key, _FALLBACK_KEYS)
    if fields is None:
        return None
    out = FallbackSettings()
    if "kind" in fields and (kind := ctx.get(fields["kind"], _kind)) is not None:
        if kind.is_dso:
            ctx.fail(
                fields["kind"].node,
                fields["kind"].key,
                f"expected a traditional (non-DSO) kind (got {kind.value!r})",
            )
        out = replace(out, kind=kind)
    if "qname" in fields:
        out = replace(out, qname=ctx.get(fields["qname"], _dns_name))
    if "qtype" in fields:
        out = replace(out, qtype=ctx.get(fields["qtype"], _rdtype))
    return out
