"""YAML configuration -> frozen, typed dataclasses.

Every error names the file, line and key, and what was expected
(:class:`ConfigError`). Loading is pure apart from reading the file: a reload
that fails leaves the caller's last good :class:`Config` untouched.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import enum
import functools
import importlib.resources
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, TypeVar

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import yaml

from exporter.causes import RCODE_NAMES, Cause
from exporter.kinds import ProbeKind

DEFAULT_LISTEN = "127.0.0.1:18553"


class Transport(enum.StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"


class ConfigError(Exception):
    """A config problem, located: ``file:line: key: message``."""

    def __init__(self, path: str, line: int | None, key: str, message: str) -> None:
        self.path, self.line, self.key, self.message = path, line, key, message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {key or '(top level)'}: {message}")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """DNS over TLS client settings (RFC 7858); verification is on by default."""

    ca_file: str | None = None
    server_name: str | None = None
    cert_file: str | None = None
    key_file: str | None = field(default=None, repr=False)
    verify: bool = True


@dataclass(frozen=True, slots=True)
class EdnsSettings:
    """The OPT record we send (RFC 6891). ``enabled=False`` sends none."""

    enabled: bool = True
    version: int = 0
    payload: int = 1232
    dnssec_ok: bool = False
    #: Extra EDNS header flag bits to set (besides DO): compliance probes set an
    #: unassigned one, which a server must ignore and clear in its reply.
    flags: int = 0
    #: (option code, option data) pairs; unknown codes must be ignored by servers.
    options: tuple[tuple[int, bytes], ...] = ()
    nsid: bool = False


@dataclass(frozen=True, slots=True)
class TsigKey:
    name: str
    algorithm: str
    secret: str = field(repr=False)  # base64; never logged, never a label

    def __str__(self) -> str:
        return f"TsigKey({self.name}, {self.algorithm}, secret=<redacted>)"


@dataclass(frozen=True, slots=True)
class DsoSettings:
    """Knobs of the DSO probe kinds (RFC 8490, RFC 8765)."""

    #: Keepalive TLV we propose (RFC 8490 §7.1), in seconds.
    inactivity_timeout: float = 15.0
    keepalive_interval: float = 15.0
    #: TLV type for ``dso_tlv``: by default an unassigned type, outside the
    #: experimental range 0xF800-0xFBFF that vendors use.
    tlv_type: int = 0xF7FF
    #: SUBSCRIBE question for ``dso_push_subscribe``.
    push_name: str = "."
    push_type: int = 6  # SOA
    push_class: int = 1
    #: How long to wait for PUSH messages after a successful SUBSCRIBE.
    push_wait: float = 0.0
    #: Keep one session per target open across probes (keepalives on the
    #: server-granted interval).
    persistent: bool = False
    #: Send DSO over UDP anyway; the result then says ``dso_over_udp``.
    allow_udp: bool = False
    #: Padding block size for ``dso_padding`` (RFC 8467 style block padding).
    padding_block: int = 128


@dataclass(frozen=True, slots=True)
class FallbackSettings:
    """Traditional query to run when DSO is not available (or AXFR for an IXFR
    answered with NOTIMP)."""

    kind: ProbeKind = ProbeKind.QUERY
    qname: str | None = None  # None: the probe's own name
    qtype: int | None = None


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One configured probe; a target runs several."""

    name: str
    kind: ProbeKind
    transport: Transport = Transport.UDP
    interval: float = 60.0
    timeout: float = 5.0
    qname: str = "."
    qtype: int = 6  # SOA
    qclass: int = 1
    recursion_desired: bool = False
    edns: EdnsSettings = EdnsSettings()
    #: Zone for ixfr/axfr/update/notify; ``None`` means the target's zone.
    zone: str | None = None
    #: IXFR: the serial we claim to have (RFC 1995 §3).
    serial: int = 0
    #: ``opcode`` kind: the raw opcode 0-15.
    opcode: int = 15
    #: A truncated UDP reply is retried over TCP (RFC 7766); if False it is
    #: reported as ``truncated``.
    tcp_fallback: bool = True
    #: Transfers read only this much before classifying and closing.
    max_transfer_bytes: int = 65536
    #: Rcode mnemonics ("NOERROR") and/or cause names ("none") that count as
    #: healthy for ``dnsgap_probe_success``.
    expect: frozenset[str] = frozenset({"none"})
    tsig_key: TsigKey | None = None
    dso: DsoSettings = DsoSettings()
    fallback: FallbackSettings | None = None
    #: ``notify`` probes only run when this is True (they make secondaries refresh).
    allow_notify: bool = False


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    host: str
    port: int
    probes: tuple[ProbeSpec, ...]
    zone: str = "."
    tls: TlsSettings = TlsSettings()
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The built-in survey preset the target asked for ("authoritative",
    #: "recursive"), if any; its probes are already in ``probes``.
    survey: str | None = None


@dataclass(frozen=True, slots=True)
class ProbeEndpointSettings:
    """``GET /probe`` policy: configured targets only, unless ad-hoc is allowed."""

    allow_adhoc: bool = False
    adhoc_cidrs: tuple[str, ...] = ()
    max_concurrency: int = 16
    max_per_client: int = 4


@dataclass(frozen=True, slots=True)
class HttpSettings:
    listen: str = DEFAULT_LISTEN
    #: Exporter-toolkit style web config file (TLS, basic auth).
    web_config_file: str | None = None
    probe: ProbeEndpointSettings = ProbeEndpointSettings()


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    max_concurrency: int = 256
    #: Fraction of the interval over which a probe's first run is spread.
    jitter: float = 1.0
    #: Drop the per-probe duration histogram (fleet scale: fewer series).
    duration_histogram: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    targets: tuple[Target, ...]
    http: HttpSettings = HttpSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    #: Named probe templates (config ``probes:`` section).
    probes: Mapping[str, ProbeSpec] = field(default_factory=dict)
    tsig_keys: Mapping[str, TsigKey] = field(default_factory=dict)
    source: str = "<built-in>"


# --------------------------------------------------------------------------
# Loading: YAML text -> Config. Pure apart from load_config reading the file.
# --------------------------------------------------------------------------


class ConfigErrors(ConfigError):  # noqa: N818 - the plural of ConfigError
    """Several config problems; located by the first, ``str`` lists them all."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.path, first.line, first.key, first.message)
        self.errors: tuple[ConfigError, ...] = tuple(errors)
        self.args = ("\n".join(str(e) for e in errors),)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def load_config(path: str) -> Config:
    """Read and validate a config file; raises :class:`ConfigError` (never anything else)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, "(file)", f"a readable UTF-8 file ({exc})") from exc
    return parse_config(text, path)


