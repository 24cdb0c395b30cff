"""The training loop: the report's recipe, as a plain PyTorch loop.

Per epoch (docs/report.md, "Training"): for every batch, forward, cross-entropy over the two
classes, backward, optimiser step; then one step of MultiStepLR; then validation Dice. That is
:func:`train_one_epoch`, :func:`evaluate` and :func:`fit`, top to bottom. A :class:`DevicePlan`
says where a batch goes and in which precision.

What keeps a long run safe — checkpoints that resume exactly, one process per run folder, several
GPUs, out-of-memory and lost-worker messages — wraps this loop from :mod:`lab2.ops.trainer`
through the hooks below (``on_epoch``, ``guard``, ``all_reduce``, ``combine``); none of it is
needed to read or run it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .augment import normalize_images
from .config import TrainConfig
from .data.masks import IGNORE_INDEX
from .metrics import DiceMeter

#: Images per batch of the per-batch Dice (the report's batch size), whatever the loader's.
PER_BATCH = 8


@dataclass
class DevicePlan:
    """Where a batch is computed and how: the device, the autocast precision (None: fp32) and
    the memory layout. :func:`lab2.ops.machine.plan_for` chooses them for a machine."""

    device: torch.device
    amp: torch.dtype | None = None
    channels_last: bool = False

    def place(self, model: nn.Module) -> nn.Module:
        """Move the model to the device, in channels_last when the plan uses it."""
        return model.to(self.device, memory_format=torch.channels_last if self.channels_last
                        else torch.contiguous_format)

    def inputs(self, images: torch.Tensor, masks: torch.Tensor):
        """A loader's batch on the device: uint8 images normalised there (a quarter of the bytes
        travel), masks as long."""
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if images.dtype == torch.uint8:
            images = normalize_images(images)
        return images, masks.to(self.device, non_blocking=True).long()

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def scaler(self) -> torch.amp.GradScaler:
        """The loss scaler fp16 needs (a no-op one for bf16 and fp32)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped."""

    #: under DDP every process raises it at the same step: the first one tells it
    every_rank = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimiser (the report: Adam, lr 1e-3, weight decay 1e-4). Adam and AdamW
    use PyTorch's fused kernels (``benchmarks/RESULTS.md``: far faster per step on a CPU)."""
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


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    plan: DevicePlan, *, epoch: int, scaler: torch.amp.GradScaler | None = None,
                    guard=None, all_reduce: Callable | None = None,
                    on_batch: Callable[[int, int], None] | None = None,
                    progress: bool = True) -> float:
    """One pass over ``loader``; returns the mean training loss (over the finite losses).

    A non-finite loss raises :class:`NonFiniteLossError` (``guard.check`` instead, when given:
    the machinery's check does not make a GPU wait). ``scaler`` (fp16) scales the loss and
    skips overflowing steps; ``all_reduce`` sums a tensor over the processes of a DDP run;
    ``on_batch(epoch, batch)`` runs after every step."""
    model.train()
    scaler = scaler or torch.amp.GradScaler(plan.device.type, enabled=False)
    total = torch.zeros((), dtype=torch.float64, device=plan.device)
    count = torch.zeros((), dtype=torch.float64, device=plan.device)
    # one iterator for the bar: given the loader, tqdm.auto would start its workers twice
    batches = tqdm(iter(loader), total=len(loader), desc=f"epoch {epoch + 1} train",
                   unit="batch", leave=False, disable=not progress)
    for i, (images, masks, _) in enumerate(batches):
        images, masks = plan.inputs(images, masks)                       # (B, 3, H, W), (B, H, W)
        with plan.autocast():
            logits = model(images)                                        # (B, 2, H, W)
            loss = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)
        if guard is not None:
            guard.check(loss, epoch, i)
        elif not torch.isfinite(loss):
            raise NonFiniteLossError(f"the training loss became {loss.item()} in epoch "
                                     f"{epoch + 1}, batch {i + 1}; training stopped")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)           # skipped when fp16 gradients overflowed
        scaler.update()
        finite = torch.isfinite(loss.detach())   # stays on the device: no host sync per batch
        total += torch.where(finite, loss.detach(), 0) * images.shape[0]
        count += finite * images.shape[0]
        if on_batch is not None:
            on_batch(epoch, i)
    if guard is not None:
        guard.flush()
    if all_reduce is not None:           # the mean over every process's images
        all_reduce(total)
        all_reduce(count)
    return float(total) / max(1.0, float(count))


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, plan: DevicePlan, *,
             original=None, progress: bool = True, desc: str = "eval",
             combine: Callable | None = None) -> dict:
    """Loss and Dice (mean per image, pooled, per batch of 8) at the loader's resolution; with
    ``original`` (the loader's data set) also at each image's original resolution — logits
    resized back bilinearly and compared with the original trimap's mask — with each image's
    Boundary IoU and background false-positive rate there. Restores the model's train/eval
    mode. ``combine(meter, meter_original, loss_sum, count, loader)`` merges the processes'
    shares under DDP."""
    was_training = model.training
    model.eval()
    meter, meter_original = DiceMeter(), DiceMeter(shape=True)
    loss_sum, count = 0.0, 0
    batches = tqdm(iter(loader), total=len(loader), desc=desc, unit="batch", leave=False,
                   disable=not progress)
    for images, masks, names in batches:
        images, masks = plan.inputs(images, masks)
        with plan.autocast():
            logits = model(images).float()                                # (B, 2, H, W)
        loss_sum += float(F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX,
                                          reduction="sum")) / masks[0].numel()
        count += images.shape[0]
        meter.update(logits.argmax(1), masks, list(names))
        if original is not None:
            for logit, name in zip(logits, names, strict=True):
                mask = torch.from_numpy(original.original_mask(name)).long()   # (H0, W0)
                resized = F.interpolate(logit[None], size=mask.shape, mode="bilinear",
                                        align_corners=False)
                meter_original.update(resized.argmax(1).cpu(), mask[None], [name])
    model.train(was_training)
    if combine is not None:
        meter, meter_original, loss_sum, count = combine(meter, meter_original, loss_sum, count,
                                                         loader)
    result = {"loss": loss_sum / max(1, count), "dice": meter.mean, "dice_pooled": meter.pooled,
              "dice_per_batch": meter.per_batch(PER_BATCH), "n_images": count,
              "per_image": dict(zip(meter.names, meter.per_image.tolist(), strict=True))}
    if original is not None:
        result.update(dice_original=meter_original.mean, dice_pooled_original=meter_original.pooled,
                      boundary_iou=float(np.mean(meter_original.boundary)),
                      background_fpr=float(np.mean(meter_original.fpr)),
                      per_image_shape={name: (b, f) for name, b, f in zip(
                          meter_original.names, meter_original.boundary, meter_original.fpr,
                          strict=True)},
                      per_image_original=dict(zip(meter_original.names,
                                                  meter_original.per_image.tolist(), strict=True)))
    return result


