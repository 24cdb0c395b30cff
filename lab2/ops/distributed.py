"""One run on several processes: ``torchrun`` and ``DistributedDataParallel``.

``torchrun --nproc_per_node N -m lab2 train ...`` starts N processes (ranks) with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment; :func:`process_group` joins them (NCCL on
CUDA, gloo on the CPU and on GPUs where PyTorch has no NCCL, as on Windows; with a timeout so that
a rank that died cannot leave the others waiting forever). Each rank takes its slice of every
global batch (:class:`lab2.ops.loaders.SeededSampler`); ``TrainConfig.batch_size`` stays the
global batch.

BatchNorm under DDP: with a global batch of 8 on 4 GPUs, each GPU would normalise over 2 images.
Synchronised BatchNorm computes the statistics over the global batch instead, so N ranks train
the network one process would. PyTorch's ``nn.SyncBatchNorm`` runs on GPUs with NCCL only;
with gloo (the CPU, how this is tested, and GPUs without NCCL) :class:`GlobalBatchNorm2d` does the
same with PyTorch's differentiable ``all_reduce``.

On several machines (``torchrun --nnodes``) each machine reads its own ``--root``: the ranks
compare their data sets before training (:func:`require_same`), and every machine's first process
tells errors on that machine's terminal (:func:`lab2.ops.cli.main`).
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..metrics import DiceMeter
from .checkpoint import rng_state, set_rng_state
from .processes import die_with_parent

log = logging.getLogger(__name__)

#: Seconds a rank waits for the others in a collective before failing (``LAB2_DIST_TIMEOUT_S``).
DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    #: whether torchrun started this process and it joined a process group (even alone:
    #: ``--nproc_per_node 1`` is a DistributedDataParallel run of one rank)
    distributed: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and shows progress."""
        return self.rank == 0


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher that sets the
    ``env://`` variables ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR",
                                               "MASTER_PORT"))


def current() -> World:
    """The world of this process (a single rank when no process group is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(),
                     int(os.environ.get("LOCAL_RANK", dist.get_rank())), distributed=True)
    return World()


def several_machines() -> bool:
    """Whether torchrun started this run's processes on more than one machine."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) < int(os.environ.get("WORLD_SIZE", "1"))


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA where this PyTorch has it, gloo otherwise (the CPU; Windows, whose PyTorch
    builds have no NCCL)."""
    return "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"


@contextmanager
def process_group(device: torch.device):
    """Join the ranks ``torchrun`` started (NCCL for CUDA, gloo otherwise) for the duration; a
    single process gets ``World()`` and no process group."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run without torchrun")
    timeout = dt.timedelta(seconds=timeout_s())
    backend = backend_for(device)
    if device.type == "cuda":
        local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local_rank >= gpus:
            started = os.environ.get("LOCAL_WORLD_SIZE", str(local_rank + 1))
            raise RuntimeError(f"torchrun started {started} processes on this machine, which has "
                               f"{gpus} visible GPU(s); use --nproc_per_node {gpus}")
        torch.cuda.set_device(local_rank)
    die_with_parent()       # a killed torchrun takes its ranks with it (and their run lock)
    try:
        dist.init_process_group(backend, timeout=timeout)
    except dist.DistError as e:
        # On one machine torchrun stops the others when a process fails before joining; on
        # several, the other machines' processes wait here for the group's timeout.
        if "timeout" not in str(e).lower():
            raise
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        raise RuntimeError(
            f"not every process of this run joined it within {timeout_s()} s: one stopped "
            f"before joining (its own message, on its machine, says why) or cannot reach "
            f"{where}; once that is mended, run the same command again") from None
    try:
        yield current()
        # Every rank reaches the end before any tears the group down: with gloo, PyTorch 2.4's
        # destroy_process_group sometimes never returned on a rank whose peer had already left
        # (4 of 17 two-rank smoke runs here, 0 of 10 with this barrier). The barrier is bounded
        # by the group's timeout; after an error it is skipped (the other ranks may be gone).
        # NCCL is told this rank's GPU (else it warns that it guesses one). This rank's work is
        # done and saved by then: a peer that failed at the very end is a warning here (that
        # peer's own message says what went wrong), not a traceback.
        try:
            if backend == "nccl":
                dist.barrier(device_ids=[torch.cuda.current_device()])
            else:
                dist.barrier()
        except Exception as e:      # reraised unless another rank caused it
            told = peer_failure(e)
            if told is None:
                raise
            log.warning("%s after this process had finished its work", told)
    finally:
        dist.destroy_process_group()


#: ``python -c`` code that runs torchrun (see :func:`torchrun_command`).
_LAUNCHER = "import sys; from lab2.ops.distributed import torchrun_main; sys.exit(torchrun_main())"


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """The command that runs ``python -m lab2 <args>`` on ``nproc`` local processes through
    torchrun (:func:`torchrun_main`)."""
    import sys
    return [sys.executable, "-c", _LAUNCHER, "--standalone", f"--nproc_per_node={nproc}",
            "-m", "lab2", *args]


