"""The machines students have: multiprocessing start methods, precisions, devices, installs."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lab2.train as train_module
from lab2.config import profile_config
from lab2.ops import atomic, cli, machine, paths, processes
from lab2.ops.checkpoint import load_checkpoint
from lab2.ops.console import printable_output
from lab2.ops.loaders import SeededSampler
from lab2.ops.machine import plan_for
from lab2.ops.runs import is_finished, read_history
from lab2.ops.trainer import LossGuard, train
from lab2.train import NonFiniteLossError

PROJECT = Path(__file__).resolve().parent.parent

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
    """macOS and Windows start loader workers with spawn, Linux from Python 3.14 with
    forkserver: everything sent to them must pickle, and the result must not depend on how (or
    whether) workers are started."""
    config = profile_config("smoke", **SMOKE, num_workers=2)
    methods = ("fork", "spawn", "forkserver")
    for method in methods:
        start_method(method)
        train(config, sample_root, tmp_path / method, progress=False)
    train(config.replace(num_workers=0), sample_root, tmp_path / "main", progress=False)
    runs = (*methods, "main")
    main = weights(tmp_path / "main")
    for name in methods:
        other = weights(tmp_path / name)
        assert all(torch.equal(main[k], other[k]) for k in main), name
    losses = [[h["train_loss"] for h in read_history(tmp_path / name / "history.csv")]
              for name in runs]
    assert all(loss == losses[0] for loss in losses)


def test_a_loader_worker_seeds_its_own_rngs_apart_from_every_epoch():
    # it used to ask NumPy for the seed of "epoch -1", which NumPy refuses: every worker failed
    # to start, unnoticed because the batches that carried the error were thrown away
    import random

    from lab2.ops.loaders import WORKERS_EPOCH, epoch_seed, init_loader_worker

    def draws(seed, worker):
        init_loader_worker(seed, worker)
        return random.random(), float(np.random.random()), float(torch.rand(()))
    assert draws(0, 0) == draws(0, 0) != draws(0, 1)
    assert draws(0, 0) != draws(1, 0)
    assert epoch_seed(0, WORKERS_EPOCH, 1) not in {epoch_seed(0, e, 1) for e in range(1000)}


def test_each_epoch_starts_one_pass_over_each_loader(sample_root, tmp_path, monkeypatch):
    # tqdm.auto's bar calls iter() on a DataLoader when it is made and again when the loop
    # starts: the first pass's workers prepared batches that the second pass threw away
    from torch.utils.data import DataLoader
    passes = []
    original = DataLoader.__iter__

    def counted(loader):
        passes.append(loader.num_workers)
        return original(loader)
    monkeypatch.setattr(DataLoader, "__iter__", counted)
    train(profile_config("smoke", **SMOKE, num_workers=2), sample_root, tmp_path / "run",
          progress=False)
    assert passes == [2, 0] * SMOKE["epochs"]      # training (2 workers), then validation


# ---- shared memory: Docker and Kubernetes give a container 64 MiB of /dev/shm --------------

MiB = 2**20


def assert_same_batches(a, b) -> None:
    """Two loaders of one data set give the same batches (images, masks, names) in an epoch."""
    for loader in (a, b):
        loader.sampler.set_epoch(1)
    for (x, mx, nx), (y, my, ny) in zip(a, b, strict=True):
        assert torch.equal(x, y) and torch.equal(mx, my) and nx == ny

def test_loader_workers_are_fitted_to_the_shared_memory_there_is():
    from lab2.ops.loaders import fit_shared_memory
    batch = 8 * MiB                             # the full profile's batch: 8 images of 512 px
    assert fit_shared_memory(4, 2, batch, None) == (4, 2, None)          # no limit known
    assert fit_shared_memory(4, 2, batch, 2**40) == (4, 2, None)
    assert fit_shared_memory(0, 2, batch, 1) == (0, 2, None)             # no workers
    assert fit_shared_memory(4, 2, batch, 80 * MiB) == (4, 2, None)      # 8 ahead + 2 held
    workers, ahead, why = fit_shared_memory(4, 2, batch, 64 * MiB)      # Docker's default
    assert (workers, ahead) == (4, 1)
    assert why.startswith("only 64 MiB of shared memory free for this run in /dev/shm")
    assert "docker run --shm-size=2g" in why and "need 80 MiB, so 4 worker(s) x 1" in why
    assert fit_shared_memory(4, 2, batch, 40 * MiB)[:2] == (3, 1)
    workers, _, why = fit_shared_memory(4, 2, batch, 20 * MiB)
    assert workers == 0 and "the main process reads them itself" in why


def test_a_loader_in_little_shared_memory_prepares_fewer_batches_the_same_ones(
        sample_root, monkeypatch):
    import lab2.ops.loaders as loaders
    from lab2.ops.notices import SharedMemoryWarning
    config = profile_config("smoke", **{**SMOKE, "image_size": 256}, num_workers=2)
    dataset = loaders.build_datasets(config, sample_root, progress=False)["train"]
    batch = 4 * (3 + 1) * 256 * 256                 # uint8 images and masks, batch 4
    monkeypatch.setattr(processes, "usable_cpus", lambda: 8)
    monkeypatch.setattr(loaders, "shared_memory_free", lambda: 5 * batch)
    with pytest.warns(SharedMemoryWarning, match="2 loader workers x 2 batches ahead need"):
        fitted = loaders.make_loader(dataset, config, train=True)
    assert (fitted.num_workers, fitted.prefetch_factor) == (2, 1)
    assert fitted.plan.startswith("2 worker(s) x 1 batch(es) ahead: only ")
    monkeypatch.setattr(loaders, "shared_memory_free", lambda: None)
    plain = loaders.make_loader(dataset, config, train=True)
    assert (plain.num_workers, plain.prefetch_factor, plain.plan) == (
        2, 2, "2 worker(s) x 2 batch(es) ahead")
    assert_same_batches(fitted, plain)


def test_loader_workers_are_at_most_one_per_core_the_run_may_use():
    from lab2.ops.loaders import fit_workers_to_cores
    assert fit_workers_to_cores(4, 8) == (4, None)
    assert fit_workers_to_cores(4, 4) == (4, None)
    assert fit_workers_to_cores(0, 1) == (0, None)
    workers, why = fit_workers_to_cores(4, 2)
    assert workers == 2 and why.startswith("4 asked for, lowered to the 2 CPU core(s)")


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # the 4 workers
def test_a_loader_on_few_cores_has_fewer_workers_and_the_same_batches(sample_root, monkeypatch):
    """Colab's 2 vCPUs, or two runs of ``experiment --parallel`` sharing 4 cores: the report's 4
    workers become 2, said in ``loader.plan`` (run.json's ``loader``); the batches are the same."""
    import lab2.ops.loaders as loaders
    config = profile_config("smoke", **SMOKE, num_workers=4)
    dataset = loaders.build_datasets(config, sample_root, progress=False)["train"]
    monkeypatch.setattr(loaders, "shared_memory_free", lambda: None)
    monkeypatch.setattr(processes, "usable_cpus", lambda: 8)
    plain = loaders.make_loader(dataset, config, train=True)
    assert (plain.num_workers, plain.plan) == (4, "4 worker(s) x 2 batch(es) ahead")
    monkeypatch.setattr(processes, "usable_cpus", lambda: 4)
    monkeypatch.setenv(loaders.RUNS_AT_ONCE_ENV, "2")
    fewer = loaders.make_loader(dataset, config, train=True)
    assert fewer.num_workers == 2
    assert fewer.plan == ("2 worker(s) x 2 batch(es) ahead: 4 asked for, lowered to the 2 CPU "
                          "core(s) this run may use (at most one worker per core)")
    assert_same_batches(fewer, plain)


def test_a_run_whose_loader_runs_out_of_shared_memory_is_one_line_and_resumes(
        sample_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "unet", "--root", str(sample_root), "--out", str(out),
            "--profile", "smoke", "--epochs", "2", "--base-channels", "4", "--num-workers", "2"]
    original = train_module.train_one_epoch

    def full_in_epoch_2(*a, epoch, **k):        # what PyTorch raises, word for word
        if epoch == 1:
            raise RuntimeError(
                "Caught RuntimeError in DataLoader worker process 1.\nOriginal Traceback (most "
                "recent call last):\n  ...\nRuntimeError: unable to allocate shared memory(shm) "
                "for file </torch_18849_1014072323_2>: No space left on device (28)")
        return original(*a, epoch=epoch, **k)
    monkeypatch.setattr(train_module, "train_one_epoch", full_in_epoch_2)
    assert cli.main(args) == 1
    [line] = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("error:")]
    assert line.startswith("error: the data loader's workers ran out of shared memory (")
    assert "docker run --shm-size=2g" in line
    assert f"{out}/last.pt holds epoch 1; continue with: python -m lab2 train" in line
    assert line.endswith("--resume --num-workers 1")
    monkeypatch.undo()
    command = line.split("continue with: python -m lab2 ")[1]
    assert cli.main(shlex.split(command)) == 0 and is_finished(out)


