"""PyTorch's CPU threads under a container's CPU quota: PyTorch's default against lab2's fit.

PyTorch starts one thread per core of the process's affinity and ignores a CPU quota (cgroup
``cpu.max`` / ``cpu.cfs_quota_us``: ``docker --cpus``, a JupyterHub or Kubernetes pod), so the
threads outnumber the cores the quota pays for and are throttled.
``lab2.ops.machine.fit_cpu_threads``
lowers them to ``lab2.ops.processes.usable_cpus()``. This script makes a real cgroup with a quota of
``--quota`` cores (needs root and cgroups; without them it measures the machine as it is) and times
a training step of lab2's UNet in it, one child process per variant, round-robin: PyTorch's
default threads, and lab2's fit.

    python benchmarks/cpu_threads.py [--quota 1] [--rounds 3] [--steps 6] [--width 16]
                                     [--size 128] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from results import append_section, markdown_table

CGROUP_V1, CGROUP_V2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")


@contextmanager
def quota_group(cores: float):
    """A temporary cgroup limited to ``cores`` CPUs (None when this machine does not allow one)."""
    if (CGROUP_V1 / "cpu.cfs_quota_us").is_file():
        group, name, text = (CGROUP_V1 / f"lab2-bench-{os.getpid()}", "cpu.cfs_quota_us",
                             str(int(cores * 100000)))
    else:
        group, name, text = (CGROUP_V2 / f"lab2-bench-{os.getpid()}", "cpu.max",
                             f"{int(cores * 100000)} 100000")
    try:
        group.mkdir()
    except OSError as e:
        print(f"no cgroup with a CPU quota here ({e}); measuring without one", flush=True)
        yield None
        return
    try:
        (group / name).write_text(text, encoding="utf-8")
    except OSError as e:
        print(f"cannot set a CPU quota here ({e}); measuring without one", flush=True)
        group.rmdir()
        group = None
    try:
        yield group
    finally:
        if group is not None:
            group.rmdir()


def child(args: argparse.Namespace) -> None:
    """One variant, in a process of its own: ``--child default`` or ``--child fit``."""
    import torch
    from stepbench import TrainStep

    from lab2.models import build_model
    from lab2.ops.machine import fit_cpu_threads
    default = torch.get_num_threads()
    threads, why = fit_cpu_threads() if args.child == "fit" else (default, "PyTorch's default")
    bench = TrainStep("unet", build_model("unet", base_channels=args.width), args.batch,
                      args.size)
    bench.step()
    for _ in range(args.steps):
        bench.timed()
    print(json.dumps({"threads": threads, "why": why, "default": default,
                      "images_per_s": bench.result().images_per_s}))


def run_child(variant: str, group: Path | None, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", variant, "--steps", str(args.steps),
               "--width", str(args.width), "--size", str(args.size), "--batch", str(args.batch)]
    if group is not None:     # the child joins the group before Python starts
        command = ["sh", "-c", f'echo $$ > "{group}/cgroup.procs" && exec "$@"', "sh", *command]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quota", type=float, default=1.0, help="CPU cores the group may use")
    parser.add_argument("--rounds", type=int, default=3,
                        help="round-robin rounds of the two variants (median reported)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per child")
    parser.add_argument("--width", type=int, default=16, help="UNet width (16: the quick one)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--child", choices=("default", "fit"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    measured: dict[str, list[dict]] = {"default": [], "fit": []}
    with quota_group(args.quota) as group:
        for _ in range(args.rounds):
            for variant in measured:
                measured[variant].append(run_child(variant, group, args))
                print(variant, measured[variant][-1], flush=True)
    quota = f"{args.quota:g} core(s)" if group is not None else "none"
    base = statistics.median(r["images_per_s"] for r in measured["default"])
    rows = []
    for variant, label in (("default", "PyTorch's default"), ("fit", "lab2 (fit_cpu_threads)")):
        last = measured[variant][-1]
        speed = statistics.median(r["images_per_s"] for r in measured[variant])
        rows.append((label, last["threads"], f"{speed:.2f}", f"{speed / base:.2f}×",
                     last["why"]))
    table = markdown_table(("threads chosen by", "threads", "train images/s", "vs default",
                            "why"), rows)
    print(table)
    append_section("CPU threads under a CPU quota",
                   f"UNet width {args.width}, {args.size} px, batch {args.batch}, fused Adam, "
                   f"fp32; CPU quota: {quota} of {os.cpu_count()} cores; each variant in its "
                   f"own process, median of {args.rounds} round-robin rounds of {args.steps} "
                   f"steps after 1 warm-up.\n\n{table}")


if __name__ == "__main__":
    main()
