"""Several processes, one run: each rank's share of the data (the building block of DDP)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from interrupts import start_until
from ports import free_port

import lab2.ops.cli
import lab2.ops.distributed
from lab2.ops.checkpoint import load_checkpoint
from lab2.ops.cli import main as cli_main
from lab2.ops.loaders import SeededSampler, shard


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
             "--optimizer", "sgd", "--lr", "0.05",
             # fp32: on a CPU with native bf16, --amp auto computes in bf16, whose rounding
             # depends on how many images a convolution sees at once (4 per rank or 8 in one
             # process): the weights then differ by more than float noise, as they would on GPUs
             "--amp", "off"]


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
    # the first rank speaks for both: one warning, one result line
    assert two.stderr.count("unusable file(s)") == 1, two.stderr[-3000:]
    assert two.stdout.count("best validation Dice") == 1
    a, b = (load_checkpoint(tmp_path / run / "last.pt") for run in ("one", "two"))
    # two ranks sum a batch's gradient in another order than one process: float noise, larger
    # on CPUs whose kernels block the sums otherwise (AVX2 against AVX-512); a wrong shard or a
    # missing average is a difference of a whole step (lr 0.05 × a gradient)
    for name, weight in a["model"].items():
        if weight.is_floating_point():
            assert torch.allclose(weight, b["model"][name], rtol=1e-4, atol=3e-4), name
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
        assert row_b["train_loss"] == pytest.approx(row_a["train_loss"], rel=1e-4)
        assert row_b["val_loss"] == pytest.approx(row_a["val_loss"], rel=1e-4)
        assert row_b["val_dice"] == pytest.approx(row_a["val_dice"], abs=1e-3)
    run = json.loads((tmp_path / "two" / "run.json").read_text(encoding="utf-8"))
    assert (run["world_size"], run["backend"]) == (2, "gloo")
    # torchrun with one process is a DDP run of one rank: exactly what the plain run trains
    alone = _torchrun(1, [*args, "--out", str(tmp_path / "alone")], tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    c = load_checkpoint(tmp_path / "alone" / "last.pt")
    assert all(torch.equal(weight, c["model"][name]) for name, weight in a["model"].items())
    run = json.loads((tmp_path / "alone" / "run.json").read_text(encoding="utf-8"))
    assert (run["world_size"], run["backend"]) == (1, "gloo")
    # a DDP checkpoint is a plain one: it evaluates, and resumes, in one process
    assert cli_main(["evaluate", "--checkpoint", str(tmp_path / "two" / "best.pt"), "--root",
                     str(sample_root)]) == 0
    assert cli_main(["train", "--out", str(tmp_path / "two"), "--resume", "--epochs", "3"]) == 0
    history = load_checkpoint(tmp_path / "two" / "last.pt")["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]


@pytest.mark.slow
def test_a_two_process_evaluation_equals_the_one_process_one(sample_root, tmp_path):
    from lab2.ops.evaluation import load_trained_model
    from lab2.ops.loaders import build_datasets, make_loader
    from lab2.ops.machine import plan_for
    from lab2.train import evaluate
    run = tmp_path / "run"
    assert cli_main(["train", "--root", str(sample_root), *SMOKE_DDP, "--epochs", "1",
                     "--out", str(run)]) == 0
    # 7 images in batches of 8: one incomplete batch, padded on one rank, counted once
    model, config, _ = load_trained_model(run / "last.pt")
    config = config.replace(device="cpu", max_eval_samples=7)
    dataset = build_datasets(config, sample_root, splits=("test",), progress=False)["test"]
    one = evaluate(model, make_loader(dataset, config, train=False),
                         plan_for(config)[0], original=dataset, progress=False)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(Path(__file__).parent / "ddp_eval.py"), str(run / "last.pt"), str(sample_root),
         "7", str(tmp_path / "two.json")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "LAB2_DIST_TIMEOUT_S": "120"})
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text(encoding="utf-8"))
    assert two["n_images"] == one["n_images"] == 7
    for key in ("dice", "dice_pooled", "dice_per_batch", "dice_original", "dice_pooled_original",
                "boundary_iou", "background_fpr"):
        assert two[key] == one[key], key                       # exactly, not approximately
    assert two["per_image"] == one["per_image"]


# ---- interruption and failure of one rank --------------------------------------------------

FAULT_RUN = ["--model", "unet", "--profile", "smoke", "--device", "cpu", "--epochs", "3",
             "--batch-size", "8", "--max-train-samples", "24", "--max-eval-samples", "8",
             "--base-channels", "4", "--num-workers", "0"]     # 3 steps per epoch; dropout on


def _torchrun_fault(fault: str, args: list, tmp_path, dist_timeout_s: int = 900
                    ) -> subprocess.CompletedProcess:
    """torchrun of tests/ddp_train.py with ``fault`` (kind:rank:step) on one rank. The process
    group's timeout is by default longer than the subprocess's: a rank left waiting would fail
    the test."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(Path(__file__).parent / "ddp_train.py"), *args],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "LAB2_DIST_TIMEOUT_S": str(dist_timeout_s),
             "LAB2_TEST_FAULT": fault})


