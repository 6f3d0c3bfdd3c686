"""The config: YAML -> frozen, typed dataclasses, with errors located at file:line: key.

One module per concern: :mod:`.schema` (the dataclasses), :mod:`.values` (text
parsers the CLI and HTTP share), :mod:`.located` and :mod:`.scalars` (YAML nodes
with locations), :mod:`.probe_specs`, :mod:`.presets` and :mod:`.targets` (the
sections), :mod:`.discovery`, :mod:`.loading` (the entry points). Import from ``exporter.config``.
"""

from exporter.config.errors import ConfigError, ConfigErrors
from exporter.config.loading import load_config, parse_config, survey_probes
from exporter.config.presets import SURVEY_PRESETS
from exporter.config.probe_specs import (
    HEADER_FLAGS,
    default_expect,
    dso_tlv_type_problem,
    resolve_zone_names,
)
from exporter.config.schema import (
    DEFAULT_LISTEN,
    DEFAULT_PORTS,
    ENCRYPTED_TRANSPORTS,
    Config,
    DiscoverySettings,
    DohSettings,
    DsoSettings,
    EdnsSettings,
    FallbackSettings,
    HttpSettings,
    ProbeEndpointSettings,
    ProbeSpec,
    SchedulerSettings,
    Target,
    TlsSettings,
    Transport,
    TsigKey,
    ZoneTarget,
)
from exporter.config.targets import PRESET_ROLES, RESERVED_LABELS
from exporter.config.values import parse_duration, parse_server

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_PORTS",
    "ENCRYPTED_TRANSPORTS",
    "HEADER_FLAGS",
    "PRESET_ROLES",
    "RESERVED_LABELS",
    "SURVEY_PRESETS",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "DiscoverySettings",
    "DohSettings",
    "DsoSettings",
    "EdnsSettings",
    "FallbackSettings",
    "HttpSettings",
    "ProbeEndpointSettings",
    "ProbeSpec",
    "SchedulerSettings",
    "Target",
    "TlsSettings",
    "Transport",
    "TsigKey",
    "ZoneTarget",
    "default_expect",
    "dso_tlv_type_problem",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_server",
    "resolve_zone_names",
    "survey_probes",
]
