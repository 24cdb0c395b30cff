"""``TrainConfig``: one dataclass whose defaults are the report's training settings, and the
profiles that shrink it for CPUs and tests.

Profiles (``LAB2_PROFILE`` or ``--profile``):

* ``full``  — the report: 512×512, batch 8, 50 epochs, Adam 1e-3, full-width networks (a GPU job).
* ``quick`` — a CPU-sized run with the same recipe: 128×128, 15 epochs (learning rate ×0.1 after
  12), quarter-width networks, at most 300 training and 100 validation/test images (spread over
  each split's list, so every breed is in them), data loaded in the main process (cached samples
  need no workers on a small CPU).
* ``smoke`` — seconds: 64×64, 2 epochs, tiny networks and subsets; for tests and notebook CI.
* ``auto``  — ``full`` when CUDA is available, ``quick`` otherwise (said loudly;
  :func:`lab2.ops.machine.resolve_profile`).

A config is saved as JSON in every run folder and inside every checkpoint; a resumed run rebuilds
its network from the checkpoint's copy.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

# Kept free of torch and of lab2's heavier modules: the command line builds its flags from
# TrainConfig, and `python -m lab2 --help` should answer at once.

PROFILES = ("full", "quick", "smoke", "auto")


def setting(default: Any, help: str, *, minimum: float | None = None, resumable: bool = False,
            per_run: bool = False, machine: bool = False, flag: bool = True):
    """A :class:`TrainConfig` field: its default, and what its command-line flag shows.

    ``minimum`` is checked by :meth:`TrainConfig.validate` and by the flag; ``resumable`` fields
    may change when a run resumes (:data:`RESUMABLE_FIELDS`); ``per_run`` fields (model,
    preprocessing) name one of the experiment's four runs, so ``experiment`` has no flag for
    them; ``machine`` fields say how a run is executed (data loading, device, precision, memory
    layout, compilation), not what it learns (:data:`RECIPE_FIELDS`); ``flag=False`` keeps a
    field off the command line."""
    return field(default=default, metadata={"help": help, "minimum": minimum,
                                            "resumable": resumable, "per_run": per_run,
                                            "machine": machine, "flag": flag})


def run_name(model: str, preprocess: bool, seed: int = 0, input: str = "rgb") -> str:
    """Name of a run folder: ``unet_raw``, ``resnet34_unet_preprocessed``, … for seed 0 (the
    report's single run), ``unet_raw_seed1`` … for the other seeds; ``unet_raw_gray`` … for an
    input other than RGB."""
    return (f"{model}_{'preprocessed' if preprocess else 'raw'}"
            + (f"_{input}" if input != "rgb" else "") + (f"_seed{seed}" if seed else ""))


@dataclass
class TrainConfig:
    """Everything one training run depends on; the defaults are the report's settings.

    Every field is also a command-line flag of ``train`` and ``experiment`` (``--batch-size`` for
    ``batch_size``; ``Literal`` annotations give the choices), built by :mod:`lab2.ops.cli` from
    this class: a new field needs no second edit there."""

    # --- what is trained
    model: Literal["unet", "resnet34_unet", "levit_unet"] = setting(
        "unet", "the network (lab2.models; levit_unet: the report's future work)", per_run=True)
    preprocess: bool = setting(
        False, "the report's OpenCV chain (CLAHE, bilateral filter, z-score + min-max)",
        per_run=True)
    input: Literal["rgb", "gray", "edges"] = setting(
        "rgb", "what the network sees: the RGB image (the report's), its luminance, or RGB and a "
        "Canny edge map (the report's future work; lab2.preprocess.network_input)")
    image_size: int = setting(
        512, "square side in pixels; a multiple of 16 (UNet), 32 (ResNet34-UNet) or 64 "
        "(LeViT-UNet)", minimum=1)
    base_channels: int = setting(
        64, "network width: channels of the first stage (64 = the report's networks)", minimum=1)
    dropout: float = setting(0.1, "probability of every dropout layer, in [0, 1)")
    dropout_kind: Literal["element", "channel"] = setting(
        "element", "element: nn.Dropout, the report's 'a Dropout layer'; channel: nn.Dropout2d "
        "(whole feature maps), cheaper on a CPU")
    border: Literal["foreground", "background", "ignore"] = setting(
        "foreground", "what the trimap's border pixels count as")
    augment: bool = setting(True, "augment the training split (flip, affine, colour, blur)")
    # --- optimisation (the report's)
    epochs: int = setting(50, "epochs to train", minimum=1, resumable=True)
    batch_size: int = setting(8, "images per step", minimum=1, resumable=True)
    optimizer: Literal["adam", "sgd", "adamw"] = setting("adam", "the optimiser")
    lr: float = setting(1e-3, "learning rate (positive)", resumable=True)
    momentum: float = setting(0.9, "SGD momentum", minimum=0)
    weight_decay: float = setting(1e-4, "L2 weight decay", minimum=0)
    milestones: tuple[int, ...] = setting(
        (30, 50, 100, 150, 200), "epochs after which MultiStepLR multiplies the rate by gamma")
    gamma: float = setting(0.1, "MultiStepLR factor, in (0, 1]")
    loss: Literal["cross_entropy"] = setting(
        "cross_entropy", "the loss, over two classes (background, pet)")
    # --- data loading
    num_workers: int = setting(4, "data-loader worker processes (0 = the main process; at "
                               "most one per CPU core the run may use)", minimum=0,
                               resumable=True, machine=True)
    prefetch_factor: int = setting(2, "batches each worker prepares ahead", minimum=1,
                                   resumable=True, machine=True)
    max_train_samples: int | None = setting(None, "use at most this many training images "
                                            "(default: all)", minimum=1)
    max_eval_samples: int | None = setting(None, "use at most this many validation and test "
                                           "images (default: all)", minimum=1)
    subset: Literal["spread", "first"] = setting(
        "spread", "which images the two limits above keep: spread evenly over each split's list "
        "(every breed; the real lists are sorted by breed), or its first ones (what runs saved "
        "before this setting existed used)")
    # --- machine
    seed: int = setting(0, "seed of weights, shuffling and augmentation", minimum=0)
    device: Literal["auto", "cuda", "mps", "cpu"] = setting(
        "auto", "auto: CUDA, else Apple MPS, else the CPU", resumable=True, machine=True)
    amp: Literal["auto", "bf16", "fp16", "off"] = setting(
        "auto", "mixed precision; auto: bf16 where the GPU or CPU computes it natively, fp16 "
        "with loss scaling on older NVIDIA GPUs, else off (lab2.ops.machine)", resumable=True,
        machine=True)
    channels_last: Literal["auto", "on", "off"] = setting(
        "auto", "channels_last memory layout (auto: lab2.ops.machine)", resumable=True,
        machine=True)
    compile: bool = setting(False, "torch.compile the model (CUDA; off by default: whole "
                            "epochs on an H200 were not faster, benchmarks/README.md)",
                            resumable=True, machine=True)
    sync_bn: bool = setting(True, "under torchrun: BatchNorm statistics over the global batch "
                            "(synchronised across the processes)")
    profile: Literal["full", "quick", "smoke", "auto"] = setting(
        "full", "the profile these settings came from (for labels)", flag=False)

    def __post_init__(self) -> None:
        self.milestones = tuple(int(m) for m in self.milestones)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field for any value that cannot work."""
        from .models import size_multiple

        def bad(name: str, why: str):
            raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}: {why}")

        for f in fields(self):
            value, choices = getattr(self, f.name), field_choices(f.name, type(self))
            if choices and value not in choices:
                bad(f.name, f"unknown {f.name}; choose one of {', '.join(choices)}")
            minimum = f.metadata.get("minimum")
            if minimum is not None and value is not None and value < minimum:
                bad(f.name, f"must be at least {minimum}" + (" or None" if f.default is None
                                                               else ""))
        multiple = size_multiple(self.model)
        if self.image_size % multiple:
            nearest = max(multiple, round(self.image_size / multiple) * multiple)
            bad("image_size", f"{self.model} needs a multiple of {multiple} (nearest: {nearest})")
        if self.seed >= 2**32:
            bad("seed", "must be below 2**32 (NumPy takes no larger seed)")
        if not self.lr > 0:
            bad("lr", "the learning rate must be positive")
        if not 0 <= self.dropout < 1:
            bad("dropout", "must be in [0, 1)")
        if not 0 < self.gamma <= 1:
            bad("gamma", "must be in (0, 1]")
        milestones = list(self.milestones)
        if milestones != sorted(set(milestones)) or any(m < 1 for m in milestones):
            bad("milestones", "must be increasing positive epochs")

    # --- (de)serialisation
    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if "dropout_kind" not in d:   # saved before the field existed: Dropout2d was the only kind
            d = {**d, "dropout_kind": "channel"}
        if "subset" not in d:         # saved before the field existed: the first images were kept
            d = {**d, "subset": "first"}
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def run_name(self) -> str:
        return run_name(self.model, self.preprocess, self.seed, self.input)