def _without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.slow
def test_a_rank_killed_mid_epoch_resumes_under_torchrun_as_if_never_killed(sample_root, tmp_path):
    # dropout and augmentation on: each rank's own random stream must come back on resume
    args = ["train", "--root", str(sample_root), *FAULT_RUN]
    whole = _torchrun(2, [*args, "--out", str(tmp_path / "whole")], tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = tmp_path / "killed"
    # step 5 = epoch 2, batch 2: rank 1 gets SIGKILL inside its forward pass
    died = _torchrun_fault("kill:1:5", [*args, "--out", str(killed)], tmp_path)
    assert died.returncode != 0
    assert load_checkpoint(killed / "last.pt")["epoch"] == 1
    resumed = _torchrun(2, ["train", "--out", str(killed), "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (load_checkpoint(run / "last.pt") for run in (tmp_path / "whole", killed))
    assert [row["epoch"] for row in b["history"]] == [1, 2, 3]       # complete, no repeats
    assert _without_seconds(b["history"]) == _without_seconds(a["history"])
    for name, weight in a["model"].items():
        assert torch.equal(weight, b["model"][name]), name
    assert len(b["rng_ranks"]) == 2
    history_csv = (killed / "history.csv").read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[0] for line in history_csv[1:]] == ["1", "2", "3"]
    assert cli_main(["evaluate", "--checkpoint", str(killed / "best.pt"), "--root",
                     str(sample_root)]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["nan", "oom"])
def test_a_failure_on_one_rank_stops_every_rank_with_one_message(fault, sample_root, tmp_path):
    run = tmp_path / "run"
    done = _torchrun_fault(f"{fault}:1:5", ["train", "--root", str(sample_root), *FAULT_RUN,
                                            "--out", str(run)], tmp_path)
    assert done.returncode != 0                       # and no hang: see _torchrun_fault
    errors = re.findall(r"(?:rank \d+: )?error: .*", done.stderr.replace("\r", "\n"))
    if fault == "nan":     # every rank stops at the same step; the first rank says it, once
        assert len(errors) == 1, errors
        assert errors[0].startswith("error: the training loss became non-finite on another "
                                    "process in epoch 2, batch 2"), errors
        assert "torchrun --nproc_per_node 2 -m lab2 train --out" in errors[0]
    else:                  # the rank that failed says why; the first rank says it had to stop
        assert sorted(e.split(":")[0] for e in errors) == ["error", "rank 1"], errors
        told = dict(e.split("error: ", 1) for e in errors)
        assert told["rank 1: "].startswith("out of CPU memory training unet at 64x64, batch 8")
        assert told[""].startswith("another process of this run stopped")
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    # the run goes on, here in one process
    assert cli_main(["train", "--out", str(run), "--resume"]) == 0
    assert [h["epoch"] for h in load_checkpoint(run / "last.pt")["history"]] == [1, 2, 3]


@pytest.mark.slow
def test_a_stuck_rank_stops_the_run_after_the_process_group_timeout(sample_root, tmp_path):
    run = tmp_path / "run"
    # rank 1 sleeps for an hour inside step 5; the others wait 10 s for it, not an hour
    done = _torchrun_fault("hang:1:5", ["train", "--root", str(sample_root), *FAULT_RUN,
                                        "--out", str(run)], tmp_path, dist_timeout_s=10)
    assert done.returncode != 0
    errors = re.findall(r"(?:rank \d+: )?error: .*", done.stderr.replace("\r", "\n"))
    assert len(errors) == 1 and errors[0].startswith(
        "error: another process of this run did not answer for 10 s"), errors
    assert "LAB2_DIST_TIMEOUT_S" in errors[0] and "continue with: torchrun" in errors[0]
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


# ---- experiment --ddp N ----------------------------------------------------------------------

def test_ddp_and_parallel_are_refused_together(capsys):
    assert cli_main(["experiment", "--ddp", "2", "--parallel", "2"]) == 1
    assert "pass one" in capsys.readouterr().err


@pytest.mark.slow
def test_an_experiment_with_ddp_trains_each_run_on_two_processes(sample_root, tmp_path,
                                                                monkeypatch):
    from lab2.ops.experiment import load_results, run_experiment
    out = tmp_path / "exp"
    settings = dict(progress=False, runs=(("unet", False),), epochs=2, base_channels=4,
                    max_train_samples=16, max_eval_samples=8, device="cpu")
    table, _ = run_experiment("smoke", sample_root, out, ddp=2, **settings)
    run = json.loads((out / "unet_raw" / "run.json").read_text(encoding="utf-8"))
    assert (run["world_size"], run["backend"], len(run["devices"])) == (2, "gloo", 2)
    assert [(r["model"], r["epochs"]) for r in table] == [("unet", 2)]
    assert load_results(out)[0] == table
    # finished: the same command starts no torchrun
    monkeypatch.setattr(lab2.ops.distributed, "torchrun_command",
                        lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert run_experiment("smoke", sample_root, out, ddp=2, **settings)[0] == table


@pytest.mark.slow
@pytest.mark.parametrize("who", ["terminal", "parent"])
def test_ctrl_c_stops_a_ddp_experiment_and_every_rank(who, sample_root, tmp_path):
    import signal
    import time
    out = tmp_path / "exp"
    # 8 steps an epoch: the Ctrl-C comes while the first run still trains
    command = [sys.executable, "-m", "lab2", "experiment", "--root", str(sample_root), "--out",
               str(out), "--profile", "smoke", "--ddp", "2", "--epochs", "3",
               "--base-channels", "4", "--max-train-samples", "32", "--max-eval-samples", "4",
               "--device", "cpu"]
    proc = start_until(command, (out / "unet_raw" / "last.pt").exists,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    # a terminal's Ctrl-C reaches the whole process group; Jupyter's interrupt the parent alone
    if who == "terminal":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGINT)
    err = proc.communicate(timeout=90)[1]
    assert proc.returncode == 130, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if "interrupted" in line]
    assert lines[-1] == "interrupted; run the same command again to continue", err
    assert len(lines) <= 2 and "Traceback" not in err, err     # rank 0's epoch line at most
    assert "closing signal" not in err                          # torchrun's own chatter
    time.sleep(3)
    left = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout
    assert left == "", "processes of the interrupted experiment are still running"
    if who == "terminal":     # the interrupted run resumes from what was saved, to its end
        # (the same settings in-process, for the interrupted run alone: the other three runs
        # would only add minutes of training that other tests cover)
        from lab2.ops.experiment import run_experiment
        run_experiment("smoke", sample_root, out, ddp=2, runs=(("unet", False),),
                       progress=False, epochs=3, base_channels=4, max_train_samples=32,
                       max_eval_samples=4, device="cpu")
        history = load_checkpoint(out / "unet_raw" / "last.pt")["history"]
        assert [h["epoch"] for h in history] == [1, 2, 3]


def as_if_started_by_torchrun(monkeypatch, **variables: str) -> None:
    """The environment torchrun gives its processes (``RANK``, ``MASTER_ADDR``, ...), for tests
    that run one process as one of them."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_more_processes_than_gpus_is_one_clear_line(monkeypatch):
    from lab2.ops import distributed
    as_if_started_by_torchrun(monkeypatch, RANK="3", WORLD_SIZE="4", LOCAL_RANK="3",
                              LOCAL_WORLD_SIZE="4", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(RuntimeError, match="started 4 processes on this machine, which has 2 "
                                           "visible GPU.s.; use --nproc_per_node 2"):
        with distributed.process_group(torch.device("cuda")):
            pass


def test_the_ranks_meet_before_the_group_is_torn_down_unless_one_failed(monkeypatch, caplog):
    # PyTorch 2.4's gloo destroy_process_group could hang when a peer had left first
    from lab2.ops import distributed
    as_if_started_by_torchrun(monkeypatch, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0",
                              MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    monkeypatch.setattr(distributed, "die_with_parent", lambda: None)
    calls = []
    barrier, destroy = torch.distributed.barrier, torch.distributed.destroy_process_group
    monkeypatch.setattr(torch.distributed, "barrier",
                        lambda *a, **k: (calls.append("barrier"), barrier(*a, **k))[1])
    monkeypatch.setattr(torch.distributed, "destroy_process_group",
                        lambda *a, **k: (calls.append("destroy"), destroy(*a, **k))[1])
    with distributed.process_group(torch.device("cpu")) as world:
        assert world.distributed and torch.distributed.is_initialized()
    assert calls == ["barrier", "destroy"] and not torch.distributed.is_initialized()
    calls.clear()
    with pytest.raises(ValueError):
        with distributed.process_group(torch.device("cpu")):
            raise ValueError("a failure on this rank")
    assert calls == ["destroy"] and not torch.distributed.is_initialized()

    # a peer that fails at the very end: a warning on the rank whose work is done, no traceback
    def peer_gone(*args, **kwargs):
        raise torch.distributed.DistBackendError("[gloo] Connection closed by peer")
    monkeypatch.setattr(torch.distributed, "barrier", peer_gone)
    with caplog.at_level("WARNING", logger="lab2.ops.distributed"):
        with distributed.process_group(torch.device("cpu")):
            pass
    assert "another process of this run stopped" in caplog.text
    assert "after this process had finished its work" in caplog.text
    assert not torch.distributed.is_initialized()
    monkeypatch.setattr(torch.distributed, "barrier", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):          # anything else is not hidden
        with distributed.process_group(torch.device("cpu")):
            pass
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("platform, expected", [("win32", "0"), ("linux", None)])
def test_torchrun_on_windows_uses_the_store_its_pytorch_has(monkeypatch, platform, expected):
    """PyTorch's Windows builds lack libuv, torchrun's default store: without USE_LIBUV=0 an
    ``experiment --ddp`` there stopped with "use_libuv was requested but PyTorch was build
    without libuv support"."""
    import torch.distributed.run as torch_run
    seen = {}
    monkeypatch.delenv("USE_LIBUV", raising=False)
    monkeypatch.setattr(lab2.ops.distributed, "die_with_parent", lambda: None)
    monkeypatch.setattr(torch_run, "run", lambda args: seen.update(
        use_libuv=os.environ.get("USE_LIBUV")))
    monkeypatch.setattr(sys, "platform", platform)
    assert lab2.ops.distributed.torchrun_main(["--standalone", "--nproc_per_node=1", "-m", "lab2",
                                           "train"]) == 0
    assert seen == {"use_libuv": expected}


def test_a_torchrun_without_its_store_says_what_to_use_instead(monkeypatch, capsys):
    """Some releases' torchrun asks for the libuv store whatever USE_LIBUV says; on PyTorch's
    Windows builds it then stops with a traceback before any rank starts."""
    import torch.distributed.run as torch_run

    def no_libuv(args):
        raise RuntimeError("use_libuv was requested but PyTorch was built without libuv "
                           "support, run with USE_LIBUV=0 to disable it.")
    monkeypatch.setattr(lab2.ops.distributed, "die_with_parent", lambda: None)
    monkeypatch.setattr(torch_run, "run", no_libuv)
    assert lab2.ops.distributed.torchrun_main(["--standalone", "--nproc_per_node=2", "-m", "lab2",
                                           "train"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--parallel" in err[0] and "WSL2" in err[0]


def test_ranks_with_synchronised_batchnorm_skip_the_buffer_copy_and_still_agree(tmp_path):
    """With synchronised BatchNorm every rank computes the same running statistics, so the
    wrapper drops DDP's copy of rank 0's buffers before each forward pass (one collective and
    a flatten of 153 buffers per step in ResNet34-UNet); the ranks' buffers stay equal."""
    script = Path(__file__).with_name("ddp_buffers.py")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.parametrize("nccl, backend, norm", [
    (True, "nccl", torch.nn.SyncBatchNorm),
    (False, "gloo", lab2.ops.distributed.GlobalBatchNorm2d)])
def test_gpus_without_nccl_use_gloo_and_its_batchnorm(monkeypatch, nccl, backend, norm):
    """PyTorch's Windows builds have no NCCL: DDP on their GPUs goes through gloo, whose
    collectives nn.SyncBatchNorm does not use, so lab2's gloo BatchNorm serves there."""
    from lab2.models import build_model
    monkeypatch.setattr(lab2.ops.distributed.dist, "is_nccl_available", lambda: nccl)
    cuda = torch.device("cuda")
    assert lab2.ops.distributed.backend_for(cuda) == backend
    assert lab2.ops.distributed.backend_for(torch.device("cpu")) == "gloo"
    model = lab2.ops.distributed.synchronise_batchnorm(build_model("unet", base_channels=4), cuda)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(type(m) is norm for m in norms)


# ---- several machines ------------------------------------------------------------------------

def test_ranks_that_disagree_are_named_with_their_machines():
    from lab2.ops.distributed import disagreement
    assert disagreement([("k", "A", "a"), ("k", "A at another path", "b")]) is None
    assert disagreement([("k", "A", "a"), ("k", "A", "a"), ("x", "B", "b"), ("x", "B", "b")]) == (
        "ranks 0 (on a), 1 (on a): A; ranks 2 (on b), 3 (on b): B")
    assert disagreement([("k", "A", "a"), ("x", "B", "b"), ("k", "A", "a")]) == (
        "ranks 0 (on a), 2 (on a): A; rank 1 (on b): B")


def test_ranks_given_different_settings_are_told_field_by_field():
    from lab2.ops.distributed import setting_differences
    base = {"lr": 0.001, "batch_size": 8, "model": "unet"}
    assert setting_differences([(base, "a"), (dict(base), "b")]) is None
    assert setting_differences([(base, "a"), (base, "a"), ({**base, "lr": 0.01}, "b"),
                                ({**base, "lr": 0.01}, "b")]) == (
        "ranks 0 (on a), 1 (on a): lr 0.001; ranks 2 (on b), 3 (on b): lr 0.01")
    assert setting_differences([(base, "a"), ({**base, "batch_size": 4, "lr": 1}, "b")]) == (
        "rank 0 (on a): batch_size 8, lr 0.001; rank 1 (on b): batch_size 4, lr 1")


def test_the_ranks_compare_the_settings_that_shape_the_run_and_the_precision_it_resolved(
        sample_root, tmp_path, monkeypatch):
    import lab2.ops.trainer
    from lab2.config import profile_config
    from lab2.ops.machine import plan_for
    compared = []

    class Compared(Exception):
        pass

    def compare(settings, fix):
        compared.append(settings)
        raise Compared
    monkeypatch.setattr(lab2.ops.trainer.distributed, "require_same_settings", compare)
    config = profile_config("smoke", model="unet", device="cpu", amp="auto", lr=0.02)
    with pytest.raises(Compared):
        lab2.ops.trainer.train(config, sample_root, tmp_path / "run", progress=False)
    settings, = compared
    assert settings["lr"] == 0.02 and settings["amp"] == "auto"
    # what "auto" became on this machine: a GPU without bf16 would say fp16 here
    assert settings["precision"] == plan_for(config)[1]["precision"]
    assert "num_workers" not in settings and "prefetch_factor" not in settings


@pytest.mark.parametrize("local_rank, rank, told", [
    ("0", "0", "error: "), ("0", "4", "rank 4: error: "), ("1", "5", None)])
def test_each_machine_s_first_process_tells_what_its_processes_found(local_rank, rank, told,
                                                                     monkeypatch, capsys, tmp_path):
    """Under torchrun on several machines each machine's terminal shows its own processes'
    lines: its first process tells an error that every process there finds (here a missing
    run), the others stay silent."""
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setenv("RANK", rank)

    def interrupted(args):
        raise KeyboardInterrupt
    lab2_log = logging.getLogger("lab2")
    level = lab2_log.level
    try:                        # a rank other than 0 quietens lab2's log for the whole process
        assert cli_main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 1
        err = capsys.readouterr().err
        if told is None:
            assert err == ""
        else:
            assert err.startswith(f"{told}--resume: no "), err
        monkeypatch.setattr(lab2.ops.cli, "cmd_train", interrupted)    # Ctrl-C on that machine
        assert cli_main(["train", "--out", str(tmp_path / "none")]) == 130
        assert capsys.readouterr().err == (
            "" if told is None else
            "interrupted; no epoch was finished, so nothing was saved; run the same command to "
            "start again\n")
    finally:
        lab2_log.setLevel(level)


@pytest.mark.parametrize("command, instead", [
    (["experiment"], "run python -m lab2 experiment --ddp N (each training on N processes"),
    (["evaluate", "--checkpoint", "best.pt"], "run python -m lab2 evaluate without torchrun")])
def test_torchrun_runs_train_only(command, instead, monkeypatch, capsys):
    """``torchrun -m lab2 experiment`` would run the experiment once per process, racing for
    one folder; said before anything starts."""
    as_if_started_by_torchrun(monkeypatch, RANK="0", WORLD_SIZE="2", LOCAL_RANK="0",
                              MASTER_ADDR="127.0.0.1", MASTER_PORT="29500")
    monkeypatch.setattr(lab2.ops.cli, f"cmd_{command[0]}", lambda args: 1 / 0)   # never reached
    assert cli_main(command) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: torchrun runs `python -m lab2 train` (one training on several "
                          f"processes), not `{command[0]}`; {instead}"), err


@pytest.mark.parametrize("processes_here, told", [
    ("2", "drop --resume to start a new run"),
    ("1", "--out must be a folder that every machine of the run sees (a shared file system)")])
def test_resume_without_a_run_on_this_machine_names_the_shared_folder(processes_here, told,
                                                                      monkeypatch, tmp_path):
    from lab2.ops.runs import saved_run
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", processes_here)     # 1: the other is elsewhere
    with pytest.raises(FileNotFoundError, match=re.escape(told)):
        saved_run(tmp_path)


def test_a_rank_gone_before_the_first_epoch_is_one_line_not_a_backend_error(monkeypatch, tmp_path):
    import lab2.ops.trainer
    from lab2.config import profile_config
    from lab2.ops.distributed import World

    @contextlib.contextmanager
    def joined(device):
        yield World(rank=0, size=2, distributed=True)
    monkeypatch.setattr(lab2.ops.distributed, "process_group", joined)
    monkeypatch.setattr(lab2.ops.trainer.dist, "barrier", lambda *a, **k: None)
    config = profile_config("smoke", device="cpu")

    def fails(error):
        def _train(*args, **kwargs):
            raise error
        monkeypatch.setattr(lab2.ops.trainer, "_train", _train)
        return pytest.raises(Exception)

    # what gloo raises from DDP's first broadcast when the peer has exited
    with fails(RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection "
                            "closed by peer [127.0.0.1]:17835")) as raised:
        lab2.ops.trainer.train(config, tmp_path, tmp_path / "run")
    assert type(raised.value) is lab2.ops.trainer.OtherRankFailed
    assert str(raised.value).startswith("another process of this run stopped (")
    assert str(raised.value).endswith("once that is mended, run the same command again")
    # lab2's own errors already say what to do, whatever their words
    mine = lab2.ops.trainer.OutOfMemory("out of CUDA memory ... (nccl)")
    with fails(mine) as raised:
        lab2.ops.trainer.train(config, tmp_path, tmp_path / "run")
    assert raised.value is mine
    with fails(RuntimeError("an error of this rank's own")) as raised:
        lab2.ops.trainer.train(config, tmp_path, tmp_path / "run")
    assert type(raised.value) is RuntimeError


def test_a_process_that_never_joins_is_one_line_after_the_timeout(monkeypatch):
    from lab2.ops import distributed
    as_if_started_by_torchrun(monkeypatch, RANK="0", WORLD_SIZE="2", LOCAL_RANK="0",
                              MASTER_ADDR="10.0.0.1", MASTER_PORT="29500", LAB2_DIST_TIMEOUT_S="30")
    monkeypatch.setattr(distributed, "die_with_parent", lambda: None)

    def never_joined(*args, **kwargs):      # what PyTorch raises after waiting for the peer
        raise torch.distributed.DistStoreError("wait timeout after 30000ms, keys: "
                                               "/default_pg/0//cpu//0/1")
    monkeypatch.setattr(torch.distributed, "init_process_group", never_joined)
    with pytest.raises(RuntimeError, match=r"^not every process of this run joined it within "
                                           r"30 s: .* cannot reach 10\.0\.0\.1:29500; once"):
        with distributed.process_group(torch.device("cpu")):
            pass


def _machines(roots: list[Path], args: list, tmp_path, flags: tuple[list, list] = ([], [])
              ) -> list[tuple[int, str, str]]:
    """One run on two simulated machines: on each, the command of docs/multi-gpu.md (torchrun
    with c10d rendezvous, here at 127.0.0.1, one process per machine), machine i reading
    ``roots[i]``.
    and adding ``flags[i]`` to its command. Returns each machine's (exit code, stdout, stderr):
    what its terminal shows. Which machine's process becomes rank 0 is the rendezvous's
    choice."""
    endpoint, machines = f"127.0.0.1:{free_port()}", []
    for node, root in enumerate(roots):
        out, err = (open(tmp_path / f"machine{node}.{kind}", "w+", encoding="utf-8")
                    for kind in ("out", "err"))
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                   "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
                   "--rdzv-id=pets", "-m", "lab2", *args, "--root", str(root), *flags[node]]
        machines.append((subprocess.Popen(command, stdout=out, stderr=err, cwd=tmp_path, env={
            **os.environ, "OMP_NUM_THREADS": "1", "LAB2_DIST_TIMEOUT_S": "120"}), out, err))
    done = []
    for process, out, err in machines:
        code = process.wait(timeout=400)
        with out, err:
            done.append((code, *(f.seek(0) or f.read() for f in (out, err))))
    return done


@pytest.mark.slow
def test_two_machines_train_one_run_from_copies_of_the_data_and_refuse_different_ones(
        sample_root, tmp_path):
    copy = tmp_path / "copy"            # the second machine's own copy of the data set
    shutil.copytree(sample_root, copy)
    run = tmp_path / "run"              # on a file system both machines see
    args = ["train", *SMOKE_DDP, "--epochs", "1", "--out", str(run)]
    # an interrupted copy, one photo short: refused before any training, on both terminals
    photo = sorted((copy / "oxford-iiit-pet" / "images").iterdir())[0]
    aside = photo.rename(tmp_path / photo.name)
    told = []
    for code, _, err in _machines([sample_root, copy], args, tmp_path):
        assert code != 0
        errors = re.findall(r"(?:rank \d+: )?error: .*", err)
        assert len(errors) == 1, err[-3000:]             # one line on each machine's terminal
        told.append(errors[0])
        assert f"{copy} (fingerprint " in errors[0] and "every machine needs the same" in errors[0]
    assert sorted(line.split("error: ")[0] for line in told) == ["", "rank 1: "], told
    assert all(line.split("error: ")[1].startswith(
        "the processes of this run read different data sets: rank 0 (on ") for line in told)
    assert not (run / "last.pt").exists()
    aside.rename(photo)
    # the same data but another learning rate typed on one machine: refused the same way
    told = [re.findall(r"error: .*", err) for _, _, err in _machines(
        [sample_root, copy], args, tmp_path, flags=([], ["--lr", "0.5"]))]
    assert all(len(lines) == 1 for lines in told), told
    assert all(re.search(r"were given different settings: rank . \(on .*\): lr 0\.0?5; rank . "
                         r"\(on .*\): lr 0\.0?5; give every machine the same command", lines[0])
               for lines in told), told
    assert not (run / "last.pt").exists()
    done = _machines([sample_root, copy], args, tmp_path)
    assert [code for code, _, _ in done] == [0, 0], [err[-2000:] for _, _, err in done]
    assert sorted("best validation Dice" in out for _, out, _ in done) == [False, True]
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert (record["world_size"], record["backend"], len(record["devices"])) == (2, "gloo", 2)
    assert [h["epoch"] for h in load_checkpoint(run / "last.pt")["history"]] == [1]
