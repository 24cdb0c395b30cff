"""The machines students have: multiprocessing start methods, precisions, devices, installs."""

from __future__ import annotations

import multiprocessing

import pytest
import torch

from lab2.checkpoint import load_checkpoint
from lab2.config import profile_config
from lab2.train import SeededSampler, read_history, train

SMOKE = dict(image_size=64, base_channels=4, epochs=2, batch_size=4, max_train_samples=12,
             max_eval_samples=6, device="cpu")


@pytest.fixture
def start_method():
    """Set the default multiprocessing start method for one test, then restore it."""
    original = multiprocessing.get_start_method(allow_none=True)
    yield lambda method: multiprocessing.set_start_method(method, force=True)
    multiprocessing.set_start_method(original, force=True)


def weights(run):
    return load_checkpoint(run / "last.pt")["model"]


@pytest.mark.slow
def test_training_with_workers_under_spawn_equals_fork_and_no_workers(sample_root, tmp_path,
                                                                      start_method):
    """macOS and Windows start loader workers with spawn: everything sent to them must pickle,
    and the result must not depend on how (or whether) workers are started."""
    config = profile_config("smoke", **SMOKE, num_workers=2)
    start_method("fork")
    train(config, sample_root, tmp_path / "fork", progress=False)
    start_method("spawn")
    train(config, sample_root, tmp_path / "spawn", progress=False)
    train(config.replace(num_workers=0), sample_root, tmp_path / "main", progress=False)
    a, b, c = (weights(tmp_path / name) for name in ("fork", "spawn", "main"))
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    losses = [[h["train_loss"] for h in read_history(tmp_path / name / "history.csv")]
              for name in ("fork", "spawn", "main")]
    assert losses[0] == losses[1] == losses[2]


def test_the_sampler_order_and_seeds_depend_only_on_seed_and_epoch():
    sampler = SeededSampler(10, seed=3, shuffle=True)
    sampler.set_epoch(4)
    first = list(sampler)
    assert sorted(i for _, i in first) == list(range(10))
    again = SeededSampler(10, seed=3, shuffle=True)
    again.set_epoch(4)
    assert list(again) == first
    sampler.set_epoch(5)
    other = list(sampler)
    assert [i for _, i in other] != [i for _, i in first]
    # a sample's seed belongs to the sample, not to its place in the order
    assert dict((i, s) for s, i in first) != dict((i, s) for s, i in other)
    assert [i for _, i in SeededSampler(5, 0, shuffle=False)] == list(range(5))