def test_a_loader_worker_windows_cannot_start_is_one_line_about_the_paging_file(
        sample_root, tmp_path, monkeypatch, capsys):
    # each spawned worker imports PyTorch, whose CUDA libraries Windows reserves memory for up
    # front: "[WinError 1455] The paging file is too small" in the worker, and in the run only
    # PyTorch's "exited unexpectedly"
    original = train_module.train_one_epoch

    def lost_in_epoch_2(*a, epoch, **k):
        if epoch == 1:
            raise RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly")
        return original(*a, epoch=epoch, **k)
    monkeypatch.setattr(train_module, "train_one_epoch", lost_in_epoch_2)
    monkeypatch.setattr(sys, "platform", "win32")
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "unet", "--root", str(sample_root), "--out", str(out),
                     "--profile", "smoke", "--epochs", "2", "--base-channels", "4",
                     "--num-workers", "0"]) == 1
    [line] = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("error:")]
    assert line.startswith("error: a data loader worker stopped (DataLoader worker (pid(s) 4242) "
                           "exited unexpectedly); on Windows each worker loads PyTorch's")
    assert "WinError 1455" in line and f"{out}/last.pt holds epoch 1; continue with: " in line


@pytest.mark.slow
def test_a_run_whose_loader_worker_is_killed_is_one_line_and_resumes(sample_root, tmp_path):
    # what the system's out-of-memory killer does to a loader worker: PyTorch's own words were
    # all the user got ("DataLoader worker (pid 1234) is killed by signal: Killed.")
    import signal

    from interrupts import pool_workers, start_until
    out = tmp_path / "run"
    command = [sys.executable, "-m", "lab2", "train", "--model", "unet", "--root",
               str(sample_root), "--out", str(out), "--profile", "smoke", "--base-channels", "4",
               "--num-workers", "2", "--epochs", "30"]
    proc = start_until(command, lambda: (out / "last.pt").exists())
    workers = pool_workers(proc.pid)
    os.kill(workers[0], signal.SIGKILL)
    err = proc.communicate(timeout=120)[1]
    # (rarely PyTorch's SIGCHLD handler raises the loss once more while a generator is being
    # finalised: Python prints that as "Exception ignored in ...", lab2 cannot catch it)
    assert proc.returncode == 1 and ("Traceback" not in err or "Exception ignored in" in err), err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    # PyTorch words it as "(pid N) is killed by signal: Killed." or "(pid(s) N) exited
    # unexpectedly", depending on which of its checks sees the loss first
    assert line.startswith("error: a data loader worker stopped (DataLoader worker (pid")
    assert f" {workers[0]}) " in line and "; when memory runs out" in line
    assert line.endswith("--resume --num-workers 1")
    epoch = load_checkpoint(out / "last.pt")["epoch"]
    command = line.split("continue with: python -m lab2 ")[1]
    assert f"last.pt holds epoch {epoch}; continue with" in line
    assert cli.main([*shlex.split(command), "--epochs", str(epoch + 1)]) == 0
    assert is_finished(out)


@pytest.mark.slow
def test_a_run_in_a_real_64_mib_style_shared_memory_trains_instead_of_failing(sample_root,
                                                                              tmp_path):
    # a private mount namespace with a 16 MiB /dev/shm (what --shm-size does for a container);
    # 512 px batches of 2 take 2 MiB: 4 workers x 2 ahead + 2 held need 20 MiB
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -m (root, or user namespaces) to mount a small /dev/shm")
    script = f"""
import time, warnings
from lab2.config import profile_config
import lab2.ops.processes
from lab2.ops.loaders import build_datasets, make_loader
lab2.ops.processes.usable_cpus = lambda: 8          # 4 workers whatever this machine's cores
config = profile_config("smoke", image_size=512, batch_size=2, num_workers=4,
                        max_train_samples=40, device="cpu")
dataset = build_datasets(config, {str(sample_root)!r}, progress=False)["train"]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loader = make_loader(dataset, config, train=True)
loader.sampler.set_epoch(0)
for batch in loader:
    time.sleep(0.3)                 # a training step: the workers fill what they may
print(loader.plan)
"""
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=16m tmpfs /dev/shm && "
         f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().startswith("4 worker(s) x 1 batch(es) ahead: only 16 MiB")


@pytest.mark.slow
def test_the_cache_build_and_the_audit_pools_work_under_every_start_method(sample_root, tmp_path,
                                                                            monkeypatch):
    """Their worker pools start with spawn on macOS and Windows and with forkserver on Linux
    (:func:`lab2.ops.processes.pool_context`): the same files and the same audit as fork."""
    from lab2.ops import processes
    from lab2.ops.audit import audit_dataset
    from lab2.ops.cache import build_cache
    from lab2.preprocess import PreprocessParams
    built = {}
    for method in ("fork", "spawn", "forkserver"):
        monkeypatch.setattr(processes, "pool_context",
                            lambda method=method: multiprocessing.get_context(method))
        cache = build_cache(sample_root, 48, PreprocessParams(), cache_root=tmp_path / method,
                            workers=2, progress=False)
        report = audit_dataset(sample_root, progress=False, workers=2, use_cache=False)
        built[method] = ({n: cache.read(n) for n in cache.names}, report.entries)
    fork = built["fork"]
    assert len(fork[0]) >= 8 and fork[1]        # enough jobs for the pools, some files found
    for method in ("spawn", "forkserver"):
        rows, entries = built[method]
        assert rows.keys() == fork[0].keys() and entries == fork[1]
        for name, (image, trimap) in rows.items():
            assert np.array_equal(image, fork[0][name][0])
            assert np.array_equal(trimap, fork[0][name][1])


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


