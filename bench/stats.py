"""Small pure helpers: spreads, histogram quantiles, exposition parsing."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """min / median / max of repeated measurements."""

    low: float
    mid: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(min(values), statistics.median(values), max(values))

    def scaled(self, factor: float) -> Spread:
        return Spread(self.low * factor, self.mid * factor, self.high * factor)

    def text(self, digits: int = 3) -> str:
        return f"{self.mid:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')


def samples(text: str, prefix: str) -> dict[tuple[str, str], float]:
    """{(name, labels text): value} of the sample lines whose name starts with prefix."""
    found: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        match = _SAMPLE.match(line)
        if match:
            found[(match[1], match[2] or "")] = float(match[3])
    return found


def histogram_delta(before: str, after: str, name: str) -> list[tuple[float, float]]:
    """Cumulative (le, count) bucket pairs of ``name`` observed between two scrapes."""
    old, new = samples(before, name + "_bucket"), samples(after, name + "_bucket")
    buckets = []
    for (_, labels), value in new.items():
        bound = re.search(r'le="([^"]+)"', labels)
        if bound:
            le = math.inf if bound[1] == "+Inf" else float(bound[1])
            buckets.append((le, value - old.get((name + "_bucket", labels), 0.0)))
    return sorted(buckets)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return buckets[-1][0]
