"""A training run in a run folder: the core loop (:func:`lab2.train.fit`) with checkpoints that
resume exactly, one owner per folder, several processes (torchrun), and a clear stop — with the
command that goes on — for a non-finite loss, out of memory, a lost loader worker, full shared
memory or a failed compile.

``last.pt`` is a run folder's single source of truth (:mod:`lab2.ops.runs`: the folder's files).
Each epoch ends by writing it (atomically), then copying it to ``best.pt`` when the epoch is the
best so far, then rewriting ``history.csv`` from it. A kill between any two of these writes is
repaired on the next start by :func:`lab2.ops.runs.reconcile_run`: ``best.pt`` is copied again
from ``last.pt`` when ``last.pt`` names its own epoch as the best, and ``history.csv`` is
rewritten from ``last.pt``'s history, so it is never an epoch ahead of the weights. A run is
finished when ``last.pt`` says its final epoch is done. One process owns a run folder at a time
(:mod:`lab2.ops.locks`).

Determinism: the shuffling order and the augmentation of each sample are seeded from
``(config.seed, epoch, sample)`` (:class:`lab2.ops.loaders.SeededSampler`), whatever the number
of loader workers or the multiprocessing start method, and the checkpoint holds all RNG states (of
every rank under torchrun) and the CPU thread count, so a run interrupted and resumed on the CPU
ends with the same weights as one that was not.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .. import __version__
from ..config import TrainConfig
from ..data.index import dataset_dir
from ..models import model_for
from ..train import (
    DevicePlan,
    NonFiniteLossError,
    build_optimizer,
    build_scheduler,
    fit,
    lr_at_epoch,
    seed_everything,
)
from . import atomic, distributed, locks
from .audit import audit_dataset, refuse_leaks
from .checkpoint import copy_checkpoint, load_checkpoint, save_checkpoint
from .console import shell_word
from .fingerprint import dataset_fingerprint
from .loaders import SHARED_MEMORY, build_datasets, make_loader, shared_memory_free
from .machine import describe, plan_for, resolve_device
from .processes import signal_name
from .runs import (
    RUN_FILES,
    check_same_data,
    device_name,
    edited_config,
    no_run_to_resume,
    reconcile_run,
    resume_changes,
    write_history,
    write_run_record,
)
from .sample import dataset_label

log = logging.getLogger(__name__)


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
                + "; training stopped")      # the run adds how to go on (StopAdvice)


#: Consecutive non-finite fp16 losses the GradScaler may skip before the run stops: the scaler
#: halves its scale on each, so 20 cover a scale fallen by 2**20 — far past any useful one.
FP16_TOLERATED_OVERFLOWS = 20


# ---- the run ------------------------------------------------------------------------------------

def compile_model(module: nn.Module, **options) -> nn.Module:
    """``torch.compile(module)`` with one static graph per input shape (``dynamic=False``).

    A run feeds the network a few shapes: full training batches, the last, shorter one, and the
    same two for validation (without gradients). By default Dynamo meets the second shape by
    compiling a graph whose batch size is symbolic, and from then on that dynamic graph serves
    every batch, the full ones too (checked with a counting backend in ``tests/test_train.py``),
    and whole epochs through it were slower than through static graphs (``benchmarks/epoch.py``,
    benchmarks/RESULTS.md). Static graphs cost a compile per shape instead: four at most, within
    Dynamo's limit of eight. ``options`` go to ``torch.compile`` (the tests pass a backend)."""
    return torch.compile(module, dynamic=False, **options)


class OutOfMemory(RuntimeError):
    """The device ran out of memory; last.pt still holds the last completed epoch."""


class CompileFailed(RuntimeError):
    """``torch.compile`` could not compile the model on this machine (no Triton for CUDA, which
    PyTorch does not ship for Windows; no C++ compiler for the CPU); last.pt is untouched."""

    every_rank = True     # every process of a run compiles the same model


class SharedMemoryFull(RuntimeError):
    """The loader's workers found no room in the shared memory they hand batches over in (more
    of it was taken after the run started); last.pt is untouched."""


class LoaderWorkerDied(RuntimeError):
    """A data-loader worker process ended in the middle of a run (most often the system's
    out-of-memory killer); last.pt is untouched."""


class OtherRankFailed(RuntimeError):
    """Under DDP, another process of the run stopped (and said why); this one cannot go on."""

    every_rank = True     # the survivors all see it: the first of them tells it


