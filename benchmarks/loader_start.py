"""A training loader by the start method of its workers: ``fork`` (Linux's default before Python
3.14), ``forkserver`` (Linux's default from Python 3.14) and ``spawn`` (macOS, Windows), side by
side in one run, repeated alternately.

The workers persist for a whole run (``persistent_workers``), so a start method can only cost
once per run: the seconds from ``iter(loader)`` to the first batch. Each pass builds a fresh
loader of the ``full`` profile's training split (augmentation on, uint8 batches) over a generated
sample, in a parent in the state a run is in when its loader starts: PyTorch imported and its
threads started, a tqdm bar shown (its monitor thread). Printed per method: the start, the rest
of the first epoch, a second epoch on the same workers, and the workers' memory after it
(proportional set size: pages shared with the parent or each other count in part).

    python benchmarks/loader_start.py [--images 160] [--size 512] [--workers 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from results import append_section, lift_worker_cap, markdown_table, sample_with_cache


def workers_pss_mib(loader) -> float:
    """The proportional set size of the loader's workers together (Linux), in MiB."""
    total = 0
    for worker in loader._iterator._workers:
        with open(f"/proc/{worker.pid}/smaps_rollup", encoding="utf-8") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    return total / 1024


def one_pass(loader) -> tuple[float, float, float, float]:
    started = time.perf_counter()
    batches = iter(loader)
    next(batches)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in batches:
        pass
    rest = time.perf_counter() - started
    loader.sampler.set_epoch(1)
    started = time.perf_counter()
    for _ in loader:
        pass
    return first, rest, time.perf_counter() - started, workers_pss_mib(loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["fork", "forkserver", "spawn"])
    args = parser.parse_args()
    import torch
    from tqdm.auto import tqdm

    from lab2.config import profile_config
    from lab2.ops.loaders import build_datasets, make_loader
    lift_worker_cap()                     # the profile's workers, whatever this machine's cores
    torch.randn(512, 512) @ torch.randn(512, 512)           # PyTorch's threads are running
    tqdm(total=1, disable=False).close()                       # and tqdm's monitor
    config = profile_config("full", image_size=args.size, num_workers=args.workers,
                            max_train_samples=args.images, device="cpu")
    seconds: dict[str, list[tuple[float, ...]]] = {m: [] for m in args.methods}
    with tempfile.TemporaryDirectory() as tmp:
        root, _, _ = sample_with_cache(Path(tmp), args.images, args.size, args.size)
        dataset = build_datasets(config, root, splits=("train",), progress=False)["train"]
        for _ in range(args.repeats):
            for method in args.methods:
                loader = make_loader(dataset, config, train=True)
                loader.multiprocessing_context = method
                seconds[method].append(one_pass(loader))
                del loader
                print(method, " / ".join(f"{x:.2f}" for x in seconds[method][-1]), flush=True)
    base = statistics.median(s[0] for s in seconds[args.methods[0]])
    rows = []
    for method, runs in seconds.items():
        first = statistics.median(s[0] for s in runs)
        rows.append((method, args.workers, f"{first:.2f}", " / ".join(f"{s[0]:.2f}" for s in runs),
                     f"{first - base:+.2f}", f"{statistics.median(s[1] for s in runs):.2f}",
                     f"{statistics.median(s[2] for s in runs):.2f}",
                     f"{statistics.median(s[3] for s in runs):.0f}"))
    table = markdown_table(("start method", "workers", "median s to the first batch",
                            "each start s", f"start vs {args.methods[0]} s",
                            "rest of epoch 1 s", "epoch 2 s", "workers' PSS MiB"), rows)
    print(table)
    batches = -(-args.images // config.batch_size)
    append_section("Training loader by the start method of its workers",
                   f"`full` profile's training loader ({args.size} px, batch "
                   f"{config.batch_size}, augmentation on, {batches} batches per epoch) over "
                   f"{args.images} photos of a synthetic sample, raw cache; a fresh loader per "
                   f"pass, {args.repeats} passes per method alternately, in a parent running "
                   f"PyTorch's threads and tqdm's monitor.\n\n{table}")


if __name__ == "__main__":
    main()