def parse_config(text: str, source: str) -> Config:
    """Validate config text; ``source`` names it in errors. Raises :class:`ConfigError`."""
    root = _compose(text, source)
    ctx = _Ctx(source)
    try:
        config = _build_config(ctx, root)
    except RecursionError:
        # A self-referencing alias/merge (`&a {<<: *a}`) is not a config.
        raise ConfigError(source, None, "(yaml)", "a tree, not a self-referencing alias") from None
    if ctx.errors:
        raise ctx.errors[0] if len(ctx.errors) == 1 else ConfigErrors(ctx.errors)
    assert config is not None  # no errors means every part was built
    return config


# -- public helpers (also used by the HTTP /probe endpoint and the CLI) -----

_DURATION_RE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from ``30s``, ``2m``, ``1m30s``, ``500ms``, ``1h`` or a number of seconds.

    Raises ValueError; the result is finite and may be 0 (callers check ranges).
    """
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION_RE.fullmatch(value.strip()):
        seconds = sum(
            float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART_RE.findall(value)
        )
    else:
        raise ValueError("a duration like 30s, 2m, 500ms or a number of seconds")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a finite, non-negative duration")
    return seconds


_HOST_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _valid_hostname(host: str) -> bool:
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return 0 < len(host) <= 253 and all(_HOST_LABEL_RE.fullmatch(lbl) for lbl in labels)


def parse_server(text: str, default_port: int = 53) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``v4``, ``v6`` or ``hostname`` -> (host, port).

    Raises ValueError saying what was expected.
    """
    text = text.strip()
    port_text: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("[ipv6]:port")
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("an IPv6 address inside [brackets]") from None
    elif text.count(":") > 1:  # bare IPv6 literal, no port
        host = text
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("an IPv6 address (write [v6]:port to give a port)") from None
    else:
        host, sep, port_text_ = text.partition(":")
        port_text = port_text_ if sep else None
        if not _valid_hostname(host):
            raise ValueError("host:port, [ipv6]:port or a hostname")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError("a port 1-65535 after the colon")
    return host, int(port_text)


def resolve_zone_names(spec: ProbeSpec, zone: str) -> ProbeSpec:
    """Replace ``@`` (the target's zone, as in zone files) in a probe's names."""

    def at(name: str) -> str:
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


SURVEY_PRESETS = ("authoritative", "recursive")


def survey_probes(preset: str, zone: str = ".") -> tuple[ProbeSpec, ...]:
    """The probes of a built-in survey preset for a zone (no config defaults)."""
    config = parse_config(
        f"targets: [{{name: survey, server: 127.0.0.1, zone: {json.dumps(zone)},"
        f" survey: {json.dumps(preset)}}}]",
        "<survey>",
    )
    return config.targets[0].probes


