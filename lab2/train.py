"""Training: the report's loop (forward, cross-entropy, backward, step; MultiStepLR per epoch),
with validation, checkpoints that resume exactly, and a guard against non-finite losses.

A run folder holds ``last.pt`` (every epoch) and ``best.pt`` (best validation Dice) and, derived
from them, ``config.json``, ``run.json`` and ``history.csv`` (:mod:`lab2.runs`).

``last.pt`` is the single source of truth. Each epoch ends by writing it (atomically), then
copying it to ``best.pt`` when the epoch is the best so far, then rewriting ``history.csv`` from
it. A kill between any two of these writes is repaired on the next start by
:func:`reconcile_run`: ``best.pt`` is copied again from ``last.pt`` when ``last.pt`` names its own
epoch as the best, and ``history.csv`` is rewritten from ``last.pt``'s history, so it is never an
epoch ahead of the weights. A run is finished when ``last.pt`` says its final epoch is done.

One process owns a run folder at a time (:mod:`lab2.locks`); a second one stops at once with a
message naming the first one's PID.

Determinism: the shuffling order and the augmentation of each sample are seeded from
``(config.seed, epoch, sample)`` (:class:`lab2.data.loaders.SeededSampler`), whatever the number
of loader workers or the multiprocessing start method, and the checkpoint holds all RNG states (of
every rank under torchrun), so a run interrupted and resumed on the CPU ends with the same weights
as one that was not.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import __version__, atomic, distributed, locks
from .checkpoint import copy_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import dataset_fingerprint
from .data.audit import audit_dataset, refuse_leaks
from .data.loaders import (
    SHARED_MEMORY,
    build_datasets,
    make_loader,
    progress_over,
    shared_memory_free,
)
from .data.masks import IGNORE_INDEX
from .data.sample import dataset_label
from .evaluate import evaluate_model
from .machine import Step, describe, resolve_device
from .models import model_for
from .notices import shell_word
from .paths import dataset_dir
from .processes import signal_name
from .runs import (
    RUN_FILES,
    check_same_data,
    device_name,
    edited_config,
    no_run_to_resume,
    reconcile_run,
    write_history,
    write_run_record,
)

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped with the last good checkpoint intact.
    Under DDP every rank raises it at the same step (:class:`LossGuard`)."""

    #: raised by every rank together: the first one tells it (:func:`lab2.cli.main`)
    every_rank = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---- optimisation -------------------------------------------------------------------------------

