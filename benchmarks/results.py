"""Shared by the benchmark scripts: a Markdown table, machine facts, and the dated RESULTS.md
section."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def sample_with_cache(folder: Path, n_trainval: int, photo_size: int, image_size: int
                      ) -> tuple[Path, float, float]:
    """A synthetic sample of ``n_trainval`` photos (longest side ``photo_size``) in
    ``folder/data`` with its raw cache at ``image_size`` built; returns the data root and the
    seconds each took (also printed)."""
    import time

    from lab2.ops.cache import build_cache
    from lab2.ops.sample import make_sample_dataset
    root = Path(folder) / "data"
    started = time.perf_counter()
    make_sample_dataset(root, n_trainval=n_trainval, n_test=10, size=photo_size, progress=False)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    cache = build_cache(root, image_size, None, progress=False)
    cached = time.perf_counter() - started
    print(f"sample: {generated:.0f} s; cache of {len(cache.names)} samples at {image_size} px: "
          f"{cached:.1f} s", flush=True)
    return root, generated, cached


def lift_worker_cap() -> None:
    """Let this process's loaders start as many workers as asked, beyond the usable CPU cores
    (lab2 starts at most one per core, ``lab2.ops.loaders.fit_workers_to_cores``): for the
    benchmarks that measure the alternative to that cap, or a fixed number of workers."""
    import lab2.ops.loaders
    lab2.ops.loaders.cores_each = lambda processes: sys.maxsize


def loader_workers(plan: str) -> int:
    """The workers a loader used, from its ``plan`` (``run.json``'s ``loader``)."""
    first = plan.split()[0]
    return int(first) if first.isdigit() else 0


def steady_epoch_seconds(seconds: Sequence[float]) -> float:
    """The median epoch time after the first (which pays cudnn's autotuning and the start of the
    loader's workers)."""
    import statistics
    return statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    import torch
    cpu = platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="utf-8")
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    from lab2.ops.processes import usable_cpus
    cores, usable = f"{os.cpu_count()} CPU cores", usable_cpus()
    if usable < (os.cpu_count() or 1):      # taskset, a SLURM job, a container quota
        cores += f" ({usable} usable by this process)"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {cores}, {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def append_section(title: str, body: str, *, dry_run: bool = False) -> None:
    """Append a dated section to benchmarks/RESULTS.md (and print where), headed by the command
    line that produced it and the machine; a ``dry_run`` section says it holds no real numbers."""
    command = "python " + " ".join(sys.argv)
    if dry_run:
        title += " (dry run)"
        body = "DRY RUN on the CPU at a tiny size — not GPU numbers.\n\n" + body
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = f"\n## {title} — {stamp}\n\nCommand: `{command}`  \nMachine: {machine()}\n\n{body}\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach section is appended by a script in "
                           "`benchmarks/`; newest last.\n", encoding="utf-8")
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(text)
    print(f"appended to {RESULTS}")