# ---- precision, layout and device choices -------------------------------------------------


@pytest.mark.parametrize("capability, expected", [
    ((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16), ((8, 6), torch.bfloat16),
    ((7, 5), torch.float16), ((7, 0), torch.float16), ((6, 1), torch.float16)])
def test_auto_precision_on_cuda_follows_the_compute_capability(monkeypatch, capability, expected):
    # H100 9.0, A100 8.0, RTX 3090 8.6 have native bf16; T4 7.5, V100 7.0, GTX 1080 6.1 do not
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    dtype, why = machine.choose_precision("auto", torch.device("cuda"))
    assert dtype == expected and f"{capability[0]}.{capability[1]}" in why
    assert machine.choose_channels_last("auto", torch.device("cuda"))[0]


@pytest.mark.parametrize("avx512_bf16, amx, expected", [
    (True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, None)])
def test_auto_precision_on_the_cpu_follows_native_bf16(monkeypatch, avx512_bf16, amx, expected):
    # raising=False: PyTorch before 2.5 has no such probes (the next test covers that case)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    dtype, why = machine.choose_precision("auto", torch.device("cpu"))
    assert dtype == expected and why
    layout, why = machine.choose_channels_last("auto", torch.device("cpu"))
    assert not layout and "1x1 stride-2 convolution" in why       # see the next test
    assert not machine.choose_channels_last("auto", torch.device("mps"))[0]


@pytest.mark.parametrize("amp", ["auto", "off"])
def test_the_cpu_layout_lab2_picks_survives_the_1x1_stride_2_convolution_backward(amp):
    # ResNet34-UNet's stride-2 shortcut: on an AVX512 CPU, torch 2.14.1's oneDNN crashed the
    # process in channels_last (bf16: "free(): invalid next size" with a batch of 3, 8 -> 16
    # channels, 16 px; fp32: a segfault at 64 px), which --channels-last auto chose with bf16.
    # On a CPU where neither shape crashes, this cannot fail (CI's CPU may be one).
    code = (
        "import torch, torch.nn.functional as F\n"
        "from lab2.config import profile_config\n"
        "from lab2.ops.machine import plan_for\n"
        f"step, why = plan_for(profile_config('smoke', device='cpu', amp={amp!r}))\n"
        "layout = torch.channels_last if step.channels_last else torch.contiguous_format\n"
        "for n, size in ((3, 16), (4, 64)):\n"
        "    w = torch.randn(16, 8, 1, 1).contiguous(memory_format=layout).requires_grad_()\n"
        "    x = torch.randn(n, 8, size, size).contiguous(memory_format=layout).requires_grad_()\n"
        "    with step.autocast():\n"
        "        y = F.conv2d(x, w, stride=2)\n"
        "    y.float().sum().backward()\n"
        "print('survived', why['precision'], step.channels_last)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "survived" in done.stdout, (done.returncode, done.stderr)


def test_auto_precision_on_the_cpu_is_fp32_when_pytorch_has_no_bf16_probe(monkeypatch):
    # PyTorch 2.4 has neither torch.cpu._is_avx512_bf16_supported nor _is_amx_tile_supported
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    native, why = machine.cpu_bf16_native()
    assert not native and "cannot tell" in why
    dtype, why = machine.choose_precision("auto", torch.device("cpu"))
    assert dtype is None and why
    assert not machine.choose_channels_last("auto", torch.device("cpu"))[0]


@pytest.mark.parametrize("device, capability, native, warned", [
    ("cuda", (7, 5), None, True), ("cuda", (8, 0), None, False),     # T4 / A100
    ("cpu", None, False, True), ("cpu", None, True, False)])        # AVX2 only / AVX512-BF16
def test_a_forced_bf16_that_would_be_emulated_warns_and_says_so_in_its_reason(
        monkeypatch, device, capability, native, warned):
    import warnings
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(machine, "cpu_bf16_native", lambda: (native, "probed"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dtype, why = machine.choose_precision("bf16", torch.device(device))
    assert dtype == torch.bfloat16 and why.startswith("--amp bf16")      # as asked
    assert bool(caught) == warned == ("emulated" in why)


def test_forced_precisions_and_mps(monkeypatch):
    assert machine.choose_precision("fp16", torch.device("cpu"))[0] == torch.float16
    assert machine.choose_precision("off", torch.device("cuda"))[0] is None
    assert machine.choose_precision("auto", torch.device("mps"))[0] is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(machine, "mps_available", lambda: True)
    assert machine.resolve_device("auto").type == "mps"
    from lab2.ops.machine import resolve_profile
    assert resolve_profile("auto", announce=False) == "quick"    # full stays a CUDA profile
    monkeypatch.setattr(machine, "mps_available", lambda: False)
    assert machine.resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="--device auto or cpu"):
        machine.resolve_device("mps")


def test_run_json_records_the_precision_used_and_why(sample_root, tmp_path):
    import json
    train(profile_config("smoke", **{**SMOKE, "epochs": 1}, num_workers=0), sample_root,
          tmp_path / "run", progress=False)
    run = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    assert run["precision"] in ("fp32", "bf16") and run["precision_why"]
    assert "channels_last_why" in run and run["cpu_threads"] >= 1 and run["cpu_threads_why"]


def test_fp16_training_resumes_exactly_with_the_scaler_state(sample_root, tmp_path):
    config = profile_config("smoke", **SMOKE, num_workers=0, amp="fp16")
    train(config, sample_root, tmp_path / "straight", progress=False)

    def interrupt(epoch, batch):
        if epoch == 1 and batch == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(config, sample_root, tmp_path / "resumed", progress=False, on_batch=interrupt)
    saved = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert saved["scaler"]["scale"] > 0                       # the GradScaler's state is saved
    train(config, sample_root, tmp_path / "resumed", resume=True, progress=False)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.isfinite(v).all() for v in a.values() if v.is_floating_point())


def test_fp16_overflows_are_skipped_but_a_loss_that_stays_non_finite_stops():
    guard = LossGuard(torch.device("cpu"), tolerate=3)
    for batch in range(3):
        guard.check(torch.tensor(float("inf")), epoch=0, batch=batch)   # the scaler skips these
    guard.check(torch.tensor(0.5), epoch=0, batch=3)                    # and recovers
    for batch in range(3):
        guard.check(torch.tensor(float("nan")), epoch=0, batch=4 + batch)
    with pytest.raises(NonFiniteLossError, match="4 steps in a row"):
        guard.check(torch.tensor(float("nan")), epoch=0, batch=7)


def test_a_gpu_out_of_memory_is_one_line_with_what_to_try_and_resumes(sample_root, tmp_path,
                                                                      monkeypatch, capsys):
    out = tmp_path / "Jane Doe's runs" / "unet raw"    # the command in the message still works
    args = ["train", "--model", "unet", "--root", str(sample_root), "--out", str(out),
            "--profile", "smoke", "--epochs", "2", "--base-channels", "4", "--num-workers", "0"]
    original = train_module.train_one_epoch

    def oom_in_epoch_2(*a, epoch, **k):
        if epoch == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*a, epoch=epoch, **k)
    monkeypatch.setattr(train_module, "train_one_epoch", oom_in_epoch_2)
    assert cli.main(args) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    line = errors[0]
    assert "memory" in line and "unet at 64x64, batch 4" in line and "--batch-size 2" in line
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    monkeypatch.undo()
    command = line.split("continue with: python -m lab2 ")[1].split(";")[0].split(" (or")[0]
    assert cli.main(shlex.split(command)) == 0 and is_finished(out)


class CompilesNothing(torch.nn.Module):
    """What ``torch.compile`` returns on a machine without its backend: the first call raises."""

    def __init__(self, failure: Exception):
        super().__init__()
        self.failure = failure

    def forward(self, x):
        raise self.failure


@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")
def test_a_model_torch_compile_cannot_compile_is_one_line_saying_to_train_without_it(
        sample_root, tmp_path, monkeypatch, capsys):
    # the real error of a machine without the backend's compiler (Windows has no Triton for
    # CUDA; a CPU needs a C++ compiler), raised where it comes: the compiled model's first call
    import torch._inductor.config as inductor
    with monkeypatch.context() as patch:
        patch.setattr(inductor.cpp, "cxx", (None, str(tmp_path / "no-compiler")))
        patch.setattr(inductor, "force_disable_caches", True)     # compile, do not reuse
        patch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
        with pytest.raises(RuntimeError) as real:        # (a 3x3 convolution needs C++ code)
            torch.compile(torch.nn.Conv2d(3, 3, 3))(torch.randn(1, 3, 8, 8))
        torch._dynamo.reset()
    out = tmp_path / "my runs" / "unet"
    args = ["train", "--model", "unet", "--root", str(sample_root), "--out", str(out),
            "--profile", "smoke", "--base-channels", "4", "--num-workers", "0"]

    def error_line():
        return [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("error:")]
    with monkeypatch.context() as patch:
        patch.setattr(torch, "compile", lambda model, **_: CompilesNothing(real.value))
        assert cli.main([*args, "--epochs", "1", "--compile"]) == 1
        assert error_line() == [
            f"error: torch.compile could not compile unet on cpu (InvalidCxxCompiler: No working "
            f"C++ compiler found in torch._inductor.config.cpp.cxx: (None, "
            f"'{tmp_path / 'no-compiler'}')); nothing was trained; run the same command without "
            f"--compile"]
        assert cli.main([*args, "--epochs", "1"]) == 0              # the same, without
        assert cli.main(["train", "--out", str(out), "--resume", "--epochs", "2",
                         "--compile"]) == 1
        [line] = error_line()
    assert f"{out}/last.pt holds epoch 1; continue with: python -m lab2 train" in line
    command = line.split("continue with: python -m lab2 ")[1]
    assert command.endswith("--resume --no-compile")
    assert cli.main(shlex.split(command)) == 0 and is_finished(out)


def test_a_path_in_a_command_lab2_prints_is_quoted_for_the_shell(tmp_path, monkeypatch):
    from lab2.ops.audit import audit_dataset
    from lab2.ops.console import shell_word
    root = tmp_path / "course data" / "pets"
    with pytest.raises(FileNotFoundError) as error:
        audit_dataset(root)
    command = str(error.value).split("`")[1]
    assert shlex.split(command) == ["python", "-m", "lab2", "download", "--root", str(root)]
    assert shell_word("runs/quick-sample/unet_raw") == "runs/quick-sample/unet_raw"
    monkeypatch.setattr(sys, "platform", "win32")        # cmd and PowerShell read double quotes
    assert shell_word(r"C:\Users\Jane Doe\runs") == r'"C:\Users\Jane Doe\runs"'
    assert shell_word(r"C:\runs\unet_raw") == r"C:\runs\unet_raw"


def test_out_of_memory_at_the_first_batch_says_to_start_again_not_to_resume(
        sample_root, tmp_path, monkeypatch, capsys):
    # a batch too large fails at once, before any last.pt: "--resume" would be refused
    out = tmp_path / "run"
    args = ["train", "--model", "unet", "--root", str(sample_root), "--out", str(out),
            "--profile", "smoke", "--epochs", "1", "--base-channels", "4", "--num-workers", "0"]

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(train_module, "train_one_epoch", oom)
    assert cli.main(args) == 1
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "nothing was trained; run the same command with --batch-size 2" in line
    assert line.endswith("; or run it with --image-size 64") and "--resume" not in line
    monkeypatch.undo()
    assert cli.main([*args, "--batch-size", "2"]) == 0 and is_finished(out)


@pytest.mark.parametrize("stop", [0, 1])
def test_ctrl_c_says_how_to_continue_whether_or_not_an_epoch_was_saved(
        stop, sample_root, tmp_path, monkeypatch, capsys, caplog):
    out = tmp_path / "run"
    args = ["train", "--model", "unet", "--root", str(sample_root), "--out", str(out),
            "--profile", "smoke", "--epochs", "2", "--base-channels", "4", "--num-workers", "0"]
    original = train_module.train_one_epoch

    def ctrl_c(*a, epoch, **k):
        if epoch == stop:
            raise KeyboardInterrupt
        return original(*a, epoch=epoch, **k)
    monkeypatch.setattr(train_module, "train_one_epoch", ctrl_c)
    assert cli.main(args) == 130
    said = capsys.readouterr().err.strip().splitlines()[-1]
    monkeypatch.undo()
    assert (f"interrupted: {out / 'last.pt'} holds epoch 1, where the run resumes" if stop
            else f"interrupted in the first epoch: nothing of {out} was saved") in caplog.text
    if stop:
        assert said == "interrupted; add --resume to the same command to continue"
        assert cli.main([*args, "--resume"]) == 0
    else:                     # --resume would be refused: there is no last.pt
        assert said == ("interrupted; no epoch was finished, so nothing was saved; run the same "
                        "command to start again")
        assert cli.main(args) == 0
    assert is_finished(out)


def test_the_device_plan_records_its_choices():
    plan, why = plan_for(profile_config("smoke", device="cpu", amp="off"))
    assert plan.amp is None and why["precision"] == "fp32"
    assert not plan.scaler().is_enabled()
    assert plan_for(profile_config("smoke", device="cpu", amp="fp16"))[0].scaler().is_enabled()


# ---- where an installed package writes, and the main job without make ---------------------


def test_lab2_home_moves_data_runs_and_figures(tmp_path, monkeypatch):
    for name in ("LAB2_DATA_DIR", "LAB2_FIGURES_DIR", "LAB2_SAMPLE_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert paths.source_checkout() == PROJECT            # the tests run from a checkout
    assert paths.runs_dir() == PROJECT / "runs"
    monkeypatch.setenv("LAB2_HOME", str(tmp_path))
    assert (paths.runs_dir(), paths.default_data_root(), paths.figures_dir(),
            paths.default_sample_root()) == (tmp_path / "runs", tmp_path / "data",
                                             tmp_path / "figures", tmp_path / "data" / "sample")


@pytest.mark.slow
def test_an_installed_package_writes_under_the_current_folder_not_site_packages(tmp_path):
    pytest.importorskip("setuptools")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(PROJECT)], check=True,
                   capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    code = ("import json, lab2.ops.paths as p; print(json.dumps([str(p.runs_dir()), "
            "str(p.default_data_root()), str(p.figures_dir()), p.source_checkout() is None, "
            "p.notebooks_dir() is None, p.__file__]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB2_")}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True,
                         text=True, check=True).stdout
    runs, data, figures, installed, no_notebooks, module = json.loads(out)
    assert module.startswith(str(site))                  # the installed copy was imported
    assert installed and no_notebooks
    assert (runs, data, figures) == (str(work / "runs"), str(work / "data"),
                                     str(work / "figures"))


