"""Resizing to the training size: images with area (shrinking) or linear (enlarging)
interpolation, masks and trimaps with nearest neighbour so labels stay labels."""

from __future__ import annotations

import cv2
import numpy as np


def as_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """``512`` → ``(512, 512)``; ``(h, w)`` stays."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    shrink = image.shape[0] * image.shape[1] >= h * w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    return cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)


def resize_pair(image: np.ndarray, labels: np.ndarray, size: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image and its mask (or trimap) to ``size`` = (h, w)."""
    return resize_image(image, size), resize_labels(labels, size)
