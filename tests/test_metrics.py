"""The metric contract: names, types, labels, pre-created series, and reload behaviour."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from exporter.causes import Cause
from exporter.config import Config, ProbeSpec, SchedulerSettings, Target
from exporter.kinds import ProbeKind
from exporter.metrics import METRICS, GapCollector, MetricsState
from exporter.outcome import DsoFacts, Outcome, WireEvent
from exporter.probes import ProbeResult


def target(name: str, *specs: ProbeSpec) -> Target:
    return Target(name, "127.0.0.1", 5353, specs, zone="gap.test.")


UPDATE = ProbeSpec(name="update", kind=ProbeKind.UPDATE)
SOA = ProbeSpec(name="soa", kind=ProbeKind.QUERY)
PUSH = ProbeSpec(name="push", kind=ProbeKind.DSO_PUSH_SUBSCRIBE)


def state_for(*targets: Target, histogram: bool = True) -> MetricsState:
    config = Config(targets=targets, scheduler=SchedulerSettings(duration_histogram=histogram))
    state = MetricsState()
    state.sync(config, [(t, s) for t in targets for s in t.probes])
    return state


def result(rcode: int | None, cause: Cause, event: WireEvent = WireEvent.REPLY,
           dso: DsoFacts | None = None) -> ProbeResult:  # fmt: skip
    return ProbeResult(Outcome(event, rcode, dso=dso), cause, cause is Cause.NONE, 0.004,
                       time.time())  # fmt: skip


def samples(state: MetricsState) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(state.render()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_gap_series_exist_at_zero_before_any_probe_ran() -> None:
    values = samples(state_for(target("ns1", UPDATE)))
    notimp = key("dnsgap_probe_responses_total", target="ns1", probe="update", rcode="NOTIMP",
                 cause="not_implemented")  # fmt: skip
    assert values[notimp] == 0
    assert values[key("dnsgap_support_gap", target="ns1", probe="update",
                      cause="not_implemented")] == 0  # fmt: skip


def test_a_notimp_result_counts_and_raises_the_gap_gauge() -> None:
    state = state_for(target("ns1", UPDATE))
    state.record("ns1", "update", result(4, Cause.NOT_IMPLEMENTED))
    values = samples(state)
    assert values[key("dnsgap_probe_responses_total", target="ns1", probe="update",
                      rcode="NOTIMP", cause="not_implemented")] == 1  # fmt: skip
    assert values[key("dnsgap_support_gap", target="ns1", probe="update",
                      cause="not_implemented")] == 1  # fmt: skip
    assert values[key("dnsgap_probe_last_rcode", target="ns1", probe="update")] == 4
    assert values[key("dnsgap_probe_success", target="ns1", probe="update")] == 0


def test_gap_changes_count_transitions_not_repeats() -> None:
    state = state_for(target("ns1", UPDATE))
    for cause, rcode in [(Cause.NONE, 8), (Cause.NONE, 8), (Cause.NOT_IMPLEMENTED, 4),
                         (Cause.NOT_IMPLEMENTED, 4), (Cause.NONE, 8)]:  # fmt: skip
        state.record("ns1", "update", result(rcode, cause))
    assert samples(state)[key("dnsgap_gap_changes_total", target="ns1", probe="update")] == 2


def test_no_reply_is_rcode_none_and_last_rcode_minus_one() -> None:
    state = state_for(target("ns1", SOA))
    state.record("ns1", "soa", result(None, Cause.NO_RESPONSE, WireEvent.TIMEOUT))
    values = samples(state)
    assert values[key("dnsgap_probe_responses_total", target="ns1", probe="soa", rcode="none",
                      cause="no_response")] == 1  # fmt: skip
    assert values[key("dnsgap_probe_last_rcode", target="ns1", probe="soa")] == -1


def test_a_pair_that_has_not_run_has_no_last_rcode_nor_success_yet() -> None:
    # -1 is "the server sent no DNS reply": a pair still waiting for its first run
    # must not read as one whose server is silent.
    values = samples(state_for(target("ns1", SOA)))
    assert key("dnsgap_probe_last_rcode", target="ns1", probe="soa") not in values
    assert key("dnsgap_probe_success", target="ns1", probe="soa") not in values


def test_probe_info_carries_what_the_probe_sends() -> None:
    values = samples(state_for(target("ns1", UPDATE, SOA)))
    assert values[key("dnsgap_probe_info", target="ns1", probe="update",
                      server="127.0.0.1:5353", kind="update", transport="udp", opcode="5",
                      qtype="SOA")] == 1  # fmt: skip


def test_reload_keeps_unchanged_pairs_and_drops_deleted_ones() -> None:
    state = state_for(target("ns1", UPDATE, SOA))
    state.record("ns1", "update", result(4, Cause.NOT_IMPLEMENTED))
    state.sync(Config(targets=(target("ns1", UPDATE),)), [(target("ns1", UPDATE), UPDATE)])
    text = state.render()
    assert 'probe="soa"' not in text
    assert samples(state)[key("dnsgap_probe_responses_total", target="ns1", probe="update",
                              rcode="NOTIMP", cause="not_implemented")] == 1  # fmt: skip


def test_dso_facts_become_per_target_gauges() -> None:
    state = state_for(target("dso", PUSH))
    facts = DsoFacts(session_established=True, inactivity_timeout=15.0,
                     keepalive_interval=20.0, push_notifications=3)  # fmt: skip
    state.record("dso", "push", result(0, Cause.NONE, dso=facts))
    values = samples(state)
    assert values[key("dnsgap_dso_session_established", target="dso")] == 1
    assert values[key("dnsgap_dso_inactivity_timeout_seconds", target="dso")] == 15
    assert values[key("dnsgap_dso_keepalive_interval_seconds", target="dso")] == 20
    assert values[key("dnsgap_dso_push_notifications_total", target="dso", probe="push")] == 3


def test_histogram_can_be_switched_off_at_fleet_scale() -> None:
    assert "dnsgap_probe_duration_seconds_bucket" in state_for(target("a", SOA)).render()
    off = state_for(target("a", SOA), histogram=False)
    assert "dnsgap_probe_duration_seconds_bucket" not in off.render()


def test_every_rendered_family_is_in_the_contract_with_its_type_and_help() -> None:
    state = state_for(target("ns1", UPDATE, PUSH))
    contract = {name: (kind, help_text) for name, kind, help_text in METRICS}
    for family in text_string_to_metric_families(state.render()):
        kind, help_text = contract[family.name if family.type != "counter"
                                   else family.name + "_total"]  # fmt: skip
        assert family.type == kind
        assert family.documentation == help_text


def test_collector_yields_the_same_families_as_the_fast_renderer() -> None:
    state = state_for(target("ns1", UPDATE))
    state.record("ns1", "update", result(4, Cause.NOT_IMPLEMENTED))
    names = {family.name for family in GapCollector(state).collect()}
    assert "dnsgap_probe_responses" in names
    assert "dnsgap_support_gap" in names


def test_label_values_are_escaped() -> None:
    odd = Target('we"ird\\name\n', "127.0.0.1", 53, (SOA,))
    state = MetricsState()
    state.sync(Config(targets=(odd,)), [(odd, SOA)])
    state.record('we"ird\\name\n', "soa", result(None, Cause.NO_RESPONSE, WireEvent.TIMEOUT))
    values = samples(state)
    assert values[key("dnsgap_probe_last_rcode", target='we"ird\\name\n', probe="soa")] == -1


def test_chunked_render_is_the_same_text_in_pieces() -> None:
    state = state_for(*(target(f"ns{i}", UPDATE, SOA) for i in range(30)))
    chunks = list(state.render_chunks(lines_per_chunk=50))
    assert len(chunks) > 5
    assert "".join(chunks) == state.render()
    # Any piece size, down to one line, gives the same text.
    for size in (1, 2, 3, 7):
        assert "".join(state.render_chunks(lines_per_chunk=size)) == state.render()


def test_a_reload_or_a_probe_between_chunks_does_not_break_the_scrape() -> None:
    targets = tuple(target(f"ns{i}", UPDATE, SOA) for i in range(30))
    state = state_for(*targets)
    pieces = state.render_chunks(lines_per_chunk=10)
    text = [next(pieces)]
    # while the scrape is paused: a probe records a new outcome, a reload drops pairs
    state.record("ns3", "update", result(4, Cause.NOT_IMPLEMENTED))
    state.record("ns7", "soa", result(None, Cause.NO_RESPONSE, WireEvent.TIMEOUT))
    kept = targets[:5]
    state.sync(Config(targets=kept), [(t, s) for t in kept for s in t.probes])
    text.extend(pieces)
    families = list(text_string_to_metric_families("".join(text)))
    assert {family.name for family in families} >= {"dnsgap_probe_responses",
                                                     "dnsgap_support_gap"}  # fmt: skip


def test_series_budget_of_a_query_pair_is_the_documented_one() -> None:
    # bench/README.md "Series budget per (target, probe)" and the README quote these.
    budget = {}
    for histogram in (True, False):
        state = MetricsState()
        state.sync(Config(targets=(target("ns1", SOA),),
                          scheduler=SchedulerSettings(duration_histogram=histogram,
                                                      conformance_series=False)),
                   [(target("ns1", SOA), SOA)])  # fmt: skip
        state.record("ns1", "soa", result(0, Cause.NONE))
        budget[histogram] = sum(1 for name, labels in samples(state)
                                if ("probe", "soa") in labels)  # fmt: skip
    assert budget == {True: 60, False: 44}
