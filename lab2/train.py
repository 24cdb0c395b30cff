"""Training: the report's loop (forward, cross-entropy, backward, step; MultiStepLR per epoch),
with validation, checkpoints that resume exactly, and a guard against non-finite losses.

A run folder holds ``last.pt`` (every epoch) and ``best.pt`` (best validation Dice) and, derived
from them, ``config.json``, ``run.json`` (provenance: git commit, data set fingerprint and label,
device, versions, settings changed on resume) and ``history.csv`` (one row per epoch).

``last.pt`` is the single source of truth. Each epoch ends by writing it (atomically), then
copying it to ``best.pt`` when the epoch is the best so far, then rewriting ``history.csv`` from
it. A kill between any two of these writes is repaired on the next start by
:func:`reconcile_run`: ``best.pt`` is copied again from ``last.pt`` when ``last.pt`` names its own
epoch as the best, and ``history.csv`` is rewritten from ``last.pt``'s history, so it is never an
epoch ahead of the weights. A run is finished when ``last.pt`` says its final epoch is done.

One process owns a run folder at a time (:mod:`lab2.locks`); a second one stops at once with a
message naming the first one's PID.

Determinism: the shuffling order and the augmentation of each sample are seeded from
``(config.seed, epoch, sample)`` (:class:`SeededSampler`), whatever the number of loader workers
or the multiprocessing start method, and the checkpoint holds all RNG states, so a run interrupted
and resumed on the CPU ends with the same weights as one that was not.
"""

from __future__ import annotations

import csv
import io
import logging
import platform
import random
import subprocess
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import __version__, atomic, locks
from .augment import build_train_transforms, normalize_images, reseed
from .checkpoint import (copy_checkpoint, load_checkpoint, rng_state, save_checkpoint,
                         set_rng_state)
from .config import TrainConfig
from .data import OxfordPetSegmentation, build_cache, dataset_fingerprint
from .data.masks import IGNORE_INDEX
from .data.sample import dataset_label
from .machine import choose_channels_last, choose_precision, describe, resolve_device
from .metrics import DiceMeter
from .models import build_model
from .paths import source_checkout
from .preprocess import PreprocessParams

log = logging.getLogger(__name__)

#: Files a run writes (removed by ``restart``); last.pt is the one the others derive from.
RUN_FILES = ("last.pt", "best.pt", "history.csv", "config.json", "run.json", "metrics.json")
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_dice", "val_dice_pooled", "lr", "seconds")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped with the last good checkpoint intact."""


# ---- machine ------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, worker: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, epoch, data-loader worker)."""
    return int(np.random.SeedSequence([seed, epoch, worker]).generate_state(1)[0])


# ---- data ---------------------------------------------------------------------------------------

def build_datasets(config: TrainConfig, root, splits=("train", "val"), progress: bool = True
                   ) -> dict[str, OxfordPetSegmentation]:
    """Datasets for ``splits``; builds the cache for the config's size and variant first."""
    params = PreprocessParams() if config.preprocess else None
    build_cache(root, config.image_size, params, progress=progress)
    datasets = {}
    for split in splits:
        train = split == "train"
        # uint8 through the loader; Step.inputs normalises the batch on the device
        transform = build_train_transforms(normalize=False) if (train and config.augment) else None
        datasets[split] = OxfordPetSegmentation(
            root, split, config.image_size, transform=transform, border=config.border,
            preprocess=config.preprocess, progress=progress, uint8=True,
            max_samples=config.max_train_samples if train else config.max_eval_samples)
        if len(datasets[split]) == 0:
            raise ValueError(f"split {split!r} of {root} has no usable samples")
    return datasets


class SeededSampler(torch.utils.data.Sampler):
    """Indices ``(seed, i)`` for one pass over a data set: the order (shuffled or not) and one
    augmentation seed per sample, both drawn from (run seed, epoch) only.

    Call :meth:`set_epoch` before each pass (as with ``DistributedSampler``). Because each sample
    carries its own seed, the augmentation does not depend on the number of loader workers, and
    the workers can stay alive across epochs (``persistent_workers``): under the ``spawn`` start
    method of macOS and Windows, starting them again every epoch costs seconds each.
    """

    def __init__(self, n: int, seed: int, shuffle: bool):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=generator).tolist() if self.shuffle \
            else range(self.n)
        seeds = np.random.SeedSequence([self.seed, self.epoch, 1]).generate_state(self.n)
        return iter([(int(seeds[i]), i) for i in order])