def test_report_runs_the_experiment_then_the_four_notebooks(tmp_path, monkeypatch, capsys):
    import lab2.ops.runner as report_module
    executed = []
    monkeypatch.setattr(report_module, "run_notebooks", lambda paths: executed.extend(paths))
    monkeypatch.setenv("LAB2_HOME", str(tmp_path))
    for name in ("LAB2_DATA_DIR", "LAB2_SAMPLE_DIR", "LAB2_PROFILE"):
        monkeypatch.setenv(name, "")       # restored after the test (report sets them)
    from lab2.ops.sample import make_sample_dataset
    sample = tmp_path / "sample"
    make_sample_dataset(sample, n_trainval=30, n_test=10, size=64, progress=False)
    import lab2.ops.experiment as experiment_module
    original = experiment_module.run_experiment
    monkeypatch.setattr(experiment_module, "run_experiment", lambda profile, root, **kw: original(
        profile, root, progress=False, epochs=1, base_channels=4, max_train_samples=8,
        max_eval_samples=4, **kw))
    assert cli.main(["report", "--root", str(tmp_path / "no_real_data"), "--sample-root",
                     str(sample), "--no-download", "--profile", "smoke"]) == 0
    assert [p.name for p in executed] == ["01_data_inspection.ipynb", "02_preprocessing.ipynb",
                                          "03_training.ipynb", "04_results.ipynb"]
    assert "Table 1" in capsys.readouterr().out
    assert (tmp_path / "runs" / "smoke-sample" / "results.md").is_file()
    assert os.environ["LAB2_PROFILE"] == "smoke"                   # what the kernels inherit
    assert os.environ["LAB2_SAMPLE_DIR"] == str(sample.resolve())


