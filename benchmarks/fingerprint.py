"""The data set's fingerprint (:mod:`lab2.ops.fingerprint`) on a data set the size of
Oxford-IIIT Pet: names and sizes only (what lab2 hashed before) against the content of every
file, read from disk (the page cache dropped first, where this process may) and from memory, by
the number of threads that hash, and a later command that finds every hash remembered.

The files hold random bytes of the real data set's sizes (7,390 photos of 107 kB on average,
as many trimaps of 2.6 kB, the split lists): hashing does not care what they show.

    python benchmarks/fingerprint.py [--files 7390] [--threads 1 2 4 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from results import append_section, markdown_table

from lab2.ops import fingerprint as fp


def write_tree(root: Path, files: int) -> int:
    """Random files laid out as the data set; returns their total bytes."""
    rng = np.random.default_rng(0)
    folder = root / "oxford-iiit-pet"
    (folder / "images").mkdir(parents=True)
    (folder / "annotations" / "trimaps").mkdir(parents=True)
    total, lines = 0, []
    for i in range(files):
        for path, mean in ((folder / "images" / f"pet_{i}.jpg", 107_000),
                           (folder / "annotations" / "trimaps" / f"pet_{i}.png", 2_600)):
            data = rng.bytes(int(rng.integers(mean // 2, mean * 3 // 2)))
            path.write_bytes(data)
            total += len(data)
        lines.append(f"pet_{i} 1 1 1\n")
    for name, part in (("trainval.txt", lines[: files // 2]), ("test.txt", lines[files // 2:])):
        (folder / "annotations" / name).write_text("".join(part), encoding="utf-8")
    return total


def drop_page_cache() -> bool:
    """Whether the kernel's page cache could be dropped (root on Linux)."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n", encoding="utf-8")
        return True
    except OSError:
        return False


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=7390)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["LAB2_CACHE_DIR"] = str(root / "cache")
        total = write_tree(root, args.files)
        time.sleep(fp.RECENT_S + 0.5)               # old enough to be remembered
        cold = drop_page_cache()
        rows = []
        sizes = [timed(lambda: fp.names_and_sizes_fingerprint(root))
                 for _ in range(args.repeats)]
        rows.append(("names and sizes (before)", "–", "–",
                     f"{statistics.median(sizes):.3f}"))
        for threads in args.threads:
            disk, memory = [], []
            for _ in range(args.repeats):
                if cold:
                    drop_page_cache()
                    disk.append(timed(lambda t=threads: fp.file_hashes(
                        root, threads=t, remember=False, progress=False)))
                memory.append(timed(lambda t=threads: fp.file_hashes(
                    root, threads=t, remember=False, progress=False)))
            rows.append((f"content, {threads} thread(s)",
                         f"{statistics.median(disk):.2f}" if disk else "–",
                         f"{statistics.median(memory):.2f}", "–"))
            print(rows[-1], flush=True)
        fp.dataset_fingerprint(root, progress=False)          # writes the memo
        fp._seen.clear()                                      # a new command: only the file
        remembered = [timed(lambda: (fp._seen.clear(), fp.dataset_fingerprint(root,
                                                                               progress=False)))
                      for _ in range(args.repeats)]
        rows.append(("content, every hash remembered (a later command)", "–", "–",
                     f"{statistics.median(remembered):.3f}"))
    table = markdown_table(("fingerprint", "s from disk", "s from memory", "s"), rows)
    print(table)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    append_section(
        "The data set's fingerprint",
        f"{2 * args.files:,} files of random bytes laid out as Oxford-IIIT Pet ({total / 2**20:.0f}"
        f" MiB), {cores} cores; median of {args.repeats}; "
        + ("'from disk' after dropping the page cache" if cold else
           "the page cache could not be dropped here, so no 'from disk' column")
        + f".\n\n{table}")


if __name__ == "__main__":
    main()