def torchrun_main(argv: list[str] | None = None) -> int:
    """``torchrun`` for a parent process (``experiment --ddp``): it dies with its parent (and its
    ranks with it), a failed run ends in exit code 1 after the ranks' own one-line messages,
    and a signal (the parent passing on a Ctrl-C) stops the ranks, without torchrun's traceback
    of its own."""
    import sys

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run
    die_with_parent()
    if sys.platform == "win32":   # PyTorch's Windows builds have no libuv store, torchrun's default
        os.environ.setdefault("USE_LIBUV", "0")
    # its warnings ("Sending process ... closing signal") only repeat what lab2 says
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
    except SignalException as e:       # stopped (Ctrl-C): torchrun has stopped the ranks
        return 128 + int(e.sigval)
    except RuntimeError as e:
        if "libuv" not in str(e):
            raise
        # some releases' torchrun asks for that store whatever USE_LIBUV says
        print("lab2: torchrun cannot start on this PyTorch (built without the libuv store it "
              "asks for, as PyTorch's Windows builds are): use `experiment --parallel N` (one "
              "run per GPU) instead of --ddp, or run under WSL2", file=sys.stderr)
        return 1
    except ChildFailedError as e:
        failures = "; ".join(f"rank {r}: exit code {f.exitcode}" for r, f in e.failures.items())
        print(f"lab2: torchrun stopped ({failures})", file=sys.stderr)
        return 1
    return 0


def gather(obj) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    world = current()
    if not world.distributed:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def disagreement(seen: list[tuple[str, str, str]]) -> str | None:
    """What differs among the ranks' ``(key, description, host)``, in rank order: None when every
    key is rank 0's, else the ranks grouped by what they have, e.g. ``rank 0 (on a): X; rank 1
    (on b): Y``."""
    if all(key == seen[0][0] for key, _, _ in seen):
        return None
    groups: dict[tuple[str, str], list[str]] = {}
    for rank, (key, description, host) in enumerate(seen):
        groups.setdefault((key, description), []).append(f"{rank} (on {host})")
    return "; ".join(f"rank{'s' if len(ranks) > 1 else ''} {', '.join(ranks)}: {description}"
                     for (_, description), ranks in groups.items())


def require_same(key: str, description: str, what: str, fix: str) -> None:
    """Raise ValueError on every rank unless every rank's ``key`` is rank 0's (a collective: call
    it on every rank). On several machines each reads its own files: the message names each
    rank's machine and ``description``, says ``what`` differs and how to ``fix`` it."""
    if not current().distributed:
        return
    told = disagreement(gather((key, description, socket.gethostname())))
    if told is not None:
        raise ValueError(f"the processes of this run {what}: {told}; {fix}")


def setting_differences(seen: list[tuple[dict, str]]) -> str | None:
    """What differs among the ranks' ``(settings, host)``, in rank order: None when every rank
    has rank 0's settings, else each group of ranks with its values of the fields that differ."""
    first = seen[0][0]
    differ = sorted({name for settings, _ in seen for name in {*settings, *first}
                     if settings.get(name) != first.get(name)})
    if not differ:
        return None
    return disagreement([(repr([settings.get(name) for name in differ]),
                          ", ".join(f"{name} {settings.get(name)}" for name in differ), host)
                         for settings, host in seen])


def require_same_settings(settings: dict, fix: str) -> None:
    """Raise ValueError on every rank unless every rank was given rank 0's ``settings`` (a
    collective: call it on every rank). On several machines each starts from its own command
    line; a run whose ranks train with different settings would average their gradients into a
    model that no one configuration describes."""
    if not current().distributed:
        return
    told = setting_differences(gather((settings, socket.gethostname())))
    if told is not None:
        raise ValueError(f"the processes of this run were given different settings: {told}; "
                         f"{fix}")


def timeout_s() -> int:
    """Seconds a rank waits for the others in a collective (``LAB2_DIST_TIMEOUT_S``)."""
    return int(os.environ.get("LAB2_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))


def peer_failure(error: BaseException) -> str | None:
    """What ``error`` says about the other ranks when it is a collective that failed because
    another rank is gone or stuck (a ``DistError``, or the plain RuntimeError that gloo and NCCL
    raise from inside DDP's gradient hooks, recognised by its text); None for any other error."""
    text = " ".join(str(error).split())
    lowered = text.lower()
    if "timed out" in lowered or "timeout" in lowered:
        return (f"another process of this run did not answer for {timeout_s()} s (stuck, or far "
                "slower than this one; if it was only slow, raise LAB2_DIST_TIMEOUT_S)")
    if isinstance(error, dist.DistError) or any(
            sign in lowered for sign in ("closed by peer", "connection reset", "gloo", "nccl")):
        return f"another process of this run stopped ({text[:200]}); its own message says why"
    return None


def seed_rank(seed: int, rank: int, epoch: int = 0) -> None:
    """Give rank ``rank`` > 0 its own torch random stream (its own dropout masks) once the model
    is built, which every rank builds alike from ``seed``; rank 0 keeps one process's stream."""
    if rank:
        torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank, 2]).generate_state(1)[0]))


