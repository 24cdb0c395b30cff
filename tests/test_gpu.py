"""The CUDA path: bf16 autocast, channels_last, torch.compile, fp16 with a GradScaler at the
report's 512 px, the lagged loss guard, NCCL under torchrun, and runs that move between GPU and
CPU. Run with ``pytest -m gpu`` on a GPU machine (``benchmarks/gpu_checks.sh`` runs it with the GPU
benchmarks); skipped where none is. (The non-finite-loss stop on CUDA is a parameter of its test
in test_train.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from lab2.config import profile_config
from lab2.models import build_model
from lab2.ops.checkpoint import load_checkpoint
from lab2.ops.evaluation import evaluate_checkpoint
from lab2.ops.runs import read_history
from lab2.ops.trainer import LossGuard, train
from lab2.train import NonFiniteLossError

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SMOKE = dict(image_size=64, base_channels=8, epochs=2, batch_size=4, max_train_samples=16,
             max_eval_samples=8, num_workers=2)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("name", ["unet", "resnet34_unet"])
def test_cuda_bf16_channels_last_forward_matches_cpu_fp32(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        reference = model(x)
        model = model.cuda().to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x.cuda().contiguous(memory_format=torch.channels_last)).float().cpu()
    assert out.shape == reference.shape
    assert torch.isfinite(out).all()
    error = relative_error(out, reference)
    assert error < 5e-2, f"bf16 on CUDA differs from fp32 on CPU by {error:.3g} (relative)"


def test_a_cuda_run_records_its_machine_resumes_and_evaluates_the_same_on_the_cpu(
        sample_root, tmp_path):
    out = tmp_path / "cuda_run"
    train(profile_config("smoke", **SMOKE), sample_root, out, progress=False)
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["device"] == torch.cuda.get_device_name()
    assert run["precision"] == "bf16" and run["channels_last"] is True     # compute capability 8+

    resumed = train(profile_config("smoke", **{**SMOKE, "epochs": 3}), sample_root, out,
                    resume=True, progress=False)
    history = read_history(out / "history.csv")
    assert [h["epoch"] for h in history] == [1, 2, 3] == [h["epoch"] for h in resumed["history"]]
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)

    on_gpu = evaluate_checkpoint(out / "last.pt", sample_root, "test", device="cuda",
                                 progress=False)
    on_cpu = evaluate_checkpoint(out / "last.pt", sample_root, "test", device="cpu", progress=False)
    assert on_gpu["n_images"] == on_cpu["n_images"] > 0
    # bf16 on the GPU against fp32 on the CPU: a few boundary pixels may flip, no more.
    assert abs(on_gpu["dice"] - on_cpu["dice"]) < 0.02


def test_a_compiled_run_trains_and_saves_plain_weights(sample_root, tmp_path):
    out = tmp_path / "compiled"
    train(profile_config("smoke", **{**SMOKE, "epochs": 1, "compile": True}), sample_root, out,
          progress=False)
    state = load_checkpoint(out / "last.pt")
    assert not any(k.startswith("_orig_mod.") for k in state["model"])
    build_model("unet", base_channels=8).load_state_dict(state["model"])   # loads on the CPU
    assert torch.isfinite(torch.tensor(read_history(out / "history.csv")[0]["train_loss"]))


def test_the_lagged_loss_guard_reports_the_bad_batch(tmp_path):
    guard = LossGuard(torch.device("cuda"))
    guard.check(torch.tensor(0.5, device="cuda"), epoch=0, batch=0)
    guard.check(torch.tensor(float("nan"), device="cuda"), epoch=0, batch=1)   # read one step late
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 2"):
        guard.check(torch.tensor(0.4, device="cuda"), epoch=0, batch=2)
    guard = LossGuard(torch.device("cuda"))
    guard.check(torch.tensor(float("inf"), device="cuda"), epoch=3, batch=7)
    with pytest.raises(NonFiniteLossError, match="epoch 4, batch 8"):
        guard.flush()                                                       # the epoch's last batch


@pytest.mark.parametrize("name", ["unet", "resnet34_unet"])
def test_fp16_with_a_grad_scaler_trains_at_512_and_resumes_where_it_stopped(name, sample_root,
                                                                            tmp_path):
    # the T4/V100 path, forced on this GPU: full-width network, the report's size and batch
    settings = dict(model=name, image_size=512, batch_size=8, epochs=2, max_train_samples=32,
                    max_eval_samples=8, num_workers=2, amp="fp16")
    whole = train(profile_config("full", **settings), sample_root, tmp_path / "whole",
                  progress=False)
    part = tmp_path / "part"
    train(profile_config("full", **{**settings, "epochs": 1}), sample_root, part, progress=False)
    saved = load_checkpoint(part / "last.pt")
    assert saved["scaler"]["scale"] > 0                        # the scaler's state is kept
    resumed = train(profile_config("full", **settings), sample_root, part, resume=True,
                    progress=False)
    assert json.loads((part / "run.json").read_text(encoding="utf-8"))["precision"] == "fp16"
    for a, b in zip(whole["history"], resumed["history"], strict=True):
        assert torch.isfinite(torch.tensor([a["train_loss"], b["train_loss"]])).all()
        # cudnn's kernels are not bitwise deterministic: the same run, not the same bits
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=2e-2)
    # the resumed run goes on with a scaler (its exact round trip is tested on the CPU)
    assert load_checkpoint(part / "last.pt")["scaler"].keys() == saved["scaler"].keys()


def test_torchrun_with_one_gpu_is_an_nccl_run_that_resumes_in_one_process(sample_root, tmp_path):
    out = tmp_path / "ddp"
    args = ["train", "--model", "unet", "--profile", "smoke", "--root", str(sample_root),
            "--out", str(out), "--base-channels", "8", "--epochs", "2", "--batch-size", "4"]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=1", "-m", "lab2", *args],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LAB2_DIST_TIMEOUT_S": "120"})
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert (run["world_size"], run["backend"]) == (1, "nccl")
    assert run["devices"] == [torch.cuda.get_device_name()]
    resumed = train(profile_config("smoke", model="unet", base_channels=8, epochs=3,
                                   batch_size=4), sample_root, out, resume=True, progress=False)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]


def test_the_gpu_check_finds_kernels_for_a_gpu_this_pytorch_runs_on():
    # a false alarm of lab2.ops.gpus would stop every run on this GPU before its first step
    from lab2.ops.gpus import has_kernels_for, missing_kernels
    torch.zeros(1, device="cuda").add_(1)                   # PyTorch does run here
    assert missing_kernels() is None
    assert has_kernels_for(torch.cuda.get_device_capability(0), torch.cuda.get_arch_list())
