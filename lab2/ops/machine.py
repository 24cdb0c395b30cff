"""Where a run computes and in which precision: the device, the autocast dtype, the memory layout
(a :class:`lab2.train.DevicePlan`), and which profile suits the machine.

What ``device="auto"``, ``amp="auto"`` and ``channels_last="auto"`` choose:

| machine | device | amp | channels_last |
|---|---|---|---|
| NVIDIA GPU, compute capability 8.0 or more (A100, H100, RTX 30xx/40xx) | cuda | bf16 | on |
| NVIDIA GPU below 8.0 (T4, V100, RTX 20xx, GTX 10xx; no bf16) | cuda | fp16 + GradScaler | on |
| Apple silicon (MPS) | mps | off (fp32) | off |
| CPU that computes bf16 natively (AVX512-BF16 or AMX) | cpu | bf16 | off |
| any other CPU | cpu | off (fp32) | off |

A GPU the installed PyTorch has no kernels for (a V100 or older with PyPI's CUDA 13 build), or a
CPU-only PyTorch beside an NVIDIA GPU (PyPI's build on Windows), is named with the command that
installs a PyTorch for it (:mod:`lab2.ops.gpus`).

bf16 has fp32's exponent range and needs no loss scaling; fp16 does, so fp16 training goes through
``torch.amp.GradScaler``, whose state is saved in every checkpoint. On a CPU without native bf16,
autocast emulates it, an order of magnitude slower than fp32 (``benchmarks/cpu_precision.py``). On
the CPU lab2 keeps activations contiguous, although channels_last measured faster there, because
oneDNN's 1x1-convolution weight gradient — ResNet34-UNet's stride-2 shortcut — hangs or crashes
the process in channels_last for some shapes (``tests/test_platforms.py`` runs them);
``--channels-last on`` still asks for it. Every choice comes with the reason, which ``run.json``
records.

CPU threads: PyTorch starts one per core of the process's affinity, but ignores a container's CPU
quota (``docker --cpus``, a JupyterHub pod); :func:`fit_cpu_threads` lowers them to the usable
cores unless ``OMP_NUM_THREADS`` says otherwise (``benchmarks/cpu_threads.py``).
"""

from __future__ import annotations

import os
import warnings

import torch

from ..config import PROFILES, TrainConfig
from ..train import DevicePlan
from .gpus import gpu_without_cuda_build, missing_kernels
from .notices import Lab2Warning, ProfileWarning
from .processes import usable_cpus

#: Where a command or notebook that names no profile looks for one.
PROFILE_ENV = "LAB2_PROFILE"

#: ``TrainConfig.amp`` values and the autocast dtype each forces.
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def cpu_bf16_native() -> tuple[bool, str]:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), as PyTorch detects it."""
    try:
        avx512_bf16 = bool(torch.cpu._is_avx512_bf16_supported())
        amx = bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:   # an older PyTorch without the probes: assume not
        return False, "PyTorch cannot tell whether this CPU has AVX512-BF16 or AMX"
    if amx:
        return True, "the CPU has AMX tiles"
    if avx512_bf16:
        return True, "the CPU has AVX512-BF16"
    return False, "the CPU has neither AVX512-BF16 nor AMX (bf16 would be emulated, slower)"


def fit_cpu_threads() -> tuple[int, str]:
    """Lower PyTorch's CPU threads to the cores this process may use (its affinity and its
    container's CPU quota); return the count and why. An ``OMP_NUM_THREADS`` the user set, or a
    count already at or below the usable cores, is left as it is."""
    threads, usable = torch.get_num_threads(), usable_cpus()
    if os.environ.get("OMP_NUM_THREADS"):
        return threads, "OMP_NUM_THREADS"
    if threads <= usable:
        return threads, f"PyTorch's default, within the {usable} usable core(s)"
    torch.set_num_threads(usable)
    return usable, (f"lowered from PyTorch's {threads}: the process may use {usable} core(s) "
                    "(its affinity and CPU quota)")


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA if present, else Apple MPS, else the CPU; an unavailable device → error,
    and so is a GPU the installed PyTorch has no kernels for (:mod:`lab2.ops.gpus`), with the
    command that installs one that has."""
    if name == "cuda" and not torch.cuda.is_available():
        unused = gpu_without_cuda_build()
        raise ValueError("device 'cuda' was asked for but no CUDA device is available"
                         f"{f': {unused}' if unused else ''}; use --device auto or cpu")
    if name in ("auto", "cuda") and (missing := missing_kernels()):
        raise ValueError(f"{missing}; or train on the CPU with --device cpu")
    if name == "mps" and not mps_available():
        raise ValueError("device 'mps' was asked for but Apple's MPS backend is not available; "
                         "use --device auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else
                            "mps" if mps_available() else "cpu")
    return torch.device(name)


