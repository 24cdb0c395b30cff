"""A whole cache build by the start method of its worker pool: ``fork`` (Linux's default before
Python 3.14) against ``forkserver`` (what lab2's pools use on Linux, :func:`lab2.ops.processes.
pool_context`), side by side in one run, repeated alternately.

The parent is in the state a cache build meets inside ``report``: PyTorch imported and its
threads started by a few operations (a fork copies a multi-threaded process; Python 3.12+ warns
that it "may lead to deadlocks"). Each build writes a fresh raw cache of a generated sample.

    python benchmarks/pool_start.py [--images 300] [--size 128] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from results import append_section, markdown_table

from lab2.ops import processes
from lab2.ops.cache import build_cache
from lab2.ops.sample import make_sample_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch
    torch.randn(512, 512) @ torch.randn(512, 512)          # PyTorch's threads are running
    methods = ("fork", "forkserver")
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_sample_dataset(root, n_trainval=args.images, n_test=10, size=256, progress=False)
        for repeat in range(args.repeats):
            for method in methods:
                processes.pool_context = lambda method=method: multiprocessing.get_context(method)
                started = time.perf_counter()
                build_cache(root, args.size, None, cache_root=Path(tmp) / f"{method}{repeat}",
                            workers=args.workers, progress=False)
                seconds[method].append(time.perf_counter() - started)
                print(method, f"{seconds[method][-1]:.2f} s", flush=True)
    base = statistics.median(seconds["fork"])
    rows = [(m, args.workers, f"{statistics.median(s):.2f}",
             " / ".join(f"{x:.2f}" for x in s), f"{statistics.median(s) / base:.2f}×")
            for m, s in seconds.items()]
    table = markdown_table(("start method", "workers", "median s per build", "each build s",
                            "time vs fork"), rows)
    print(table)
    append_section("Cache build by the start method of its pool",
                   f"{args.images} train/val photos of a synthetic sample (256 px), raw cache at "
                   f"{args.size} px, built {args.repeats} times per method alternately, in a "
                   f"parent running PyTorch's threads.\n\n{table}")


if __name__ == "__main__":
    main()