def init_loader_worker(seed: int, worker_id: int) -> None:
    """Seed a data-loader worker's global RNGs from (run seed, worker); the augmentation itself is
    seeded per sample (:class:`SeededSampler`). Module-level, bound with ``functools.partial``, so
    it pickles under the ``spawn`` and ``forkserver`` start methods, where a nested function
    cannot be sent to the workers."""
    s = epoch_seed(seed, -1, worker_id + 1)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def make_loader(dataset: OxfordPetSegmentation, config: TrainConfig, *, train: bool,
                device: torch.device | None = None) -> DataLoader:
    """The loader of one split for a whole run; call ``loader.sampler.set_epoch(e)`` before each
    pass. Works under any multiprocessing start method.

    Evaluation loaders of a cached data set read in the main process: a cache row is a memory
    copy (8,477 rows/s on this 2-core CPU, ``benchmarks/data_pipeline.py``) and there is no
    augmentation to spread, so workers would only add processes."""
    workers = config.num_workers if (train or dataset.cache is None) else 0
    return DataLoader(
        dataset, batch_size=config.batch_size, drop_last=False,
        sampler=SeededSampler(len(dataset), config.seed, shuffle=train),
        num_workers=workers, prefetch_factor=config.prefetch_factor if workers else None,
        persistent_workers=workers > 0,
        worker_init_fn=partial(init_loader_worker, config.seed) if workers else None,
        # the workers' base seed comes from here, not from the global RNG that dropout uses
        generator=torch.Generator().manual_seed(config.seed),
        pin_memory=device is not None and device.type == "cuda")


def model_for(config: TrainConfig) -> nn.Module:
    """The network a config describes (freshly initialised)."""
    return build_model(config.model, base_channels=config.base_channels, dropout=config.dropout)


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