def _bf16_emulated(device: torch.device) -> str | None:
    """Why bf16 on ``device`` would be emulated, and its own precision; None where it is native
    (or the device is neither CUDA nor the CPU)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 0):
            return (f"CUDA compute capability {major}.{minor} has no hardware for (emulated: "
                    "slow); --amp fp16 or auto is its mixed precision")
    elif device.type == "cpu" and not cpu_bf16_native()[0]:
        return ("this CPU has no hardware for (emulated: 9-25x slower than fp32 in "
                "benchmarks/cpu_precision.py); --amp off or auto is its precision")
    return None


def choose_precision(amp: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype for ``TrainConfig.amp`` on ``device`` (None = fp32), and why. A forced
    ``bf16`` where it would be emulated is kept, with a warning."""
    if amp == "bf16" and (emulated := _bf16_emulated(device)):
        why = f"--amp bf16, which {emulated}"
        warnings.warn(why, Lab2Warning, stacklevel=2)
        return torch.bfloat16, why
    if amp != "auto":
        return AMP_DTYPES[amp], f"--amp {amp}"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) >= (8, 0):
            return torch.bfloat16, f"CUDA compute capability {major}.{minor} has native bf16"
        return torch.float16, (f"CUDA compute capability {major}.{minor} has no native bf16: "
                               "fp16 with a GradScaler")
    if device.type == "cpu":
        native, why = cpu_bf16_native()
        return (torch.bfloat16 if native else None), why
    return None, f"{device.type}: fp32 (mixed precision is not tested there)"


def choose_channels_last(setting: str, device: torch.device) -> tuple[bool, str]:
    """Whether activations use channels_last, and why."""
    if setting != "auto":
        return setting == "on", f"--channels-last {setting}"
    if device.type == "cuda":
        return True, "CUDA: tensor-core convolutions want channels_last"
    if device.type == "cpu":
        return False, ("CPU: contiguous (in channels_last oneDNN's 1x1 stride-2 convolution "
                       "backward crashes or hangs for some shapes; see lab2/ops/machine.py)")
    return False, f"{device.type}: contiguous layout (channels_last not measured there)"


def describe(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[dtype]


def plan_for(config: TrainConfig) -> tuple[DevicePlan, dict]:
    """The device, precision and memory layout ``config`` asks for on this machine, and the
    reason for each choice (recorded in ``run.json``); PyTorch's CPU threads are fitted to the
    usable cores on the way (:func:`fit_cpu_threads`)."""
    device = resolve_device(config.device)
    amp, amp_why = choose_precision(config.amp, device)
    layout, layout_why = choose_channels_last(config.channels_last, device)
    threads, threads_why = fit_cpu_threads()
    return DevicePlan(device, amp, layout), {
        "precision": describe(amp), "precision_why": amp_why, "channels_last_why": layout_why,
        "cpu_threads": threads, "cpu_threads_why": threads_why}


def resolve_profile(profile: str | None = None, *, announce: bool = True) -> str:
    """``profile`` or ``$LAB2_PROFILE`` or ``auto``; ``auto`` → ``full`` with CUDA, else
    ``quick`` (said loudly, naming an NVIDIA GPU that this PyTorch cannot use)."""
    chosen = profile or os.environ.get(PROFILE_ENV) or "auto"
    if chosen not in PROFILES:
        source = "argument" if profile else PROFILE_ENV
        raise ValueError(f"unknown profile {chosen!r} (from {source});"
                         f" choose one of {', '.join(PROFILES)}")
    if chosen == "auto":
        chosen = "full" if torch.cuda.is_available() else "quick"
        if announce and chosen == "quick":
            unused = gpu_without_cuda_build()     # a CPU-only PyTorch beside an NVIDIA GPU
            warnings.warn(f"NO GPU{f' THAT PYTORCH CAN USE ({unused})' if unused else ''}: "
                          "profile 'quick' (128 px, 15 epochs, quarter-width networks, "
                          "subsets), NOT the report's setup; set LAB2_PROFILE=full to force it",
                          ProfileWarning, stacklevel=1)
    return chosen
