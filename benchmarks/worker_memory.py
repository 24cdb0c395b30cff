"""Memory and start time of one cache-build worker, by start method: what the lazy ``lab2.data``
package saves.

The cache build and the audit run a process pool (one worker per usable core). Under ``spawn``
(Windows, macOS) and ``forkserver`` each worker imports what it needs afresh; ``lab2.data`` used to
import PyTorch and albumentations into every worker through its package ``__init__``. Each worker
here runs the cache build's own initialiser and fills one real 512 px row of a synthetic sample,
then reports its proportional set size (PSS, shared pages split between the processes sharing them)
and private memory from ``/proc/self/smaps_rollup`` (Linux), and the seconds from the pool's start
to its first finished row. Two variants, side by side in one run: lab2 as it is, and the same
worker that also imports ``lab2.data.dataset`` (PyTorch, albumentations), as the eager package did.

    python benchmarks/worker_memory.py [--workers 2] [--size 512]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from results import append_section, markdown_table

from lab2.data.index import dataset_dir, load_split
from lab2.ops import cache as cache_module
from lab2.ops.audit import audit_dataset
from lab2.ops.sample import make_sample_dataset


def _memory_mib() -> dict[str, float]:
    fields = {}
    with open("/proc/self/smaps_rollup", encoding="utf-8") as f:
        for line in f:
            key, *value = line.split()
            if key in ("Pss:", "Private_Clean:", "Private_Dirty:"):
                fields[key[:-1]] = int(value[0]) / 1024
    return {"pss": fields["Pss"], "private": fields["Private_Clean"] + fields["Private_Dirty"]}


def _init(eager: bool, *init_args) -> None:
    if eager:
        import lab2.data.dataset  # noqa: F401  (what the eager package imported)
    cache_module._init_worker(*init_args)


def _row(job) -> dict:
    cache_module._fill_row(job)
    return {**_memory_mib(), "pid": os.getpid(), "done": time.time()}


def measure(method: str, eager: bool, workers: int, init_args: tuple, names: list[str]) -> dict:
    context = multiprocessing.get_context(method)
    started = time.time()
    with context.Pool(workers, initializer=_init, initargs=(eager, *init_args)) as pool:
        # one row per worker (a barrier-free spread: more jobs than workers, first of each pid)
        results = pool.map(_row, list(enumerate(names[: 4 * workers])), chunksize=1)
    first = {}
    for r in results:
        first.setdefault(r["pid"], r)
    rows = list(first.values())
    return {"pss": statistics.mean(r["pss"] for r in rows),
            "private": statistics.mean(r["private"] for r in rows),
            "start_s": statistics.median(r["done"] - started for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    if not Path("/proc/self/smaps_rollup").is_file():
        sys.exit("needs Linux's /proc/self/smaps_rollup")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_sample_dataset(root, n_trainval=40, n_test=10, size=500, progress=False)
        skipped = audit_dataset(root, progress=False, workers=1).skipped_names
        names = [r.name for r in load_split(root, "trainval") if r.name not in skipped]
        size = (args.size, args.size)
        folder = Path(tmp) / "rows"
        folder.mkdir()
        cache_module._allocate(folder / "images.npy", (len(names), *size, 3))
        cache_module._allocate(folder / "trimaps.npy", (len(names), *size))
        init_args = (str(folder), str(dataset_dir(root)), size, None)
        rows = []
        for method in ("spawn", "forkserver", "fork"):
            for eager in (False, True):
                m = measure(method, eager, args.workers, init_args, names)
                label = "+ PyTorch, albumentations (the eager package)" if eager else "lab2"
                rows.append((method, label, f"{m['pss']:.0f}", f"{m['private']:.0f}",
                             f"{m['start_s']:.1f}"))
                print(rows[-1], flush=True)
    table = markdown_table(("start method", "worker imports", "PSS MiB / worker",
                            "private MiB / worker", "s to first row"), rows)
    print(table)
    append_section("Cache-build worker memory by start method",
                   f"{args.workers} workers, one {args.size} px row each of a synthetic sample; "
                   f"the parent has imported lab2.ops.cache only (a fork shares what the "
                   f"parent holds).\n\n{table}")


if __name__ == "__main__":
    main()