#: Field changes of each profile relative to the report's settings.
PROFILE_OVERRIDES: dict[str, dict] = {
    "full": {},
    # the CPU profiles use channel-wise dropout: cheaper there (benchmarks/README.md)
    "quick": dict(image_size=128, epochs=15, base_channels=16, milestones=(12,),
                  max_train_samples=300, max_eval_samples=100, num_workers=0,
                  dropout_kind="channel"),
    "smoke": dict(image_size=64, epochs=2, batch_size=4, base_channels=8, milestones=(30,),
                  max_train_samples=16, max_eval_samples=8, num_workers=0,
                  dropout_kind="channel"),
}


def profile_config(profile: str, **overrides) -> TrainConfig:
    """The config of a profile (``full``, ``quick`` or ``smoke``), with single fields overridden
    (``None`` values are ignored). ``auto`` depends on the machine: resolve it first
    (:func:`lab2.ops.machine.resolve_profile`)."""
    if profile not in PROFILE_OVERRIDES:
        raise ValueError(f"profile_config needs one of {', '.join(PROFILE_OVERRIDES)}, not "
                         f"{profile!r}; resolve it with lab2.ops.machine.resolve_profile first")
    name = profile
    settings = {**PROFILE_OVERRIDES[name], "profile": name}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**settings)


