"""/probe's answer: the series of one probe result, none of the exporter's own
(blackbox style).

An answer is rendered by the same :class:`MetricsState` as /metrics, from a state
that holds just the one pair. Rendering its ~120 lines was a quarter of a /probe's
CPU, and a pair gives the same answer request after request: only its timings
change. So each pair keeps the texts of the answers it gave, by a fingerprint of
the pair's state after the result, with holes where the timings go.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.config import Config, ProbeSpec, Target
from exporter.metrics import MetricsState, PairPlan, PairState, format_number, plan_pair
from exporter.probes import ProbeResult

#: The samples that change with every run, and how each shows its value (as the
#: /metrics renderer does): the answer's text has a hole for each.
Fill = Callable[[PairState], str]
_FRESH_SAMPLES: tuple[tuple[str, Fill], ...] = (
    ("dnsgap_probe_duration_seconds_sum",
     lambda s: format_number(s.duration.total) if s.duration is not None else ""),
    ("dnsgap_probe_last_run_timestamp_seconds", lambda s: f"{s.last_run:.3f}"),
    ("dnsgap_support_gap_since_timestamp_seconds", lambda s: f"{s.since:.3f}"),
)  # fmt: skip
#: PairState slots the text does not depend on beyond the pair's plan: fixed by the
#: plan, or not exported.
_FIXED_SLOTS = frozenset({"target", "probe", "kind", "spec", "key", "info", "checks",
                          "last_result"})  # fmt: skip
#: The slots whose values go into the holes: only whether they are set is part of
#: the fingerprint (and the histogram's bucket counts, not its sum).
_FRESH_SLOTS = ("since", "last_run", "duration")
#: Every other slot is what the answer said: equal values, equal text. A slot added
#: to PairState joins the fingerprint unless listed above
#: (tests/test_probe_answer.py).
_KEYED_SLOTS = tuple(slot for slot in PairState.__slots__
                     if slot not in _FIXED_SLOTS and slot not in _FRESH_SLOTS)  # fmt: skip
_keyed_values = operator.attrgetter(*_KEYED_SLOTS)
_fresh_values = operator.attrgetter(*_FRESH_SLOTS)

Parts = tuple[str | Fill, ...]


@dataclass(slots=True)
class _PairAnswers:
    """A pair's plan and the texts of the answers it has given."""

    target: Target
    spec: ProbeSpec
    plan: PairPlan
    texts: dict[tuple[object, ...], Parts] = field(default_factory=dict)


#: By id of (target, spec): a pair's labels and checks are the same request after
#: request. The value holds both, so their ids are not reused while cached.
_pairs: dict[tuple[int, int, bool], _PairAnswers] = {}
_MAX_PAIRS = 4096
#: Distinct answers kept per pair: a healthy pair gives one, a pair with a gap two
#: or three (per rcode and conformance verdict); a bound, not an expectation.
_MAX_TEXTS = 64


def probe_answer(config: Config, target: Target, spec: ProbeSpec, result: ProbeResult) -> str:
    conformance_series = config.scheduler.conformance_series
    key = (id(target), id(spec), conformance_series)
    answers = _pairs.get(key)
    if answers is None or answers.target is not target or answers.spec is not spec:
        if len(_pairs) >= _MAX_PAIRS:
            _pairs.clear()  # a config churning through targets: start over
        answers = _PairAnswers(target, spec, plan_pair(target, spec, conformance_series))
        _pairs[key] = answers
    single = MetricsState()
    single.configure(config)
    single.install_pairs((answers.plan,))
    if spec.kind.is_dso:
        single.set_dso_targets({target.name})
    if config.zones:
        single.sync_zones(dataclasses.replace(config, targets=(target,)))
    single.record(target.name, spec.name, result)
    if single.dso or single.zones:
        # Per-target DSO and per-zone state are in the answer too; rare on /probe.
        return single.render(include_self=False)
    state = single.pairs[answers.plan.key]
    fingerprint = answer_fingerprint(state)
    parts = answers.texts.get(fingerprint)
    if parts is None:
        if len(answers.texts) >= _MAX_TEXTS:
            answers.texts.clear()
        parts = answers.texts[fingerprint] = _with_holes(single.render(include_self=False),
                                                         state)  # fmt: skip
    return "".join(part if isinstance(part, str) else part(state) for part in parts)


def answer_fingerprint(state: PairState) -> tuple[object, ...]:
    """What a pair's answer text depends on, its timings left out."""
    keyed = tuple(tuple(value.items()) if type(value) is dict else value
                  for value in _keyed_values(state))  # fmt: skip
    since, last_run, duration = _fresh_values(state)
    counts = None if duration is None else (tuple(duration.counts), duration.count)
    return keyed, since is None, last_run is None, counts


def _with_holes(text: str, state: PairState) -> Parts:
    """``text`` cut around the values of the fresh samples (each line's name and
    labels stay in the text)."""
    holes: list[tuple[int, int, Fill]] = []
    for name, fill in _FRESH_SAMPLES:
        prefix = f"\n{name}{{{state.key}}} "
        at = text.find(prefix)
        if at >= 0:
            start = at + len(prefix)
            holes.append((start, text.index("\n", start), fill))
    parts: list[str | Fill] = []
    done = 0
    for start, end, fill in sorted(holes, key=lambda hole: hole[0]):
        parts += [text[done:start], fill]
        done = end
    parts.append(text[done:])
    return tuple(parts)
