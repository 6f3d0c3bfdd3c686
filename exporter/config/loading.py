"""YAML configuration -> :class:`Config`: the entry points and the top-level sections.

Every error names the file, line and key, and what was expected
(:class:`ConfigError`). Loading is pure apart from reading the file: a reload
that fails leaves the caller's last good :class:`Config` untouched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import yaml

from exporter.config.errors import ConfigError, ConfigErrors
from exporter.config.located import _compose, _Ctx, _Src
from exporter.config.probe_specs import (
    _DEFAULTS_KEYS,
    _check_defaults,
    _Env,
    _fields,
    _Layer,
    _layer,
    _Parser,
    _templates,
    resolve_zone_names,
)
from exporter.config.scalars import (
    _base64,
    _bool,
    _cidr,
    _fraction,
    _int_in,
    _listen,
    _opt_str,
    _tsig_algorithm,
)
from exporter.config.schema import (
    Config,
    HttpSettings,
    ProbeEndpointSettings,
    ProbeSpec,
    SchedulerSettings,
    Target,
    TsigKey,
    ZoneTarget,
)
from exporter.config.targets import _targets


def load_config(path: str) -> Config:
    """Read and validate a config file; raises :class:`ConfigError` (never anything else)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, "(file)", f"expected a readable UTF-8 file ({exc})") from exc
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


def survey_probes(preset: str, zone: str = ".") -> tuple[ProbeSpec, ...]:
    """The probes of a built-in survey preset for a zone (no config defaults)."""
    config = parse_config(
        f"targets: [{{name: survey, server: 127.0.0.1, zone: {json.dumps(zone)},"
        f" survey: {json.dumps(preset)}}}]",
        "<survey>",
    )
    return config.targets[0].probes


_TOP_KEYS = ("http", "scheduler", "defaults", "tsig_keys", "probes", "targets")


_HTTP_KEYS = ("listen", "web_config_file", "probe")


_ENDPOINT_KEYS = ("allow_adhoc", "adhoc_cidrs", "max_concurrency", "max_per_client",
                  "max_queued", "max_queued_per_client")  # fmt: skip


_SCHEDULER_KEYS = ("max_concurrency", "jitter", "duration_histogram", "conformance_series")


_TSIG_KEYS = ("algorithm", "secret")


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
    targets: list[Target | ZoneTarget] = []
    if "targets" in top:
        targets = _targets(ctx, top["targets"], env)
    http = _http(ctx, top["http"]) if "http" in top else HttpSettings()
    scheduler = _scheduler(ctx, top["scheduler"]) if "scheduler" in top else SchedulerSettings()
    if ctx.errors:
        return None
    return Config(
        targets=tuple(t for t in targets if isinstance(t, Target)),
        zones=tuple(t for t in targets if isinstance(t, ZoneTarget)),
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


_ENDPOINT_FIELDS: Mapping[str, tuple[str, _Parser]] = {
    "allow_adhoc": ("allow_adhoc", _bool),
    "max_concurrency": ("max_concurrency", _int_in(1, 65535)),
    "max_per_client": ("max_per_client", _int_in(1, 65535)),
    "max_queued": ("max_queued", _int_in(0, 1_000_000)),
    "max_queued_per_client": ("max_queued_per_client", _int_in(0, 1_000_000)),
}


_SCHEDULER_FIELDS: Mapping[str, tuple[str, _Parser]] = {
    "max_concurrency": ("max_concurrency", _int_in(1, 1_000_000)),
    "jitter": ("jitter", _fraction),
    "duration_histogram": ("duration_histogram", _bool),
    "conformance_series": ("conformance_series", _bool),
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