def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimiser. Adam and AdamW use PyTorch's fused kernels: on this CPU the
    default implementation spent 0.72 s per step on ResNet34-UNet's 86 M parameters, the fused
    one 0.08 s (benchmarks/RESULTS.md)."""
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig
                    ) -> torch.optim.lr_scheduler.MultiStepLR:
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """Learning rate used during (0-based) ``epoch`` under MultiStepLR stepped once per epoch."""
    return config.lr * config.gamma ** sum(epoch >= m for m in config.milestones)


# ---- one epoch ----------------------------------------------------------------------------------

class LossGuard:
    """Stops training on a non-finite loss without making the GPU wait for the CPU.

    On the CPU each loss is checked before its backward pass. On CUDA, reading a loss on the host
    waits for every queued kernel, so the GPU would idle while the CPU launches the next step's
    work; instead the finiteness flag is copied to pinned memory behind an event and read one step
    later, when that step's kernels are already queued. A bad loss is then reported one step late
    (the weights in memory may already be spoilt), which changes nothing for the user: training
    stops and last.pt still holds the last completed epoch.

    Under fp16 an overflow now and then is normal: the GradScaler skips that step and lowers its
    scale. ``tolerate`` consecutive non-finite losses pass; one more stops the run.

    Under DistributedDataParallel the flag is the minimum over the ranks (one small all-reduce
    per step), so every rank stops at the same step: a rank that stopped alone would leave the
    others waiting in the next gradient all-reduce.
    """

    def __init__(self, device: torch.device, tolerate: int = 0):
        self.lagged = device.type == "cuda"
        self.tolerate = tolerate
        self.bad_in_a_row = 0
        self.pending: tuple | None = None
        self.collective = (dist.is_available() and dist.is_initialized()
                           and dist.get_world_size() > 1)

    def check(self, loss: torch.Tensor, epoch: int, batch: int) -> None:
        loss = loss.detach()
        finite = torch.isfinite(loss)
        if self.collective:
            finite = finite.to(torch.int32)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not self.lagged:
            self._count(bool(finite), loss, epoch, batch)
            return
        flag = torch.empty((), dtype=torch.bool, pin_memory=True)
        flag.copy_(finite, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.flush()
        self.pending = (flag, event, loss, epoch, batch)

    def flush(self) -> None:
        """Check the loss still waiting (CUDA); call after the last batch."""
        if self.pending is not None:
            flag, event, loss, epoch, batch = self.pending
            self.pending = None
            event.synchronize()
            self._count(bool(flag), loss, epoch, batch)

    def _count(self, finite: bool, loss: torch.Tensor, epoch: int, batch: int) -> None:
        self.bad_in_a_row = 0 if finite else self.bad_in_a_row + 1
        if self.bad_in_a_row > self.tolerate:
            value = loss.item()    # finite here when another rank's loss was not
            text = "non-finite on another process" if math.isfinite(value) else f"{value}"
            raise NonFiniteLossError(
                f"the training loss became {text} in epoch {epoch + 1}, batch {batch + 1}"
                + (f" ({self.bad_in_a_row} steps in a row)" if self.tolerate else "")
                + "; training stopped")      # the run adds how to go on (_nan_advice)


#: Consecutive non-finite fp16 losses the GradScaler may skip before the run stops: the scaler
#: halves its scale on each, so 20 cover a scale fallen by 2**20 — far past any useful one.
FP16_TOLERATED_OVERFLOWS = 20


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    step: Step, *, epoch: int, progress: bool = True,
                    on_batch: Callable[[int, int], None] | None = None,
                    scaler: torch.amp.GradScaler | None = None) -> float:
    """One pass over ``loader``; returns the mean training loss (over the finite losses).
    Raises NonFiniteLossError. ``scaler`` (fp16) scales the loss and skips overflowing steps."""
    model.train()
    scaler = scaler or torch.amp.GradScaler(step.device.type, enabled=False)
    total = torch.zeros((), dtype=torch.float64, device=step.device)
    count = torch.zeros((), dtype=torch.float64, device=step.device)
    bar = progress_over(loader, desc=f"epoch {epoch + 1} train", unit="batch", leave=False,
                        disable=not progress)
    guard = LossGuard(step.device, FP16_TOLERATED_OVERFLOWS if scaler.is_enabled() else 0)
    for i, (images, masks, _) in enumerate(bar):
        images, masks = step.inputs(images, masks)
        with step.autocast():
            logits = model(images)                                        # (B, 2, H, W)
            loss = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)
        guard.check(loss, epoch, i)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)           # skipped when fp16 gradients overflowed
        scaler.update()
        finite = torch.isfinite(loss.detach())   # stays on the device: no host sync per batch
        total += torch.where(finite, loss.detach(), 0) * images.shape[0]
        count += finite * images.shape[0]
        if on_batch is not None:
            on_batch(epoch, i)
    guard.flush()
    if dist.is_available() and dist.is_initialized():     # the mean over every rank's images
        dist.all_reduce(total)
        dist.all_reduce(count)
    return float(total) / max(1.0, float(count))


# ---- run folder ---------------------------------------------------------------------------------

def _state(model, optimizer, scheduler, scaler, epoch, best, best_epoch, config, history, run,
           rngs: list[dict]) -> dict:
    """What last.pt holds. ``rngs``: every rank's RNG states (one entry in a single process);
    ``rng`` is the first's, ``rng_ranks`` all of them under DDP."""
    return {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch, "best_dice": best, "best_epoch": best_epoch, "rng": rngs[0],
        **({"rng_ranks": rngs} if len(rngs) > 1 else {}),
        "config": config.to_dict(), "history": history, "lab2_version": __version__, **run,
        # another count of CPU threads sums in another order: a resume restores it
        "cpu_threads": torch.get_num_threads(),
        **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}),   # fp16 only
    }