def default_expect(spec: ProbeSpec) -> frozenset[str]:
    """What a healthy server answers to this probe, when the config does not say."""
    if spec.kind is ProbeKind.QUERY and spec.edns.enabled and spec.edns.version >= 1:
        return frozenset({"bad_version"})  # RFC 6891 §6.1.3
    if spec.kind is ProbeKind.OPCODE and spec.opcode not in _IMPLEMENTED_OPCODES:
        return frozenset({"not_implemented"})  # RFC 1035 §4.1.1, RFC 3425 for IQUERY
    if spec.kind is ProbeKind.DSO_TLV and spec.dso.tlv_type not in _IMPLEMENTED_DSO_TYPES:
        return frozenset({"dso_type_not_implemented"})  # RFC 8490 §5.1.1
    return frozenset({"none"})


# -- internals ---------------------------------------------------------------

# QUERY, NOTIFY, UPDATE, DSO: a header-only message with these is judged on its merits.
_IMPLEMENTED_OPCODES = frozenset({0, 4, 5, 6})
# Keepalive, Retry Delay, Padding, and the DNS Push types (RFC 8490, RFC 8765).
_IMPLEMENTED_DSO_TYPES = frozenset({0x0001, 0x0002, 0x0003, 0x0040, 0x0041, 0x0042, 0x0043})

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: Label names the exporter's own metrics use (or Prometheus reserves).
RESERVED_LABELS = frozenset({
    "target", "probe", "kind", "rcode", "cause", "transport", "opcode", "server", "zone",
    "survey", "dso_type", "instance", "job", "le", "quantile",
})  # fmt: skip

_TSIG_ALGORITHMS = {
    str(a).rstrip(".").lower(): a
    for a in (
        dns.tsig.HMAC_MD5,
        dns.tsig.HMAC_SHA1,
        dns.tsig.HMAC_SHA224,
        dns.tsig.HMAC_SHA256,
        dns.tsig.HMAC_SHA256_128,
        dns.tsig.HMAC_SHA384,
        dns.tsig.HMAC_SHA384_192,
        dns.tsig.HMAC_SHA512,
        dns.tsig.HMAC_SHA512_256,
    )
}

_EXPECT_NAMES = frozenset(c.value for c in Cause) | frozenset(RCODE_NAMES.values())
_RCODE_N_RE = re.compile(r"RCODE\d{1,4}")

_EDNS_KEYS = ("enabled", "version", "payload", "do", "flags", "options", "nsid")
_DSO_KEYS = ("inactivity_timeout", "keepalive_interval", "tlv_type", "push_name", "push_type",
             "push_class", "push_wait", "persistent", "allow_udp", "padding_block")  # fmt: skip
_FALLBACK_KEYS = ("kind", "qname", "qtype")
_PROBE_KEYS = ("kind", "transport", "interval", "timeout", "qname", "qtype", "qclass", "rd",
               "edns", "zone", "serial", "opcode", "tcp_fallback", "max_transfer_bytes",
               "expect", "tsig_key", "dso", "fallback", "allow_notify")  # fmt: skip
_DEFAULTS_KEYS = tuple(k for k in _PROBE_KEYS if k != "kind")
_INLINE_KEYS = ("name", "use", *_PROBE_KEYS)
_SURVEY_KEYS = ("preset", "exclude", *_DEFAULTS_KEYS)
_TARGET_KEYS = ("name", "server", "zone", "tls", "labels", "survey", "probes")
_TLS_KEYS = ("ca_file", "server_name", "cert_file", "key_file", "verify")
_TOP_KEYS = ("http", "scheduler", "defaults", "tsig_keys", "probes", "targets")
_HTTP_KEYS = ("listen", "web_config_file", "probe")
_ENDPOINT_KEYS = ("allow_adhoc", "adhoc_cidrs", "max_concurrency", "max_per_client")
_SCHEDULER_KEYS = ("max_concurrency", "jitter", "duration_histogram")
_TSIG_KEYS = ("algorithm", "secret")

_DSO_KINDS = frozenset(k for k in ProbeKind if k.is_dso)
#: Keys that only mean something for some kinds; set elsewhere they are a mistake.
_KIND_ONLY: Mapping[str, frozenset[ProbeKind]] = {
    "serial": frozenset({ProbeKind.IXFR}),
    "opcode": frozenset({ProbeKind.OPCODE}),
    "allow_notify": frozenset({ProbeKind.NOTIFY}),
    "max_transfer_bytes": frozenset({ProbeKind.IXFR, ProbeKind.AXFR}),
    "zone": frozenset({ProbeKind.IXFR, ProbeKind.AXFR, ProbeKind.UPDATE, ProbeKind.NOTIFY}),
    "fallback": _DSO_KINDS | {ProbeKind.IXFR},
    **{f"dso.{k}": _DSO_KINDS for k in _DSO_KEYS},
}
#: Kinds that need a connection: RFC 8490 §5.1 (DSO), RFC 5936 §4.2 (AXFR). IXFR
#: may use UDP (RFC 1995 §2) but is usually answered over TCP, hence its default.
_CONNECTION_KINDS = _DSO_KINDS | {ProbeKind.AXFR}
_TCP_BY_DEFAULT = _CONNECTION_KINDS | {ProbeKind.IXFR}


