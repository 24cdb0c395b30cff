"""One run on several processes: ``torchrun`` and ``DistributedDataParallel``.

``torchrun --nproc_per_node N -m lab2 train ...`` starts N processes (ranks) with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment; :func:`process_group` joins them (NCCL on
CUDA, gloo on the CPU, with a timeout so that a rank that died cannot leave the others waiting
forever). Each rank takes its slice of every global batch
(:class:`lab2.data.loaders.SeededSampler`); ``TrainConfig.batch_size`` stays the global batch.

BatchNorm under DDP: with a global batch of 8 on 4 GPUs, each GPU would normalise over 2 images.
Synchronised BatchNorm computes the statistics over the global batch instead, so N ranks train
the network one process would. PyTorch's ``nn.SyncBatchNorm`` runs on GPUs only; on the CPU
(gloo, how this is tested) :class:`GlobalBatchNorm2d` does the same with PyTorch's differentiable
``all_reduce``.
"""

from __future__ import annotations

import datetime as dt
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

#: Seconds a rank waits for the others in a collective before failing (``LAB2_DIST_TIMEOUT_S``).
DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> bool:
    """Whether this process was started by ``torchrun`` with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current() -> World:
    """The world of this process (a single rank when no process group is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(),
                     int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return World()


@contextmanager
def process_group(device: torch.device):
    """Join the ranks ``torchrun`` started (NCCL for CUDA, gloo otherwise) for the duration; a
    single process gets ``World()`` and no process group."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run without torchrun")
    timeout = dt.timedelta(seconds=int(os.environ.get("LAB2_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timeout)
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def gather(obj) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    world = current()
    if not world.distributed:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batches of all ranks (gloo on the CPU,
    where ``nn.SyncBatchNorm`` does not run): per channel, the sums of x and x² and the count are
    added over the ranks with the differentiable ``torch.distributed.nn.all_reduce``, so the
    gradients flow through the global statistics as in one process with the global batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce
        dims = (0, 2, 3)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])
        stats = all_reduce(stats)
        channels = x.shape[1]
        total, total_sq, n = stats[:channels], stats[channels:2 * channels], stats[-1]
        mean = total / n
        var = total_sq / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else \
                    1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean)
                self.running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1))
        shape = (1, channels, 1, 1)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def synchronise_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d of ``model`` computing its statistics over the global batch:
    ``nn.SyncBatchNorm`` on GPUs, :class:`GlobalBatchNorm2d` on the CPU. Parameters, buffers and
    parameter names are kept, so checkpoints load either way."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, module in list(model.named_children()):
        if type(module) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum,
                                            module.affine, module.track_running_stats)
            replacement.load_state_dict(module.state_dict())
            setattr(model, name, replacement.to(next(module.buffers()).device))
        else:
            synchronise_batchnorm(module, device)
    return model


__all__ = ["DEFAULT_TIMEOUT_S", "GlobalBatchNorm2d", "World", "current", "gather", "launched",
           "process_group", "synchronise_batchnorm"]