def _compile_failure(error: BaseException) -> str | None:
    """The first line of a ``torch.compile`` backend failure (``InvalidCxxCompiler: ...``,
    ``Cannot find a working triton installation ...``), or None for any other error."""
    from torch._dynamo.exc import BackendCompilerFailed
    if not isinstance(error, BackendCompilerFailed):
        return None
    cause = getattr(error, "inner_exception", None) or error     # what the backend raised
    first = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


#: What PyTorch's loader says when shared memory runs out: its C++ allocation error (a file
#: ``</torch_...>`` in /dev/shm), or a worker killed by SIGBUS on writing past a full tmpfs.
_SHARED_MEMORY_ERRORS = ("shared memory", "</torch_", "Bus error")


@dataclass
class StopAdvice:
    """What a run that had to stop tells the user: why, and a command that goes on from what
    ``last.pt`` holds (``saved_epoch``, kept up to date by the run)."""

    out: Path
    config: TrainConfig
    plan: DevicePlan
    world: distributed.World
    saved_epoch: int = 0

    def command(self) -> str:
        """How this run was started: plain, or torchrun with its processes per machine (and, on
        several machines, a reminder of the rendezvous flags)."""
        if not self.world.distributed:
            return "python -m lab2 train"
        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world.size))     # set by torchrun
        machines = (f"--nnodes {self.world.size // local} ... "
                    if distributed.several_machines() else "")
        return f"torchrun {machines}--nproc_per_node {local} -m lab2 train"

    def how_to_continue(self, flags: str, fresh: str | None = None) -> str:
        """Resume with ``flags`` when last.pt holds an epoch; else ``fresh`` (by default the
        command that started the run with ``flags``: there is nothing to resume, and
        ``--resume`` would be refused)."""
        if not self.saved_epoch:
            return f"nothing was trained; {fresh or f'run the same command with {flags}'}"
        return (f"{self.out}/last.pt holds epoch {self.saved_epoch}; continue with: "
                f"{self.command()} --out {shell_word(self.out)} --resume"
                + (f" {flags}" if flags else ""))

    def non_finite_loss(self, error: Exception) -> NonFiniteLossError:
        return NonFiniteLossError(
            f"{error}; {self.how_to_continue(f'--lr {self.config.lr / 10:g}')}"
            + ("" if self.config.amp == "off" else " (or add --amp off)"))

    def out_of_memory(self) -> OutOfMemory:
        config, device = self.config, self.plan.device
        smaller, size = config.batch_size // 2, max(64, config.image_size // 2)
        precision = ("" if self.plan.amp is not None else
                     f" (or add --amp {'fp16' if device.type == 'cuda' else 'bf16'})")
        batch = (self.how_to_continue(f"--batch-size {smaller}") + f"{precision}; or "
                 if smaller and smaller % self.world.size == 0 else "")
        restart = (f"start again at a smaller size with --restart --image-size {size}"
                   if self.saved_epoch else f"run it with --image-size {size}")
        return OutOfMemory(f"out of {device.type.upper()} memory training {config.model} at "
                           f"{config.image_size}x{config.image_size}, batch {config.batch_size}, "
                           f"{describe(self.plan.amp)}; {batch}{restart}")

    def compile_failed(self, failure: str) -> CompileFailed:
        return CompileFailed(
            f"torch.compile could not compile {self.config.model} on {self.plan.device.type} "
            f"({failure}); " + self.how_to_continue("--no-compile",
                                                    "run the same command without --compile"))

    def _fewer_workers(self) -> str:
        return f"--num-workers {self.config.num_workers // 2}"

    def shared_memory_full(self) -> SharedMemoryFull:
        free = shared_memory_free()
        return SharedMemoryFull(
            "the data loader's workers ran out of shared memory ("
            + (f"{free / 2**20:.0f} MiB of {SHARED_MEMORY} free for this run now; "
               if free is not None else "")
            + "a Docker container or Kubernetes pod has 64 MiB unless started with more, e.g. "
            "docker run --shm-size=2g); " + self.how_to_continue(self._fewer_workers()))

    def loader_worker_died(self, error: Exception) -> LoaderWorkerDied:
        why = ("on Windows each worker loads PyTorch's libraries again, and Windows reserves "
               "memory for them up front: with a small paging file that fails (\"The paging "
               "file is too small\", WinError 1455), so fewer workers, or a paging file Windows "
               "manages, help" if sys.platform == "win32" else
               "when memory runs out the system ends processes (its out-of-memory killer), and "
               "fewer workers need less")
        return LoaderWorkerDied(f"a data loader worker stopped ({' '.join(str(error).split())});"
                                f" {why}; " + self.how_to_continue(self._fewer_workers()))

    def other_rank_failed(self, failure: str) -> OtherRankFailed:
        return OtherRankFailed(f"{failure}; " + self.how_to_continue(
            "", "run the same command again"))


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