def rng_states() -> list[dict]:
    """Every rank's RNG states, in rank order (a collective: call it on every rank)."""
    return gather(rng_state())


def restore_rng(checkpoint: dict, world: World, seed: int) -> bool:
    """Set this rank's RNGs to what they were when ``checkpoint`` was saved, so the run goes on
    as if never interrupted. A checkpoint saved by another number of ranks has no state for this
    one: rank 0 continues the first rank's stream and the others start streams of their own
    (:func:`seed_rank` of the epoch); the batches stay those of an uninterrupted run, the dropout
    masks do not. Returns whether every rank got its own saved state."""
    states = checkpoint.get("rng_ranks") or [checkpoint["rng"]]
    if len(states) == world.size:
        set_rng_state(states[world.rank])
        return True
    set_rng_state(states[0])
    seed_rank(seed, world.rank, int(checkpoint["epoch"]))
    return False


class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over the ranks, on every rank, differentiable: each rank's output
    depends on every rank's input, so the gradient of an input is the sum over the ranks of the
    output's gradients. (``torch.distributed.nn.all_reduce`` does this too but is deprecated.)"""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batches of all ranks (gloo on the CPU,
    where ``nn.SyncBatchNorm`` does not run): per channel, the sums of x and x² and the count are
    added over the ranks with a differentiable all-reduce, so the gradients flow through the
    global statistics as in one process with the global batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])
        stats = _SumOverRanks.apply(stats)
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
    ``nn.SyncBatchNorm`` with NCCL, :class:`GlobalBatchNorm2d` with gloo (the CPU, and GPUs without
    NCCL). Parameters, buffers and parameter names are kept, so checkpoints load either way."""
    if backend_for(device) == "nccl":
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


#: DistributedDataParallel's switch for broadcasting rank 0's buffers before every forward pass:
#: ``forward_sync_buffers`` from PyTorch 2.13, ``broadcast_buffers`` before (deprecated since).
BUFFER_SYNC_ARG = ("forward_sync_buffers" if "forward_sync_buffers" in
                   inspect.signature(nn.parallel.DistributedDataParallel).parameters
                   else "broadcast_buffers")


def wrap(model: nn.Module, device: torch.device, *, synchronised_bn: bool
         ) -> nn.parallel.DistributedDataParallel:
    """``model`` under DistributedDataParallel (its gradients averaged over the ranks).

    By default DDP copies rank 0's buffers (BatchNorm's running statistics) to every rank before
    every forward pass: without synchronised BatchNorm each rank's statistics would drift apart.
    With it (``synchronised_bn``, :func:`synchronise_batchnorm`) every rank computes the same
    statistics from the global batch, so that copy is redundant work: one collective and a
    flatten/unflatten of every buffer per step (153 buffers in ResNet34-UNet), measured side by
    side with ``benchmarks/ddp_step.py`` (benchmarks/RESULTS.md, "DDP cost per training step").
    The copy stays on without synchronised BatchNorm."""
    extra = {} if not synchronised_bn else {BUFFER_SYNC_ARG: False}
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None,
        **extra)


def merged(meters: list[DiceMeter], order: dict[str, int]) -> DiceMeter:
    """One meter from the ranks' meters: each image once, in the data set's order — what one
    process evaluating the whole split holds."""
    rows: dict[str, tuple] = {}
    for m in meters:
        counts = m.image_counts
        for i, name in enumerate(m.names):
            rows.setdefault(name, (counts[i], m.boundary[i] if m.boundary else None,
                                   m.fpr[i] if m.fpr else None))
    names = sorted(rows, key=order.__getitem__)
    out = DiceMeter(meters[0].ignore_index, meters[0].shape, names=names,
                    counts=[torch.stack([rows[n][0] for n in names])] if names else [])
    if meters[0].shape:
        out.boundary, out.fpr = [rows[n][1] for n in names], [rows[n][2] for n in names]
    return out


def combine_evaluations(meter: DiceMeter, meter_original: DiceMeter, loss_sum: float, count: int,
                        loader) -> tuple[DiceMeter, DiceMeter, float, int]:
    """What one process evaluating the whole split holds, from every rank's share (the
    ``combine`` of :func:`lab2.train.evaluate`): each image once, in the data set's order."""
    order = {name: i for i, name in enumerate(loader.dataset.names)}
    parts = gather((meter, meter_original, loss_sum, count))
    # each image counted once; the loss of a padded repeat is in the sum twice
    meter = merged([p[0] for p in parts], order)
    return (meter, merged([p[1] for p in parts], order), sum(p[2] for p in parts),
            len(meter.names))


__all__ = ["BUFFER_SYNC_ARG", "DEFAULT_TIMEOUT_S", "GlobalBatchNorm2d", "World", "backend_for",
           "combine_evaluations", "current", "disagreement", "gather", "launched", "merged",
           "peer_failure", "process_group", "require_same", "require_same_settings",
           "restore_rng", "rng_states", "seed_rank", "setting_differences", "several_machines",
           "synchronise_batchnorm", "timeout_s", "torchrun_command", "torchrun_main", "wrap"]