def test_report_uses_several_gpus_as_experiment_does(tmp_path, monkeypatch):
    import lab2.ops.experiment as experiment_module
    monkeypatch.setenv("LAB2_HOME", str(tmp_path))
    from lab2.ops.sample import make_sample_dataset
    make_sample_dataset(tmp_path / "sample", n_trainval=30, n_test=10, size=64, progress=False)
    asked = {}

    def stop(profile, root, **kw):
        asked.update(kw)
        raise ValueError("stop here")
    monkeypatch.setattr(experiment_module, "run_experiment", stop)
    assert cli.main(["report", "--root", str(tmp_path / "none"), "--sample-root",
                     str(tmp_path / "sample"), "--no-download", "--profile", "smoke",
                     "--parallel", "3", "--gpus", "0,2"]) == 1
    assert asked == {"parallel": 3, "gpus": [0, 2], "ddp": 0}


@pytest.mark.slow
def test_notebooks_are_executed_and_saved_in_place(tmp_path, monkeypatch):
    from lab2.ops.runner import run_notebooks
    notebook = tmp_path / "01_data_inspection.ipynb"
    for name in ("01_data_inspection.ipynb", "lab2_setup.py"):    # its first cell's helper too
        shutil.copy(PROJECT / "notebooks" / name, tmp_path / name)
    monkeypatch.setenv("LAB2_PROFILE", "smoke")
    monkeypatch.setenv("LAB2_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("LAB2_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LAB2_SAMPLE_DIR", raising=False)
    before = notebook.read_text(encoding="utf-8")
    assert len(run_notebooks([notebook])) == 1
    executed = json.loads(notebook.read_text(encoding="utf-8"))
    assert notebook.read_text(encoding="utf-8") != before
    outputs = [o for cell in executed["cells"] if cell["cell_type"] == "code"
               for o in cell.get("outputs", [])]
    assert outputs and not [o for o in outputs if o.get("output_type") == "error"]
    assert list((tmp_path / "figures").glob("01_*.png"))


def small_notebook(path: Path, *cells: str) -> Path:
    import nbformat
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, path)
    return path


def test_a_notebook_keeps_only_the_widgets_of_its_last_run(tmp_path):
    # a run that built a cache showed progress bars; nbclient saves their state in the
    # notebook's metadata and never removed it: 1,800 lines a later run no longer shows
    import nbformat

    from lab2.ops.runner import run_notebooks
    notebook = small_notebook(tmp_path / "n.ipynb", "print('no widget')")
    earlier = nbformat.read(notebook, as_version=4)
    earlier.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "state": {"0" * 32: {"model_name": "HTMLModel", "state": {"value": "cache 100%"}}},
        "version_major": 2, "version_minor": 0}}
    nbformat.write(earlier, notebook)
    run_notebooks([notebook])
    assert "widgets" not in nbformat.read(notebook, as_version=4).metadata


