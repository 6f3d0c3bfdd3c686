"""A /probe answer is the one-pair render of its result, whether its text comes
from the pair's earlier answers or not: only the timings differ between two
answers with the same fingerprint, and they are always this result's."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import probeanswer
from exporter.causes import Cause
from exporter.config import Config, FallbackSettings, ProbeSpec, SchedulerSettings, Target
from exporter.kinds import ProbeKind
from exporter.metrics import MetricsState, PairState, plan_pair
from exporter.outcome import Outcome, WireEvent
from exporter.probeanswer import ProbeAnswers
from exporter.probes import FallbackResult, ProbeResult

SOA = ProbeSpec(name="soa", kind=ProbeKind.QUERY, qname="@", qtype=6)
IXFR = ProbeSpec(name="ixfr", kind=ProbeKind.IXFR,
                 fallback=FallbackSettings(kind=ProbeKind.AXFR))
UPDATE = ProbeSpec(name="update", kind=ProbeKind.UPDATE)
TARGET = Target("ns1", "127.0.0.1", 5353, (SOA, IXFR, UPDATE), zone="gap.test.")
CHECKS = ("rd", "ad", "noopt", "soa", "qname-case", "not-a-check")


def uncached(config: Config, spec: ProbeSpec, result: ProbeResult) -> str:
    """The answer as /probe rendered it before answers were kept: every line anew."""
    single = MetricsState()
    single.configure(config)
    single.install_pairs((plan_pair(TARGET, spec, config.scheduler.conformance_series),))
    single.record(TARGET.name, spec.name, result)
    return single.render(include_self=False)


outcomes = st.builds(
    lambda rcode, violations, cert: Outcome(
        WireEvent.REPLY if rcode is not None else WireEvent.TIMEOUT, rcode,
        violations=tuple(violations), cert_not_after=cert),
    st.one_of(st.none(), st.sampled_from([0, 1, 2, 3, 4, 5, 9, 16, 23, 3841])),
    st.lists(st.sampled_from(CHECKS), max_size=3, unique=True),
    st.one_of(st.none(), st.floats(1e9, 2e9)),
)  # fmt: skip
results = st.builds(
    ProbeResult, outcomes, st.sampled_from(list(Cause)), st.booleans(),
    st.floats(0, 20), st.floats(1.7e9, 1.9e9),
    st.one_of(st.none(), st.builds(FallbackResult, st.just(ProbeKind.AXFR),
                                   st.sampled_from([Cause.NONE, Cause.REFUSED]), st.just(0))),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(spec=st.sampled_from([SOA, IXFR, UPDATE]), histogram=st.booleans(),
       conformance=st.booleans(), answers=st.lists(results, min_size=1, max_size=6))  # fmt: skip
def test_every_answer_equals_the_one_pair_render_of_its_result(
        spec: ProbeSpec, histogram: bool, conformance: bool,
        answers: list[ProbeResult]) -> None:  # fmt: skip
    config = Config(targets=(TARGET,), scheduler=SchedulerSettings(
        duration_histogram=histogram, conformance_series=conformance))  # fmt: skip
    # Repeats with new timings take the kept text: the timings must be this run's.
    runs = answers + [dataclasses.replace(r, duration=r.duration / 3 + 0.001,
                                          started_at=r.started_at + 61.25) for r in answers]
    answers = ProbeAnswers()
    for result in runs:
        assert answers.answer(config, TARGET, spec, result) == uncached(config, spec, result)


def ok(second: int) -> ProbeResult:
    return ProbeResult(Outcome(WireEvent.REPLY, 0), Cause.NONE, True, 0.0004 * (second % 50),
                       1.8e9 + second)  # fmt: skip


def test_a_pair_answering_alike_keeps_one_text_whatever_its_timings() -> None:
    answers = ProbeAnswers()
    for second in range(100):
        answers.answer(Config(targets=(TARGET,)), TARGET, SOA, ok(second))
    (kept,) = answers.pairs.values()
    assert len(kept.texts) == 1


def test_the_kept_texts_stay_within_their_byte_budget() -> None:
    answers = ProbeAnswers()
    answers.max_text_bytes = 50_000  # about five answers
    config = Config(targets=(TARGET,))
    for second in range(40):
        # A new target (a fleet scraped round-robin) every request.
        fleet_member = dataclasses.replace(TARGET, name=f"ns{second}")
        answers.answer(config, fleet_member, SOA, ok(second))
        assert answers.text_bytes <= answers.max_text_bytes
        assert answers.text_bytes == sum(len(part) for kept in answers.pairs.values()
                                         for parts in kept.texts.values()
                                         for part in parts if isinstance(part, str))


def test_every_pair_state_slot_is_in_the_fingerprint_unless_the_plan_or_a_timing_fixes_it() -> (
        None):  # fmt: skip
    # A slot the answer shows but the fingerprint leaves out would serve another
    # result's text: new slots join the fingerprint unless named here on purpose.
    assert set(PairState.__slots__) - set(probeanswer._KEYED_SLOTS) == {
        "target", "probe", "kind", "spec", "key", "info", "checks", "last_result",
        "since", "last_run", "duration"}  # fmt: skip
