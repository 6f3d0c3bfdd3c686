"""The metric contract: every dnsgap metric name, type, help text and label set.

Probes update :class:`MetricsState` in O(1) per result; nothing is rendered
then. At scrape time :meth:`MetricsState.render` writes the exposition text
from pre-rendered label strings (the fast path), and :class:`GapCollector`
yields the same families through prometheus_client's Collector protocol for
anyone who wants them in a registry. A scrape never races a probe: both run
on the one event loop.
"""

from __future__ import annotations

import functools
import itertools
import math
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import dns.rdatatype
from prometheus_client.metrics_core import Metric

from exporter import __version__, conformance
from exporter.causes import Cause, possible_gap_series
from exporter.config import Config, ProbeSpec, Target
from exporter.kinds import ProbeKind
from exporter.outcome import DsoFacts
from exporter.probes import ProbeResult
from exporter.serial import serials_behind
from exporter.wire import request_for

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0)  # fmt: skip
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: (name, type, help) of every metric, in exposition order. The README's metric
#: table is checked against this and against a live /metrics.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("dnsgap_probe_responses_total", "counter",
     "Probe outcomes by response code (none: no answer to this request; other: "
     "unassigned) and support-gap cause."),
    ("dnsgap_support_gap", "gauge",
     "1 while the latest outcome of the probe shows this support-gap cause, else 0."),
    ("dnsgap_probe_last_rcode", "gauge",
     "Response code of the latest outcome (-1: no DNS reply; no sample before the first)."),
    ("dnsgap_probe_success", "gauge",
     "1 if the latest outcome met the probe's expectation, else 0."),
    ("dnsgap_probe_duration_seconds", "histogram", "Duration of probe exchanges."),
    ("dnsgap_probe_last_run_timestamp_seconds", "gauge",
     "Unix time the probe last completed."),
    ("dnsgap_probe_interval_seconds", "gauge",
     "Configured interval of the scheduled probe (stale when last run is several behind)."),
    ("dnsgap_support_gap_since_timestamp_seconds", "gauge",
     "Unix time the probe's current support-gap cause (or none) was first seen."),
    ("dnsgap_gap_changes_total", "counter",
     "Times the probe's support-gap cause changed from one outcome to the next."),
    ("dnsgap_probe_info", "gauge", "What a probe sends, as labels; always 1."),
    ("dnsgap_dso_session_established", "gauge",
     "1 if the target's latest DSO probe had a session (RFC 8490 §5.1), else 0."),
    ("dnsgap_dso_inactivity_timeout_seconds", "gauge",
     "Inactivity timeout in the latest Keepalive TLV the server sent a DSO probe of the "
     "target."),
    ("dnsgap_dso_keepalive_interval_seconds", "gauge",
     "Keepalive interval in the latest Keepalive TLV the server sent a DSO probe of the "
     "target."),
    ("dnsgap_dso_retry_delay_seconds", "gauge",
     "Retry Delay of the target's latest DSO probe: sent in that exchange or still holding "
     "it back (0: none)."),
    ("dnsgap_dso_sessions_closed_total", "counter", "DSO sessions that ended, by reason."),
    ("dnsgap_dso_push_notifications_total", "counter",
     "DNS Push (RFC 8765) PUSH messages received."),
    ("dnsgap_fallback_total", "counter",
     "Traditional fallback operations run because DSO (or IXFR) was not available, by result."),
    ("dnsgap_fallback_active", "gauge",
     "1 while the probe's preferred operation is unavailable and its fallback is in use."),
    ("dnsgap_conformance_violation", "gauge",
     "1 while the latest reply of the probe violates this conformance check, else 0."),
    ("dnsgap_conformance_violations_total", "counter",
     "Replies that violated this conformance check."),
    ("dnsgap_tls_cert_expiry_timestamp_seconds", "gauge",
     "Earliest notAfter (Unix time) in the certificate chain the server presented (DoT, DoH, "
     "DoQ)."),
    ("dnsgap_build_info", "gauge", "dnsgap build information; always 1."),
    ("dnsgap_config_reload_success", "gauge", "1 if the latest config (re)load succeeded."),
    ("dnsgap_config_last_reload_success_timestamp_seconds", "gauge",
     "Unix time of the latest successful config load."),
    ("dnsgap_config_reloads_total", "counter", "Config (re)loads, by result."),
    ("dnsgap_config_restart_required", "gauge",
     "1 while the loaded config changes settings that apply only at a restart "
     "(http.listen, the web config)."),
    ("dnsgap_scheduler_lateness_seconds", "histogram",
     "How late scheduled probes started relative to their due time."),
    ("dnsgap_probes_in_flight", "gauge", "Probes currently running."),
    ("dnsgap_probes_skipped_total", "counter",
     "Scheduled probe runs skipped, by reason (overlap: previous run still going; "
     "pending_limit, fd_limit: over the target's fair share of the bound; "
     "no_descriptors: the process ran out of file descriptors; "
     "retry_delay: a DSO server's Retry Delay holds the target)."),
    ("dnsgap_probe_requests_waiting", "gauge",
     "/probe requests waiting for a free probe slot."),
    ("dnsgap_probe_requests_queued_total", "counter",
     "/probe requests that had to wait for a free probe slot."),
    ("dnsgap_probe_requests_refused_total", "counter",
     "/probe requests refused, by reason (client_queue_full, queue_full: 429; "
     "deadline: 503, no slot before the scrape deadline)."),
    ("dnsgap_zone_discovery_success", "gauge",
     "1 if the latest lookup of the zone's name servers succeeded (else the last good set "
     "is kept)."),
    ("dnsgap_zone_addresses", "gauge", "Name server addresses of the zone being probed."),
    ("dnsgap_zone_address_changes_total", "counter",
     "Name server addresses added to or removed from the zone's probed set."),
    ("dnsgap_zone_soa_serial", "gauge", "SOA serial the server answers for the zone."),
    ("dnsgap_zone_serial_behind", "gauge",
     "How far the server's SOA serial is behind the zone's newest (RFC 1982 arithmetic)."),
)  # fmt: skip

