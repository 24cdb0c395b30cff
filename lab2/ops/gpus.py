"""Whether the installed PyTorch can use this machine's NVIDIA GPU, and what to install if not.

``pip install`` does not always give a PyTorch that can (docs/platforms.md): on Windows PyPI's
torch is built without CUDA, and on Linux its CUDA 13 build has no kernels for a V100, P100 or
GTX 10xx ("no kernel image is available" at the first convolution). :func:`missing_kernels`
(:func:`lab2.ops.machine.resolve_device` stops with it) and :func:`gpu_without_cuda_build` (the
``auto`` profile's warning says it) name the GPU and the command that installs a PyTorch for it.
Kept free of PyTorch at import, like :mod:`lab2.config`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache

from .console import shell_word

#: download.pytorch.org's indexes: CUDA 12.6 builds (kernels for compute capability 5.0–9.0) and
#: CUDA 13.0 builds (7.5 and newer, Blackwell included).
OLDER_GPUS_INDEX = "https://download.pytorch.org/whl/cu126"
NEWER_GPUS_INDEX = "https://download.pytorch.org/whl/cu130"
#: The first compute capability the CUDA 13 builds have kernels for.
CUDA13_FIRST = (7, 5)


def has_kernels_for(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a PyTorch built for ``arch_list`` (``torch.cuda.get_arch_list()``: ``sm_75``,
    ``sm_90a``, ``compute_90``, ...) runs on a GPU of compute ``capability``. Machine code for
    ``sm_XY`` runs on X.Y and the later minor versions of X (``sm_80`` on an 8.6 or 8.9); PTX
    (``compute_XY``) is compiled when loaded, for X.Y or any later GPU. An empty list (a build
    that does not say) counts as yes."""
    if not arch_list:
        return True
    for arch in arch_list:
        kind, _, code = arch.partition("_")
        code = code.rstrip("af")        # sm_90a, sm_100f: architecture- and family-specific
        if len(code) < 2 or not code.isdigit():
            continue
        built = (int(code[:-1]), int(code[-1]))
        if kind == "sm" and built[0] == capability[0] and built[1] <= capability[1]:
            return True
        if kind == "compute" and built <= tuple(capability):
            return True
    return False


def install_command(capability: tuple[int, int] | None) -> str:
    """The command that puts a CUDA build of PyTorch for a GPU of ``capability`` (None: not
    known) into this Python's environment."""
    index = (OLDER_GPUS_INDEX if capability is not None and tuple(capability) < CUDA13_FIRST
             else NEWER_GPUS_INDEX)
    return (f"{shell_word(sys.executable)} -m pip install --force-reinstall torch torchvision "
            f"--index-url {index}")


def _index_advice(capability: tuple[int, int] | None) -> str:
    if capability is None:   # nvidia-smi did not say: both, each for its GPUs
        return (f"`{install_command((8, 0))}` (for a GPU older than the T4 or the RTX 20 "
                f"series: .../whl/cu126 instead)")
    return f"`{install_command(capability)}`"


def missing_kernels() -> str | None:
    """Why PyTorch cannot compute on a visible CUDA GPU (it has no kernels for its compute
    capability), with the fix; None when it can, or when there is no CUDA GPU. Initialises
    CUDA: call it where the run will use the GPU."""
    import torch
    if not torch.cuda.is_available() or getattr(torch.version, "hip", None):
        return None      # no GPU, or an AMD one (ROCm lists gfx targets, which this does not read)
    arch_list = torch.cuda.get_arch_list()
    for index in range(torch.cuda.device_count()):
        capability = torch.cuda.get_device_capability(index)
        if not has_kernels_for(capability, arch_list):
            built = ", ".join(sorted({a.split("_", 1)[1] for a in arch_list}))
            return (f"this PyTorch ({torch.__version__}, CUDA {torch.version.cuda}) has no "
                    f"kernels for GPU {index}, {torch.cuda.get_device_name(index)} (compute "
                    f"capability {capability[0]}.{capability[1]}; it was built for {built}); "
                    f"install a PyTorch built for it: {_index_advice(capability)}")
    return None


@cache
def nvidia_gpus() -> list[tuple[str, tuple[int, int] | None]]:
    """The NVIDIA GPUs ``nvidia-smi`` lists (name, compute capability or None where the driver
    does not report it), without PyTorch; [] when there is no ``nvidia-smi`` or it fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    gpus = []
    for line in out.stdout.splitlines():
        name, _, cap = (part.strip() for part in line.rpartition(","))
        if not name:
            name, cap = line.strip(), ""
        major, _, minor = cap.partition(".")
        gpus.append((name, (int(major), int(minor)) if major.isdigit() and minor.isdigit()
                     else None))
    return [g for g in gpus if g[0]]


def gpu_without_cuda_build() -> str | None:
    """Why an NVIDIA GPU of this machine goes unused (the installed PyTorch was built without
    CUDA, as PyPI's is on Windows), with the fix; None otherwise."""
    import torch
    if torch.version.cuda is not None or getattr(torch.version, "hip", None) or \
            sys.platform == "darwin":
        return None
    gpus = nvidia_gpus()
    if not gpus:
        return None
    name, capability = gpus[0]
    return (f"this machine has an NVIDIA GPU ({name}) but this PyTorch ({torch.__version__}) "
            f"was built without CUDA (pip's default on Windows); install a PyTorch built for "
            f"it: {_index_advice(capability)}")


__all__ = ["CUDA13_FIRST", "NEWER_GPUS_INDEX", "OLDER_GPUS_INDEX", "gpu_without_cuda_build",
           "has_kernels_for", "install_command", "missing_kernels", "nvidia_gpus"]