def compile_model(module: nn.Module, **options) -> nn.Module:
    """``torch.compile(module)`` with one static graph per input shape (``dynamic=False``).

    A run feeds the network a few shapes: full training batches, the last, shorter one, and the
    same two for validation (without gradients). By default Dynamo meets the second shape by
    compiling a graph whose batch size is symbolic, and from then on that dynamic graph serves
    every batch, the full ones too (checked with a counting backend in
    ``tests/test_train.py``). The speed-up measured for ``--compile`` (``benchmarks/gpu.py``,
    1.48x UNet and 1.09x ResNet34-UNet on an H200) is that of a static graph; whole epochs through
    the dynamic one were 1.03x and 0.82x (``benchmarks/epoch.py``, 2026-11-28). Static graphs
    cost a compile per shape instead: four at most, within Dynamo's limit of eight.
    ``options`` go to ``torch.compile`` (the tests pass a backend)."""
    return torch.compile(module, dynamic=False, **options)


# ---- the run ------------------------------------------------------------------------------------

class OutOfMemory(RuntimeError):
    """The device ran out of memory; last.pt still holds the last completed epoch."""


class CompileFailed(RuntimeError):
    """``torch.compile`` could not compile the model on this machine (no Triton for CUDA, which
    PyTorch does not ship for Windows; no C++ compiler for the CPU); last.pt is untouched."""

    every_rank = True     # every process of a run compiles the same model


def _compile_failure(error: BaseException) -> str | None:
    """The first line of a ``torch.compile`` backend failure (``InvalidCxxCompiler: ...``,
    ``Cannot find a working triton installation ...``), or None for any other error."""
    from torch._dynamo.exc import BackendCompilerFailed
    if not isinstance(error, BackendCompilerFailed):
        return None
    cause = getattr(error, "inner_exception", None) or error     # what the backend raised
    first = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


def _go_on(out: Path, world: distributed.World, saved_epoch: int, flags: str,
           fresh: str | None = None) -> str:
    """How to go on after a stop: resume with ``flags`` when last.pt holds an epoch, else
    ``fresh`` (by default the command that started the run with ``flags``: there is nothing to
    resume, and ``--resume`` would be refused)."""
    if not saved_epoch:
        return f"nothing was trained; {fresh or f'run the same command with {flags}'}"
    return (f"{out}/last.pt holds epoch {saved_epoch}; continue with: {_command(world)} --out "
            f"{shell_word(out)} --resume" + (f" {flags}" if flags else ""))


def _compile_advice(out: Path, config: TrainConfig, step: Step, failure: str, saved_epoch: int,
                    world: distributed.World) -> str:
    return (f"torch.compile could not compile {config.model} on {step.device.type} ({failure}); "
            + _go_on(out, world, saved_epoch, "--no-compile",
                     "run the same command without --compile"))


class SharedMemoryFull(RuntimeError):
    """The loader's workers found no room in the shared memory they hand batches over in (more
    of it was taken after the run started); last.pt is untouched."""


#: What PyTorch's loader says when shared memory runs out: its C++ allocation error (a file
#: ``</torch_...>`` in /dev/shm), or a worker killed by SIGBUS on writing past a full tmpfs.
_SHARED_MEMORY_ERRORS = ("shared memory", "</torch_", "Bus error")


def _shared_memory_advice(out: Path, config: TrainConfig, saved_epoch: int,
                          world: distributed.World) -> str:
    free = shared_memory_free()
    return ("the data loader's workers ran out of shared memory ("
            + (f"{free / 2**20:.0f} MiB of {SHARED_MEMORY} free for this run now; "
               if free is not None else "")
            + "a Docker container or Kubernetes pod has 64 MiB unless started with more, e.g. "
            "docker run --shm-size=2g); "
            + _go_on(out, world, saved_epoch, _fewer_workers(config)))


def _fewer_workers(config: TrainConfig) -> str:
    return f"--num-workers {config.num_workers // 2}"


class LoaderWorkerDied(RuntimeError):
    """A data-loader worker process ended in the middle of a run (most often the system's
    out-of-memory killer); last.pt is untouched."""


def _loader_worker_advice(out: Path, config: TrainConfig, error: RuntimeError, saved_epoch: int,
                          world: distributed.World) -> str:
    why = ("on Windows each worker loads PyTorch's libraries again, and Windows reserves memory "
           "for them up front: with a small paging file that fails (\"The paging file is too "
           "small\", WinError 1455), so fewer workers, or a paging file Windows manages, help"
           if sys.platform == "win32" else
           "when memory runs out the system ends processes (its out-of-memory killer), and fewer "
           "workers need less")
    return (f"a data loader worker stopped ({' '.join(str(error).split())}); {why}; "
            + _go_on(out, world, saved_epoch, _fewer_workers(config)))


