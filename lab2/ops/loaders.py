"""Data loaders that shuffle and augment reproducibly under any multiprocessing start method.

The shuffling order and the augmentation of each sample are seeded from
``(config.seed, epoch, sample)`` (:class:`SeededSampler`), whatever the number of loader workers
or the start method (``fork`` on Linux, ``spawn`` on macOS and Windows), so a run interrupted and
resumed sees the same batches as one that was not.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..augment import build_train_transforms
from ..config import TrainConfig
from ..data.dataset import OxfordPetSegmentation
from ..data.index import dataset_dir
from ..data.resize import as_hw
from ..preprocess import PreprocessParams
from . import atomic
from .audit import audit_dataset
from .cache import build_cache, find_cache
from .console import shell_word
from .notices import NoCacheWarning, SharedMemoryWarning, SkippedFilesWarning
from .processes import cores_each, die_with_parent


def epoch_seed(seed: int, epoch: int, worker: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, epoch, data-loader worker); all three are
    non-negative (NumPy's ``SeedSequence`` refuses anything else)."""
    return int(np.random.SeedSequence([seed, epoch, worker]).generate_state(1)[0])


#: The "epoch" of the loader workers' own global RNGs: no run reaches it, so their seeds differ
#: from every epoch's.
WORKERS_EPOCH = 2**32 - 1


#: Skipped samples named in the warning (the real data set has 9; the audit lists them all).
NAMED_SKIPS = 12
#: The data sets whose skipped samples this process has named already (once is enough).
_told: set[tuple[str, frozenset]] = set()


def skipped_samples(root, progress: bool = True) -> frozenset[str]:
    """The samples of the data set under ``root`` that its audit skips, named once per process
    in a warning."""
    skipped = audit_dataset(root, progress=progress).skipped_names
    if skipped and (str(root), skipped) not in _told:
        _told.add((str(root), skipped))
        names = sorted(skipped)
        named = ", ".join(names[:NAMED_SKIPS]) + (
            f" and {len(names) - NAMED_SKIPS} more" if len(names) > NAMED_SKIPS else "")
        warnings.warn(f"skipping {len(skipped)} unusable file(s) of {dataset_dir(root)}: {named} "
                      f"(details: python -m lab2 audit --root {shell_word(root)})",
                      SkippedFilesWarning, stacklevel=2)
    return skipped


def open_dataset(root, split: str = "train", image_size: int | tuple[int, int] | None = 256, *,
                 preprocess: bool | PreprocessParams = False, use_cache: bool = True,
                 progress: bool = True, **options) -> OxfordPetSegmentation:
    """:class:`lab2.data.dataset.OxfordPetSegmentation` as the commands see a data root: the
    samples its audit skips left out, read from its cache for these settings when one exists
    (``use_cache``). ``options`` go to the data set (``transform``, ``max_samples``, ...)."""
    params = (preprocess if isinstance(preprocess, PreprocessParams)
              else PreprocessParams() if preprocess else None)
    cache = (find_cache(root, as_hw(image_size), params)
             if use_cache and image_size is not None else None)
    return OxfordPetSegmentation(root, split, image_size, preprocess=preprocess,
                                 skip=skipped_samples(root, progress),
                                 cache=cache, **options)


def build_datasets(config: TrainConfig, root, splits=("train", "val"), progress: bool = True
                   ) -> dict[str, OxfordPetSegmentation]:
    """Datasets for ``splits``, leaving out the samples the audit skips; builds the cache for
    the config's size and variant first."""
    params = PreprocessParams() if config.preprocess else None
    skip = skipped_samples(root, progress)
    cache = None
    try:
        cache = build_cache(root, config.image_size, params, progress=progress)
    except atomic.StorageError as e:
        if e.errno not in atomic.FULL_DISK:
            raise                  # a read-only folder: the message names LAB2_CACHE_DIR
        # the cache is for speed only: the samples read without it are the same (tested)
        warnings.warn(f"no cache: {e}; every image is read and resized"
                      f"{' and preprocessed' if params else ''} at each use instead, which is "
                      "slower and gives the same samples", NoCacheWarning, stacklevel=2)
    datasets = {}
    for split in splits:
        train = split == "train"
        # uint8 through the loader; DevicePlan.inputs normalises the batch on the device
        transform = build_train_transforms(normalize=False) if (train and config.augment) else None
        datasets[split] = OxfordPetSegmentation(
            root, split, config.image_size, transform=transform, border=config.border,
            preprocess=config.preprocess, skip=skip, cache=cache, input=config.input, uint8=True,
            max_samples=config.max_train_samples if train else config.max_eval_samples,
            subset=config.subset)
        if len(datasets[split]) == 0:
            raise ValueError(f"split {split!r} of {root} has no usable samples")
    return datasets


