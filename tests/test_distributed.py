"""Several processes, one run: each rank's share of the data (the building block of DDP)."""

from __future__ import annotations

import pytest

from lab2.data.loaders import SeededSampler, shard


def global_batches(items: list, batch_size: int) -> list[list]:
    return [items[i:i + batch_size] for i in range(0, len(items), batch_size)]


@pytest.mark.parametrize("n,world_size", [(32, 2), (32, 4), (37, 2), (37, 4), (5, 4)])
def test_the_ranks_batches_together_are_one_process_batches(n, world_size):
    items, batch = list(range(n)), 8
    shards = [shard(items, batch, rank, world_size) for rank in range(world_size)]
    per_rank = [global_batches(s, batch // world_size) for s in shards]
    assert len({len(s) for s in shards}) == 1              # every rank takes as many steps
    for step, expected in enumerate(global_batches(items, batch)):
        together = [x for rank in range(world_size) for x in per_rank[rank][step]]
        if len(expected) == batch:
            assert together == expected                     # same images, same order
        else:                                               # last batch: padded with repeats
            assert set(together) == set(expected) and together[:len(expected)] == expected


def test_one_process_is_unchanged_and_the_batch_must_divide():
    assert shard(range(5), 8, 0, 1) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="multiple of 3"):
        shard(range(8), 8, 0, 3)


def test_the_sharded_sampler_keeps_the_global_order_and_the_samples_seeds():
    one = list(SeededSampler(37, seed=3, shuffle=True, batch_size=8))
    ranks = [SeededSampler(37, seed=3, shuffle=True, batch_size=8, rank=r, world_size=2)
             for r in range(2)]
    for sampler in ranks + [SeededSampler(37, seed=3, shuffle=True, batch_size=8)]:
        sampler.set_epoch(0)
    parts = [list(s) for s in ranks]
    assert [len(s) for s in ranks] == [len(p) for p in parts] == [19, 19]   # 16 + ceil(5 / 2)
    steps = [parts[0][i:i + 4] + parts[1][i:i + 4] for i in range(0, 16, 4)]
    assert [x for step in steps for x in step] == one[:32]   # full batches: exactly one's
    assert set(parts[0][16:] + parts[1][16:]) == set(one[32:])