def _lost_loader_worker(loaders: dict) -> RuntimeError | None:
    """PyTorch's error for a data-loader worker of this process that has died, if one has. A
    worker killed while it hands a batch over shows first as a broken pipe in this process
    ("Connection reset by peer", or an EOFError). PyTorch's own check of its workers (what its
    SIGCHLD handler calls) says which one and how it ended, once: if the handler already said it
    elsewhere, the loaders' worker processes are asked directly."""
    from torch.utils.data._utils import signal_handling
    try:        # (the SIGCHLD handler may raise the same error anywhere in here)
        for _ in range(40):   # a killed process closes its pipes just before it can be waited for
            signal_handling._error_if_any_worker_fails()
            for loader in loaders.values():
                for worker in getattr(getattr(loader, "_iterator", None), "_workers", ()):
                    code = worker.exitcode
                    if code:
                        how = (f"is killed by signal: {signal_name(code)}" if code < 0
                               else f"exited with code {code}")
                        return RuntimeError(f"DataLoader worker (pid {worker.pid}) {how}")
            time.sleep(0.05)
    except RuntimeError as e:
        return e
    return None


def _stop_loader_workers(loaders: dict) -> None:
    """Shut every loader's workers down now, after one was lost. Left to the garbage collector,
    PyTorch's SIGCHLD handler raised the loss again inside the iterator's ``__del__``, printed as
    "Exception ignored in ... Traceback" below lab2's one line."""
    for loader in loaders.values():
        iterator = getattr(loader, "_iterator", None)    # the persistent workers' iterator
        if iterator is not None:
            with contextlib.suppress(Exception):
                iterator._shutdown_workers()


class OtherRankFailed(RuntimeError):
    """Under DDP, another process of the run stopped (and said why); this one cannot go on."""

    every_rank = True     # the survivors all see it: the first of them tells it


def _command(world: distributed.World) -> str:
    """How this run was started: plain, or torchrun with its processes per machine (and, on
    several machines, a reminder of the rendezvous flags)."""
    if not world.distributed:
        return "python -m lab2 train"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))     # set by torchrun
    machines = f"--nnodes {world.size // local} ... " if distributed.several_machines() else ""
    return f"torchrun {machines}--nproc_per_node {local} -m lab2 train"


def _oom_advice(out: Path, config: TrainConfig, step: Step, saved_epoch: int,
                world: distributed.World) -> str:
    smaller, size = config.batch_size // 2, max(64, config.image_size // 2)
    precision = ("" if step.amp is not None else
                 f" (or add --amp {'fp16' if step.device.type == 'cuda' else 'bf16'})")
    batch = (_go_on(out, world, saved_epoch, f"--batch-size {smaller}") + f"{precision}; or "
             if smaller and smaller % world.size == 0 else "")
    restart = (f"start again at a smaller size with --restart --image-size {size}" if saved_epoch
               else f"run it with --image-size {size}")
    return (f"out of {step.device.type.upper()} memory training {config.model} at "
            f"{config.image_size}x{config.image_size}, batch {config.batch_size}, "
            f"{describe(step.amp)}; {batch}{restart}")


def _nan_advice(out: Path, config: TrainConfig, saved_epoch: int,
                world: distributed.World) -> str:
    lower = f"--lr {config.lr / 10:g}"
    return (_go_on(out, world, saved_epoch, lower)
            + ("" if config.amp == "off" else " (or add --amp off)"))


