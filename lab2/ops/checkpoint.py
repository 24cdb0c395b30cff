"""Checkpoints that hold everything needed to resume, written atomically, read without pickle.

A checkpoint is a dict of tensors and plain Python values — model, optimiser, scheduler and scaler
state, the completed epoch, the best validation Dice, every RNG state, the config and the history —
so ``torch.load(..., weights_only=True)`` can read it (no arbitrary code runs on load).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_path, read_exact

#: What every lab2 checkpoint holds; a file without them is not one.
REQUIRED_KEYS = ("model", "config", "epoch")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a checkpoint,
    and a full disk is one :class:`lab2.ops.atomic.StorageError` naming the file."""
    fix = (f"free space on that disk; {Path(path).name} before this save is intact, so --resume "
           "continues from it" if Path(path).is_file() else
           "free space on that disk; nothing was saved yet, so run the same command again")
    with atomic_path(path, fix=fix) as tmp:
        torch.save(state, tmp)


def copy_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy a checkpoint file atomically (``best.pt`` from the ``last.pt`` just written)."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    mmap: bool = False, sha256: str | None = None) -> dict[str, Any]:
    """Read a lab2 checkpoint without running any pickled code (``weights_only=True``), once
    every entry of it is checked against the CRC-32 that ``torch.save`` wrote beside it
    (:func:`check_entries`): a checkpoint damaged in place raises :class:`DamagedCheckpoint`
    instead of giving wrong weights (400 changed bytes in ``best.pt`` gave Dice 0.28 for 0.69).

    Anything that is not a lab2 checkpoint — a random or truncated file, another program's
    ``.pt``, a pickle with code in it — raises ``ValueError`` naming the file. ``mmap=True`` maps
    the tensors instead of reading them, and checks every entry but theirs: for what a
    checkpoint records (its epoch, config, history), never for its weights. ``sha256``: the
    weights a result was made from; other content raises :class:`lab2.ops.atomic.ChangedSince`
    (the bytes are hashed, checked and loaded in one read: :func:`lab2.ops.atomic.read_exact`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `python -m lab2 train` "
                                "or point --checkpoint at a run's best.pt / last.pt")
    with contextlib.ExitStack() as stack:
        if sha256 is not None:
            source: Any = io.BytesIO(read_exact(path, sha256))
        elif mmap:
            source = path                  # torch maps a file by its name
        else:                              # one open file: the bytes checked are the bytes read
            source = stack.enter_context(open(path, "rb"))
        check_entries(path if mmap else source, path, tensors=not mmap)
        if not mmap:
            source.seek(0)
        try:
            state = torch.load(source, map_location=map_location, weights_only=True, mmap=mmap)
        except Exception as e:  # UnpicklingError, RuntimeError (zip), EOFError, ... on foreign data
            raise ValueError(f"{path} is not a readable lab2 checkpoint: "
                             f"{unreadable_reason(path, e)}; point --checkpoint at a run's best.pt "
                             "or last.pt") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{path} is not a lab2 checkpoint (no {', '.join(missing)}); point "
                         "--checkpoint at a run's best.pt or last.pt")
    return state


#: How every file ``torch.save`` writes begins (a zip archive).
_ZIP_MAGIC = b"PK\x03\x04"
#: The zip entries that hold tensors' bytes (``archive/data/17``); the others are small.
_TENSOR_ENTRY = re.compile(r"/data/\d+$")


class DamagedCheckpoint(ValueError):
    """A checkpoint's bytes changed after ``torch.save`` wrote them (a failing disk, a bad copy,
    an edit): an entry fails the CRC-32 that the file carries for it."""


def check_entries(source: Any, path: Path, *, tensors: bool = True) -> None:
    """Check every entry of a ``torch.save`` file (a zip archive; ``source``: its path or an
    open binary file) against the CRC-32 the archive holds for it, or, with ``tensors=False``,
    every entry but the tensors' bytes. Raises :class:`DamagedCheckpoint` with what the user can
    do; a file that is no zip archive at all is left for ``torch.load`` to refuse.

    The checksum is the file's own, written by ``torch.save`` with the data: nothing is kept
    elsewhere that could fall out of step with it, and nothing extra is written at save time.
    What the check costs: ``benchmarks/checkpoint_check.py``."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError):
        return                                       # not a zip: torch.load says what it is
    with archive:
        for info in archive.infolist():
            if not tensors and _TENSOR_ENTRY.search(info.filename):
                continue
            try:
                with archive.open(info) as entry:
                    while entry.read(1 << 22):
                        pass
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
                what = (f"its entry {info.filename.partition('/')[2] or info.filename} fails "
                        "its CRC-32 check" if "CRC" in str(e) else f"it cannot be read ({e})")
                raise DamagedCheckpoint(
                    f"{path} is damaged: {what} (its bytes changed after torch.save wrote them: "
                    f"a failing disk, a bad copy or an edit); nothing was computed from it; "
                    f"{damage_advice(path)}") from None