def fit(model: nn.Module, loaders: dict[str, DataLoader], optimizer: torch.optim.Optimizer,
        scheduler, plan: DevicePlan, *, epochs: int, start_epoch: int = 0,
        history: list[dict] | None = None, on_epoch: Callable[[list[dict]], None] | None = None,
        desc: str = "train", progress: bool = True, **step) -> list[dict]:
    """Train from ``start_epoch`` up to ``epochs``: each epoch a pass over ``loaders["train"]``
    (:func:`train_one_epoch`), one step of the scheduler, and validation on ``loaders["val"]``
    (:func:`evaluate`). Returns the history, one row per epoch (``history``: the rows of the
    epochs before ``start_epoch``). ``on_epoch(history)`` runs after each epoch: the machinery
    saves the checkpoint there. ``step``: ``scaler``, ``guard``, ``all_reduce``, ``on_batch``
    for :func:`train_one_epoch`, ``combine`` for :func:`evaluate`."""
    history = list(history or [])
    combine = step.pop("combine", None)
    epochs_bar = tqdm(range(start_epoch, epochs), unit="epoch", desc=desc, initial=start_epoch,
                      total=epochs, disable=not progress)
    for epoch in epochs_bar:
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        if hasattr(loaders["train"].sampler, "set_epoch"):   # a new order every epoch
            loaders["train"].sampler.set_epoch(epoch)
        train_loss = train_one_epoch(model, loaders["train"], optimizer, plan, epoch=epoch,
                                     progress=progress, **step)
        scheduler.step()
        val = evaluate(model, loaders["val"], plan, progress=progress,
                       desc=f"epoch {epoch + 1} val", combine=combine)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val["loss"],
                        "val_dice": val["dice"], "val_dice_pooled": val["dice_pooled"],
                        "lr": lr, "seconds": time.perf_counter() - started})
        if on_epoch is not None:
            on_epoch(history)
        epochs_bar.set_postfix(train_loss=f"{train_loss:.3f}", val_dice=f"{val['dice']:.3f}")
    return history


__all__ = ["DevicePlan", "NonFiniteLossError", "PER_BATCH", "build_optimizer", "build_scheduler",
           "evaluate", "fit", "lr_at_epoch", "seed_everything", "train_one_epoch"]