def train(config: TrainConfig, root, out, *, resume: bool = False, restart: bool = False,
          progress: bool = True, on_batch: Callable[[int, int], None] | None = None) -> dict:
    """Train ``config`` on the data set under ``root`` into the run folder ``out``.

    Returns ``{"history": [...], "best_dice": float, "run_dir": Path}``.

    With ``resume`` the run continues from ``out/last.pt``. ``config`` is what the run should be
    from now on: fields in :data:`lab2.config.RESUMABLE_FIELDS` that differ from the checkpoint's
    (learning rate, precision, batch size, epochs, ...) apply from the next epoch and are recorded
    in ``run.json``; any other difference raises ValueError (:meth:`TrainConfig.changes_from`), as
    does a data set other than the one the run was trained on. Build it with
    ``saved_config(out).replace(...)`` to change only some fields. ``restart`` deletes the run
    in ``out`` and trains from scratch. ``on_batch(epoch, batch)`` is called after every step
    (tests use it to interrupt a run).

    Started by ``torchrun`` with several ranks, the run is one DistributedDataParallel run
    (:mod:`lab2.distributed`): rank 0 owns the folder, writes every file and shows progress.
    """
    out = Path(out)
    with distributed.process_group(resolve_device(config.device)) as world:
        try:
            owner = (locks.owned(locks.folder_lock(out), f"the run folder {out}",
                                 fix="choose a writable --out folder")
                     if world.main else nullcontext())
            with owner:
                if world.main:
                    atomic.remove_stale_temporaries(out)
                    if restart:
                        for name in RUN_FILES:
                            (out / name).unlink(missing_ok=True)
                        for per_image in out.glob("per_image_*.csv"):
                            per_image.unlink()
                if world.distributed:
                    dist.barrier()
                threads = torch.get_num_threads()
                try:
                    return _train(config, root, out, resume, progress and world.main, on_batch,
                                  world)
                finally:       # a resume may have restored the run's own count
                    torch.set_num_threads(threads)
        except RuntimeError as e:
            # a collective before the first epoch (a barrier, the data check, DDP's first
            # broadcast) found another rank gone; lab2's own errors already say what to do
            failure = (distributed.peer_failure(e) if world.distributed
                       and type(e).__module__.partition(".")[0] != "lab2" else None)
            if failure is None:
                raise
            raise OtherRankFailed(f"{failure}; once that is mended, run the same command "
                                  "again") from None


#: Settings that only change how fast a machine feeds its processes: free to differ between the
#: machines of one run (each may have its own number of cores).
_PER_MACHINE_FIELDS = ("num_workers", "prefetch_factor")


def _data_description(root, fingerprint: str) -> str:
    where = Path(root).expanduser().resolve()
    if not dataset_dir(root).is_dir():
        return f"no data set at {where}"
    return f"the {dataset_label(root)} at {where} (fingerprint {fingerprint})"


def _restore_cpu_threads(checkpoint: dict, device: torch.device, step: Step,
                         world: distributed.World) -> None:
    """Compute on the CPU with the thread count the run was trained with (its checkpoint's):
    another count adds up the same numbers in another order, so a run resumed with it ends
    with other weights (``experiment --parallel 2`` trains with 1 thread per run on 2 cores,
    the same command run again after a kill resumed with 2). Before lab2 recorded it: as is."""
    recorded = checkpoint.get("cpu_threads")
    if device.type != "cpu" or recorded is None or recorded == torch.get_num_threads():
        return
    if world.main:
        log.info("resuming with the %d CPU thread(s) the run was trained with (not %d): "
                 "another count would give other weights", recorded, torch.get_num_threads())
    torch.set_num_threads(recorded)
    step.why.update(cpu_threads=recorded, cpu_threads_why="restored from last.pt on resume")