def shard(items: list, batch_size: int, rank: int, world_size: int) -> list:
    """This rank's part of a sequence cut into global batches of ``batch_size``: in every global
    batch, rank r takes the r-th of ``world_size`` equal consecutive slices, so the ranks'
    batches together are exactly one process's batch. A last, incomplete global batch of m items
    gives every rank ceil(m / world_size) of them, the short slices padded by repeating that
    batch's first items (every rank must take the same number of steps); evaluation drops the
    repeats by name."""
    items = list(items)
    if world_size == 1:
        return items
    if batch_size % world_size:
        raise ValueError(f"the batch size {batch_size} does not divide among {world_size} "
                         f"processes; use a --batch-size that is a multiple of {world_size}")
    per, mine = batch_size // world_size, []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        if len(batch) == batch_size:
            mine += batch[rank * per:(rank + 1) * per]
        else:
            size = -(-len(batch) // world_size)
            part = batch[rank * size:(rank + 1) * size]
            mine += part + [batch[i % len(batch)] for i in range(size - len(part))]
    return mine


class SeededSampler(torch.utils.data.Sampler):
    """Indices ``(seed, i)`` for one pass over a data set: the order (shuffled or not) and one
    augmentation seed per sample, both drawn from (run seed, epoch) only.

    Call :meth:`set_epoch` before each pass (as with ``DistributedSampler``). Because each sample
    carries its own seed, the augmentation does not depend on the number of loader workers, and
    the workers can stay alive across epochs (``persistent_workers``): under the ``spawn`` start
    method of macOS and Windows, starting them again every epoch costs seconds each.

    With ``world_size`` > 1 (one process per GPU) each rank takes its slice of every global
    batch of ``batch_size`` (:func:`shard`): the global order and the samples' seeds are those of
    one process, so the ranks together see exactly what one process would.
    """

    def __init__(self, n: int, seed: int, shuffle: bool, *, batch_size: int = 1, rank: int = 0,
                 world_size: int = 1):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        shard([], batch_size, rank, world_size)            # checks that the batch divides

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(shard(range(self.n), self.batch_size, self.rank, self.world_size))

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=generator).tolist() if self.shuffle \
            else range(self.n)
        seeds = np.random.SeedSequence([self.seed, self.epoch, 1]).generate_state(self.n)
        pairs = [(int(seeds[i]), i) for i in order]
        return iter(shard(pairs, self.batch_size, self.rank, self.world_size))


def init_loader_worker(seed: int, worker_id: int, *, owner: int | None = None) -> None:
    """Seed a data-loader worker's global RNGs from (run seed, worker); the augmentation itself is
    seeded per sample (:class:`SeededSampler`). Module-level, bound with ``functools.partial``, so
    it pickles under the ``spawn`` and ``forkserver`` start methods, where a nested function
    cannot be sent to the workers.

    ``owner`` is the process whose loader this worker serves. PyTorch ends a worker whose parent
    died (its parent's PID changes on Linux); a worker started by a ``forkserver`` (Linux's
    default from Python 3.14) has the server as its parent, which lives as long as its children
    do: after a ``kill -9`` of the run (the out-of-memory killer, a job's time limit) the workers
    and the server stayed forever, each worker holding its memory. Such a worker watches the owner
    itself (:func:`lab2.ops.processes.die_with_parent`)."""
    if owner is not None and os.getppid() != owner:
        die_with_parent(parent=owner)
    s = epoch_seed(seed, WORKERS_EPOCH, worker_id + 1)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    sys.excepthook = quiet_broken_pipes


def quiet_broken_pipes(kind, value, traceback, _default=sys.__excepthook__) -> None:
    """A loader worker's ``sys.excepthook``: silent for a broken connection. A worker hands its
    batches over through a background thread (multiprocessing's resource sharer) that reports
    its errors there; when the main process stops the loader — a lost sibling worker, a Ctrl-C —
    that thread's "Connection reset by peer" printed a traceback below lab2's own one line. The
    main process sees and says any real failure itself."""
    if not issubclass(kind, (ConnectionError, EOFError)):
        _default(kind, value, traceback)


#: Where Linux keeps the shared memory in which loader workers hand their batches over: a
#: tmpfs of 64 MiB in a Docker container or a Kubernetes pod (a JupyterHub) unless given more.
SHARED_MEMORY = Path("/dev/shm")

#: Set in the processes of ``experiment --parallel``: how many runs share the machine's shared
#: memory at once (torchrun's ``LOCAL_WORLD_SIZE`` says it for the processes of one run).
RUNS_AT_ONCE_ENV = "LAB2_RUNS_AT_ONCE"

#: Batches a training loop holds besides those the workers prepare: the one it trains on and
#: the previous one, still referenced while the next arrives.
HELD_BATCHES = 2


