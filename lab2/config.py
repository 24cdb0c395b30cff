"""``TrainConfig``: one dataclass whose defaults are the report's training settings, and the
profiles that shrink it for CPUs and tests.

Profiles (``LAB2_PROFILE`` or ``--profile``):

* ``full``  — the report: 512×512, batch 8, 50 epochs, Adam 1e-3, full-width networks (a GPU job).
* ``quick`` — a CPU-sized run with the same recipe: 128×128, 15 epochs (learning rate ×0.1 after
  12), quarter-width networks, at most 300 training and 100 validation/test images, data loaded in
  the main process (cached samples need no workers on a small CPU).
* ``smoke`` — seconds: 64×64, 2 epochs, tiny networks and subsets; for tests and notebook CI.
* ``auto``  — ``full`` when CUDA is available, ``quick`` otherwise (said loudly).

A config is saved as JSON in every run folder and inside every checkpoint; a resumed run rebuilds
its network from the checkpoint's copy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .data.masks import BORDER_MODES
from .models import MODELS

OPTIMIZERS = ("adam", "sgd", "adamw")
DEVICES = ("auto", "cuda", "mps", "cpu")
AMP_MODES = ("auto", "bf16", "fp16", "off")
PROFILES = ("full", "quick", "smoke", "auto")
PROFILE_ENV = "LAB2_PROFILE"


#: Fields that may change when a run resumes (recorded in run.json as a change at epoch N). Every
#: other field defines what is trained and how it is measured, and is fixed for the run's life.
RESUMABLE_FIELDS = ("epochs", "lr", "batch_size", "amp", "device", "channels_last", "compile",
                    "num_workers", "prefetch_factor")


def run_name(model: str, preprocess: bool) -> str:
    """Name of a run folder: ``unet_raw``, ``resnet34_unet_preprocessed``, …"""
    return f"{model}_{'preprocessed' if preprocess else 'raw'}"


@dataclass
class TrainConfig:
    # --- what is trained
    model: str = "unet"                   # "unet" | "resnet34_unet"
    preprocess: bool = False              # the report's OpenCV chain on/off
    image_size: int = 512                 # square side; multiple of 16 (UNet) / 32 (ResNet34-UNet)
    base_channels: int = 64               # network width (64 = the report's networks)
    dropout: float = 0.1                  # every dropout layer (lab2.models.DEFAULT_DROPOUT)
    border: str = "foreground"            # trimap border → foreground | background | ignore
    augment: bool = True                  # train-split augmentation (lab2.augment)
    # --- optimisation (the report's)
    epochs: int = 50
    batch_size: int = 8
    optimizer: str = "adam"               # "adam" | "sgd" (momentum below) | "adamw"
    lr: float = 1e-3
    momentum: float = 0.9                 # SGD only
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (30, 50, 100, 150, 200)  # MultiStepLR, stepped once per epoch
    gamma: float = 0.1
    loss: str = "cross_entropy"           # over two classes (background, pet)
    # --- data loading
    num_workers: int = 4
    prefetch_factor: int = 2
    max_train_samples: int | None = None  # None = the whole split
    max_eval_samples: int | None = None   # validation and test subsets (None = all)
    # --- machine
    seed: int = 0
    device: str = "auto"                  # "auto" (CUDA, else Apple MPS, else CPU) | "cuda" | "mps" | "cpu"
    amp: str = "auto"                     # "auto" (lab2.machine) | "bf16" | "fp16" | "off"
    channels_last: str = "auto"           # "auto" (lab2.machine) | "on" | "off"
    compile: bool = False                 # torch.compile the model (CUDA)
    profile: str = "full"                 # the profile these settings came from (for labels)

    def __post_init__(self) -> None:
        self.milestones = tuple(int(m) for m in self.milestones)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field for any value that cannot work."""
        def bad(name: str, why: str):
            raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}: {why}")

        if self.model not in MODELS:
            bad("model", f"unknown model; choose one of {', '.join(MODELS)}")
        multiple = MODELS[self.model].multiple
        if self.image_size <= 0 or self.image_size % multiple:
            nearest = max(multiple, round(self.image_size / multiple) * multiple)
            bad("image_size", f"{self.model} needs a multiple of {multiple} (nearest: {nearest})")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"unknown optimiser; choose one of {', '.join(OPTIMIZERS)}")
        if not self.lr > 0:
            bad("lr", "the learning rate must be positive")
        for name in ("epochs", "batch_size", "base_channels"):
            if getattr(self, name) < 1:
                bad(name, "must be at least 1")
        for name in ("weight_decay", "momentum", "num_workers"):
            if getattr(self, name) < 0:
                bad(name, "must not be negative")
        if self.prefetch_factor < 1:
            bad("prefetch_factor", "must be at least 1")
        if not 0 <= self.dropout < 1:
            bad("dropout", "must be in [0, 1)")
        if not 0 < self.gamma <= 1:
            bad("gamma", "must be in (0, 1]")
        if list(self.milestones) != sorted(set(self.milestones)) or any(m < 1 for m in self.milestones):
            bad("milestones", "must be increasing positive epochs")
        if self.loss != "cross_entropy":
            bad("loss", "only 'cross_entropy' (the report's loss) is implemented")
        if self.border not in BORDER_MODES:
            bad("border", f"choose one of {', '.join(BORDER_MODES)}")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                bad(name, "must be at least 1 or None")
        if self.device not in DEVICES:
            bad("device", f"choose {', '.join(DEVICES)}")
        if self.amp not in AMP_MODES:
            bad("amp", f"choose {', '.join(AMP_MODES)}")
        if self.channels_last not in ("auto", "on", "off"):
            bad("channels_last", "choose auto, on or off")
        if self.profile not in PROFILES:
            bad("profile", f"choose one of {', '.join(PROFILES)}")

    # --- (de)serialisation
    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        from .atomic import write_json
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def changes_from(self, saved: "TrainConfig", fix: str = "pass --restart to train the run "
                     "again from scratch with the new settings, or use another --out"
                     ) -> dict[str, tuple]:
        """``{field: (saved value, this value)}`` for the fields this config changes in ``saved``.

        Raises ValueError if a field outside :data:`RESUMABLE_FIELDS` differs (a run cannot
        resume as another model, image size, preprocessing, ...).
        """
        changes = {f.name: (getattr(saved, f.name), getattr(self, f.name)) for f in fields(self)
                   if getattr(saved, f.name) != getattr(self, f.name)}
        fixed = [f"{name} {old!r} -> {new!r}" for name, (old, new) in changes.items()
                 if name not in RESUMABLE_FIELDS]
        if fixed:
            raise ValueError(f"cannot change {', '.join(fixed)} when resuming (only "
                             f"{', '.join(RESUMABLE_FIELDS)} may change); {fix}")
        return changes

    @property
    def run_name(self) -> str:
        return run_name(self.model, self.preprocess)


