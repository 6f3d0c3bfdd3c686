"""The bounds on pending probes are sized from rate x timeout and fair per target: a
silent target, or a group of them, never takes another target's share."""

from __future__ import annotations

import errno

from exporter.capacity import Budget, Shares, out_of_descriptors, pair_demand, plan


def test_a_pairs_demand_is_the_share_of_its_interval_spent_waiting() -> None:
    assert pair_demand(interval=10.0, timeout=5.0) == 0.5
    assert pair_demand(interval=60.0, timeout=5.0, has_fallback=True) == 10.0 / 60.0
    # A pair never overlaps itself: one pending probe at most.
    assert pair_demand(interval=1.0, timeout=5.0) == 1.0


def test_shares_follow_each_targets_own_demand_with_a_floor_and_a_ceiling() -> None:
    demands = [("busy", 0.5)] * 10 + [("quiet", 0.05)] * 3 + [("single", 1.0)]
    shares = plan(demands)
    assert shares.shares == {"busy": 10, "quiet": 2, "single": 1}
    assert shares.capacity == 13 + 64
    assert shares.spare == 64


def test_a_configured_limit_shrinks_the_shares_and_keeps_a_pool() -> None:
    shares = plan([(f"t{i}", 1.0) for i in range(100)], limit=40)
    assert shares.capacity == 40
    assert sum(shares.shares.values()) <= 30
    assert shares.spare >= 10


def test_a_silent_group_exhausts_its_shares_and_the_pool_never_a_healthy_share() -> None:
    budget = Budget(Shares(capacity=14, shares={"dead1": 4, "dead2": 4, "healthy": 2}))
    admitted = 0
    for _ in range(100):  # the dead targets' probes pile up, never answered
        admitted += budget.try_acquire("dead1")
        admitted += budget.try_acquire("dead2")
    assert admitted == 12  # their 8 shares and the pool of 4
    assert budget.try_acquire("healthy")
    assert budget.try_acquire("healthy")
    assert not budget.try_acquire("healthy")  # over its share, and the pool is taken
    budget.release("dead1")
    assert budget.try_acquire("healthy")  # the pool has room again


def test_releasing_within_a_share_keeps_it_claimed_for_its_target() -> None:
    budget = Budget(Shares(capacity=3, shares={"a": 2, "b": 1}))
    assert budget.try_acquire("a")
    budget.release("a")
    assert budget.try_acquire("b")
    assert not budget.try_acquire("b")  # a's two are reserved for a
    assert budget.try_acquire("a")
    assert budget.try_acquire("a")
    assert budget.total == 3


def test_reshaping_on_reload_keeps_probes_in_flight_counted() -> None:
    budget = Budget(Shares(capacity=4, shares={"a": 4}))
    for _ in range(4):
        assert budget.try_acquire("a")
    budget.reshape(Shares(capacity=4, shares={"b": 2}))  # "a" removed while in flight
    assert budget.try_acquire("b")
    assert budget.try_acquire("b")  # b's share holds even while a's probes drain
    assert not budget.try_acquire("c")
    for _ in range(4):
        budget.release("a")
    assert budget.total == 2
    assert budget.try_acquire("c")


def test_emfile_and_enfile_mean_out_of_descriptors_and_nothing_else_does() -> None:
    assert out_of_descriptors(OSError(errno.EMFILE, "Too many open files"))
    assert out_of_descriptors(OSError(errno.ENFILE, "Too many open files in system"))
    assert out_of_descriptors(OSError("Multiple exceptions: [Errno 24] Too many open files"))
    assert not out_of_descriptors(OSError(errno.ECONNREFUSED, "refused"))
    assert not out_of_descriptors(TimeoutError())