@cache
def field_types(cls: type = TrainConfig) -> dict[str, Any]:
    """A config class's field annotations, resolved."""
    return get_type_hints(cls)


def field_choices(name: str, cls: type = TrainConfig) -> tuple | None:
    """The values a ``Literal``-annotated config field allows (None for other fields)."""
    kind = field_types(cls)[name]
    return get_args(kind) if get_origin(kind) is Literal else None


#: Fields that may change when a run resumes (recorded in run.json as a change at epoch N). Every
#: other field defines what is trained and how it is measured, and is fixed for the run's life.
RESUMABLE_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.metadata["resumable"])
#: Fields that define how a run learns: every field but the ones the runs of one experiment
#: differ in by design (network, preprocessing, seed), the ``machine`` ones and the profile's
#: label. Runs compared in one Table 1 should agree on all of them
#: (:func:`lab2.ops.runs.trained_with`).
RECIPE_FIELDS = tuple(f.name for f in fields(TrainConfig)
                      if f.metadata["flag"] and not f.metadata["per_run"]
                      and not f.metadata["machine"] and f.name != "seed")


def shown(value: Any) -> str:
    """A field's value as its flag takes it: ``all`` for None, ``30 50`` for milestones."""
    if value is None:
        return "all"
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    return str(value)


__all__ = ["PROFILES", "PROFILE_OVERRIDES", "RECIPE_FIELDS", "RESUMABLE_FIELDS", "TrainConfig",
           "field_choices", "field_types", "profile_config", "run_name", "setting", "shown"]
