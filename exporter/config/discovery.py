"""A zone target's ``discover:`` section: where and how often its servers are found.

Names starting with ``_`` are private to the ``exporter.config`` package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import yaml

from exporter.config.located import _Ctx, _Src, _WantError
from exporter.config.probe_specs import _fields, _Parser
from exporter.config.scalars import _bool, _int_in, _positive_duration, _str
from exporter.config.schema import DiscoverySettings
from exporter.config.values import parse_server

_DISCOVER_KEYS = ("resolver", "port", "refresh_min", "refresh_max", "max_addresses", "parent",
                  "timeout", "serial_interval")  # fmt: skip


def _resolver(ctx: _Ctx, node: yaml.Node) -> tuple[str, int] | None:
    text = _str(ctx, node).strip()
    if text == "system":
        return None
    try:
        return parse_server(text)
    except ValueError as exc:
        raise _WantError(f"`system` or {exc}") from None


_DISCOVER_FIELDS: Mapping[str, tuple[str, _Parser]] = {
    "port": ("port", _int_in(1, 65535, "a port")),
    "refresh_min": ("refresh_min", _positive_duration),
    "refresh_max": ("refresh_max", _positive_duration),
    "max_addresses": ("max_addresses", _int_in(1, 4096, "an address count")),
    "parent": ("parent", _bool),
    "timeout": ("timeout", _positive_duration),
    "serial_interval": ("serial_interval", _positive_duration),
}


def _discovery(ctx: _Ctx, src: _Src, default_port: int) -> DiscoverySettings | None:
    """``discover: true`` (all defaults) or a mapping of :data:`_DISCOVER_KEYS`."""
    out = DiscoverySettings(port=default_port)
    if isinstance(src.node, yaml.ScalarNode):
        enabled = ctx.get(src, _bool)
        if enabled is False:
            ctx.fail(src.node, src.key, "expected true or a mapping (got false)")
        return out if enabled else None
    fields = ctx.mapping(src.node, src.key, _DISCOVER_KEYS)
    if fields is None:
        return None
    values: dict[str, Any] = _fields(ctx, fields, "", _DISCOVER_FIELDS)
    if "resolver" in fields:
        values["resolver"] = ctx.get(fields["resolver"], _resolver)
    out = replace(out, **values)
    if out.refresh_min > out.refresh_max:
        where = fields.get("refresh_min") or src
        ctx.fail(where.node, where.key, f"expected refresh_min <= refresh_max (got "
                 f"{out.refresh_min:g}s > {out.refresh_max:g}s)")  # fmt: skip
    return out
