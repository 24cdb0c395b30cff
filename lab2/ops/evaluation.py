"""Testing a trained checkpoint (:func:`lab2.train.evaluate` on its test split): Dice (mean per
image and pooled) at the training resolution and at each image's original resolution;
``metrics.json`` and a per-image CSV beside the checkpoint.

Stored metrics carry the key of what produced them — the checkpoint's content hash, the data
set's fingerprint, the split and the evaluation settings — and are reused only when all of it
matches (:func:`evaluation_key`): a Table 1 number always belongs to the weights and data it
names.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from ..config import TrainConfig
from ..models import model_for
from ..train import evaluate
from . import atomic, locks
from .atomic import file_digest, read_exact
from .checkpoint import load_checkpoint
from .fingerprint import dataset_fingerprint
from .loaders import build_datasets, make_loader
from .machine import plan_for
from .runs import check_role, other_data
from .sample import dataset_label

log = logging.getLogger(__name__)

#: What to do once a run in a folder named for another is moved aside (lab2.ops.runs.check_role).
MOVED_THEN = "test it there: python -m lab2 evaluate --checkpoint {aside}/best.pt"


def per_image_path(run_dir: str | Path, split: str = "test") -> Path:
    """A run's ``per_image_<split>.csv`` (written by :func:`save_evaluation`)."""
    return Path(run_dir) / f"per_image_{split}.csv"


def read_per_image(run_dir: str | Path, split: str = "test", sha256: str | None = None
                   ) -> dict[str, dict[str, float]]:
    """image name → {measure → value} from a run's ``per_image_<split>.csv``; ``sha256``: the
    file a result was made from (:func:`lab2.ops.atomic.read_exact`)."""
    path = per_image_path(run_dir, split)
    data = path.read_bytes() if sha256 is None else read_exact(path, sha256)
    return {row["name"]: {k: float(v) for k, v in row.items() if k != "name"}
            for row in csv.DictReader(io.StringIO(data.decode("utf-8")))}


#: Columns of ``per_image_<split>.csv``: Dice at the training size and at the photo's own size,
#: and the shape measures at the photo's own size.
PER_IMAGE_FIELDS = ("name", "dice", "dice_original", "boundary_iou", "background_fpr")


