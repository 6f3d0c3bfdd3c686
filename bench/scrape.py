"""Scrape cost: dnsgap's /metrics renderer vs prometheus_client's registry, same series.

Both run in this process, one after the other, on the same series (the registry
is filled from dnsgap's own exposition, so names, labels and values match);
CPU is this process's own CPU time around each render.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bench.dnsserver import ZONE
from bench.stats import Spread
from exporter.causes import Cause
from exporter.config import Config, EdnsSettings, ProbeSpec, Target
from exporter.kinds import ProbeKind
from exporter.metrics import DURATION_BUCKETS, METRICS, MetricsState
from exporter.outcome import Outcome, WireEvent
from exporter.probes import ProbeResult

_SPECS = tuple(ProbeSpec(name=name, kind=ProbeKind.QUERY, qname=ZONE, qtype=qtype,
                         edns=EdnsSettings(nsid=name == "nsid"))
               for name, qtype in (("soa", 6), ("ns", 2), ("a", 1), ("txt", 16),
                                   ("nsid", 6), ("noedns", 6)))  # fmt: skip


@dataclass
class ScrapeResult:
    series: int
    pairs: int
    dnsgap_bytes: int
    registry_bytes: int
    #: CPU-microseconds per series.
    dnsgap_us: Spread
    registry_us: Spread


def build_state(pairs: int, histogram: bool = True) -> MetricsState:
    per_target = len(_SPECS)
    targets = [Target(name=f"t{index:06d}", host="127.0.0.1", port=53, probes=_SPECS,
                      zone=ZONE) for index in range(-(-pairs // per_target))]  # fmt: skip
    wanted = [(t, s) for t in targets for s in _SPECS][:pairs]
    state = MetricsState()
    config = Config(targets=tuple(targets))
    if not histogram:
        import dataclasses

        config = dataclasses.replace(config, scheduler=dataclasses.replace(
            config.scheduler, duration_histogram=False))
    state.sync(config, wanted)
    now = time.time()
    for target, spec in wanted:
        outcome = Outcome(WireEvent.REPLY, 0, transport="udp", bytes_received=80)
        state.record(target.name, spec.name,
                     ProbeResult(outcome, Cause.NONE, True, 0.0012, now))  # fmt: skip
    return state


def series_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def series_per_pair(histogram: bool = True) -> int:
    one, two = build_state(1, histogram).render(), build_state(2, histogram).render()
    return series_count(two) - series_count(one)


_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def registry_from(text: str) -> CollectorRegistry:
    """A prometheus_client registry holding the same series as dnsgap's exposition."""
    import prometheus_client

    prometheus_client.disable_created_metrics()  # dnsgap emits no _created series
    registry = CollectorRegistry()
    kinds = {name: (kind, help_text) for name, kind, help_text in METRICS}
    metrics: dict[str, Counter | Gauge | Histogram] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match or line.startswith("#"):
            continue
        name, labels_text, value = match[1], match[2] or "", float(match[3])
        labels = dict(_LABEL.findall(labels_text))
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name.removesuffix(suffix) in kinds:
                family = name.removesuffix(suffix)
        kind, help_text = kinds[family]
        labels.pop("le", None)
        if family not in metrics:
            names = list(labels)
            if kind == "counter":
                metrics[family] = Counter(family.removesuffix("_total"), help_text, names,
                                          registry=registry)  # fmt: skip
            elif kind == "gauge":
                metrics[family] = Gauge(family, help_text, names, registry=registry)
            else:
                metrics[family] = Histogram(family, help_text, names, registry=registry,
                                            buckets=DURATION_BUCKETS)  # fmt: skip
        metric = metrics[family]
        child = metric.labels(**labels) if labels else metric
        if isinstance(child, Counter):
            child.inc(value)
        elif isinstance(child, Gauge):
            child.set(value)
        elif name.endswith("_sum"):
            child.observe(value)
    return registry


def measure(series: int, repeats: int) -> ScrapeResult:
    per_pair = series_per_pair()
    pairs = max(1, series // per_pair)
    state = build_state(pairs)
    text = state.render()
    registry = registry_from(text)
    registry_text = generate_latest(registry)
    count = series_count(text)
    ours, theirs = [], []
    for _ in range(repeats):  # interleaved: noise hits both alike
        start = time.process_time()
        state.render().encode()
        ours.append((time.process_time() - start) * 1e6 / count)
        start = time.process_time()
        generate_latest(registry)
        theirs.append((time.process_time() - start) * 1e6 / count)
    return ScrapeResult(count, pairs, len(text.encode()), len(registry_text),
                        Spread.of(ours), Spread.of(theirs))  # fmt: skip