def _train(config: TrainConfig, root, out: Path, resume: bool, progress: bool,
           on_batch: Callable[[int, int], None] | None,
           world: distributed.World | None = None) -> dict:
    world = world or distributed.World()
    last = out / "last.pt"
    fingerprint = dataset_fingerprint(root, progress=progress)    # rank 0's bar alone
    # on several machines each rank reads its own --root: a copy that differs would mix data
    # sets in one run (and fail only at the first validation, an epoch later)
    distributed.require_same(
        fingerprint, _data_description(root, fingerprint), "read different data sets",
        "every machine needs the same data set at its --root (copy rank 0's there, or write it "
        "with the same `python -m lab2 download` or `sample` command)")
    # and the same settings: with "auto" precision, a machine whose GPU lacks bf16 would take
    # fp16 and scale its loss, and DDP would average scaled gradients with unscaled ones
    step = Step.for_config(config)
    precision = step.why["precision"]   # resolved from --amp on this machine: fp32, bf16, fp16
    distributed.require_same_settings(
        {**{name: value for name, value in config.to_dict().items()
            if name not in _PER_MACHINE_FIELDS}, "precision": precision},
        "give every machine the same command (config.json records rank 0's settings), and "
        "--amp bf16, fp16 or off where the GPUs differ")
    checkpoint, changes = None, {}
    if resume:
        if not last.is_file():
            raise no_run_to_resume(last)
        if world.main:
            reconcile_run(out)
        if world.distributed:
            dist.barrier()
        checkpoint = load_checkpoint(last)
        changes = config.changes_from(TrainConfig.from_dict(checkpoint["config"]))
        check_same_data(out, checkpoint.get("data"), fingerprint, root)
        if config.epochs < checkpoint["epoch"]:
            raise ValueError(f"--epochs {config.epochs} is fewer than the {checkpoint['epoch']} "
                             f"epochs {last} already holds; pass --epochs {checkpoint['epoch']} "
                             "or more")
    elif last.is_file():
        raise ValueError(f"{out} already holds a run (last.pt); pass --resume to continue it, "
                         "--restart to train it again from scratch, or choose another --out")
    refuse_leaks(audit_dataset(root, progress=progress), root)    # no test image trained on
    if world.main:
        out.mkdir(parents=True, exist_ok=True)

    device = step.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(config.seed)
    model = step.place(model_for(config))
    distributed.seed_rank(config.seed, world.rank)     # the same weights, own dropout masks
    if world.distributed and config.sync_bn:
        model = distributed.synchronise_batchnorm(model, device)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    scaler = step.scaler()
    history: list[dict] = []
    start_epoch, best, best_epoch = 0, -1.0, None
    run = {"run_id": uuid.uuid4().hex, "changes": [], "precision": precision,
           "data": {"fingerprint": fingerprint, "label": dataset_label(root),
                    "root": str(Path(root).expanduser().resolve())}}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if scaler.is_enabled() and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch, best = checkpoint["epoch"], checkpoint["best_dice"]
        history = checkpoint["history"]
        best_epoch = checkpoint.get("best_epoch")
        if not distributed.restore_rng(checkpoint, world, config.seed) and world.main:
            log.info("%s was saved by %d process(es), this run has %d: the batches continue as "
                     "before, the dropout masks are new", last,
                     len(checkpoint.get("rng_ranks") or [0]), world.size)
        if checkpoint.get("precision", precision) != precision:   # another machine, or --amp
            changes["precision"] = (checkpoint["precision"], precision)
        _restore_cpu_threads(checkpoint, device, step, world)
        # a run recorded by names and sizes (the earlier lab2) is recorded by content from now
        run = {"run_id": checkpoint.get("run_id") or run["run_id"],
               "data": {**(checkpoint.get("data") or run["data"]), "fingerprint": fingerprint},
               "precision": precision,
               "changes": list(checkpoint.get("changes") or []) + [
                   {"epoch": start_epoch, "field": name, "from": old, "to": new}
                   for name, (old, new) in changes.items()]}
        if "lr" in changes:   # the schedule continues from the new base learning rate
            scheduler.base_lrs = [config.lr] * len(scheduler.base_lrs)
            for group in optimizer.param_groups:
                group["initial_lr"], group["lr"] = config.lr, lr_at_epoch(config, start_epoch)
    runnable = model                       # shares model's weights; checkpoints save model
    if world.distributed:
        runnable = distributed.wrap(model, device, synchronised_bn=config.sync_bn)
    if config.compile:
        runnable = compile_model(runnable)

    datasets = build_datasets(config, root, progress=progress)
    loaders = {split: make_loader(datasets[split], config, train=split == "train", device=device,
                                  rank=world.rank, world_size=world.size)
               for split in ("train", "val")}
    devices = distributed.gather(device_name(device))        # every rank's (a collective)
    if world.main:
        if checkpoint is not None and (edited := edited_config(out, config, changes)):
            log.warning("%s", edited)
        config.save(out / "config.json")
        write_run_record(out, {
            "data": run["data"]["label"], "data_root": run["data"]["root"],
            "dataset_fingerprint": fingerprint, "profile": config.profile,
            "run_id": run["run_id"], "device": device_name(device), **step.why,
            "channels_last": step.channels_last,
            "dropout": f"{config.dropout} {config.dropout_kind}-wise",
            "n_train": len(datasets["train"]), "n_val": len(datasets["val"]),
            "loader": loaders["train"].plan,
            "resumed_from_epoch": start_epoch if checkpoint is not None else None,
            "changes": run["changes"], "world_size": world.size,
            "backend": dist.get_backend() if world.distributed else None,
            **({"devices": devices} if world.distributed else {}),
        })
    if checkpoint is not None and world.main:
        log.warning("resuming %s after epoch %d%s", out, start_epoch,
                    "".join(f"; {name} {old} -> {new}" for name, (old, new) in changes.items()))

    saved_epoch = start_epoch   # what last.pt holds, for the messages
    label = run["data"]["label"]        # its validation Dice shows which data it comes from
    epochs = tqdm(range(start_epoch, config.epochs), unit="epoch",
                  desc=config.run_name + (f" ({label})" if label == "synthetic sample" else ""),
                  initial=start_epoch, total=config.epochs, disable=not progress)
    try:
        for epoch in epochs:
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            loaders["train"].sampler.set_epoch(epoch)
            train_loss = train_one_epoch(runnable, loaders["train"], optimizer, step,
                                         epoch=epoch, progress=progress, on_batch=on_batch,
                                         scaler=scaler)
            scheduler.step()
            val = evaluate_model(runnable, loaders["val"], step, progress=progress,
                                 desc=f"epoch {epoch + 1} val")
            history = history + [{"epoch": epoch + 1, "train_loss": train_loss,
                                  "val_loss": val["loss"], "val_dice": val["dice"],
                                  "val_dice_pooled": val["dice_pooled"], "lr": lr,
                                  "seconds": time.perf_counter() - started}]
            is_best = val["dice"] > best
            if is_best:
                best, best_epoch = val["dice"], epoch + 1
            # last.pt first: everything else is derived from it (see the module docstring);
            # under DDP rank 0 is the only writer, of every rank's RNG states
            rngs = distributed.rng_states()
            if world.main:
                save_checkpoint(last, _state(model, optimizer, scheduler, scaler, epoch + 1,
                                             best, best_epoch, config, history, run, rngs))
            saved_epoch = epoch + 1
            if world.main:
                if is_best:
                    copy_checkpoint(last, out / "best.pt")
                write_history(out / "history.csv", history)
            epochs.set_postfix(train_loss=f"{train_loss:.3f}", val_dice=f"{val['dice']:.3f}")
    except NonFiniteLossError as e:
        raise NonFiniteLossError(f"{e}; {_nan_advice(out, config, saved_epoch, world)}") from None
    except torch.OutOfMemoryError:
        raise OutOfMemory(_oom_advice(out, config, step, saved_epoch, world)) from None
    except RuntimeError as e:
        if config.compile and (failure := _compile_failure(e)) is not None:
            raise CompileFailed(_compile_advice(out, config, step, failure, saved_epoch,
                                                world)) from None
        if any(text in str(e) for text in _SHARED_MEMORY_ERRORS):
            _stop_loader_workers(loaders)
            raise SharedMemoryFull(_shared_memory_advice(out, config, saved_epoch,
                                                         world)) from None
        if str(e).startswith("DataLoader worker (pid"):    # PyTorch's words for a lost worker
            _stop_loader_workers(loaders)
            raise LoaderWorkerDied(_loader_worker_advice(out, config, e, saved_epoch,
                                                         world)) from None
        failure = distributed.peer_failure(e) if world.distributed else None
        if failure is None:
            raise
        raise OtherRankFailed(f"{failure}; " + _go_on(out, world, saved_epoch, "",
                                                       "run the same command again")) from None
    except (ConnectionError, EOFError):   # a loader worker died while handing a batch over
        lost = _lost_loader_worker(loaders)
        if lost is None:
            raise
        _stop_loader_workers(loaders)
        raise LoaderWorkerDied(_loader_worker_advice(out, config, lost, saved_epoch,
                                                     world)) from None
    except KeyboardInterrupt:
        if world.main and saved_epoch:
            log.warning("interrupted: %s holds epoch %d, where the run resumes",
                        last, saved_epoch)
        elif world.main:
            log.warning("interrupted in the first epoch: nothing of %s was saved", out)
        raise
    return {"history": history, "best_dice": best, "run_dir": out}


__all__ = ["CompileFailed", "LoaderWorkerDied", "LossGuard", "NonFiniteLossError",
           "OtherRankFailed", "OutOfMemory", "SharedMemoryFull", "build_optimizer",
           "build_scheduler", "compile_model", "lr_at_epoch", "seed_everything", "train",
           "train_one_epoch"]