def test_notebooks_run_in_this_python_whatever_python3_kernel_is_registered(tmp_path,
                                                                            monkeypatch, capfd):
    # conda's base, or a shared environment the user does not own, prefers the user's kernel
    # specs: a "python3" registered there by another Python would run the notebooks without lab2
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager

    from lab2.ops.runner import run_notebooks
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    another = str(tmp_path / "another-python")
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [another, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (another)", "language": "python"}), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == another   # what it'd take
    notebook = small_notebook(tmp_path / "n.ipynb", "import sys, lab2; print(sys.executable)")
    run_notebooks([notebook])
    printed = nbformat.read(notebook, as_version=4).cells[0].outputs[0]["text"].strip()
    assert printed == sys.executable
    # and its channels are encrypted where pyzmq can (ipykernel warns in the output otherwise)
    import zmq
    assert zmq.has("curve") is ("without encryption" not in capfd.readouterr().err)


def test_a_notebook_kernel_is_shut_down_without_an_interrupt(tmp_path, monkeypatch):
    # jupyter_client sends SIGINT to a kernel before shutting it down; one still tidying up
    # logged "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel." under a make report
    # that had succeeded
    import signal

    from jupyter_client import AsyncKernelManager

    from lab2.ops.runner import run_notebooks
    sent, original = [], AsyncKernelManager._async_signal_kernel

    async def signal_kernel(self, signum):
        sent.append(signum)
        await original(self, signum)
    monkeypatch.setattr(AsyncKernelManager, "_async_signal_kernel", signal_kernel)
    run_notebooks([small_notebook(tmp_path / "n.ipynb", "1 + 1")])
    assert signal.SIGINT not in sent


def test_a_failing_notebook_is_one_line_naming_its_cell_and_is_left_as_it_was(tmp_path,
                                                                             monkeypatch, capsys):
    import lab2.ops.runner as runner
    notebook = small_notebook(tmp_path / "n.ipynb", "x = 1", "def f():\n    return x / 0\nf()")
    before = notebook.read_bytes()
    monkeypatch.setattr(runner, "notebook_paths", lambda names: [notebook])
    assert cli.main(["notebooks"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (f"error: {notebook} stopped at cell [2] (ZeroDivisionError: division by "
                     "zero) and was left as it was; open it in JupyterLab and run its cells to "
                     "see where")
    assert notebook.read_bytes() == before


def test_each_notebook_says_which_python_its_kernel_is_when_lab2_is_not_there(tmp_path):
    import nbformat
    firsts = {next(c.source for c in nbformat.read(p, as_version=4).cells
                   if c.cell_type == "code")
              for p in sorted((PROJECT / "notebooks").glob("0*.ipynb"))}
    assert len(firsts) == 1                        # the same first cell in all four
    # a kernel runs in the notebooks' folder; -E -S: a Python without the site-packages lab2 is
    # installed in (another kernel's), which still finds lab2_setup.py beside the notebooks
    result = subprocess.run([sys.executable, "-E", "-S", "-c", firsts.pop()],
                            cwd=PROJECT / "notebooks", capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"RuntimeError: No module named 'lab2' in {sys.executable}: choose lab2's environment "
        "as the kernel (Kernel > Change Kernel; README: 'The notebooks')")
    assert "\n## The notebooks\n" in (PROJECT / "README.md").read_text(encoding="utf-8")


class _Terminal(io.TextIOWrapper):
    def isatty(self):
        return True


def test_output_in_a_legacy_code_page_prints_every_character_lab2_writes():
    redirected = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")
    terminal = _Terminal(io.BytesIO(), encoding="cp1252")
    utf8 = io.TextIOWrapper(io.BytesIO(), encoding="UTF8")
    printable_output([redirected, terminal, utf8])
    for stream in (redirected, terminal, utf8):
        stream.write("b − a → 0.8 ± 0.1\n")
        stream.flush()
    assert redirected.buffer.getvalue().decode("utf-8") == "b − a → 0.8 ± 0.1\n"
    assert terminal.buffer.getvalue().decode("cp1252") == "b ? a ? 0.8 ± 0.1\n"
    assert (utf8.encoding, utf8.errors) == ("UTF8", "strict")       # left as it was


def test_table_1_prints_to_output_redirected_on_windows(sample_root, tmp_path):
    """Windows writes a redirect (``python -m lab2 experiment > log.txt``) in cp1252, which has
    no "−": the finished experiment used to stop with exit code 1 on printing Table 1."""
    log = tmp_path / "log.txt"
    command = [sys.executable, "-m", "lab2", "experiment", "--root", str(sample_root), "--out",
               str(tmp_path / "exp"), "--profile", "smoke", "--epochs", "1", "--base-channels",
               "4", "--max-train-samples", "8", "--max-eval-samples", "4", "--device", "cpu"]
    with open(log, "wb") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.PIPE, cwd=PROJECT,
                              env={**os.environ, "PYTHONIOENCODING": "cp1252",
                                   "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-2000:]
    assert "| b − a |" in log.read_text(encoding="utf-8")


def windows_in_use(winerror=32):
    """The PermissionError Windows raises when the target of a rename is open elsewhere."""
    error = PermissionError(13, "The process cannot access the file because it is being used "
                                "by another process")
    error.winerror = winerror
    return error


@pytest.fixture
def renames(monkeypatch):
    """``os.replace`` failing as on Windows for the first ``fails`` renames that ``which``
    selects (all if None); lab2.ops.atomic's waits are recorded, not slept."""
    state = {"fails": None, "which": lambda source: True, "tries": 0, "waits": 0.0}
    clock = [0.0]
    real = os.replace

    def replace(source, target):
        if not state["which"](Path(source)):
            return real(source, target)
        state["tries"] += 1
        if state["fails"] is None or state["tries"] <= state["fails"]:
            raise windows_in_use()
        real(source, target)

    def sleep(seconds):
        state["waits"] += seconds
        clock[0] += seconds
    monkeypatch.setattr(atomic.os, "replace", replace)
    monkeypatch.setattr(atomic, "_sleep", sleep)
    monkeypatch.setattr(atomic, "_clock", lambda: clock[0])
    return state


def test_a_file_a_scanner_holds_for_a_moment_on_windows_is_replaced_after_a_retry(tmp_path,
                                                                                  renames):
    renames["fails"] = 2
    atomic.write_text(tmp_path / "results.csv", "new\n")
    assert (tmp_path / "results.csv").read_text(encoding="utf-8") == "new\n"
    assert renames["tries"] == 3 and renames["waits"] == 2 * atomic.IN_USE_WAIT_S
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_file_open_in_another_program_on_windows_is_one_line_saying_to_close_it(tmp_path,
                                                                                 renames):
    target = tmp_path / "results.csv"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(atomic.StorageError) as raised:
        atomic.write_text(target, "new\n")
    message = str(raised.value)
    assert "results.csv" in message and "another program has it open" in message
    assert "close it" in message and "\n" not in message
    assert renames["waits"] >= atomic.IN_USE_RETRY_S            # it waited, then gave up
    assert target.read_text(encoding="utf-8") == "old\n"        # untouched
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_permission_error_that_is_not_windows_in_use_is_not_retried(tmp_path, monkeypatch):
    def refuse(source, target):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(atomic.os, "replace", refuse)
    monkeypatch.setattr(atomic, "_sleep", lambda s: pytest.fail("retried"))
    with pytest.raises(atomic.StorageError, match="not writable by you"):
        atomic.write_text(tmp_path / "x.json", "{}")


def test_a_cache_folder_a_scanner_holds_for_a_moment_on_windows_is_still_put_in_place(
        sample_root, tmp_path, monkeypatch, renames):
    from lab2.ops.cache import build_cache
    monkeypatch.setenv("LAB2_CACHE_DIR", str(tmp_path / "cache"))
    renames["fails"], renames["which"] = 1, Path.is_dir      # the finished folder's rename
    cache = build_cache(sample_root, 32, None, progress=False, workers=1)
    assert cache.folder.parent == tmp_path / "cache" and renames["tries"] == 2


# ---- how many CPU cores a process may use: affinity, container quota, Windows' pool limit -----

def cgroup_tree(root, files):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_the_cpu_quota_is_the_smallest_of_the_group_and_the_groups_above(tmp_path):
    from lab2.ops.processes import cgroup_cpu_limit
    v2 = cgroup_tree(tmp_path / "v2", {"kubepods/cpu.max": "200000 100000\n",
                                       "kubepods/pod1/cpu.max": "max 100000\n",
                                       "kubepods/pod1/box/cpu.max": "350000 100000\n"})
    assert cgroup_cpu_limit(v2, "0::/kubepods/pod1/box\n") == 2.0
    assert cgroup_cpu_limit(v2, "0::/\n") is None                      # no quota anywhere
    # cgroup v1 in a container: the group's path is not under the mount, which is its root
    v1 = cgroup_tree(tmp_path / "v1", {"cpu,cpuacct/cpu.cfs_quota_us": "150000\n",
                                       "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    membership = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n"
    assert cgroup_cpu_limit(v1, membership) == 1.5
    unlimited = cgroup_tree(tmp_path / "v1u", {"cpu/cpu.cfs_quota_us": "-1\n",
                                               "cpu/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_limit(unlimited, "1:cpu:/\n") is None
    assert cgroup_cpu_limit(tmp_path / "none", "") is None               # macOS, Windows


def test_usable_cpus_rounds_a_quota_up_and_never_exceeds_the_affinity(monkeypatch):
    from lab2.ops import processes
    monkeypatch.setattr(processes.os, "process_cpu_count", lambda: 8, raising=False)
    for limit, expected in ((None, 8), (1.5, 2), (0.5, 1), (64.0, 8)):
        monkeypatch.setattr(processes, "cgroup_cpu_limit", lambda limit=limit: limit)
        assert processes.usable_cpus() == expected


def in_subprocess(code: str, prefix=()) -> str:
    done = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True,
                          text=True, cwd=PROJECT, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(not shutil.which("taskset") or (os.cpu_count() or 1) < 2,
                    reason="needs taskset and two cores")
def test_usable_cpus_follows_the_affinity_of_a_real_process():
    code = "from lab2.ops.processes import usable_cpus; print(usable_cpus())"
    assert in_subprocess(code, ["taskset", "-c", "0"]) == "1"


def quota_group(tmp_name: str, cores: float):
    """A real cgroup (v1 or v2) with a CPU quota, if this machine lets us make one; else None."""
    v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
    if (v1 / "cpu.cfs_quota_us").is_file():
        group, name, text = v1 / tmp_name, "cpu.cfs_quota_us", str(int(cores * 100000))
    elif (v2 / "cgroup.controllers").is_file():
        group, name, text = v2 / tmp_name, "cpu.max", f"{int(cores * 100000)} 100000"
    else:
        return None
    try:
        group.mkdir()
    except OSError:
        return None
    try:
        (group / name).write_text(text, encoding="utf-8")
    except OSError:
        group.rmdir()
        return None
    return group


def test_usable_cpus_follows_a_real_containers_cpu_quota():
    group = quota_group(f"lab2-test-{os.getpid()}", 1.0)
    if group is None:
        pytest.skip("cannot make a cgroup with a CPU quota here (needs root and cgroups)")
    try:
        code = "from lab2.ops.processes import *; print(usable_cpus(), cgroup_cpu_limit())"
        done = subprocess.run(["sh", "-c", f'echo $$ > "{group}/cgroup.procs" && exec "$0" -c '
                               '"$1"', sys.executable, code], capture_output=True, text=True,
                              cwd=PROJECT)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["1", "1.0"]
    finally:
        group.rmdir()


def test_pytorch_threads_are_lowered_to_the_usable_cores_unless_omp_num_threads_says(
        monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(machine, "usable_cpus", lambda: 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    try:
        torch.set_num_threads(2)
        _, why = plan_for(profile_config("smoke", device="cpu"))
        assert torch.get_num_threads() == 1 and why["cpu_threads"] == 1
        assert "lowered" in why["cpu_threads_why"]
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert machine.fit_cpu_threads() == (2, "OMP_NUM_THREADS")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_cache_build_starts_one_worker_per_usable_core(sample_root, tmp_path, monkeypatch):
    from lab2.ops import cache as cache_module
    from lab2.ops.cache import build_cache
    asked = []

    def pool(workers, *args, **kwargs):
        asked.append(workers)
        raise RuntimeError("enough")
    monkeypatch.setenv("LAB2_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache_module, "usable_cpus", lambda: 3)
    monkeypatch.setattr(cache_module, "worker_pool", pool)
    with pytest.raises(RuntimeError, match="enough"):
        build_cache(sample_root, 32, None, progress=False)
    assert asked == [3]


def test_a_windows_pool_stops_at_61_workers(monkeypatch):
    from lab2.ops import processes
    monkeypatch.setattr(sys, "platform", "win32")
    with processes.worker_pool(128, "test") as pool:
        assert pool._max_workers == processes.WINDOWS_MAX_WORKERS == 61


def killed_by_the_system(job) -> None:
    """A pool job that SIGKILLs its worker (module-level: the pool sends it by name)."""
    import signal
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_cache_build_whose_worker_is_killed_is_one_line_and_keeps_nothing(sample_root,
                                                                            tmp_path,
                                                                            monkeypatch):
    # the out-of-memory killer's SIGKILL in a worker: the executor's own words said neither
    # what stopped nor what to do
    from lab2.ops import cache as cache_module
    from lab2.ops.cache import build_cache
    monkeypatch.setattr(cache_module, "_fill_row", killed_by_the_system)
    with pytest.raises(RuntimeError) as error:
        build_cache(sample_root, 32, None, cache_root=tmp_path, workers=2, progress=False)
    assert str(error.value) == (
        "a worker process of the cache raw 32x32 ended abruptly (killed, perhaps for want of "
        "memory); nothing of it was kept: run the same command again")
    assert [p.name for p in tmp_path.iterdir()] == [p.name for p in tmp_path.glob("*.lock*")]


@pytest.fixture
def windows_fsync(monkeypatch):
    """``os.fsync`` with Windows' rule: a descriptor opened read-only cannot be flushed
    (``FlushFileBuffers`` needs write access; Python raises EBADF)."""
    import errno
    import fcntl
    real = os.fsync

    def fsync(fd):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, "Bad file descriptor")
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def held_by_this_process() -> set[str]:
    """Paths this process has open or memory-mapped (Linux's /proc)."""
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/"):
                held.add(fields[5].strip().removesuffix(" (deleted)"))
    return held


@pytest.fixture
def windows_files(monkeypatch, windows_fsync):
    """Windows' rule for this process's own files: one that is open or memory-mapped cannot be
    replaced, renamed or deleted, nor can a folder holding one (``PermissionError``, winerror 32).
    Retried renames are not waited for."""
    if not Path("/proc/self/maps").is_file():
        pytest.skip("needs Linux's /proc")
    real = {name: getattr(os, name) for name in ("replace", "rename", "unlink", "remove")}
    monkeypatch.setattr(atomic, "_sleep", lambda s: None)

    def guarded(name):
        def call(*paths, **kwargs):
            if "dir_fd" not in kwargs and "src_dir_fd" not in kwargs:
                held = held_by_this_process()
                for path in paths:
                    path = os.path.abspath(path)
                    if any(h == path or h.startswith(path + os.sep) for h in held):
                        raise windows_in_use()
            return real[name](*paths, **kwargs)
        return call
    for name in real:
        monkeypatch.setattr(os, name, guarded(name))


def test_the_simulated_windows_rules_refuse_what_windows_refuses(tmp_path, windows_files):
    target, new = tmp_path / "held.pt", tmp_path / "new.pt"
    target.write_bytes(b"old")
    new.write_bytes(b"new")
    with open(target, "rb"):
        with pytest.raises(PermissionError):
            os.replace(new, target)
        with pytest.raises(PermissionError):
            os.replace(tmp_path, tmp_path.with_name("moved"))      # a folder holding it
    mapped = np.lib.format.open_memmap(tmp_path / "rows.npy", "w+", np.uint8, (4,))
    with pytest.raises(PermissionError):
        os.unlink(tmp_path / "rows.npy")
    del mapped
    os.unlink(tmp_path / "rows.npy")
    os.replace(new, target)
    fd = os.open(target, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fsync(fd)
    finally:
        os.close(fd)


def test_lab2_follows_windows_rules_for_open_files(sample_root, tmp_path, monkeypatch,
                                                   windows_files):
    """The cache build, a run and its resume, evaluation, an experiment, predictions and the
    sample (each twice where the second replaces files) under Windows' file rules, simulated for
    this process: no flush of a read-only descriptor, no rename or delete of an open or mapped
    file. The cache build used to flush read-only descriptors."""
    from lab2.ops.cache import build_cache
    from lab2.ops.evaluation import evaluate_checkpoint
    from lab2.ops.experiment import run_experiment
    from lab2.ops.predict import predict_files
    from lab2.ops.sample import make_sample_dataset
    monkeypatch.setenv("LAB2_CACHE_DIR", str(tmp_path / "cache"))
    assert build_cache(sample_root, 32, None, progress=False, workers=1) is not None
    config = profile_config("smoke", **{**SMOKE, "epochs": 1, "image_size": 32}, num_workers=0)
    train(config, sample_root, tmp_path / "run", progress=False)
    train(config.replace(epochs=2), sample_root, tmp_path / "run", resume=True, progress=False)
    assert is_finished(tmp_path / "run")
    assert len(read_history(tmp_path / "run" / "history.csv")) == 2
    assert 0 <= evaluate_checkpoint(tmp_path / "run" / "best.pt", sample_root, progress=False,
                                    max_samples=4)["dice"] <= 1
    rows, out = run_experiment("smoke", sample_root, tmp_path / "exp", progress=False,
                               epochs=1, base_channels=4, max_train_samples=8,
                               max_eval_samples=4, image_size=32, device="cpu")
    assert len(rows) == 4 and (out / "results.md").is_file()
    photo = next((Path(sample_root) / "oxford-iiit-pet" / "images").glob("*_2*.jpg"))
    for _ in range(2):                                   # the second replaces the first's files
        written, _ = predict_files(tmp_path / "run" / "best.pt", [photo], tmp_path / "pred")
        assert len(written) == 1
    for _ in range(2):                                   # the second replaces the first sample
        make_sample_dataset(tmp_path / "sample", n_trainval=10, n_test=5, size=64,
                            progress=False, overwrite=True)


def test_a_read_only_folder_on_windows_is_not_called_a_file_in_use(tmp_path, monkeypatch):
    """Windows says "access denied" (winerror 5) for a read-only folder too: only a rename that
    kept failing is blamed on another program."""
    target = tmp_path / "results.csv"
    target.write_text("old\n", encoding="utf-8")

    def refuse(*args, **kwargs):
        raise windows_in_use(winerror=5)
    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(atomic.StorageError, match="not writable by you") as raised:
        atomic.write_text(target, "new\n")
    assert "another program" not in str(raised.value)


def test_lab2s_pools_do_not_fork_a_process_running_threads(monkeypatch):
    # a fork copies the locks other threads hold (PyTorch's, OpenMP's, tqdm's monitor): Python
    # 3.12+ warns that it may deadlock; lab2's pools start with forkserver on Linux instead,
    # whatever the program's start method (creating a multiprocessing lock, as tqdm does, sets
    # that to fork)
    import multiprocessing as mp

    from lab2.ops.processes import pool_context
    mp.RLock()
    assert pool_context().get_start_method() == "forkserver"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert pool_context().get_start_method() == "spawn"


# ---- a PyTorch that cannot use the machine's GPU -------------------------------------------

CUDA13_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]   # PyPI's 2.15.0 build
CUDA126_ARCHS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


@pytest.mark.parametrize("capability, archs, runs", [
    ((7, 0), CUDA13_ARCHS, False),      # V100
    ((6, 0), CUDA13_ARCHS, False),      # P100 (Kaggle)
    ((6, 1), CUDA126_ARCHS, True),      # GTX 1080 on a CUDA 12.6 build
    ((7, 5), CUDA13_ARCHS, True),       # T4
    ((8, 9), ["sm_80", "sm_86", "sm_90"], True),   # RTX 4090: sm_86 machine code runs on 8.9
    ((10, 3), CUDA13_ARCHS, True),      # B300 on sm_100
    ((12, 1), CUDA13_ARCHS, True),
    ((9, 0), ["compute_80"], True),     # PTX is compiled for any later GPU
    ((7, 0), ["sm_90a"], False),
    ((7, 0), [], True),                 # a build that does not say
])
def test_which_gpus_a_pytorch_build_has_kernels_for(capability, archs, runs):
    from lab2.ops.gpus import has_kernels_for
    assert has_kernels_for(capability, archs) is runs


def test_a_gpu_the_installed_pytorch_has_no_kernels_for_stops_with_the_install_command(
        monkeypatch):
    """A V100 with PyPI's CUDA 13 PyTorch: found, then "no kernel image is available for
    execution on the device" at the first convolution."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: CUDA13_ARCHS)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Tesla V100-SXM2-16GB")
    for device in ("auto", "cuda"):
        with pytest.raises(ValueError) as caught:
            machine.resolve_device(device)
        said = str(caught.value)
        assert "no kernels for GPU 0, Tesla V100-SXM2-16GB (compute capability 7.0" in said
        assert "-m pip install --force-reinstall torch torchvision --index-url " \
               "https://download.pytorch.org/whl/cu126" in said and "--device cpu" in said
    assert machine.resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.version, "hip", "6.4", raising=False)   # ROCm: gfx targets
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["gfx90a", "gfx942"])
    assert machine.resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: CUDA13_ARCHS)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (7, 5))    # a T4
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Tesla T4")
    assert machine.resolve_device("auto").type == "cuda"


def test_a_cpu_only_pytorch_beside_an_nvidia_gpu_is_named_with_the_install_command(
        tmp_path, monkeypatch):
    """pip's PyTorch on Windows is built without CUDA: the auto profile trained `quick` on the
    CPU beside an idle GPU, saying only "NO GPU"."""
    from lab2.ops import gpus
    from lab2.ops.machine import resolve_profile
    from lab2.ops.notices import ProfileWarning
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA GeForce RTX 3060, 8.6'\n", encoding="utf-8")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gpus.nvidia_gpus.cache_clear()
    try:
        assert gpus.nvidia_gpus() == [("NVIDIA GeForce RTX 3060", (8, 6))]
        with pytest.warns(ProfileWarning, match=r"NO GPU THAT PYTORCH CAN USE \(this machine "
                          r"has an NVIDIA GPU \(NVIDIA GeForce RTX 3060\) but this PyTorch .* "
                          r"was built without CUDA .*whl/cu130`\): profile 'quick'"):
            assert resolve_profile("auto") == "quick"
        with pytest.raises(ValueError, match="no CUDA device is available: this machine has an "
                           "NVIDIA GPU .*--index-url .*; use --device auto or cpu"):
            machine.resolve_device("cuda")
        smi.unlink()                                          # no NVIDIA GPU: as before
        gpus.nvidia_gpus.cache_clear()
        assert gpus.gpu_without_cuda_build() is None
    finally:
        gpus.nvidia_gpus.cache_clear()