class _WantError(Exception):
    """A value failed a check; the message says what was expected."""


class _Src(NamedTuple):
    """A config value with where it came from."""

    node: yaml.Node
    key: str


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


#: libyaml when present: the config of a large fleet composes ~10x faster.
_FAST_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)
#: What libyaml names every mark; such nodes come from the file being parsed.
_UNNAMED = "<unicode string>"


def _compose(text: str, source: str, *, fast: bool = True) -> yaml.Node | None:
    """The node tree (with line marks) of one YAML document; errors become ConfigError.

    ``fast=False`` uses the pure-Python loader, whose marks carry ``source``
    (for preset files, whose errors must not name the user's file).
    """
    loader: yaml.SafeLoader | yaml.CSafeLoader | None = None
    try:
        if fast:
            loader = _FAST_LOADER(text)
        else:
            loader = slow = yaml.SafeLoader(text)
            slow.name = source  # marks name the preset file
        return loader.get_single_node()
    except yaml.reader.ReaderError as exc:  # control characters
        line = text[: exc.position or 0].count("\n") + 1
        raise ConfigError(source, line, "(yaml)", f"printable YAML text ({exc.reason})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        mark_line = None if mark is None else mark.line + 1
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ConfigError(source, mark_line, "(yaml)", f"valid YAML ({what})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, None, "(yaml)", f"valid YAML ({exc})") from None
    finally:
        if loader is not None:
            loader.dispose()


class _Ctx:
    """Collects errors while the config is walked; builds scalars from nodes."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[ConfigError] = []
        self._seen: set[str] = set()
        self._constructor = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node | None, key: str, message: str) -> None:
        if node is None:
            err = ConfigError(self.source, None, key, message)
        else:
            name = str(node.start_mark.name)
            path = self.source if name == _UNNAMED else name
            err = ConfigError(path, _line(node), key, message)
        if str(err) not in self._seen:  # a bad template shows once, not once per use
            self._seen.add(str(err))
            self.errors.append(err)

    def scalar(self, node: yaml.Node) -> object:
        if not isinstance(node, yaml.ScalarNode):
            raise _WantError("a single value")
        try:
            return self._constructor.construct_object(node, deep=True)
        except Exception:  # unknown tags, impossible dates: any failure is "not a value"
            raise _WantError("a plain YAML value") from None

    def get(
        self, src: _Src, parse: Callable[[_Ctx, yaml.Node], _T], *, secret: bool = False
    ) -> _T | None:
        """Parse one value; on failure record ``expected (got X)`` and return None.

        ``secret=True`` keeps the value out of the message: config errors reach
        logs and the status page, and a near-miss secret is still a secret.
        """
        try:
            return parse(self, src.node)
        except _WantError as bad:
            got = _got(src.node)
            if secret and isinstance(src.node, yaml.ScalarNode):
                got = f"{len(str(src.node.value))} characters, not shown"
            self.fail(src.node, src.key, f"expected {bad} (got {got})")
            return None

    def mapping(
        self, node: yaml.Node, key: str, allowed: Sequence[str] | None, *, extensions: bool = False
    ) -> dict[str, _Src] | None:
        """A mapping's entries by key; unknown keys reported with a suggestion.

        ``allowed=None`` accepts any string key (names of templates, labels...).
        """
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, key, f"expected a mapping (got {_got(node)})")
            return None
        try:
            self._constructor.flatten_mapping(node)  # YAML merge keys: <<: *base
        except yaml.YAMLError:
            self.fail(node, key, "expected `<<:` to merge mappings only")
            return None
        out: dict[str, _Src] = {}
        for knode, vnode in node.value:
            name = self.get(_Src(knode, key or "(top)"), _key_text)
            if name is None:
                continue
            sub = f"{key}.{name}" if key else name
            if name in out:
                self.fail(knode, sub, "expected each key once (got a duplicate)")
            elif extensions and name.startswith("x-"):
                continue  # a home for YAML anchors, as in docker-compose files
            elif allowed is not None and name not in allowed:
                self.fail(knode, sub, _unknown_key(name, allowed))
            else:
                out[name] = _Src(vnode, sub)
        return out

    def sequence(self, node: yaml.Node, key: str) -> list[_Src] | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, key, f"expected a list (got {_got(node)})")
            return None
        return [_Src(n, f"{key}[{i}]") for i, n in enumerate(node.value)]


_T = TypeVar("_T")


def _got(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == "tag:yaml.org,2002:null":
        return "nothing"
    text = str(node.value)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _unknown_key(name: str, allowed: Sequence[str]) -> str:
    hint = ""
    if name == "name" and "qname" in allowed:
        hint = "; the query name is `qname`"
    else:
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        if close:
            hint = f"; did you mean {close[0]!r}?"
    return f"unknown key{hint} (expected one of: {', '.join(allowed)})"


# -- scalar parsers: (ctx, node) -> value, raising _WantError("what was expected") --


def _key_text(ctx: _Ctx, node: yaml.Node) -> str:
    value = ctx.scalar(node)
    if not isinstance(value, str):
        raise _WantError("a text key")
    return value


def _str(ctx: _Ctx, node: yaml.Node) -> str:
    value = ctx.scalar(node)
    if not isinstance(value, str) or not value.strip():
        raise _WantError("a non-empty string (quote numbers and yes/no)")
    return value


def _opt_str(ctx: _Ctx, node: yaml.Node) -> str | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return None
    return _str(ctx, node)


def _bool(ctx: _Ctx, node: yaml.Node) -> bool:
    value = ctx.scalar(node)
    if not isinstance(value, bool):
        raise _WantError("true or false")
    return value


def _int_in(lo: int, hi: int, what: str = "an integer") -> Callable[[_Ctx, yaml.Node], int]:
    def parse(ctx: _Ctx, node: yaml.Node) -> int:
        value = ctx.scalar(node)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _WantError(f"{what} {lo}-{hi}")
        return value

    return parse


def _positive_duration(ctx: _Ctx, node: yaml.Node) -> float:
    try:
        seconds = parse_duration(ctx.scalar(node))
    except ValueError as exc:
        raise _WantError(str(exc)) from None
    if seconds <= 0:
        raise _WantError("a duration above zero")
    return seconds


def _duration(ctx: _Ctx, node: yaml.Node) -> float:
    try:
        return parse_duration(ctx.scalar(node))
    except ValueError as exc:
        raise _WantError(str(exc)) from None


def _fraction(ctx: _Ctx, node: yaml.Node) -> float:
    value = ctx.scalar(node)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _WantError("a number from 0 to 1")
    return float(value)


def _enum_of(enum_cls: type[_E]) -> Callable[[_Ctx, yaml.Node], _E]:
    def parse(ctx: _Ctx, node: yaml.Node) -> _E:
        value = ctx.scalar(node)
        names = ", ".join(str(m.value) for m in enum_cls)
        if not isinstance(value, str):
            raise _WantError(f"one of: {names}")
        try:
            return enum_cls(value.strip().lower())
        except ValueError:
            close = difflib.get_close_matches(value, [str(m.value) for m in enum_cls], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _WantError(f"one of: {names}{hint}") from None

    return parse


_E = TypeVar("_E", bound=enum.Enum)
_kind = _enum_of(ProbeKind)
_transport = _enum_of(Transport)


def _dns_name(ctx: _Ctx, node: yaml.Node) -> str:
    """An absolute domain name (trailing dot added), or ``@`` for the target's zone."""
    text = _str(ctx, node).strip()
    if text == "@":
        return text
    try:
        return dns.name.from_text(text).to_text()
    except (dns.exception.DNSException, UnicodeError, ValueError):
        raise _WantError("a domain name") from None


def _zone_name(ctx: _Ctx, node: yaml.Node) -> str:
    name = _dns_name(ctx, node)
    if name == "@":
        raise _WantError("a domain name (`@` is only for probe names)")
    return name


def _mnemonic(from_text: Callable[[str], int], what: str) -> Callable[[_Ctx, yaml.Node], int]:
    """A 16-bit DNS number given as a mnemonic (``SOA``, ``TYPE65534``) or a number."""

    def parse(ctx: _Ctx, node: yaml.Node) -> int:
        value = ctx.scalar(node)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
            return value
        if isinstance(value, str):
            try:
                return int(from_text(value.strip()))
            except (dns.exception.DNSException, ValueError):
                pass
        raise _WantError(f"{what} or a number 0-65535")

    return parse


_rdtype = _mnemonic(dns.rdatatype.from_text, "a record type like SOA, AAAA, TYPE65534")
_rdclass = _mnemonic(dns.rdataclass.from_text, "a class like IN, CH, CLASS3")


def _hex(ctx: _Ctx, node: yaml.Node) -> bytes:
    value = ctx.scalar(node)
    if value is None:
        return b""
    if isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise _WantError('hex digits like "00ff" (quote them)')


def _expect(ctx: _Ctx, node: yaml.Node) -> frozenset[str]:
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    out: set[str] = set()
    for item in items:
        value = ctx.scalar(item)
        if not isinstance(value, str):
            raise _WantError("rcode names (NOERROR) or cause names (none, not_implemented)")
        text = value.strip()
        name = text.upper() if text.upper() in RCODE_NAMES.values() else text.lower()
        if name not in _EXPECT_NAMES and not _RCODE_N_RE.fullmatch(name.upper()):
            # Upper case looks like an rcode mnemonic, lower case like a cause.
            family = RCODE_NAMES.values() if text.isupper() else [c.value for c in Cause]
            close = difflib.get_close_matches(text, sorted(family), n=1)
            hint = f"; did you mean {close[0]!r} for {text!r}?" if close else f", not {text!r}"
            raise _WantError(f"rcode names (NOERROR) or cause names (none, not_implemented){hint}")
        out.add(name.upper() if _RCODE_N_RE.fullmatch(name.upper()) else name)
    if not out:
        raise _WantError("at least one rcode or cause name")
    return frozenset(out)


def _probe_name(ctx: _Ctx, node: yaml.Node) -> str:
    name = _str(ctx, node)
    if not _NAME_RE.fullmatch(name):
        raise _WantError("a name of letters, digits, '_', '.', '-'")
    return name


def _listen(ctx: _Ctx, node: yaml.Node) -> str:
    text = _str(ctx, node).strip()
    host_part, _, port = text.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _WantError("host:port with a port 1-65535 (host may be empty for all addresses)")
    if host_part:
        try:
            parse_server(text)
        except ValueError:
            raise _WantError("host:port or [ipv6]:port") from None
    return text


def _cidr(ctx: _Ctx, node: yaml.Node) -> str:
    text = _str(ctx, node).strip()
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError:
        raise _WantError("a network like 192.0.2.0/24 or 2001:db8::/32 (no host bits)") from None


def _label_value(ctx: _Ctx, node: yaml.Node) -> str:
    value = ctx.scalar(node)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _WantError("a string label value (quote yes/no/true/false)")
    return str(value)


# -- sections ------------------------------------------------------------------


def _build_config(ctx: _Ctx, root: yaml.Node | None) -> Config | None:
    if root is None:
        ctx.fail(None, "(top)", "expected a mapping with `targets:` (got an empty file)")
        return None
    top = ctx.mapping(root, "", _TOP_KEYS, extensions=True)
    if top is None:
        return None
    keys = _tsig_keys(ctx, top["tsig_keys"]) if "tsig_keys" in top else {}
    defaults: _Layer = {}
    if "defaults" in top:
        defaults = _layer(ctx, top["defaults"], _DEFAULTS_KEYS) or {}
        _check_defaults(ctx, defaults, keys)
    templates: dict[str, tuple[_Layer, ProbeSpec | None]] = {}
    if "probes" in top:
        templates = _templates(ctx, top["probes"], defaults, keys)
    env = _Env(defaults, templates, keys)
    targets: list[Target] = []
    if "targets" in top:
        targets = _targets(ctx, top["targets"], env)
    http = _http(ctx, top["http"]) if "http" in top else HttpSettings()
    scheduler = _scheduler(ctx, top["scheduler"]) if "scheduler" in top else SchedulerSettings()
    if ctx.errors:
        return None
    return Config(
        targets=tuple(targets),
        http=http,
        scheduler=scheduler,
        # Templates serve ad-hoc /probe targets, whose zone is the root: bind "@" to it.
        probes={
            name: resolve_zone_names(spec, ".")
            for name, (_, spec) in templates.items()
            if spec is not None
        },
        tsig_keys=keys,
        source=ctx.source,
    )


def _tsig_keys(ctx: _Ctx, src: _Src) -> dict[str, TsigKey]:
    entries = ctx.mapping(src.node, src.key, None) or {}
    out: dict[str, TsigKey] = {}
    for name, entry in entries.items():
        fields = ctx.mapping(entry.node, entry.key, _TSIG_KEYS)
        if fields is None:
            continue
        try:
            key_name: str | None = dns.name.from_text(name).to_text()
        except (dns.exception.DNSException, UnicodeError, ValueError):
            ctx.fail(entry.node, entry.key, f"expected a domain name as key name (got {name!r})")
            key_name = None
        algorithm = secret = None
        if "algorithm" in fields:
            algorithm = ctx.get(fields["algorithm"], _tsig_algorithm)
        else:
            ctx.fail(entry.node, f"{entry.key}.algorithm", "expected a TSIG algorithm (missing)")
        if "secret" in fields:
            secret = ctx.get(fields["secret"], _base64, secret=True)
        else:
            ctx.fail(entry.node, f"{entry.key}.secret", "expected a base64 secret (missing)")
        if key_name and algorithm and secret:
            out[name] = TsigKey(name=key_name, algorithm=algorithm, secret=secret)
    return out


def _tsig_algorithm(ctx: _Ctx, node: yaml.Node) -> str:
    text = _str(ctx, node).strip().lower().rstrip(".")
    if text not in _TSIG_ALGORITHMS:
        raise _WantError(f"one of: {', '.join(sorted(_TSIG_ALGORITHMS))}")
    return text


def _base64(ctx: _Ctx, node: yaml.Node) -> str:
    text = _str(ctx, node).strip()
    try:
        if base64.b64decode(text, validate=True):
            return text
    except (binascii.Error, ValueError):
        pass
    raise _WantError("a base64 secret")


def _http(ctx: _Ctx, src: _Src) -> HttpSettings:
    fields = ctx.mapping(src.node, src.key, _HTTP_KEYS) or {}
    out = HttpSettings()
    if "listen" in fields and (listen := ctx.get(fields["listen"], _listen)):
        out = replace(out, listen=listen)
    if "web_config_file" in fields:
        out = replace(out, web_config_file=ctx.get(fields["web_config_file"], _opt_str))
    if "probe" in fields:
        out = replace(out, probe=_endpoint(ctx, fields["probe"]))
    return out


#: Parses one YAML value, raising _WantError.
_Parser = Callable[[_Ctx, yaml.Node], Any]
_ENDPOINT_FIELDS: Mapping[str, tuple[str, _Parser]] = {
    "allow_adhoc": ("allow_adhoc", _bool),
    "max_concurrency": ("max_concurrency", _int_in(1, 65535)),
    "max_per_client": ("max_per_client", _int_in(1, 65535)),
}
_SCHEDULER_FIELDS: Mapping[str, tuple[str, _Parser]] = {
    "max_concurrency": ("max_concurrency", _int_in(1, 1_000_000)),
    "jitter": ("jitter", _fraction),
    "duration_histogram": ("duration_histogram", _bool),
}


def _endpoint(ctx: _Ctx, src: _Src) -> ProbeEndpointSettings:
    fields = ctx.mapping(src.node, src.key, _ENDPOINT_KEYS) or {}
    values = _fields(ctx, fields, "", _ENDPOINT_FIELDS)
    if "adhoc_cidrs" in fields:
        items = ctx.sequence(fields["adhoc_cidrs"].node, fields["adhoc_cidrs"].key) or []
        cidrs = [c for c in (ctx.get(i, _cidr) for i in items) if c is not None]
        values["adhoc_cidrs"] = tuple(cidrs)
    return ProbeEndpointSettings(**values)


def _scheduler(ctx: _Ctx, src: _Src) -> SchedulerSettings:
    fields = ctx.mapping(src.node, src.key, _SCHEDULER_KEYS) or {}
    return SchedulerSettings(**_fields(ctx, fields, "", _SCHEDULER_FIELDS))


# -- probes ----------------------------------------------------------------------

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
        elif name in ("edns", "dso"):
            inner = ctx.mapping(sub.node, sub.key, _EDNS_KEYS if name == "edns" else _DSO_KEYS)
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


#: Config key -> (ProbeSpec field, parser) for the flat fields.
_PROBE_FIELDS: Mapping[str, tuple[str, _Parser]] = {
    "interval": ("interval", _positive_duration),
    "timeout": ("timeout", _positive_duration),
    "qname": ("qname", _dns_name),
    "qtype": ("qtype", _rdtype),
    "qclass": ("qclass", _rdclass),
    "rd": ("recursion_desired", _bool),
    "zone": ("zone", _dns_name),
    "serial": ("serial", _int_in(0, 2**32 - 1)),
    "opcode": ("opcode", _int_in(0, 15, "an opcode")),
    "tcp_fallback": ("tcp_fallback", _bool),
    "max_transfer_bytes": ("max_transfer_bytes", _int_in(512, 2**31 - 1, "a byte count")),
    "expect": ("expect", _expect),
    "allow_notify": ("allow_notify", _bool),
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
    _check_probe(ctx, spec, merged, where)
    return spec if len(ctx.errors) == errors_before else None


def _probe_values(ctx: _Ctx, merged: _Layer, keys: Mapping[str, TsigKey]) -> dict[str, Any]:
    """ProbeSpec keyword arguments from merged layers (all but name, kind, transport)."""
    values = _fields(ctx, merged, "", _PROBE_FIELDS)
    edns = EdnsSettings(**_fields(ctx, merged, "edns.", _EDNS_FIELDS))
    if "edns.options" in merged:
        edns = replace(edns, options=_edns_options(ctx, merged["edns.options"]))
    values["edns"] = edns
    values["dso"] = DsoSettings(**_fields(ctx, merged, "dso.", _DSO_FIELDS))
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


def _check_probe(ctx: _Ctx, spec: ProbeSpec, merged: _Layer, where: _Src) -> None:
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
    if spec.kind is ProbeKind.NOTIFY and not spec.allow_notify:
        src = at("allow_notify")
        ctx.fail(
            src.node,
            src.key,
            "expected `allow_notify: true` for a notify probe: NOTIFY makes a secondary "
            "query its primary (RFC 1996) (got no opt-in)",
        )
    if spec.transport is Transport.UDP and spec.kind.is_dso and not spec.dso.allow_udp:
        src = at("transport")
        ctx.fail(
            src.node,
            src.key,
            "expected tcp or tls: DSO needs a connection (RFC 8490 §5.1); set "
            "`dso: {allow_udp: true}` to send it over UDP anyway (got udp)",
        )
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


# -- targets ---------------------------------------------------------------------


def _targets(ctx: _Ctx, src: _Src, env: _Env) -> list[Target]:
    out: list[Target] = []
    seen: dict[str, int] = {}
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
        name = found.get("name", found.get("server"))
        return name if isinstance(name, str) else None
    return None


def _target(ctx: _Ctx, src: _Src, env: _Env) -> Target | None:
    fields = ctx.mapping(src.node, src.key, _TARGET_KEYS)
    if fields is None:
        return None
    errors_before = len(ctx.errors)
    if "server" not in fields:
        ctx.fail(src.node, f"{src.key}.server", "expected host:port or a hostname (missing)")
        return None
    server = ctx.get(fields["server"], _str)
    name = ctx.get(fields["name"], _str) if "name" in fields else server
    zone = ctx.get(fields["zone"], _zone_name) if "zone" in fields else "."
    zone = zone or "."
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
    specs = _unique_probes(ctx, probes)
    specs = [resolve_zone_names(s, zone) for s in specs]

    uses_tls = {s.transport is Transport.TLS for s in specs}
    if len(uses_tls) > 1:
        ctx.fail(
            src.node,
            src.key,
            "expected all probes of a target over tls or none: a "
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
                "expected `tls:` only on a target whose probes use transport tls "
                "(got probes over udp/tcp)",
            )
    host, port = "", 0
    if server is not None:
        try:
            host, port = parse_server(server, 853 if all_tls else 53)
        except ValueError as exc:
            ctx.fail(
                fields["server"].node, fields["server"].key, f"expected {exc} (got {server!r})"
            )
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
    )


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


def _survey(ctx: _Ctx, src: _Src, env: _Env) -> tuple[str | None, list[tuple[ProbeSpec, _Src]]]:
    overrides: _Layer = {}
    exclude: dict[str, _Src] = {}
    if isinstance(src.node, yaml.MappingNode):
        overrides = _layer(ctx, src, _SURVEY_KEYS) or {}
        if "preset" not in overrides:
            ctx.fail(
                src.node,
                f"{src.key}.preset",
                f"expected one of: {', '.join(SURVEY_PRESETS)} (missing)",
            )
            return None, []
        preset_src = overrides.pop("preset")
        if "exclude" in overrides:
            ex = overrides.pop("exclude")
            for item in ctx.sequence(ex.node, ex.key) or []:
                if (ex_name := ctx.get(item, _str)) is not None:
                    exclude[ex_name] = item
    else:
        preset_src = src
    preset = ctx.get(preset_src, _str)
    if preset is None:
        return None, []
    if preset not in SURVEY_PRESETS:
        ctx.fail(
            preset_src.node,
            preset_src.key,
            f"expected one of: {', '.join(SURVEY_PRESETS)} (got {preset!r})",
        )
        return None, []
    out: list[tuple[ProbeSpec, _Src]] = []
    known: list[str] = []
    for item in _preset_entries(ctx, preset):
        layer = _layer(ctx, item, _INLINE_KEYS)
        if layer is None or "name" not in layer:
            continue
        name = ctx.get(layer.pop("name"), _probe_name)
        if name is None:
            continue
        known.append(name)
        if name in exclude:
            continue
        layers = [(env.defaults, False), (layer, True), (overrides, False)]
        spec = _build_probe(ctx, name, _Src(src.node, f"{src.key}[{name}]"), layers, env.tsig_keys)
        if spec is not None:
            out.append((spec, _Src(src.node, f"{src.key}[{name}]")))
    for ex_name, item in exclude.items():
        if ex_name not in known:
            ctx.fail(
                item.node,
                item.key,
                f"expected a probe of the {preset} survey ({', '.join(known)}) (got {ex_name!r})",
            )
    return preset, out


def _preset_entries(ctx: _Ctx, preset: str) -> list[_Src]:
    root = _preset_tree(preset)
    if root is None:  # pragma: no cover - shipped presets are not empty
        return []
    return ctx.sequence(root, f"survey[{preset}]") or []


@functools.cache
def _preset_tree(preset: str) -> yaml.Node | None:
    # Read once per process: a fleet of surveyed targets shares the (read-only) tree.
    resource = importlib.resources.files("exporter") / "presets" / f"{preset}.yml"
    text = resource.read_text(encoding="utf-8")
    return _compose(text, f"exporter/presets/{preset}.yml", fast=False)


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
