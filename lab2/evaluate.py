"""Testing a trained checkpoint: Dice (mean per image and pooled) at the training resolution and
at each image's original resolution; ``metrics.json`` and a per-image CSV beside the checkpoint."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import torch
from torch import nn

from . import atomic
from .checkpoint import load_checkpoint
from .config import TrainConfig
from .data.sample import dataset_label
from .train import Step, build_datasets, evaluate_model, make_loader, model_for


def load_trained_model(checkpoint: str | os.PathLike, device: torch.device | str = "cpu"
                       ) -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the network from a checkpoint's config and load its weights (eval mode)."""
    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(state["config"])
    model = model_for(config)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config, state


def evaluate_checkpoint(checkpoint: str | os.PathLike, root, split: str = "test", *,
                        device: str = "auto", progress: bool = True,
                        max_samples: int | None = -1) -> dict:
    """Evaluate ``checkpoint`` on ``split`` of the data set under ``root``.

    ``max_samples=-1`` keeps the run's own ``max_eval_samples``; ``None`` evaluates the whole
    split. Writes ``metrics.json`` (one entry per split) and ``per_image_<split>.csv`` beside the
    checkpoint and returns the split's metrics.
    """
    checkpoint = Path(checkpoint)
    model, config, state = load_trained_model(checkpoint)
    config = config.replace(device=device)
    if max_samples != -1:
        config = config.replace(max_eval_samples=max_samples)
    step = Step.for_config(config)
    step.place(model)
    dataset = build_datasets(config, root, splits=(split,), progress=progress)[split]
    result = evaluate_model(model, make_loader(dataset, config, train=False, device=step.device),
                            step, original=dataset, progress=progress, desc=f"evaluate {split}")
    metrics = {
        "split": split, "n_images": result["n_images"],
        "dice": result["dice"], "dice_pooled": result["dice_pooled"],
        "dice_original": result["dice_original"],
        "dice_pooled_original": result["dice_pooled_original"],
        "loss": result["loss"], "image_size": config.image_size,
        "model": config.model, "preprocess": config.preprocess, "profile": config.profile,
        "data": dataset_label(root), "checkpoint": checkpoint.name, "epoch": state["epoch"],
        "checkpoint_mtime": checkpoint.stat().st_mtime,
    }
    path = checkpoint.parent / "metrics.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    stored[split] = metrics
    atomic.write_json(path, stored)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["name", "dice", "dice_original"])
    for name, dice in result["per_image"].items():
        writer.writerow([name, f"{dice:.6f}", f"{result['per_image_original'][name]:.6f}"])
    atomic.write_text(checkpoint.parent / f"per_image_{split}.csv", buf.getvalue())
    return metrics


def format_metrics(m: dict) -> str:
    return (f"{m['model']} ({'preprocessed' if m['preprocess'] else 'raw'}), {m['split']} split of "
            f"the {m['data']} ({m['n_images']} images, profile {m['profile']}):\n"
            f"  at {m['image_size']}x{m['image_size']}: average Dice {m['dice']:.4f}, "
            f"pooled Dice {m['dice_pooled']:.4f}\n"
            f"  at original resolution: average Dice {m['dice_original']:.4f}, "
            f"pooled Dice {m['dice_pooled_original']:.4f}")