@dataclass
class Step:
    """What a training or evaluation step needs to know about the machine (lab2.machine)."""

    device: torch.device
    amp: torch.dtype | None
    channels_last: bool
    why: dict | None = None        # the reason for each choice, recorded in run.json

    @classmethod
    def for_config(cls, config: TrainConfig) -> "Step":
        device = resolve_device(config.device)
        amp, amp_why = choose_precision(config.amp, device)
        layout, layout_why = choose_channels_last(config.channels_last, device, amp)
        return cls(device, amp, layout, {"precision": describe(amp), "precision_why": amp_why,
                                         "channels_last_why": layout_why})

    def scaler(self) -> torch.amp.GradScaler:
        """The loss scaler fp16 needs (a no-op one for bf16 and fp32)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)

    def place(self, model: nn.Module) -> nn.Module:
        """Move the model to the device, in channels_last when the step uses it."""
        return model.to(self.device, memory_format=torch.channels_last if self.channels_last
                        else torch.contiguous_format)

    def inputs(self, images: torch.Tensor, masks: torch.Tensor):
        """A loader's batch on the device: uint8 images normalised there, masks as long.
        The layout changes while the images are still uint8, so no float copy is made for it
        (normalisation keeps the memory format)."""
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if images.dtype == torch.uint8:
            images = normalize_images(images)
        return images, masks.to(self.device, non_blocking=True).long()

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)


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
    """

    def __init__(self, device: torch.device, tolerate: int = 0):
        self.lagged = device.type == "cuda"
        self.tolerate = tolerate
        self.bad_in_a_row = 0
        self.pending: tuple | None = None

    def check(self, loss: torch.Tensor, epoch: int, batch: int) -> None:
        loss = loss.detach()
        if not self.lagged:
            self._count(bool(torch.isfinite(loss)), loss, epoch, batch)
            return
        flag = torch.empty((), dtype=torch.bool, pin_memory=True)
        flag.copy_(torch.isfinite(loss), non_blocking=True)
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
            raise NonFiniteLossError(
                f"the training loss became {loss.item()} in epoch {epoch + 1}, batch {batch + 1}"
                + (f" ({self.bad_in_a_row} steps in a row)" if self.tolerate else "")
                + "; training stopped and last.pt still holds the last completed epoch. Lower "
                "--lr, or turn mixed precision off (--amp off), then resume with --resume.")


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
    bar = tqdm(loader, desc=f"epoch {epoch + 1} train", unit="batch", leave=False,
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
    return float(total) / max(1.0, float(count))


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: DataLoader, step: Step, *,
                   original: OxfordPetSegmentation | None = None, progress: bool = True,
                   desc: str = "eval") -> dict:
    """Loss and Dice (mean per image, pooled) at the loader's resolution; with ``original`` (the
    loader's data set) also at each image's original resolution: logits resized back bilinearly
    and compared with the original trimap's mask. Restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    meter, meter_original = DiceMeter(), DiceMeter()
    loss_sum, count = 0.0, 0
    for images, masks, names in tqdm(loader, desc=desc, unit="batch", leave=False,
                                     disable=not progress):
        images, masks = step.inputs(images, masks)
        with step.autocast():
            logits = model(images).float()
        loss_sum += float(F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX,
                                          reduction="sum")) / masks[0].numel()
        count += images.shape[0]
        meter.update(logits.argmax(1), masks, list(names))
        if original is not None:
            for logit, name in zip(logits, names):
                mask = torch.from_numpy(original.original_mask(name)).long()
                resized = F.interpolate(logit[None], size=mask.shape, mode="bilinear",
                                        align_corners=False)
                meter_original.update(resized.argmax(1).cpu(), mask[None], [name])
    model.train(was_training)
    result = {"loss": loss_sum / max(1, count), "dice": meter.mean, "dice_pooled": meter.pooled,
              "n_images": count, "per_image": dict(zip(meter.names, meter.per_image.tolist()))}
    if original is not None:
        result.update(dice_original=meter_original.mean, dice_pooled_original=meter_original.pooled,
                      per_image_original=dict(zip(meter_original.names,
                                                  meter_original.per_image.tolist())))
    return result


# ---- run folder ---------------------------------------------------------------------------------

def git_commit() -> str:
    """The source checkout's commit (``+dirty`` with uncommitted changes); for an installed
    package, ``installed <version>``."""
    checkout = source_checkout()
    if checkout is None:
        return f"installed {__version__}"
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=checkout, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_history(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    writer.writerows({k: row[k] for k in HISTORY_FIELDS} for row in history)
    atomic.write_text(path, buf.getvalue())


def read_history(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
                for row in csv.DictReader(f)]


def _state(model, optimizer, scheduler, scaler, epoch, best, best_epoch, config, history, run
           ) -> dict:
    return {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),  # {} unless fp16
        "epoch": epoch, "best_dice": best, "best_epoch": best_epoch, "rng": rng_state(),
        "config": config.to_dict(), "history": history, "lab2_version": __version__, **run,
    }


def run_summary(run_dir: str | Path) -> dict | None:
    """What ``last.pt`` of a run folder says (epoch, best epoch and Dice, config, history, data,
    settings changes), read through a memory map; None when there is no ``last.pt``."""
    last = Path(run_dir) / "last.pt"
    if not last.is_file():
        return None
    state = load_checkpoint(last, mmap=True)
    keys = ("epoch", "best_dice", "best_epoch", "history", "config", "run_id", "data", "changes")
    return {k: state.get(k) for k in keys}


def saved_run(run_dir: str | Path) -> dict:
    """:func:`run_summary` of a run that must exist (``--resume``): FileNotFoundError if not."""
    summary = run_summary(run_dir)
    if summary is None:
        raise FileNotFoundError(f"--resume: no {Path(run_dir) / 'last.pt'} to continue from; "
                                "drop --resume to start a new run")
    return summary


def saved_config(run_dir: str | Path) -> TrainConfig:
    """The config of the run in ``run_dir``, from its ``last.pt``."""
    return TrainConfig.from_dict(saved_run(run_dir)["config"])


def reconcile_run(run_dir: str | Path) -> dict | None:
    """Repair what a kill between the end-of-epoch writes can leave, from ``last.pt``.

    Copies ``last.pt`` to ``best.pt`` when ``last.pt`` names its own epoch as the best and
    ``best.pt`` does not hold it; rewrites ``history.csv`` from ``last.pt``'s history. Returns
    :func:`run_summary` (None without ``last.pt``). Raises ValueError when ``best.pt`` is missing
    or foreign and cannot be rebuilt. Call it holding the folder's lock.
    """
    run_dir = Path(run_dir)
    summary = run_summary(run_dir)
    if summary is None:
        return None
    best = run_dir / "best.pt"
    best_epoch = summary["best_epoch"]
    if best_epoch is not None:
        held = None
        if best.is_file():
            try:
                state = load_checkpoint(best, mmap=True)
                if state.get("run_id") == summary["run_id"]:
                    held = state["epoch"]
            except ValueError:
                held = None   # damaged: rebuilt below if possible
        if held != best_epoch:
            if best_epoch != summary["epoch"]:
                raise ValueError(
                    f"{best} does not hold epoch {best_epoch}, which {run_dir / 'last.pt'} names as "
                    "the best, and it cannot be rebuilt; train the run again with --restart")
            log.warning("%s: best.pt was not written after epoch %d; copying it from last.pt",
                        run_dir, best_epoch)
            copy_checkpoint(run_dir / "last.pt", best)
    write_history(run_dir / "history.csv", summary["history"])
    return summary


def _uncompiled(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)


# ---- the run ------------------------------------------------------------------------------------

class OutOfMemory(RuntimeError):
    """The device ran out of memory; last.pt still holds the last completed epoch."""


def _oom_advice(out: Path, config: TrainConfig, step: Step, saved_epoch: int) -> str:
    smaller = max(1, config.batch_size // 2)
    precision = ("" if step.amp is not None else
                 f", or add --amp {'fp16' if step.device.type == 'cuda' else 'bf16'}")
    return (f"out of {step.device.type.upper()} memory training {config.model} at "
            f"{config.image_size}x{config.image_size}, batch {config.batch_size}, "
            f"{describe(step.amp)} ({out}/last.pt holds epoch {saved_epoch}); continue with a "
            f"smaller batch: python -m lab2 train --out {out} --resume --batch-size {smaller}"
            f"{precision}; or start again at a smaller size with --restart --image-size "
            f"{max(64, config.image_size // 2)}")


def _nan_advice(out: Path, config: TrainConfig) -> str:
    return (f"; to continue with a lower learning rate run: python -m lab2 train --out {out} "
            f"--resume --lr {config.lr / 10:g}" + ("" if config.amp == "off" else
                                                     " (or add --amp off)"))


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
    """
    out = Path(out)
    with locks.owned(locks.folder_lock(out), f"the run folder {out}",
                     fix="choose a writable --out folder"):
        atomic.remove_stale_temporaries(out)
        if restart:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
            for per_image in out.glob("per_image_*.csv"):
                per_image.unlink()
        return _train(config, root, out, resume, progress, on_batch)