def damage_advice(path: Path) -> str:
    """What to do about a damaged checkpoint of a run folder: ``best.pt`` is rebuilt from
    ``last.pt`` when that holds the best epoch, ``last.pt`` restored from ``best.pt`` when that
    holds the same epoch; otherwise the run is trained again."""
    from .console import shell_word
    folder = shell_word(path.parent)
    again = f"train the run again (python -m lab2 train --out {folder} --restart ...)"
    other = path.with_name("best.pt" if path.name == "last.pt" else "last.pt")
    try:
        held = torch.load(other, map_location="cpu", weights_only=True, mmap=True)
        check_entries(other, other, tensors=path.name == "last.pt")
    except Exception:  # missing, damaged itself, or not a checkpoint: no copy to go back to
        held = None
    if path.name == "best.pt":
        if held is not None and held.get("best_epoch") == held.get("epoch"):
            return (f"last.pt holds the best epoch ({held['epoch']}), so best.pt can be rebuilt "
                    f"from it: python -m lab2 train --out {folder} --resume (or run the "
                    "experiment again, which does the same)")
        return (f"{again}, or test last.pt instead (--checkpoint "
                f"{shell_word(path.with_name('last.pt'))})" if held is not None else again)
    if path.name == "last.pt":
        if held is not None and held.get("epoch") is not None:
            return (f"best.pt is a copy of last.pt at its epoch {held['epoch']}: go back to it "
                    f"with `cp {shell_word(other)} {shell_word(path)}` and resume from there, or "
                    f"{again}")
        return again
    return "copy the file again from where it came, or train the run again"


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


#: torchvision's file name for ``ResNet34_Weights.IMAGENET1K_V1`` in its hub cache.
IMAGENET_FILE = "resnet34-b627a593.pth"


def read_resnet34_weights(weights: str | os.PathLike) -> dict:
    """A torchvision ResNet-34 state dict for :class:`lab2.models.resnet34_unet.ResNet34UNet`'s
    ``encoder_weights``, read without running pickled code: ``"imagenet"`` (the file torchvision
    keeps in its hub cache after ``torchvision.models.resnet34(weights="IMAGENET1K_V1")``) or a
    path to such a state dict. lab2 never downloads weights itself."""
    if str(weights) == "imagenet":
        path = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE
        hint = (f"lab2 does not download weights. On a connected machine run "
                "`python -c \"import torchvision; "
                "torchvision.models.resnet34(weights='IMAGENET1K_V1')\"` "
                f"and copy {IMAGENET_FILE} to {path.parent}, or pass a path to such a file.")
    else:
        path, hint = Path(weights), "Pass 'imagenet' or an existing .pth file."
    if not path.is_file():
        raise FileNotFoundError(f"ResNet-34 ImageNet weights not found at {path}. {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # see load_checkpoint
        raise ValueError(f"{path} is not readable as ResNet-34 weights: "
                         f"{unreadable_reason(path, e)}. {hint}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a torchvision ResNet-34 state dict. {hint}")
    return state
