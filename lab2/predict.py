"""Prediction on any photo of any size: the pet mask a trained network gives, at the photo's
own size, and an overlay to look at (``python -m lab2 predict`` writes both for files:
:mod:`lab2.ops.predict`)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import normalize_images
from .config import TrainConfig
from .data.resize import resize_image
from .preprocess import PreprocessParams, network_input, preprocess

PET_COLOUR = (255, 64, 32)  # RGB


@torch.no_grad()
def predict_margin(model: nn.Module, config: TrainConfig, image: np.ndarray) -> np.ndarray:
    """Pet logit minus background logit (H, W) float32 for a uint8 RGB image of any size, at
    its own size: the pet's softmax probability is ``sigmoid(margin)``, above 0.5 where the
    margin is above 0.

    The image goes through what training saw: resize to ``config.image_size``, the preprocessing
    chain when the run used it, normalisation. The margin is resized back bilinearly, as
    evaluation resizes both logits (bilinear resizing is linear: the same values, in one channel
    instead of two, for a 48-megapixel photo 200 MB instead of 800 MB and a softmax).
    """
    h, w = image.shape[:2]
    x = resize_image(image, (config.image_size, config.image_size))
    if config.preprocess:
        x = preprocess(x, PreprocessParams())
    x = network_input(x, config.input)                             # (S, S, C)
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(device)
    batch = normalize_images(x)                                    # (1, C, S, S), as in training
    logits = model.eval()(batch).float()                          # (1, 2, S, S)
    margin = logits[:, 1:] - logits[:, :1]                        # (1, 1, S, S)
    margin = F.interpolate(margin, size=(h, w), mode="bilinear", align_corners=False)
    return margin[0, 0].cpu().numpy()                              # (H, W)


def predict_mask(model: nn.Module, config: TrainConfig, image: np.ndarray) -> np.ndarray:
    """Predicted pet mask (H, W) uint8 0/1 at the image's own size (probability > 0.5)."""
    return (predict_margin(model, config, image) > 0).astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with the predicted pet tinted and outlined (uint8 RGB). Computed in uint8 by
    OpenCV: a 48-megapixel photo needs no float copy of 576 MB."""
    pet = (mask > 0).astype(np.uint8)
    tint = (*(alpha * c for c in PET_COLOUR), 0.0)                # an OpenCV scalar (4 values)
    tinted = cv2.add(cv2.convertScaleAbs(image, alpha=1 - alpha), tint)   # (1 - a)·image + a·tint
    out = cv2.copyTo(tinted, pet, image.copy())                   # tinted where the pet is
    contours, _ = cv2.findContours(pet, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (255, 255, 0), max(1, min(image.shape[:2]) // 200))
    return out