def fit_shared_memory(workers: int, prefetch: int, batch_bytes: int, free_bytes: int | None
                      ) -> tuple[int, int, str | None]:
    """Workers and batches prepared ahead by each that fit in ``free_bytes`` of shared memory
    (None: no limit known), and why they were lowered (None if not). Batches ahead go first
    (down to one per worker), then workers (down to none: the main process reads)."""
    need = (workers * prefetch + HELD_BATCHES) * batch_bytes
    if not workers or free_bytes is None or need <= free_bytes:
        return workers, prefetch, None
    room = free_bytes // batch_bytes - HELD_BATCHES       # batches the workers may have ready
    fitted = (workers, room // workers) if room >= workers else (max(room, 0), 1)
    used = (f"{fitted[0]} worker(s) x {fitted[1]} are used" if fitted[0] else
            "the main process reads them itself")
    mib = 2**20
    return fitted[0], fitted[1], (
        f"only {free_bytes / mib:.0f} MiB of shared memory free for this run in {SHARED_MEMORY} "
        f"(a Docker container or Kubernetes pod has 64 MiB unless started with more, e.g. "
        f"docker run --shm-size=2g): {workers} loader workers x {prefetch} batches ahead need "
        f"{need / mib:.0f} MiB, so {used}; the batches, and the results, are the same, only the "
        f"loading is slower")


def shared_memory_free() -> int | None:
    """Bytes of shared memory this run may fill: what is free in :data:`SHARED_MEMORY`, shared
    with the other processes of the run (torchrun) or the other runs (``experiment
    --parallel``) on this machine. None where there is no such limit to check (not Linux)."""
    if not sys.platform.startswith("linux") or not SHARED_MEMORY.is_dir():
        return None
    try:
        free = shutil.disk_usage(SHARED_MEMORY).free
    except OSError:
        return None
    return free // processes_sharing_this_machine()


def processes_sharing_this_machine() -> int:
    """Training processes on this machine at once: the ranks of this run on this machine
    (torchrun's ``LOCAL_WORLD_SIZE``) or the runs of ``experiment --parallel``
    (:data:`RUNS_AT_ONCE_ENV`)."""
    return max(int(os.environ.get("LOCAL_WORLD_SIZE") or 1),
               int(os.environ.get(RUNS_AT_ONCE_ENV) or 1))


def fit_workers_to_cores(workers: int, cores: int) -> tuple[int, str | None]:
    """At most one loader worker per CPU core the run may use, and why they were lowered (None
    if not): more only add processes and memory (``benchmarks/epoch.py``). The batches, and the
    results, are the same (each sample carries its own seed)."""
    if workers <= cores:
        return workers, None
    return cores, (f"{workers} asked for, lowered to the {cores} CPU core(s) this run may use "
                   "(at most one worker per core)")


def make_loader(dataset: OxfordPetSegmentation, config: TrainConfig, *, train: bool,
                device: torch.device | None = None, rank: int = 0, world_size: int = 1
                ) -> DataLoader:
    """The loader of one split for a whole run; call ``loader.sampler.set_epoch(e)`` before each
    pass. Works under any multiprocessing start method.

    Evaluation loaders of a cached data set read in the main process: a cache row is a memory
    copy and there is no augmentation to spread. Workers are lowered to the CPU cores the run may
    use (:func:`fit_workers_to_cores`), then workers and batches ahead, with a warning, to what the
    shared memory holds (:func:`fit_shared_memory`); ``loader.plan`` says what was used and why.
    The workers start by the program's start method (PyTorch's default), not by lab2's pools'
    ``forkserver``: a forked worker shares the PyTorch its parent has loaded, where the others
    load their own (``benchmarks/loader_start.py``)."""
    workers = config.num_workers if (train or dataset.cache is None) else 0
    batch_size, prefetch, notes = config.batch_size // world_size, config.prefetch_factor, []
    if workers:
        workers, why = fit_workers_to_cores(workers, cores_each(processes_sharing_this_machine()))
        if why:
            notes.append(why)
        image, mask, _ = dataset[(0, 0)]                     # one sample's bytes, as loaded
        workers, prefetch, why = fit_shared_memory(
            workers, prefetch, (image.nbytes + mask.nbytes) * batch_size, shared_memory_free())
        if why:
            notes.append(why)
            warnings.warn(why, SharedMemoryWarning, stacklevel=2)
    loader = DataLoader(
        dataset, batch_size=batch_size, drop_last=False,
        sampler=SeededSampler(len(dataset), config.seed, shuffle=train,
                              batch_size=config.batch_size, rank=rank, world_size=world_size),
        num_workers=workers, prefetch_factor=prefetch if workers else None,
        persistent_workers=workers > 0,
        worker_init_fn=partial(init_loader_worker, config.seed, owner=os.getpid())
        if workers else None,
        # the workers' base seed comes from here, not from the global RNG that dropout uses
        generator=torch.Generator().manual_seed(config.seed),
        pin_memory=device is not None and device.type == "cuda")
    loader.plan = (f"{workers} worker(s) x {prefetch} batch(es) ahead" if workers else
                   "the main process") + (": " + "; ".join(notes) if notes else "")
    return loader


__all__ = ["RUNS_AT_ONCE_ENV", "SHARED_MEMORY", "SeededSampler", "WORKERS_EPOCH", "build_datasets",
           "epoch_seed", "fit_shared_memory", "fit_workers_to_cores", "init_loader_worker",
           "make_loader", "open_dataset", "processes_sharing_this_machine", "shared_memory_free"]