def train(config: TrainConfig, root, out, *, resume: bool = False, restart: bool = False,
          progress: bool = True, on_batch: Callable[[int, int], None] | None = None) -> dict:
    """Train ``config`` on the data set under ``root`` into the run folder ``out``.

    Returns ``{"history": [...], "best_dice": float, "run_dir": Path}``.

    With ``resume`` the run continues from ``out/last.pt``. ``config`` is what the run should be
    from now on: fields in :data:`lab2.config.RESUMABLE_FIELDS` that differ from the checkpoint's
    (learning rate, precision, batch size, epochs, ...) apply from the next epoch and are recorded
    in ``run.json``; any other difference raises ValueError
    (:func:`lab2.ops.runs.resume_changes`), as does a data set other than the one the run was
    trained on. Build it with ``saved_config(out).replace(...)`` to change only some fields.
    ``restart`` deletes the run in ``out`` and trains from scratch. ``on_batch(epoch, batch)`` is
    called after every step (tests use it to interrupt a run).

    Started by ``torchrun`` with several ranks, the run is one DistributedDataParallel run
    (:mod:`lab2.ops.distributed`): rank 0 owns the folder, writes every file and shows progress.
    """
    out = Path(out)
    root = Path(root).expanduser().resolve()     # once: every record and message names it so
    with distributed.process_group(resolve_device(config.device)) as world:
        try:
            owner = locks.own_folder(out) if world.main else nullcontext()
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


def _data_description(root: Path, fingerprint: str) -> str:
    if not dataset_dir(root).is_dir():
        return f"no data set at {root}"
    return f"the {dataset_label(root)} at {root} (fingerprint {fingerprint})"


def _restore_cpu_threads(checkpoint: dict, plan: DevicePlan, why: dict,
                         world: distributed.World) -> None:
    """Compute on the CPU with the thread count the run was trained with (its checkpoint's):
    another count adds up the same numbers in another order, so a run resumed with it ends
    with other weights (``experiment --parallel 2`` trains with 1 thread per run on 2 cores,
    the same command run again after a kill resumed with 2). Before lab2 recorded it: as is."""
    recorded = checkpoint.get("cpu_threads")
    if plan.device.type != "cpu" or recorded is None or recorded == torch.get_num_threads():
        return
    if world.main:
        log.info("resuming with the %d CPU thread(s) the run was trained with (not %d): "
                 "another count would give other weights", recorded, torch.get_num_threads())
    torch.set_num_threads(recorded)
    why.update(cpu_threads=recorded, cpu_threads_why="restored from last.pt on resume")


def best_so_far(history: list[dict]) -> tuple[float, int | None]:
    """The best validation Dice of a history and its epoch (the first, when it repeats)."""
    best, epoch = -1.0, None
    for row in history:
        if row["val_dice"] > best:
            best, epoch = row["val_dice"], row["epoch"]
    return best, epoch


