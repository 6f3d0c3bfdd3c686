"""Built-in survey presets (``exporter/presets/*.yml``): a target's ``survey:``.

Names starting with ``_`` are private to the ``exporter.config`` package.
"""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import replace

import yaml

from exporter.config.located import _compose, _Ctx, _Src
from exporter.config.probe_specs import (
    _DEFAULTS_KEYS,
    _INLINE_KEYS,
    _build_probe,
    _Env,
    _Layer,
    _layer,
)
from exporter.config.scalars import _int_in, _probe_name, _str
from exporter.config.schema import ProbeSpec, Transport

SURVEY_PRESETS = ("authoritative", "recursive", "compliance", "encrypted")


_SURVEY_KEYS = ("preset", "exclude", "ports", *_DEFAULTS_KEYS)


def _ports(ctx: _Ctx, src: _Src) -> dict[Transport, int]:
    """``ports: {tls: 8853, doh: 8443}``: a port per transport for the survey's probes."""
    out: dict[Transport, int] = {}
    for name, value in (ctx.mapping(src.node, src.key, [t.value for t in Transport]) or {}).items():
        port = ctx.get(value, _int_in(1, 65535, "a port"))
        if port is not None:
            out[Transport(name)] = port
    return out


def _survey(ctx: _Ctx, src: _Src, env: _Env) -> tuple[str | None, list[tuple[ProbeSpec, _Src]]]:
    overrides: _Layer = {}
    exclude: dict[str, _Src] = {}
    ports: dict[Transport, int] = {}
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
        if "ports" in overrides:
            ports = _ports(ctx, overrides.pop("ports"))
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
            if spec.port is None and spec.transport in ports:
                spec = replace(spec, port=ports[spec.transport])
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