def _train(config: TrainConfig, root, out: Path, resume: bool, progress: bool,
           on_batch: Callable[[int, int], None] | None) -> dict:
    last = out / "last.pt"
    fingerprint = dataset_fingerprint(root)
    checkpoint, changes = None, {}
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"--resume: no {last} to continue from; drop --resume to "
                                    "start a new run")
        reconcile_run(out)
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
    out.mkdir(parents=True, exist_ok=True)

    step = Step.for_config(config)
    device = step.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(config.seed)
    model = step.place(model_for(config))
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    scaler = step.scaler()
    history: list[dict] = []
    start_epoch, best, best_epoch = 0, -1.0, None
    run = {"run_id": uuid.uuid4().hex, "changes": [],
           "data": {"fingerprint": fingerprint, "label": dataset_label(root),
                    "root": str(Path(root).expanduser().resolve())}}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if scaler.is_enabled() and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch, best, history = checkpoint["epoch"], checkpoint["best_dice"], checkpoint["history"]
        best_epoch = checkpoint.get("best_epoch")
        set_rng_state(checkpoint["rng"])
        run = {"run_id": checkpoint.get("run_id") or run["run_id"],
               "data": checkpoint.get("data") or run["data"],
               "changes": list(checkpoint.get("changes") or []) + [
                   {"epoch": start_epoch, "field": name, "from": old, "to": new}
                   for name, (old, new) in changes.items()]}
        if "lr" in changes:   # the schedule continues from the new base learning rate
            scheduler.base_lrs = [config.lr] * len(scheduler.base_lrs)
            for group in optimizer.param_groups:
                group["initial_lr"], group["lr"] = config.lr, lr_at_epoch(config, start_epoch)
    runnable = torch.compile(model) if config.compile else model

    datasets = build_datasets(config, root, progress=progress)
    config.save(out / "config.json")
    atomic.write_json(out / "run.json", {
        "lab2_version": __version__, "git_commit": git_commit(),
        "data": run["data"]["label"], "data_root": run["data"]["root"],
        "dataset_fingerprint": fingerprint, "profile": config.profile, "run_id": run["run_id"],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"{device.type} ({platform.processor() or platform.machine()})",
        **step.why, "channels_last": step.channels_last,
        "torch": torch.__version__, "python": platform.python_version(),
        "n_train": len(datasets["train"]), "n_val": len(datasets["val"]),
        "resumed_from_epoch": start_epoch if checkpoint is not None else None,
        "changes": run["changes"],
    })
    if checkpoint is not None:
        log.warning("resuming %s after epoch %d%s", out, start_epoch,
                    "".join(f"; {name} {old} -> {new}" for name, (old, new) in changes.items()))

    saved_epoch = start_epoch   # what last.pt holds, for the messages
    loaders = {split: make_loader(datasets[split], config, train=split == "train", device=device)
               for split in ("train", "val")}
    epochs = tqdm(range(start_epoch, config.epochs), desc=config.run_name, unit="epoch",
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
            # last.pt first: everything else is derived from it (see the module docstring)
            save_checkpoint(last, _state(_uncompiled(model), optimizer, scheduler, scaler,
                                         epoch + 1, best, best_epoch, config, history, run))
            saved_epoch = epoch + 1
            if is_best:
                copy_checkpoint(last, out / "best.pt")
            write_history(out / "history.csv", history)
            epochs.set_postfix(train_loss=f"{train_loss:.3f}", val_dice=f"{val['dice']:.3f}")
    except NonFiniteLossError as e:
        raise NonFiniteLossError(f"{e} (last.pt holds epoch {saved_epoch})"
                                 f"{_nan_advice(out, config)}") from None
    except torch.OutOfMemoryError:
        raise OutOfMemory(_oom_advice(out, config, step, saved_epoch)) from None
    except KeyboardInterrupt:
        log.warning("interrupted: %s holds epoch %d; run again with --resume to continue",
                    last, saved_epoch)
        raise
    return {"history": history, "best_dice": best, "run_dir": out}


def check_same_data(run_dir: Path, data: dict | None, fingerprint: str, root) -> None:
    """Refuse to continue or report a run on a data set other than the one it was trained on."""
    if data and data.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{run_dir} was trained on the {data.get('label')} in {data.get('root')} (fingerprint "
            f"{data.get('fingerprint')}), but {root} holds another data set ({dataset_label(root)}, "
            f"fingerprint {fingerprint}); point --root at the data the run was trained on, or "
            "use another --out")


def is_finished(run_dir: str | Path, epochs: int | None = None) -> bool:
    """Whether ``last.pt`` of a run folder holds its final epoch (the checkpoint's configured
    ``epochs``, or ``epochs`` if given). Nothing but the checkpoint is trusted."""
    summary = run_summary(run_dir)
    if summary is None:
        return False
    return summary["epoch"] >= (epochs or summary["config"]["epochs"])


__all__ = ["OutOfMemory", "train", "evaluate_model", "train_one_epoch", "build_datasets", "make_loader",
           "SeededSampler", "build_optimizer", "build_scheduler", "lr_at_epoch", "NonFiniteLossError", "LossGuard",
           "Step", "is_finished", "read_history", "reconcile_run", "run_summary", "saved_config", "saved_run",
           "check_same_data", "RUN_FILES"]
