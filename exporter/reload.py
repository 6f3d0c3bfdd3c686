"""Planning a config reload away from the event loop: read and validate the file,
and work out how it differs from what runs.

At fleet size parsing alone takes seconds (60,000 pairs: about 5 s here), and
working out each changed pair's series costs more; on the event loop that would
hold back every probe and scrape due meanwhile. The runtime loads the file in a
worker thread, and :func:`plan_reload` (pure apart from reading the web config
file) runs there too, handing the loop a plan that it applies in small steps
(exporter.runtime).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass

from exporter import capacity, sessions
from exporter.config import Config, ProbeSpec, Target
from exporter.kinds import ProbeKind
from exporter.metrics import PairPlan, plan_pair
from exporter.scheduler import budgets
from exporter.sharding import Shard

PairKey = tuple[str, str]
Pairs = Mapping[PairKey, tuple[Target, ProbeSpec]]


def scheduled_pairs(config: Config, shard: Shard) -> Iterator[tuple[Target, ProbeSpec]]:
    """The (target, probe) pairs this replica runs on its schedule.

    NOTIFY probes run only with their explicit opt-in: a NOTIFY makes a secondary
    refresh (RFC 1996), a side effect nobody should get by accident.
    """
    for target in config.targets:
        for spec in target.probes:
            if spec.kind is ProbeKind.NOTIFY and not spec.allow_notify:
                continue
            if shard.owns(target.name, spec.name):
                yield target, spec


@dataclass(frozen=True, slots=True)
class Listener:
    """What the HTTP server was started with. aiohttp binds the address and the TLS
    context once, so a reload cannot change them: it reports them instead."""

    #: http.listen in force; None when the command line's --listen overrides it.
    listen: str | None
    web_config_file: str | None
    #: SHA-256 of the web config file (certificate paths, users); None without one.
    web_config_digest: str | None

    @classmethod
    def of(cls, config: Config, listen_from_config: bool) -> Listener:
        path = config.http.web_config_file
        return cls(config.http.listen if listen_from_config else None, path,
                   _digest(path) if path else None)  # fmt: skip


def _digest(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


def restart_reasons(running: Listener, new: Listener) -> tuple[str, ...]:
    reasons = []
    if running.listen is not None and new.listen != running.listen:
        reasons.append(f"http.listen changed from {running.listen} to {new.listen}")
    if new.web_config_file != running.web_config_file:
        reasons.append(f"http.web_config_file changed from {running.web_config_file} "
                       f"to {new.web_config_file}")  # fmt: skip
    elif new.web_config_digest != running.web_config_digest:
        reasons.append(f"the web config file {new.web_config_file} changed")
    return tuple(reasons)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    config: Config
    #: Every pair of the new config this replica runs.
    pairs: Pairs
    removed: tuple[PairKey, ...]
    #: New pairs and pairs whose target or probe changed, with their series plan.
    changed: tuple[tuple[Target, ProbeSpec, PairPlan], ...]
    #: Targets with DSO probes in the new config.
    dso_targets: frozenset[str]
    #: The DoH and DoQ servers the new config's targets use, by transport: the
    #: shared connections to any other server are closed.
    servers: Mapping[str, frozenset[Hashable]]
    #: The scheduler's (pending probes, stream probes) budgets for the new pair set.
    budgets: tuple[capacity.Shares, capacity.Shares]
    #: Settings that changed but take effect only at a restart.
    restart: tuple[str, ...]


def _series_flags(config: Config) -> tuple[bool, bool]:
    return (config.scheduler.duration_histogram,
            config.scheduler.conformance_series)  # fmt: skip


def plan_reload(new: Config, running: Config, applied: Pairs, shard: Shard,
                listener: Listener | None) -> ReloadPlan:  # fmt: skip
    """How to go from the running pairs to those of ``new`` (a loaded, validated
    config with its zone targets' servers added)."""
    pairs = {(target.name, spec.name): (target, spec)
             for target, spec in scheduled_pairs(new, shard)}  # fmt: skip
    # A changed series setting reshapes every pair's series.
    every = _series_flags(new) != _series_flags(running)
    conformance = _series_flags(new)[1]
    changed = tuple((target, spec, plan_pair(target, spec, conformance))
                    for key, (target, spec) in pairs.items()
                    if every or applied.get(key) != (target, spec))  # fmt: skip
    removed = tuple(key for key in applied if key not in pairs)
    dso_targets = frozenset(key[0] for key, (_, spec) in pairs.items() if spec.kind.is_dso)
    shares = budgets(list(pairs.values()), new.scheduler, capacity.descriptors_for_probes())
    restart: tuple[str, ...] = ()
    if listener is not None:
        restart = restart_reasons(listener, Listener.of(new, listener.listen is not None))
    return ReloadPlan(new, pairs, removed, changed, dso_targets,
                      sessions.servers_in_use(new.targets), shares, restart)  # fmt: skip