def load_trained_model(checkpoint: str | os.PathLike, device: torch.device | str = "cpu", *,
                       sha256: str | None = None) -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the network from a checkpoint's config and load its weights (eval mode);
    ``sha256``: the weights it must hold (:func:`lab2.ops.checkpoint.load_checkpoint`)."""
    state = load_checkpoint(checkpoint, sha256=sha256)
    config = TrainConfig.from_dict(state["config"])
    model = model_for(config)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config, state


#: What ``metrics.json`` keeps of :func:`lab2.train.evaluate`'s result, per split.
MEASURED = ("n_images", "dice", "dice_pooled", "dice_per_batch", "dice_original",
            "dice_pooled_original", "boundary_iou", "background_fpr", "loss")

#: Bumped when the way metrics are computed changes (stored metrics are then recomputed).
#: 2: per-batch Dice, Boundary IoU and background false-positive rate added.
#: 3: ``metrics.json`` names the content of the per-image file it summarises.
EVALUATION_VERSION = 3


def evaluation_key(checkpoint: str | os.PathLike, root, split: str, config: TrainConfig) -> dict:
    """Everything a stored metric depends on: weights (content hash), data set, split, settings."""
    return {"checkpoint_sha256": file_digest(checkpoint),
            "dataset_fingerprint": dataset_fingerprint(root), "split": split,
            "image_size": config.image_size, "border": config.border,
            "preprocess": config.preprocess, "max_samples": config.max_eval_samples,
            # which images a limit keeps; runs saved before the setting kept the first ones,
            # and their stored metrics keep the key they were written with
            **({"subset": config.subset}
               if config.max_eval_samples is not None and config.subset != "first" else {}),
            **({"input": config.input} if config.input != "rgb" else {}),
            "version": EVALUATION_VERSION}


def measure_checkpoint(checkpoint: str | os.PathLike, root, split: str = "test", *,
                       device: str = "auto", progress: bool = True,
                       max_samples: int | None = -1) -> tuple[dict, list[list]]:
    """Evaluate ``checkpoint`` on ``split`` of the data set under ``root``; write nothing.

    ``max_samples=-1`` keeps the run's own ``max_eval_samples``; ``None`` evaluates the whole
    split. Returns the metrics and the per-image rows (:data:`PER_IMAGE_FIELDS`).
    """
    checkpoint = Path(checkpoint)
    model, config, state = load_trained_model(checkpoint)
    check_role(checkpoint.parent, config, what=checkpoint.name, then=MOVED_THEN)
    config = config.replace(device=device)
    if max_samples != -1:
        config = config.replace(max_eval_samples=max_samples)
    plan, _ = plan_for(config)
    plan.place(model)
    dataset = build_datasets(config, root, splits=(split,), progress=progress)[split]
    result = evaluate(model, make_loader(dataset, config, train=False, device=plan.device),
                      plan, original=dataset, progress=progress, desc=f"evaluate {split}")
    metrics = {
        "split": split, **{k: result[k] for k in MEASURED}, "image_size": config.image_size,
        "model": config.model, "preprocess": config.preprocess, "profile": config.profile,
        "data": dataset_label(root), "checkpoint": checkpoint.name, "epoch": state["epoch"],
        "key": evaluation_key(checkpoint, root, split, config),
    }
    why = other_data(state.get("data"), metrics["key"]["dataset_fingerprint"], root)
    if why:
        log.warning("%s %s; these numbers are of the data in %s", checkpoint, why, root)
    rows = [[name, f"{dice:.6f}", f"{result['per_image_original'][name]:.6f}",
             *(f"{v:.6f}" for v in result["per_image_shape"][name])]
            for name, dice in result["per_image"].items()]
    return metrics, rows


def metrics_path(checkpoint: str | os.PathLike) -> Path:
    """``metrics.json`` beside ``checkpoint``."""
    return Path(checkpoint).parent / "metrics.json"


def stored_metrics(path: Path) -> dict:
    """What a ``metrics.json`` holds, split → entry ({} when it is missing or not lab2's)."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def save_evaluation(checkpoint: str | os.PathLike, metrics: dict, rows: list[list]) -> dict:
    """Write ``per_image_<split>.csv`` and ``metrics.json`` (one entry per split, naming the
    per-image file's SHA-256) beside the checkpoint; return the split's entry as stored."""
    fix = "the numbers above were computed but not saved; copy the run folder somewhere writable"
    path = metrics_path(checkpoint)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(PER_IMAGE_FIELDS)
    writer.writerows(rows)
    text = buf.getvalue()
    # under the run folder's lock (the experiment, which holds it, tests its runs here): two
    # evaluations writing at once could leave one's per-image file beside the other's metrics
    folder = path.parent
    name = per_image_path(folder, metrics["split"]).name
    try:
        with locks.own_folder(folder, fix=fix):
            stored = stored_metrics(path)
            # the pair is written one file after the other: a kill between the two leaves a
            # per-image file that metrics.json does not name, which is then never reused (nor
            # read as its own)
            digest = atomic.write_texts(folder, {name: text}, fix)[name]
            entry = stored[metrics["split"]] = {**metrics, "per_image_sha256": digest}
            atomic.write_json(path, stored, fix=fix)   # last: the per-image file it summarises
    except locks.BusyError:
        raise locks.BusyError(f"{folder} is in use by {locks.owner_of(locks.folder_lock(folder))}"
                              ": the numbers above were not saved; evaluate again once it has "
                              "finished") from None
    return entry


def evaluate_checkpoint(checkpoint: str | os.PathLike, root, split: str = "test", *,
                        device: str = "auto", progress: bool = True,
                        max_samples: int | None = -1, reuse: bool = False) -> dict:
    """:func:`measure_checkpoint` then :func:`save_evaluation`; returns the split's metrics.

    With ``reuse`` the stored metrics are returned instead when their key matches this
    checkpoint, data set, split and settings exactly, and the per-image file beside them is the
    one they summarise.
    """
    if reuse:
        stored = stored_metrics(metrics_path(checkpoint)).get(split)
        if stored is not None:
            config = TrainConfig.from_dict(load_checkpoint(checkpoint, mmap=True)["config"])
            check_role(Path(checkpoint).parent, config, what=Path(checkpoint).name,
                       then=MOVED_THEN)
            if max_samples != -1:
                config = config.replace(max_eval_samples=max_samples)
            per_image = per_image_path(Path(checkpoint).parent, split)
            if (stored.get("key") == evaluation_key(checkpoint, root, split, config)
                    and per_image.is_file()
                    and stored.get("per_image_sha256") == file_digest(per_image)):
                return stored
    metrics, rows = measure_checkpoint(checkpoint, root, split, device=device,
                                       progress=progress, max_samples=max_samples)
    return save_evaluation(checkpoint, metrics, rows)


def format_metrics(m: dict) -> str:
    return (f"{m['model']} ({'preprocessed' if m['preprocess'] else 'raw'}), {m['split']} split of "
            f"the {m['data']} ({m['n_images']} images, profile {m['profile']}):\n"
            f"  at {m['image_size']}x{m['image_size']}: average Dice {m['dice']:.4f}, "
            f"pooled Dice {m['dice_pooled']:.4f}, per-batch Dice {m['dice_per_batch']:.4f}\n"
            f"  at original resolution: average Dice {m['dice_original']:.4f}, "
            f"pooled Dice {m['dice_pooled_original']:.4f}, Boundary IoU "
            f"{m['boundary_iou']:.4f}, background false-positive rate {m['background_fpr']:.4f}")
