"""The CUDA path: bf16 autocast, channels_last, torch.compile, the lagged loss guard, and runs that
move between GPU and CPU. Run with ``pytest -m gpu`` on a GPU machine; skipped where none is.
(The non-finite-loss stop on CUDA is a parameter of its test in test_train.py.)"""

from __future__ import annotations

import json

import pytest
import torch

from lab2.checkpoint import load_checkpoint
from lab2.config import profile_config
from lab2.evaluate import evaluate_checkpoint
from lab2.models import build_model
from lab2.runs import read_history
from lab2.train import LossGuard, NonFiniteLossError, train

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
    run = json.loads((out / "run.json").read_text())
    assert run["device"] == torch.cuda.get_device_name()
    assert run["amp"] == "torch.bfloat16" and run["channels_last"] is True

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
