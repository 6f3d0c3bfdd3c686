"""/probe's answer: the series of one probe result, none of the exporter's own
(blackbox style).

An answer is rendered by the same :class:`MetricsState` as /metrics, from a state
that holds just the one pair. Rendering its ~120 lines was a quarter of a /probe's
CPU, and a pair gives the same answer request after request: only its timings
change. So each pair keeps the texts of the answers it gave, by a fingerprint of
the pair's state after the result, with holes where the timing families go; the
holes are filled by the families' own samplers.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass, field

from exporter.config import Config, ProbeSpec, Target
from exporter.metrics import PAIR_FAMILIES, Family, MetricsState, PairPlan, PairState, plan_pair
from exporter.probes import ProbeResult

#: The families that change with every run, and the PairState slots they show: the
#: texts have holes for their samples. Only whether each slot is set is part of the
#: fingerprint (it decides whether the family's header is in the text).
_FRESH_FAMILIES = frozenset({"dnsgap_probe_duration_seconds",
                             "dnsgap_probe_last_run_timestamp_seconds",
                             "dnsgap_support_gap_since_timestamp_seconds"})  # fmt: skip
_FRESH_SLOTS = ("duration", "last_run", "since")
#: PairState slots the text does not depend on beyond the pair's plan: fixed by the
#: plan, or not exported.
_FIXED_SLOTS = frozenset({"target", "probe", "kind", "spec", "key", "info", "checks",
                          "last_result"})  # fmt: skip
#: Every other slot is what the answer said: equal values, equal text. A slot added
#: to PairState joins the fingerprint unless listed above
#: (tests/test_probe_answer.py).
_KEYED_SLOTS = tuple(slot for slot in PairState.__slots__
                     if slot not in _FIXED_SLOTS and slot not in _FRESH_SLOTS)  # fmt: skip
_keyed_values = operator.attrgetter(*_KEYED_SLOTS)
_fresh_values = operator.attrgetter(*_FRESH_SLOTS)

Parts = tuple[str | Family, ...]


@dataclass(slots=True)
class _PairAnswers:
    """A pair's plan and the texts of the answers it has given."""

    target: Target
    spec: ProbeSpec
    plan: PairPlan
    texts: dict[tuple[object, ...], Parts] = field(default_factory=dict)


class ProbeAnswers:
    """The /probe answers of one exporter, with the texts its pairs gave."""

    #: Pairs kept, by id of (target, spec): a pair's labels and checks are the same
    #: request after request.
    max_pairs = 4096
    #: The texts kept, over all pairs: about 9 kB each (a UDP query with its
    #: conformance series), so some 3,500 answers; past it, all texts are dropped
    #: and the pairs start over (those of targets a reload removed go with them).
    max_text_bytes = 32 << 20

    def __init__(self) -> None:
        # The value holds target and spec, so their ids are not reused while kept.
        self.pairs: dict[tuple[int, int, bool], _PairAnswers] = {}
        self.text_bytes = 0

    def answer(self, config: Config, target: Target, spec: ProbeSpec,
               result: ProbeResult) -> str:  # fmt: skip
        conformance_series = config.scheduler.conformance_series
        key = (id(target), id(spec), conformance_series)
        answers = self.pairs.get(key)
        if answers is None or answers.target is not target or answers.spec is not spec:
            if len(self.pairs) >= self.max_pairs:
                self.forget()  # a config churning through targets: start over
            answers = _PairAnswers(target, spec, plan_pair(target, spec, conformance_series))
            self.pairs[key] = answers
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
        pairs = list(single.pairs.values())
        fingerprint = answer_fingerprint(pairs[0])
        parts = answers.texts.get(fingerprint)
        if parts is None:
            parts = _with_holes(single, pairs)
            self._keep(answers, fingerprint, parts)
        return "".join(part if isinstance(part, str) else "".join(part.samples(single, pairs))
                       for part in parts)  # fmt: skip

    def forget(self) -> None:
        """Drop every kept plan and text."""
        self.pairs.clear()
        self.text_bytes = 0

    def _keep(self, answers: _PairAnswers, fingerprint: tuple[object, ...],
              parts: Parts) -> None:  # fmt: skip
        size = sum(len(part) for part in parts if isinstance(part, str))
        if self.text_bytes + size > self.max_text_bytes:
            for other in self.pairs.values():
                other.texts.clear()
            self.text_bytes = 0
        answers.texts[fingerprint] = parts
        self.text_bytes += size


def answer_fingerprint(state: PairState) -> tuple[object, ...]:
    """What a pair's answer text depends on, its timings left out."""
    keyed = tuple(tuple(value.items()) if type(value) is dict else value
                  for value in _keyed_values(state))  # fmt: skip
    return keyed, tuple(value is None for value in _fresh_values(state))


def _with_holes(single: MetricsState, pairs: list[PairState]) -> Parts:
    """The one-pair render with a hole (the family) where each fresh family's
    samples go; the text between two holes in one piece."""
    parts: list[str | Family] = []
    text: list[str] = []
    for family in PAIR_FAMILIES:
        lines = "".join(family.samples(single, pairs))
        if lines and family.name in _FRESH_FAMILIES:
            text.append(family.header)
            parts += ["".join(text), family]
            text = []
        elif lines:
            text += [family.header, lines]
        elif family.always:
            text.append(family.header)
    parts.append("".join(text))
    return tuple(parts)