def _train(config: TrainConfig, root: Path, out: Path, resume: bool, progress: bool,
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
    plan, why = plan_for(config)
    precision = why["precision"]   # resolved from --amp on this machine: fp32, bf16, fp16
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
        changes = resume_changes(config, TrainConfig.from_dict(checkpoint["config"]))
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

    device = plan.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(config.seed)
    model = plan.place(model_for(config))
    distributed.seed_rank(config.seed, world.rank)     # the same weights, own dropout masks
    if world.distributed and config.sync_bn:
        model = distributed.synchronise_batchnorm(model, device)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    scaler = plan.scaler()
    history: list[dict] = []
    start_epoch = 0
    run = {"run_id": uuid.uuid4().hex, "changes": [], "precision": precision,
           "data": {"fingerprint": fingerprint, "label": dataset_label(root),
                    "root": str(root)}}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if scaler.is_enabled() and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch, history = checkpoint["epoch"], checkpoint["history"]
        if not distributed.restore_rng(checkpoint, world, config.seed) and world.main:
            log.info("%s was saved by %d process(es), this run has %d: the batches continue as "
                     "before, the dropout masks are new", last,
                     len(checkpoint.get("rng_ranks") or [0]), world.size)
        if checkpoint.get("precision", precision) != precision:   # another machine, or --amp
            changes["precision"] = (checkpoint["precision"], precision)
        _restore_cpu_threads(checkpoint, plan, why, world)
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
        atomic.write_json(out / "config.json", config.to_dict())
        write_run_record(out, {
            "data": run["data"]["label"], "data_root": run["data"]["root"],
            "dataset_fingerprint": fingerprint, "profile": config.profile,
            "run_id": run["run_id"], "device": device_name(device), **why,
            "channels_last": plan.channels_last,
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

    def save(history: list[dict]) -> None:
        """End an epoch: ``last.pt`` first, everything else is derived from it (the module
        docstring); under DDP rank 0 is the only writer, of every rank's RNG states."""
        best, best_epoch = best_so_far(history)
        rngs = distributed.rng_states()
        if world.main:
            save_checkpoint(last, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": history[-1]["epoch"],
                "best_dice": best, "best_epoch": best_epoch, "rng": rngs[0],
                **({"rng_ranks": rngs} if len(rngs) > 1 else {}),
                "config": config.to_dict(), "history": history, "lab2_version": __version__,
                **run,
                # another count of CPU threads sums in another order: a resume restores it
                "cpu_threads": torch.get_num_threads(),
                **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {})})  # fp16
        stop.saved_epoch = history[-1]["epoch"]
        if world.main:
            if best_epoch == history[-1]["epoch"]:
                copy_checkpoint(last, out / "best.pt")
            write_history(out / "history.csv", history)

    stop = StopAdvice(out, config, plan, world, saved_epoch=start_epoch)
    label = run["data"]["label"]        # its validation Dice shows which data it comes from
    guard = LossGuard(device, FP16_TOLERATED_OVERFLOWS if scaler.is_enabled() else 0)
    try:
        history = fit(runnable, loaders, optimizer, scheduler, plan, epochs=config.epochs,
                      start_epoch=start_epoch, history=history, on_epoch=save,
                      desc=config.run_name + (f" ({label})" if label == "synthetic sample"
                                              else ""),
                      progress=progress, scaler=scaler, guard=guard, on_batch=on_batch,
                      all_reduce=dist.all_reduce if world.distributed else None,
                      combine=distributed.combine_evaluations if world.distributed else None)
    except NonFiniteLossError as e:
        raise stop.non_finite_loss(e) from None
    except torch.OutOfMemoryError:
        raise stop.out_of_memory() from None
    except RuntimeError as e:
        if config.compile and (failure := _compile_failure(e)) is not None:
            raise stop.compile_failed(failure) from None
        if any(text in str(e) for text in _SHARED_MEMORY_ERRORS):
            _stop_loader_workers(loaders)
            raise stop.shared_memory_full() from None
        if str(e).startswith("DataLoader worker (pid"):    # PyTorch's words for a lost worker
            _stop_loader_workers(loaders)
            raise stop.loader_worker_died(e) from None
        failure = distributed.peer_failure(e) if world.distributed else None
        if failure is None:
            raise
        raise stop.other_rank_failed(failure) from None
    except (ConnectionError, EOFError):   # a loader worker died while handing a batch over
        lost = _lost_loader_worker(loaders)
        if lost is None:
            raise
        _stop_loader_workers(loaders)
        raise stop.loader_worker_died(lost) from None
    except KeyboardInterrupt:
        if world.main and stop.saved_epoch:
            log.warning("interrupted: %s holds epoch %d, where the run resumes",
                        last, stop.saved_epoch)
        elif world.main:
            log.warning("interrupted in the first epoch: nothing of %s was saved", out)
        raise
    return {"history": history, "best_dice": best_so_far(history)[0], "run_dir": out}


__all__ = ["CompileFailed", "LoaderWorkerDied", "LossGuard", "OtherRankFailed", "OutOfMemory",
           "SharedMemoryFull", "StopAdvice", "best_so_far", "compile_model", "train"]