#: Field changes of each profile relative to the report's settings.
PROFILE_OVERRIDES: dict[str, dict] = {
    "full": {},
    "quick": dict(image_size=128, epochs=15, base_channels=16, milestones=(12,),
                  max_train_samples=300, max_eval_samples=100, num_workers=0),
    "smoke": dict(image_size=64, epochs=2, batch_size=4, base_channels=8, milestones=(30,),
                  max_train_samples=16, max_eval_samples=8, num_workers=0),
}


def resolve_profile(profile: str | None = None, *, announce: bool = True) -> str:
    """``profile`` or ``$LAB2_PROFILE`` or ``auto``; ``auto`` → ``full`` with CUDA, else ``quick``."""
    chosen = profile or os.environ.get(PROFILE_ENV) or "auto"
    if chosen not in PROFILES:
        raise ValueError(f"unknown profile {chosen!r} (from {'argument' if profile else PROFILE_ENV});"
                         f" choose one of {', '.join(PROFILES)}")
    if chosen == "auto":
        import torch
        chosen = "full" if torch.cuda.is_available() else "quick"
        if announce:
            banner = ("CUDA found: profile 'full' (the report's settings)" if chosen == "full" else
                      "NO GPU: profile 'quick' (128 px, 15 epochs, quarter-width networks, "
                      "subsets) — NOT the report's setup; set LAB2_PROFILE=full to force it")
            print(f"*** lab2: {banner} ***", file=sys.stderr)
    return chosen


def profile_config(profile: str | None = None, **overrides) -> TrainConfig:
    """The config of a profile, with single fields overridden (``None`` values are ignored)."""
    name = resolve_profile(profile)
    settings = {**PROFILE_OVERRIDES[name], "profile": name}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**settings)


__all__ = ["TrainConfig", "RESUMABLE_FIELDS", "DEVICES", "AMP_MODES", "PROFILES", "PROFILE_OVERRIDES", "OPTIMIZERS", "profile_config",
           "resolve_profile", "run_name"]
