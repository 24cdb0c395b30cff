"""Checkpoints that hold everything needed to resume, written atomically, read without pickle.

A checkpoint is a dict of tensors and plain Python values — model, optimiser, scheduler and scaler
state, the completed epoch, the best validation Dice, every RNG state, the config and the history —
so ``torch.load(..., weights_only=True)`` can read it (no arbitrary code runs on load).
"""

from __future__ import annotations

import io
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_path, read_exact

#: What every lab2 checkpoint holds; a file without them is not one.
REQUIRED_KEYS = ("model", "config", "epoch")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a checkpoint,
    and a full disk is one :class:`lab2.atomic.StorageError` naming the file."""
    with atomic_path(path, fix=f"free space on that disk; {Path(path).name} before this save is "
                               "intact, so --resume continues from it") as tmp:
        torch.save(state, tmp)


def copy_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy a checkpoint file atomically (``best.pt`` from the ``last.pt`` just written)."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    mmap: bool = False, sha256: str | None = None) -> dict[str, Any]:
    """Read a lab2 checkpoint without running any pickled code (``weights_only=True``).

    Anything that is not a lab2 checkpoint — a random or truncated file, another program's
    ``.pt``, a pickle with code in it — raises ``ValueError`` naming the file. ``mmap=True`` maps
    the tensors instead of reading them (cheap when only the epoch or config is wanted).
    ``sha256``: the weights a result was made from; other content raises
    :class:`lab2.atomic.ChangedSince` (the bytes are hashed and loaded in one read:
    :func:`lab2.atomic.read_exact`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `python -m lab2 train` "
                                "or point --checkpoint at a run's best.pt / last.pt")
    source = path if sha256 is None else io.BytesIO(read_exact(path, sha256))
    try:
        state = torch.load(source, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # UnpicklingError, RuntimeError (zip), EOFError, ... on foreign data
        raise ValueError(f"{path} is not a readable lab2 checkpoint: {unreadable_reason(path, e)}; "
                         "point --checkpoint at a run's best.pt or last.pt") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{path} is not a lab2 checkpoint (no {', '.join(missing)}); point "
                         "--checkpoint at a run's best.pt or last.pt")
    return state


#: How every file ``torch.save`` writes begins (a zip archive).
_ZIP_MAGIC = b"PK\x03\x04"


def unreadable_reason(path: Path, error: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in a user's words. PyTorch's own
    message is paragraphs long, has terminal colour codes, and its advice (``weights_only=False``)
    would run whatever code the file holds."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        return e.strerror or type(e).__name__
    text = str(error)
    if not head:
        return "the file is empty"
    if head != _ZIP_MAGIC:
        return "it is not a file written by torch.save (lab2's checkpoints are)"
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        held = f" ({found.group(1)})" if found else ""
        return (f"it holds Python objects{held} besides tensors and plain values, so another "
                "program wrote it; lab2 reads no such objects, so that no code in a file runs")
    if isinstance(error, (EOFError, RuntimeError)) and (
            not text or any(word in text for word in ("zip", "archive", "corrupt"))):
        return "it is cut short or damaged (a copy or download that did not finish?)"
    first = re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines()
    return first[0][:160] if first else type(error).__name__


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states, in weights_only-loadable types."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "python": [version, list(internal), gauss],
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
