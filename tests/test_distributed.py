"""Several processes, one run: each rank's share of the data (the building block of DDP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lab2.checkpoint import load_checkpoint
from lab2.cli import main as cli_main
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


def _torchrun(nproc: int, args: list, tmp_path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", "-m", "lab2", *args],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "LAB2_DIST_TIMEOUT_S": "120", **env})


SMOKE_DDP = ["--model", "unet", "--profile", "smoke", "--device", "cpu", "--epochs", "2",
             "--batch-size", "8", "--max-train-samples", "16", "--max-eval-samples", "8",
             "--dropout", "0", "--no-augment", "--base-channels", "4", "--num-workers", "0",
             # SGD: an update proportional to the gradient (Adam's first steps are about
             # lr × sign(gradient), which turns float-rounding noise in tiny gradients into
             # differences of a whole step)
             "--optimizer", "sgd", "--lr", "0.05"]


@pytest.mark.slow
def test_two_gloo_processes_train_what_one_process_trains(sample_root, tmp_path):
    # no dropout and no augmentation: the ranks' only difference from one process is the
    # sharding, the synchronised BatchNorm and the averaged gradients
    args = ["train", "--root", str(sample_root), *SMOKE_DDP]
    one = subprocess.run([sys.executable, "-m", "lab2", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr
    two = _torchrun(2, [*args, "--out", str(tmp_path / "two")], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (load_checkpoint(tmp_path / run / "last.pt") for run in ("one", "two"))
    for name, weight in a["model"].items():
        if weight.is_floating_point():
            assert torch.allclose(weight, b["model"][name], rtol=1e-4, atol=5e-5), name
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
        assert row_b["train_loss"] == pytest.approx(row_a["train_loss"], rel=1e-5)
        assert row_b["val_loss"] == pytest.approx(row_a["val_loss"], rel=1e-5)
        assert row_b["val_dice"] == pytest.approx(row_a["val_dice"], abs=1e-6)
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert (run["world_size"], run["backend"]) == (2, "gloo")
    # a DDP checkpoint is a plain one: it evaluates, and resumes, in one process
    assert cli_main(["evaluate", "--checkpoint", str(tmp_path / "two" / "best.pt"), "--root",
                     str(sample_root)]) == 0
    assert cli_main(["train", "--out", str(tmp_path / "two"), "--resume", "--epochs", "3"]) == 0
    history = load_checkpoint(tmp_path / "two" / "last.pt")["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]


@pytest.mark.slow
def test_a_two_process_evaluation_equals_the_one_process_one(sample_root, tmp_path):
    from lab2.data.loaders import build_datasets, make_loader
    from lab2.evaluate import evaluate_model, load_trained_model
    from lab2.machine import Step
    run = tmp_path / "run"
    assert cli_main(["train", "--root", str(sample_root), *SMOKE_DDP, "--epochs", "1",
                     "--out", str(run)]) == 0
    # 7 images in batches of 8: one incomplete batch, padded on one rank, counted once
    model, config, _ = load_trained_model(run / "last.pt")
    config = config.replace(device="cpu", max_eval_samples=7)
    dataset = build_datasets(config, sample_root, splits=("test",), progress=False)["test"]
    one = evaluate_model(model, make_loader(dataset, config, train=False),
                         Step.for_config(config), original=dataset, progress=False)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(Path(__file__).parent / "ddp_eval.py"), str(run / "last.pt"), str(sample_root),
         "7", str(tmp_path / "two.json")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "LAB2_DIST_TIMEOUT_S": "120"})
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["n_images"] == one["n_images"] == 7
    for key in ("dice", "dice_pooled", "dice_per_batch", "dice_original", "dice_pooled_original",
                "boundary_iou", "background_fpr"):
        assert two[key] == one[key], key                       # exactly, not approximately
    assert two["per_image"] == one["per_image"]
