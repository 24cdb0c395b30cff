"""Prediction on any photo of any size: a mask PNG and an overlay PNG per image."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import normalize_images
from .config import TrainConfig
from .data.reading import check_image, read_rgb, SKIPPED
from .data.resize import resize_image
from .evaluate import load_trained_model
from .preprocess import PreprocessParams, preprocess

PET_COLOUR = (255, 64, 32)  # RGB


@torch.no_grad()
def predict_probability(model: nn.Module, config: TrainConfig, image: np.ndarray) -> np.ndarray:
    """Pet probability (H, W) float32 for a uint8 RGB image of any size, at its own size.

    The image goes through what training saw: resize to ``config.image_size``, the preprocessing
    chain when the run used it, normalisation; the logits are resized back bilinearly.
    """
    h, w = image.shape[:2]
    x = resize_image(image, (config.image_size, config.image_size))
    if config.preprocess:
        x = preprocess(x, PreprocessParams())
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(device)
    batch = normalize_images(x)                                    # (1, 3, S, S), as in training
    logits = model.eval()(batch).float()                          # (1, 2, S, S)
    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits.softmax(1)[0, 1].cpu().numpy()


def predict_mask(model: nn.Module, config: TrainConfig, image: np.ndarray) -> np.ndarray:
    """Predicted pet mask (H, W) uint8 0/1 at the image's own size (probability > 0.5)."""
    return (predict_probability(model, config, image) > 0.5).astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with the predicted pet tinted and outlined (uint8 RGB)."""
    out = image.astype(np.float32)
    tint = np.array(PET_COLOUR, np.float32)
    pet = mask.astype(bool)
    out[pet] = (1 - alpha) * out[pet] + alpha * tint
    out = out.astype(np.uint8)
    contours, _ = cv2.findContours(pet.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (255, 255, 0), max(1, min(image.shape[:2]) // 200))
    return out


def predict_files(checkpoint: str | os.PathLike, images: list[str | os.PathLike],
                  out_dir: str | os.PathLike) -> list[Path]:
    """Write ``<name>_mask.png`` (0 background, 255 pet) and ``<name>_overlay.png`` per image."""
    model, config, _ = load_trained_model(checkpoint)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in map(Path, images):
        if not path.is_file():
            raise FileNotFoundError(f"no image at {path}")
        status, problem = check_image(path)
        if status == SKIPPED:
            raise ValueError(f"cannot read {path}: {problem}")
        image = read_rgb(path)
        mask = predict_mask(model, config, image)
        mask_path = out_dir / f"{path.stem}_mask.png"
        overlay_path = out_dir / f"{path.stem}_overlay.png"
        cv2.imwrite(str(mask_path), mask * 255)
        cv2.imwrite(str(overlay_path), cv2.cvtColor(overlay(image, mask), cv2.COLOR_RGB2BGR))
        written += [mask_path, overlay_path]
    return written
