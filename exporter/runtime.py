"""The running exporter: the live config, the metric state and the scheduler,
and the reload that swaps configs without losing the last good one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace

from exporter import config as config_module
from exporter import dso_client
from exporter.config import Config, ConfigError, ProbeSpec, Target
from exporter.kinds import ProbeKind
from exporter.metrics import MetricsState
from exporter.probes import ProbeResult, TlsContexts, run_probe
from exporter.scheduler import ProbeScheduler
from exporter.sharding import Shard
from exporter.zones import ZoneWatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    message: str


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


class Exporter:
    def __init__(self, config: Config, config_path: str | None = None,
                 shard: Shard = Shard(0, 1)) -> None:  # fmt: skip
        self.config = config
        self.config_path = config_path
        self.shard = shard
        self.state = MetricsState()
        self.contexts = TlsContexts()
        self.scheduler = ProbeScheduler(self.state, self.run_probe, config.scheduler)
        self.last_reload_error: str | None = None
        self.ready = False
        #: The config as loaded; ``self.config`` adds the discovered zone servers.
        self.loaded = config
        self.zones = ZoneWatcher(self.state, self._zones_changed, shard)
        # Persistent DSO sessions end on their own schedule (server close, Retry Delay,
        # inactivity): count each end where every other DSO fact lands.
        dso_client.default_pool.on_session_closed = self.state.record_session_closed
        self._adopt(config)
        self.state.record_reload(True)

    def _adopt(self, config: Config) -> None:
        self.loaded = config
        self.zones.apply(config.zones)
        if config.zones:
            config = replace(config, targets=config.targets + self.zones.targets())
        pairs = list(scheduled_pairs(config, self.shard))
        self.state.sync(config, pairs)
        self.scheduler.apply(pairs, config.scheduler)
        self.config = config

    def _zones_changed(self) -> None:
        """A zone's name servers changed: their targets come and go like a reload's."""
        self._adopt(self.loaded)

    async def run_probe(self, target: Target, spec: ProbeSpec) -> ProbeResult:
        return await run_probe(target, spec, self.contexts)

    def start(self) -> None:
        self.scheduler.start()
        self.zones.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.zones.stop()
        await self.scheduler.stop()
        await dso_client.close_all()

    def reload(self) -> ReloadResult:
        """Load the config file again; on any error keep running the last good config."""
        if self.config_path is None:
            return ReloadResult(False, "no config file to reload (built-in config)")
        try:
            new = config_module.load_config(self.config_path)
        except (ConfigError, OSError) as exc:
            self.state.record_reload(False)
            self.last_reload_error = str(exc)
            log.error("config reload failed, keeping the last good config: %s", exc)
            return ReloadResult(False, str(exc))
        self._adopt(new)
        self.state.record_reload(True)
        self.last_reload_error = None
        log.info("config reloaded from %s: %d targets, %d scheduled pairs", self.config_path,
                 len(new.targets), self.scheduler.pair_count)  # fmt: skip
        return ReloadResult(True, "reloaded")
