"""Sharding: rendezvous hashing splits (target, probe) pairs across replicas."""

from __future__ import annotations

import math

import pytest

from exporter.sharding import Shard, owner

PAIRS = [(f"target-{t:05d}", probe) for t in range(2000) for probe in
         ("soa", "edns1", "axfr", "update", "dso")]  # fmt: skip


def test_every_pair_is_owned_by_exactly_one_shard() -> None:
    for count in (1, 2, 3, 7):
        shards = [Shard(index, count) for index in range(count)]
        for target, probe in PAIRS:
            owners = [shard.index for shard in shards if shard.owns(target, probe)]
            assert owners == [owner(target, probe, count)]


def test_shards_split_pairs_about_evenly() -> None:
    count = 4
    sizes = [0] * count
    for target, probe in PAIRS:
        sizes[owner(target, probe, count)] += 1
    expected = len(PAIRS) / count
    # Binomial standard deviation; 5 sigma never fails by chance in practice.
    sigma = math.sqrt(len(PAIRS) * (1 / count) * (1 - 1 / count))
    for size in sizes:
        assert abs(size - expected) < 5 * sigma


@pytest.mark.parametrize("count", [1, 2, 3, 5, 9])
def test_adding_a_replica_moves_about_one_in_n_plus_one_pairs(count: int) -> None:
    moved = [pair for pair in PAIRS if owner(*pair, count) != owner(*pair, count + 1)]
    share = 1 / (count + 1)
    expected = len(PAIRS) * share
    sigma = math.sqrt(len(PAIRS) * share * (1 - share))
    assert abs(len(moved) - expected) < 5 * sigma
    # Rendezvous hashing: every moved pair goes to the new replica, none between old ones.
    assert all(owner(*pair, count + 1) == count for pair in moved)


def test_removing_the_last_replica_moves_only_its_pairs() -> None:
    for pair in PAIRS:
        before, after = owner(*pair, 4), owner(*pair, 3)
        assert before in (after, 3)


def test_ownership_is_stable_across_calls() -> None:
    assert [owner(*pair, 5) for pair in PAIRS[:200]] == [owner(*pair, 5) for pair in PAIRS[:200]]


def test_single_shard_owns_everything() -> None:
    shard = Shard(0, 1)
    assert all(shard.owns(*pair) for pair in PAIRS[:100])


@pytest.mark.parametrize(("text", "expected"), [("0/1", Shard(0, 1)), ("2/3", Shard(2, 3)),
                                                 (" 1/4", Shard(1, 4))])  # fmt: skip
def test_shard_parses_index_over_count(text: str, expected: Shard) -> None:
    assert Shard.parse(text) == expected


@pytest.mark.parametrize("text", ["", "3", "1/", "/3", "a/3", "1/b", "1/2/3", "0.5/2"])
def test_shard_rejects_text_that_is_not_index_over_count(text: str) -> None:
    with pytest.raises(ValueError, match="INDEX/COUNT"):
        Shard.parse(text)


@pytest.mark.parametrize("text", ["3/3", "-1/3", "0/0", "5/2"])
def test_shard_rejects_an_index_outside_the_count(text: str) -> None:
    with pytest.raises(ValueError, match="shard index must be in"):
        Shard.parse(text)


def test_serve_refuses_a_bad_shard_argument(tmp_path: object) -> None:
    from pathlib import Path

    from exporter.cli import main

    assert isinstance(tmp_path, Path)
    config = tmp_path / "dnsgap.yml"
    config.write_text("targets:\n  - name: a\n    server: 127.0.0.1:5300\n"
                      "    probes: [{name: soa, kind: query}]\n")  # fmt: skip
    assert main(["serve", "--config", str(config), "--shard", "3/3"]) == 1
