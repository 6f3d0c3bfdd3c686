"""The running exporter: the live config, the metric state and the scheduler,
and the reload that swaps configs without losing the last good one."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from exporter import dso_client, sessions
from exporter.config import Config, ConfigError, ProbeSpec, Target, load_config
from exporter.metrics import MetricsState
from exporter.probes import ProbeResult, TlsContexts, run_probe
from exporter.reload import Listener, PairKey, ReloadPlan, plan_reload, scheduled_pairs
from exporter.scheduler import ProbeScheduler
from exporter.sharding import Shard
from exporter.zones import ZoneWatcher

__all__ = ["Exporter", "ReloadResult", "scheduled_pairs"]

log = logging.getLogger(__name__)

#: Pairs a reload adds, changes or removes per turn of the event loop: a few
#: milliseconds of work, so probes and scrapes due meanwhile run on time.
RELOAD_STEP = 500
#: How soon the loop gets the GIL back while a reload thread computes (seconds).
RELOAD_SWITCH_INTERVAL = 0.0005

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    message: str


def _steps(items: Sequence[_T], size: int = RELOAD_STEP) -> list[Sequence[_T]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


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
        #: What the HTTP server runs with (set by exporter.serve): a reload that
        #: changes it is reported as needing a restart.
        self.listener: Listener | None = None
        self._applied: dict[PairKey, tuple[Target, ProbeSpec]] = {}
        self._reload_lock = asyncio.Lock()
        self._zones_dirty = False
        #: Closing the sessions of servers a zone change removed (see _adopt).
        self._closing: set[asyncio.Task[None]] = set()
        #: Move the config and state to the collector's permanent generation after
        #: start-up and each reload (set by exporter.serve; see _settle_heap).
        self.freeze_gc = False
        # Persistent DSO sessions end on their own schedule (server close, Retry Delay,
        # inactivity): count each end where every other DSO fact lands.
        dso_client.default_pool.on_session_closed = self.state.record_session_closed
        self._adopt(config)
        self.state.record_reload(True)

    def _adopt(self, config: Config) -> None:
        """Start-up (and a zone's servers changing): the whole config at once."""
        self.loaded = config
        self.zones.apply(config.zones)
        config = self._with_zone_servers(config)
        pairs = list(scheduled_pairs(config, self.shard))
        dso_before = set(self.state.dso)
        self.state.sync(config, pairs)
        self.scheduler.apply(pairs, config.scheduler)
        self._applied = {(target.name, spec.name): (target, spec) for target, spec in pairs}
        self.config = config
        dropped = [name for name in dso_before if name not in self.state.dso]
        with contextlib.suppress(RuntimeError):  # no loop yet at start-up: nothing is open
            task = asyncio.get_running_loop().create_task(
                self._close_sessions(dropped, sessions.servers_in_use(config.targets)))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close_sessions(self, dso_dropped: Collection[str],
                              servers: Mapping[str, Collection[Hashable]]) -> None:  # fmt: skip
        """Close what removed targets kept open: their persistent DSO sessions (with
        their keepalives) and the DoH and DoQ connections no remaining target uses.
        Their series are gone already; a session ending later on its own would
        bring a removed target's series back, and an idle connection would linger
        for an hour."""
        await asyncio.gather(*(dso_client.default_pool.close(name, "target_removed")
                               for name in dso_dropped))  # fmt: skip
        await sessions.retain_servers(servers)

    def _with_zone_servers(self, config: Config) -> Config:
        if not config.zones:
            return config
        return replace(config, targets=config.targets + self.zones.targets())

    def _zones_changed(self) -> None:
        """A zone's name servers changed: their targets come and go like a reload's.
        During a reload the running config is about to change: the reload adopts the
        new set when it ends (adopting now would re-apply the old zones)."""
        if self._reload_lock.locked():
            self._zones_dirty = True
            return
        self._adopt(self.loaded)

    async def run_probe(self, target: Target, spec: ProbeSpec) -> ProbeResult:
        return await run_probe(target, spec, self.contexts)

    def _settle_heap(self) -> None:
        """A full garbage collection walks every tracked object while holding the GIL;
        with a fleet's config and series that is hundreds of milliseconds, on the
        loop or in the reload thread (which then holds the loop back). Objects alive
        now are long-lived: freezing them keeps the collector's walks short. Acyclic
        ones are still freed by reference counting when a reload drops them; only
        cyclic garbage among them (a few in-flight requests) is never collected."""
        if self.freeze_gc:
            gc.freeze()

    @contextlib.contextmanager
    def _loop_first(self) -> Iterator[None]:
        """The GIL back to the loop within RELOAD_SWITCH_INTERVAL while the reload
        thread works. A thread that computes for seconds keeps the GIL for the whole
        switch interval (5 ms) each time the loop gives it up for a system call, and
        a probe makes several: at 200 probes/s the loop fell seconds behind during a
        60,000-pair reload (lateness p99 0.8-1 s, probes up to 2.5 s late)."""
        before = sys.getswitchinterval()
        sys.setswitchinterval(min(before, RELOAD_SWITCH_INTERVAL))
        try:
            yield
        finally:
            sys.setswitchinterval(before)

    @contextlib.contextmanager
    def _collector_paused(self) -> Iterator[None]:
        """No automatic collection while the reload thread builds the new config: each
        one would walk the part built so far, holding the GIL (60,000 pairs: 1.7 s of
        stalls while loading, 0.2 s without). Afterwards the new objects are frozen
        before collection resumes, or the first young collection would walk them all."""
        if not self.freeze_gc or not gc.isenabled():
            yield
            return
        gc.disable()
        try:
            yield
        finally:
            gc.freeze()
            gc.enable()

    def start(self) -> None:
        self._settle_heap()
        self.scheduler.start()
        self.zones.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.zones.stop()
        await self.scheduler.stop()
        await asyncio.gather(*self._closing)
        await dso_client.close_all()
        # Every DoH and DoQ connection, waited for: a loop that ends with one open
        # leaves a transport unclosed and its reader task pending.
        await sessions.close_all()

    async def reload(self) -> ReloadResult:
        """Load the config file again; on any error keep running the last good config.

        The file is read, validated and compared with the running pairs in a worker
        thread; the loop then applies only the difference, RELOAD_STEP pairs at a
        time. Reloads queue behind each other."""
        if self.config_path is None:
            return ReloadResult(False, "no config file to reload (built-in config)")
        async with self._reload_lock:
            with self._collector_paused(), self._loop_first():
                try:
                    loaded = await asyncio.to_thread(load_config, self.config_path)
                except (ConfigError, OSError) as exc:
                    self.state.record_reload(False)
                    self.last_reload_error = str(exc)
                    log.error("config reload failed, keeping the last good config: %s", exc)
                    return ReloadResult(False, str(exc))
                # Zone targets' servers are discovered on the loop: add them before the
                # comparison, which goes back to the thread.
                self.zones.apply(loaded.zones)
                plan = await asyncio.to_thread(plan_reload, self._with_zone_servers(loaded),
                                               self.config, self._applied, self.shard,
                                               self.listener)  # fmt: skip
            await self._apply(plan)
            self.loaded = loaded
            if self._zones_dirty:  # servers found while the reload was being applied
                self._zones_dirty = False
                self._adopt(loaded)
            self._settle_heap()
        self.state.record_reload(True)
        self.last_reload_error = None
        self.state.restart_required = int(bool(plan.restart))
        for reason in plan.restart:
            log.warning("config reload: %s; restart dnsgap to apply it (the rest of the "
                        "config is applied)", reason)  # fmt: skip
        log.info("config reloaded from %s: %d targets, %d scheduled pairs (%d added or "
                 "changed, %d removed)", self.config_path, len(plan.config.targets),
                 self.scheduler.pair_count, len(plan.changed), len(plan.removed))  # fmt: skip
        if plan.restart:
            return ReloadResult(True, "reloaded; restart required for: " + "; ".join(plan.restart))
        return ReloadResult(True, "reloaded")

    async def _apply(self, plan: ReloadPlan) -> None:
        self.state.configure(plan.config)
        self.scheduler.configure(plan.config.scheduler)
        for removed in _steps(plan.removed):
            self.state.remove_pairs(removed)
            self.scheduler.remove(removed)
            await asyncio.sleep(0)
        # Between the steps: removed targets run no more probes, and new ones have a
        # share of the budgets before their first probe.
        self.scheduler.reshape(*plan.budgets)
        for changed in _steps(plan.changed):
            self.state.install_pairs(pair_plan for _, _, pair_plan in changed)
            self.scheduler.upsert((target, spec) for target, spec, _ in changed)
            await asyncio.sleep(0)
        dropped = self.state.set_dso_targets(plan.dso_targets)
        self.state.sync_zones(plan.config)
        self.config = plan.config
        self._applied = dict(plan.pairs)
        await self._close_sessions(dropped, plan.servers)