#: Why a scheduled run did not happen: its previous run was still going (overlap),
#: the pending-probe or descriptor bound refused it (its target over its fair share
#: and the spare pool empty), opening a socket failed with EMFILE/ENFILE, or a DSO
#: server's Retry Delay held the run back (RFC 8490 §6.6.1; counted by ``record``).
SKIP_REASONS = ("overlap", "pending_limit", "fd_limit", "no_descriptors", "retry_delay")


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_labels(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)


_BUILD_LABELS = render_labels((("version", __version__), ("python", platform.python_version())))


def format_number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


@dataclass(slots=True)
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
                break

    def cumulative(self) -> list[tuple[str, int]]:
        """(``le`` label, count at or below it) per bucket, ``+Inf`` last."""
        return [*zip(_bounds_text(self.buckets), itertools.accumulate(self.counts), strict=True),
                ("+Inf", self.count)]  # fmt: skip


@functools.lru_cache(maxsize=64)
def _bounds_text(buckets: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` labels of a bucket layout, formatted once (not per render)."""
    return tuple(format_number(bound) for bound in buckets)


@functools.lru_cache(maxsize=1024)
def _seed_keys(kind: ProbeKind, transport: str, signed: bool, tcp_fallback: bool,
               sends_rd: bool) -> tuple[tuple[str, str], ...]:  # fmt: skip
    """(rcode, cause) keys of the responses series a pair has from the start, sorted:
    the same order in every answer and process."""
    return tuple(sorted((rcode, cause.value) for rcode, cause in possible_gap_series(
        kind, transport, signed=signed, tcp_fallback=tcp_fallback, sends_rd=sends_rd)))  # fmt: skip


def probe_info_labels(target: Target, spec: ProbeSpec) -> tuple[tuple[str, str], ...]:
    opcode = {ProbeKind.OPCODE: spec.opcode, ProbeKind.UPDATE: 5, ProbeKind.NOTIFY: 4}.get(
        spec.kind, 6 if spec.kind.is_dso else 0
    )
    port = spec.port or target.port  # the probe's own port (survey: encrypted)
    server = f"[{target.host}]:{port}" if ":" in target.host else f"{target.host}:{port}"
    qtype = _TRANSFER_QTYPES.get(spec.kind, spec.qtype)
    return (("target", target.name), ("probe", spec.name), ("server", server),
            ("kind", spec.kind.value), ("transport", spec.transport.value),
            ("opcode", str(opcode)),
            # DSO probes send no question: an empty qtype (absent in Prometheus).
            ("qtype", "" if spec.kind.is_dso else dns.rdatatype.to_text(
                dns.rdatatype.RdataType.make(qtype))),
            # A zone target's servers say which zone and NS name they were found as.
            *((("zone", target.zone.rstrip(".") or "."), ("ns_name", target.ns_name))
              if target.ns_name is not None else ()),
            # A target's extra labels ride on the info metric only (join on target,
            # probe), so they never multiply the counters' series.
            *sorted(target.labels.items()))  # fmt: skip


_TRANSFER_QTYPES = {ProbeKind.IXFR: int(dns.rdatatype.IXFR),
                    ProbeKind.AXFR: int(dns.rdatatype.AXFR)}  # fmt: skip


@dataclass(slots=True)
class PairState:
    """Everything exported for one (target, probe) pair."""

    target: str
    probe: str
    kind: ProbeKind
    spec: ProbeSpec
    key: str  # pre-rendered 'target="..",probe=".."'
    info: str  # pre-rendered probe_info labels
    responses: dict[tuple[str, str], int] = field(default_factory=dict)
    cause: Cause | None = None
    since: float | None = None
    #: None until the first outcome: -1 means the server sent no DNS reply, never
    #: that the probe has not run yet.
    last_rcode: int | None = None
    success: int | None = None
    last_run: float | None = None
    gap_changes: int = 0
    duration: Histogram | None = None
    push_notifications: int = 0
    fallback: dict[str, int] = field(default_factory=dict)
    fallback_active: int = 0
    #: Kept from the latest handshake that showed a chain: a probe that then fails
    #: verification (the certificate expired) must not make the series vanish.
    cert_not_after: float | None = None
    last_result: ProbeResult | None = None
    #: Conformance checks that apply to the probe; per check, the latest verdict
    #: (1: violated) and the count of violating replies.
    checks: tuple[str, ...] = ()
    violation: dict[str, int] = field(default_factory=dict)
    violations_total: dict[str, int] = field(default_factory=dict)
    #: How many checks the latest reply violated (0: every gauge is at 0).
    violating: int = 0

    def seed(self, with_histogram: bool) -> None:
        spec = self.spec
        keys = _seed_keys(spec.kind, spec.transport.value, spec.tsig_key is not None,
                          spec.tcp_fallback, spec.sends_rd)  # fmt: skip
        # A new pair (every /probe answer is one) takes its series in one step.
        if self.responses:
            for key in keys:
                self.responses.setdefault(key, 0)
        else:
            self.responses = dict.fromkeys(keys, 0)
        if with_histogram and self.duration is None:
            self.duration = Histogram(DURATION_BUCKETS)
        if not with_histogram:
            self.duration = None
        if not self.violation:
            self.violation = dict.fromkeys(self.checks, 0)
            self.violations_total = dict.fromkeys(self.checks, 0)
            return
        for check in self.checks:
            self.violation.setdefault(check, 0)
            self.violations_total.setdefault(check, 0)
        for gone in [check for check in self.violation if check not in self.checks]:
            del self.violation[gone]
            self.violations_total.pop(gone, None)


@dataclass(slots=True)
class ZoneState:
    """What is exported for one zone target."""

    discovery_success: int | None = None
    addresses: int = 0
    changes: dict[str, int] = field(default_factory=lambda: {"added": 0, "removed": 0})
    serials: dict[str, int] = field(default_factory=dict)
    behind: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class DsoTargetState:
    established: int = 0
    inactivity_timeout: float | None = None
    keepalive_interval: float | None = None
    retry_delay: float = 0.0
    closed: dict[str, int] = field(default_factory=dict)


class MetricsState:
    """The exporter's metric state; updated by probes, rendered at scrape time."""

    def __init__(self) -> None:
        self.pairs: dict[tuple[str, str], PairState] = {}
        self.dso: dict[str, DsoTargetState] = {}
        self.zones: dict[str, ZoneState] = {}
        self.duration_histogram = True
        self.conformance = True
        self.reload_success = 0
        self.reload_timestamp = 0.0
        self.reloads: dict[str, int] = {"success": 0, "failure": 0}
        self.restart_required = 0
        self.lateness = Histogram(LATENESS_BUCKETS)
        self.in_flight = 0
        #: Skip reasons exist at 0 from start-up (exporter/scheduler.py).
        self.skipped: dict[str, int] = dict.fromkeys(SKIP_REASONS, 0)
        # /probe admission (exporter.admission).
        self.probe_requests_waiting = 0
        self.probe_requests_queued = 0
        self.probe_requests_refused: dict[str, int] = dict.fromkeys(
            ("client_queue_full", "queue_full", "deadline"), 0)  # fmt: skip

    # -- configuration ---------------------------------------------------------------

    def sync(self, config: Config, pairs: Iterable[tuple[Target, ProbeSpec]]) -> None:
        """Adopt a config: keep the state of unchanged pairs, add new ones, and drop the
        series of pairs that are gone (no stale series)."""
        self.configure(config)
        plans = [plan_pair(target, spec, self.conformance) for target, spec in pairs]
        wanted = {plan.key for plan in plans}
        self.remove_pairs([key for key in self.pairs if key not in wanted])
        self.install_pairs(plans)
        self.set_dso_targets({plan.key[0] for plan in plans if plan.spec.kind.is_dso})
        self.sync_zones(config)

    # A reload applies the same steps in bounded batches (exporter.runtime), with the
    # plans made off the event loop.

    def configure(self, config: Config) -> None:
        self.duration_histogram = config.scheduler.duration_histogram
        self.conformance = config.scheduler.conformance_series

    def remove_pairs(self, keys: Iterable[tuple[str, str]]) -> None:
        for key in keys:
            self.pairs.pop(key, None)

    def install_pairs(self, plans: Iterable[PairPlan]) -> None:
        """Add or update pairs; a pair whose kind and info labels are unchanged keeps
        its counters."""
        for plan in plans:
            state = self.pairs.get(plan.key)
            if state is None or state.kind is not plan.spec.kind or state.info != plan.info:
                state = PairState(plan.key[0], plan.key[1], plan.spec.kind, plan.spec,
                                  plan.labels, plan.info)  # fmt: skip
                self.pairs[plan.key] = state
            state.spec = plan.spec
            state.checks = plan.checks
            state.seed(self.duration_histogram)

    def set_dso_targets(self, names: set[str] | frozenset[str]) -> list[str]:
        """The targets with DSO probes; returns those dropped (their series go)."""
        dropped = [name for name in self.dso if name not in names]
        for name in dropped:
            del self.dso[name]
        for name in names:
            self.dso.setdefault(name, DsoTargetState())
        return dropped

    def sync_zones(self, config: Config) -> None:
        zones = {zone.zone.rstrip(".") or "." for zone in config.zones}
        for name in [name for name in self.zones if name not in zones]:
            del self.zones[name]
        for name in zones:
            self.zones.setdefault(name, ZoneState())
        # A discovered server that is gone takes its serial series with it.
        names = {target.name for target in config.targets}
        for zone_state in self.zones.values():
            for gone in [t for t in zone_state.serials if t not in names]:
                del zone_state.serials[gone]
                zone_state.behind.pop(gone, None)

    def record_reload(self, ok: bool, now: float | None = None) -> None:
        self.reload_success = int(ok)
        self.reloads["success" if ok else "failure"] += 1
        if ok:
            self.reload_timestamp = time.time() if now is None else now

    # -- zone targets ----------------------------------------------------------------

    def record_zone_discovery(self, zone: str, *, ok: bool, addresses: int | None = None,
                              added: int = 0, removed: int = 0) -> None:  # fmt: skip
        state = self.zones.setdefault(zone, ZoneState())
        state.discovery_success = int(ok)
        if addresses is not None:
            state.addresses = addresses
        state.changes["added"] += added
        state.changes["removed"] += removed

    def record_zone_serials(self, zone: str, serials: dict[str, int]) -> None:
        """The serials read in one round; servers that did not answer have none."""
        state = self.zones.setdefault(zone, ZoneState())
        state.serials = dict(serials)
        state.behind = serials_behind(serials)

    # -- probe results ---------------------------------------------------------------

    def record(self, target: str, probe: str, result: ProbeResult) -> None:
        """O(1) update from one probe result."""
        state = self.pairs.get((target, probe))
        if state is None:
            return  # the pair was removed by a reload while the probe ran
        dso = result.outcome.dso
        if dso is not None and dso.target_removed:
            return  # its target was removed while it ran (added back since, maybe)
        if dso is not None and dso.held_by_retry_delay:
            # RFC 8490 §6.6.1: the server asked us to stay away. The run judged
            # nothing, so the pair keeps the cause of its last real exchange.
            self.skipped["retry_delay"] += 1
            return
        key = (result.rcode_label, result.cause.value)
        state.responses[key] = state.responses.get(key, 0) + 1
        if state.cause is not None and state.cause is not result.cause:
            state.gap_changes += 1
        if state.cause is not result.cause:
            state.since = result.started_at
        state.cause = result.cause
        rcode = result.outcome.rcode
        state.last_rcode = -1 if rcode is None else rcode
        state.success = int(result.success)
        state.last_run = result.started_at + result.duration
        if state.duration is not None:
            state.duration.observe(result.duration)
        state.last_result = result
        found = result.outcome.violations
        # Most replies violate nothing, like the one before: then nothing changes.
        if found or state.violating:
            for check in state.violation:
                state.violation[check] = 0
            for check in found:
                if check in state.violation:
                    state.violation[check] = 1
                    state.violations_total[check] += 1
            state.violating = len(found)
        if result.outcome.cert_not_after is not None:
            state.cert_not_after = result.outcome.cert_not_after
        if dso is not None:
            state.push_notifications += dso.push_notifications
            self._record_dso(target, dso)
        if result.fallback is not None:
            outcome = "success" if result.fallback.ok else "failure"
            state.fallback[outcome] = state.fallback.get(outcome, 0) + 1
            state.fallback_active = 1
        elif state.spec.fallback is not None:
            state.fallback_active = 0

    def _record_dso(self, target: str, dso: DsoFacts) -> None:
        # Each gauge shows the latest probe that it describes (see METRICS' help): a
        # session and a Retry Delay belong to every probe, timers only to the probes
        # that received a Keepalive TLV.
        state = self.dso.setdefault(target, DsoTargetState())
        state.established = int(dso.session_established)
        if dso.inactivity_timeout is not None:
            state.inactivity_timeout = dso.inactivity_timeout
        if dso.keepalive_interval is not None:
            state.keepalive_interval = dso.keepalive_interval
        state.retry_delay = dso.retry_delay or 0.0
        if dso.closed_reason:
            self.record_session_closed(target, dso.closed_reason)

    def record_session_closed(self, target: str, reason: str) -> None:
        state = self.dso.get(target)
        if state is None:
            return  # a target removed by a reload: its series must not come back
        state.closed[reason] = state.closed.get(reason, 0) + 1

    # -- exposition ------------------------------------------------------------------

    def render(self, *, include_self: bool = True) -> str:
        """Prometheus text exposition (version 0.0.4) of the whole state.

        ``include_self=False`` leaves out the exporter's own metrics and the probe's
        schedule (for /probe, which returns only the metrics of that one probe)."""
        return "".join(self.render_chunks(include_self=include_self, lines_per_chunk=1 << 62))

    def render_chunks(self, *, include_self: bool = True,
                      lines_per_chunk: int = 20_000) -> Iterator[str]:  # fmt: skip
        """The exposition text in pieces of at most ``lines_per_chunk`` samples.

        A fleet's /metrics is a million series: rendered in one go it holds the event
        loop for seconds (every probe due meanwhile starts late) and the whole text in
        memory. The HTTP handler writes each piece and yields to the loop between
        them. Every sample line is read from the state in one step and the families
        iterate over snapshots, so probes recorded between pieces are safe: a scrape
        sees each series whole, at some instant during the scrape.
        """
        out: list[str] = []
        for family in _FAMILIES if include_self else PAIR_FAMILIES:
            # A snapshot per family: a reload may add or drop pairs while a chunked
            # scrape is paused.
            lines = family.samples(self, list(self.pairs.values()))
            first = next(lines, None)
            if first is None:
                if family.always:
                    out.append(family.header)
                continue
            out.append(family.header)
            out.append(first)
            # islice and extend take the lines in C: a per-line loop here was most of
            # the render (a /probe answer's and a fleet's alike).
            while True:
                if len(out) >= lines_per_chunk:
                    yield "".join(out)
                    out = []
                room = lines_per_chunk - len(out)
                taken = len(out)
                out.extend(itertools.islice(lines, room))
                if len(out) - taken < room:
                    break
        if out:
            yield "".join(out)


@dataclass(frozen=True, slots=True)
class PairPlan:
    """What one (target, probe) pair exports, worked out without touching the state:
    pure, so a reload makes these in a worker thread."""

    key: tuple[str, str]
    spec: ProbeSpec
    labels: str  # pre-rendered 'target="..",probe=".."'
    info: str  # pre-rendered probe_info labels
    checks: tuple[str, ...]


def plan_pair(target: Target, spec: ProbeSpec, conformance: bool = True) -> PairPlan:
    return PairPlan((target.name, spec.name), spec,
                    render_labels((("target", target.name), ("probe", spec.name))),
                    render_labels(probe_info_labels(target, spec)),
                    applicable_checks(target, spec) if conformance else ())  # fmt: skip


def applicable_checks(target: Target, spec: ProbeSpec) -> tuple[str, ...]:
    """The conformance checks a pair has series for (docs/conformance.md)."""
    if spec.kind not in conformance.CHECKED_KINDS:
        return ()
    return _checks(spec, target.role, target.zone)


@functools.lru_cache(maxsize=4096)
def _checks(spec: ProbeSpec, role: str | None, zone: str) -> tuple[str, ...]:
    # Building the request costs about a millisecond; a fleet's targets share a few
    # templates, so 60,000 pairs have a handful of distinct answers (start-up and
    # reload of a fleet went from tens of seconds to about one).
    request = request_for(spec, zone).wire
    return conformance.checks_for(spec, role, zone, request)


def _gap_causes(state: PairState) -> Iterator[str]:
    """The causes a pair's support_gap gauge has series for: the pre-created gap
    causes plus whatever cause it has seen."""
    seen = {cause for (_, cause) in state.responses}
    seen.discard(Cause.NONE.value)
    yield from sorted(seen)


def _by_label(name: str, label: str, counts: Iterable[tuple[str, int]],
              labels: str = "") -> Iterator[str]:  # fmt: skip
    """One sample per (label value, count), after the pre-rendered ``labels``."""
    sep = "," if labels else ""
    for value, count in list(counts):
        yield f'{name}{{{labels}{sep}{label}="{escape_label_value(value)}"}} {count}\n'


def _histogram_lines(name: str, key: str, hist: Histogram) -> list[str]:
    sep = "," if key else ""
    bucket = f'{name}_bucket{{{key}{sep}le="'
    brace = f"{{{key}}}" if key else ""
    return [*(f'{bucket}{bound}"}} {running}\n' for bound, running in hist.cumulative()),
            f"{name}_sum{brace} {format_number(hist.total)}\n",
            f"{name}_count{brace} {hist.count}\n"]  # fmt: skip


# -- exposition: one sampler per family ----------------------------------------------
# A sampler yields a family's sample lines from its name, the state and a snapshot
# of its pairs. A table rather than a chain of name tests: a /probe answer renders
# ~40 families for one pair, and finding each one's branch was a third of its render.

Sampler = Callable[[str, "MetricsState", list[PairState]], Iterator[str]]


def _pair_value(attribute: str, spec: str = "") -> Sampler:
    """One sample per pair read from one :class:`PairState` slot (none while None)."""

    def samples(name: str, _: MetricsState, pairs: list[PairState]) -> Iterator[str]:
        for s in pairs:
            value = getattr(s, attribute)
            if value is not None:
                yield f"{name}{{{s.key}}} {value:{spec}}\n"

    return samples


def _responses(name: str, _: MetricsState, pairs: list[PairState]) -> Iterator[str]:
    for s in pairs:
        for (rcode, cause), count in list(s.responses.items()):
            yield f'{name}{{{s.key},rcode="{rcode}",cause="{cause}"}} {count}\n'


def _support_gap(name: str, _: MetricsState, pairs: list[PairState]) -> Iterator[str]:
    for s in pairs:
        current = None if s.cause is None else s.cause.value
        for cause in _gap_causes(s):
            yield f'{name}{{{s.key},cause="{cause}"}} {1 if cause == current else 0}\n'


def _duration(name: str, _: MetricsState, pairs: list[PairState]) -> Iterator[str]:
    for s in pairs:
        if s.duration is not None:
            yield from _histogram_lines(name, s.key, s.duration)


def _interval(name: str, _: MetricsState, pairs: list[PairState]) -> Iterator[str]:
    for s in pairs:
        yield f"{name}{{{s.key}}} {format_number(s.spec.interval)}\n"


def _info(name: str, _: MetricsState, pairs: list[PairState]) -> Iterator[str]:
    for s in pairs:
        yield f"{name}{{{s.info}}} 1\n"


def _push_notifications(name: str, _: MetricsState, pairs: list[PairState]) -> Iterator[str]:
    for s in pairs:
        if s.kind is ProbeKind.DSO_PUSH_SUBSCRIBE:
            yield f"{name}{{{s.key}}} {s.push_notifications}\n"


def _fallback_total(name: str, _: MetricsState, pairs: list[PairState]) -> Iterator[str]:
    for s in pairs:
        if s.spec.fallback is not None:
            for result in ("success", "failure"):
                yield f'{name}{{{s.key},result="{result}"}} {s.fallback.get(result, 0)}\n'


def _fallback_active(name: str, _: MetricsState, pairs: list[PairState]) -> Iterator[str]:
    for s in pairs:
        if s.spec.fallback is not None:
            yield f"{name}{{{s.key}}} {s.fallback_active}\n"


def _per_check(attribute: str) -> Sampler:
    def samples(name: str, _: MetricsState, pairs: list[PairState]) -> Iterator[str]:
        for s in pairs:
            for check, value in list(getattr(s, attribute).items()):
                yield f'{name}{{{s.key},check="{check}"}} {value}\n'

    return samples


def _per_dso_target(value: Callable[[DsoTargetState], float | None]) -> Sampler:
    """One sample per DSO target (none while ``value`` is None)."""

    def samples(name: str, state: MetricsState, _: list[PairState]) -> Iterator[str]:
        for target, d in list(state.dso.items()):
            number = value(d)
            if number is not None:
                yield f'{name}{{target="{escape_label_value(target)}"}} {format_number(number)}\n'

    return samples


def _sessions_closed(name: str, state: MetricsState, _: list[PairState]) -> Iterator[str]:
    for target, d in list(state.dso.items()):
        labels = f'target="{escape_label_value(target)}"'
        yield from _by_label(name, "reason", sorted(d.closed.items()), labels)


def _per_zone(lines: Callable[[str, str, ZoneState], Iterator[str]]) -> Sampler:
    def samples(name: str, state: MetricsState, _: list[PairState]) -> Iterator[str]:
        for zone, z in list(state.zones.items()):
            yield from lines(name, f'zone="{escape_label_value(zone)}"', z)

    return samples


def _zone_discovery(name: str, labels: str, z: ZoneState) -> Iterator[str]:
    if z.discovery_success is not None:
        yield f"{name}{{{labels}}} {z.discovery_success}\n"


def _zone_addresses(name: str, labels: str, z: ZoneState) -> Iterator[str]:
    yield f"{name}{{{labels}}} {z.addresses}\n"


def _zone_changes(name: str, labels: str, z: ZoneState) -> Iterator[str]:
    yield from _by_label(name, "change", z.changes.items(), labels)


def _zone_serials(name: str, labels: str, z: ZoneState) -> Iterator[str]:
    yield from _by_label(name, "target", sorted(z.serials.items()), labels)


def _zone_behind(name: str, labels: str, z: ZoneState) -> Iterator[str]:
    yield from _by_label(name, "target", sorted(z.behind.items()), labels)


def _own(value: Callable[[MetricsState], object], labels: str = "") -> Sampler:
    """The exporter's own one-sample families."""
    brace = f"{{{labels}}}" if labels else ""

    def samples(name: str, state: MetricsState, _: list[PairState]) -> Iterator[str]:
        yield f"{name}{brace} {value(state)}\n"

    return samples


def _own_by_label(label: str, counts: Callable[[MetricsState], dict[str, int]]) -> Sampler:
    def samples(name: str, state: MetricsState, _: list[PairState]) -> Iterator[str]:
        yield from _by_label(name, label, counts(state).items())

    return samples


def _lateness(name: str, state: MetricsState, _: list[PairState]) -> Iterator[str]:
    yield from _histogram_lines(name, "", state.lateness)


_SAMPLERS: dict[str, Sampler] = {
    "dnsgap_probe_responses_total": _responses,
    "dnsgap_support_gap": _support_gap,
    "dnsgap_probe_last_rcode": _pair_value("last_rcode"),
    "dnsgap_probe_success": _pair_value("success"),
    "dnsgap_probe_duration_seconds": _duration,
    "dnsgap_probe_last_run_timestamp_seconds": _pair_value("last_run", ".3f"),
    "dnsgap_probe_interval_seconds": _interval,
    "dnsgap_support_gap_since_timestamp_seconds": _pair_value("since", ".3f"),
    "dnsgap_gap_changes_total": _pair_value("gap_changes"),
    "dnsgap_probe_info": _info,
    "dnsgap_dso_session_established": _per_dso_target(lambda d: d.established),
    "dnsgap_dso_inactivity_timeout_seconds": _per_dso_target(lambda d: d.inactivity_timeout),
    "dnsgap_dso_keepalive_interval_seconds": _per_dso_target(lambda d: d.keepalive_interval),
    "dnsgap_dso_retry_delay_seconds": _per_dso_target(lambda d: d.retry_delay),
    "dnsgap_dso_sessions_closed_total": _sessions_closed,
    "dnsgap_dso_push_notifications_total": _push_notifications,
    "dnsgap_fallback_total": _fallback_total,
    "dnsgap_fallback_active": _fallback_active,
    "dnsgap_conformance_violation": _per_check("violation"),
    "dnsgap_conformance_violations_total": _per_check("violations_total"),
    "dnsgap_tls_cert_expiry_timestamp_seconds": _pair_value("cert_not_after", ".0f"),
    "dnsgap_build_info": _own(lambda _: 1, _BUILD_LABELS),
    "dnsgap_config_reload_success": _own(lambda s: s.reload_success),
    "dnsgap_config_last_reload_success_timestamp_seconds": _own(
        lambda s: f"{s.reload_timestamp:.3f}"),
    "dnsgap_config_reloads_total": _own_by_label("result", lambda s: s.reloads),
    "dnsgap_config_restart_required": _own(lambda s: s.restart_required),
    "dnsgap_scheduler_lateness_seconds": _lateness,
    "dnsgap_probes_in_flight": _own(lambda s: s.in_flight),
    "dnsgap_probes_skipped_total": _own_by_label("reason", lambda s: s.skipped),
    "dnsgap_probe_requests_waiting": _own(lambda s: s.probe_requests_waiting),
    "dnsgap_probe_requests_queued_total": _own(lambda s: s.probe_requests_queued),
    "dnsgap_probe_requests_refused_total": _own_by_label(
        "reason", lambda s: s.probe_requests_refused),
    "dnsgap_zone_discovery_success": _per_zone(_zone_discovery),
    "dnsgap_zone_addresses": _per_zone(_zone_addresses),
    "dnsgap_zone_address_changes_total": _per_zone(_zone_changes),
    "dnsgap_zone_soa_serial": _per_zone(_zone_serials),
    "dnsgap_zone_serial_behind": _per_zone(_zone_behind),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family of the exposition, and how its samples are read."""

    name: str
    header: str  # HELP and TYPE lines, built once (formatting them was a third of a
    # /probe answer's render)
    always: bool  # the header even without samples
    sampler: Sampler

    def samples(self, state: MetricsState, pairs: list[PairState]) -> Iterator[str]:
        return self.sampler(self.name, state, pairs)


_ALWAYS = frozenset({"dnsgap_build_info", "dnsgap_probes_in_flight"})
_FAMILIES = tuple(Family(name, f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n",
                         kind == "counter" or name in _ALWAYS, _SAMPLERS[name])
                  for name, kind, help_text in METRICS)  # fmt: skip
#: The exporter's own metrics: METRICS from dnsgap_build_info on.
_SELF = frozenset(name for name, _, _ in
                  METRICS[[m[0] for m in METRICS].index("dnsgap_build_info"):])  # fmt: skip
#: A /probe answer: the probe's own series; not the exporter's, nor the schedule (it
#: runs when Prometheus scrapes it).
PAIR_FAMILIES = tuple(family for family in _FAMILIES
                      if family.name not in _SELF
                      and family.name != "dnsgap_probe_interval_seconds")  # fmt: skip
assert set(_SAMPLERS) == {name for name, _, _ in METRICS}, "a family without a sampler"


class GapCollector:
    """prometheus_client Collector over a :class:`MetricsState` (same families as render)."""

    def __init__(self, state: MetricsState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.parser import text_string_to_metric_families

        # One source of truth: the families are parsed from the fast renderer's text,
        # so the two paths cannot drift apart.
        yield from text_string_to_metric_families(self.state.render())
