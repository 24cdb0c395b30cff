"""Segmentation metrics as pure functions on tensors: foreground Dice per image and pooled.

Dice = 2·Σ(pred·true) / (Σpred + Σtrue) on the foreground (docs/report.md, "Evaluation").

* per-image Dice, averaged over a split — the report's headline "average Dice";
* pooled Dice — the sums taken over every pixel of the split first;
* per-batch Dice — the pooled Dice of each batch of 8 consecutive test images, averaged: what
  several course codebases print, so their numbers can be compared.

And two measures of the report's qualitative claims, per image:

* Boundary IoU (Cheng, Girshick, Dollár, Berg & Kirillov, "Boundary IoU: Improving Object-Centric
  Image Segmentation Evaluation", CVPR 2021): the IoU of the two masks' boundary bands, each band
  being the mask's pixels within d of its contour, d = 2 % of the image diagonal — sensitive to
  edges and thin parts (ears, tails) where Dice hardly moves;
* the false-positive rate on background pixels: the share of true background called pet.

An image (or split) where both prediction and truth are empty scores 1 (Dice, Boundary IoU).
Pixels whose target is ``ignore_index`` count nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from .data.masks import IGNORE_INDEX


def dice_counts(pred: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX
                ) -> torch.Tensor:
    """Per image: (Σ pred·true, Σ pred, Σ true) over valid pixels → (B, 3) float64.

    ``pred`` holds 0/1 predictions and ``target`` 0/1 (or ``ignore_index``), both (B, H, W).
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    valid = target != ignore_index
    p = (pred == 1) & valid
    t = (target == 1) & valid
    dims = tuple(range(1, pred.ndim))
    return torch.stack([(p & t).sum(dims), p.sum(dims), t.sum(dims)], dim=1).double()


def dice_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """Dice from (…, 3) counts; 1 where both prediction and truth are empty."""
    intersection, pred_sum, true_sum = counts.unbind(-1)
    denominator = pred_sum + true_sum
    return torch.where(denominator > 0, 2 * intersection / denominator.clamp(min=1),
                       torch.ones_like(denominator))


def dice_per_image(pred: torch.Tensor, target: torch.Tensor,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Foreground Dice of each image, (B,)."""
    return dice_from_counts(dice_counts(pred, target, ignore_index))


def image_dice(pred: np.ndarray, target: np.ndarray,
               ignore_index: int = IGNORE_INDEX) -> float:
    """Foreground Dice of one (H, W) prediction against its mask, numpy in."""
    return float(dice_per_image(torch.from_numpy(np.asarray(pred)).long()[None],
                                torch.from_numpy(np.asarray(target)).long()[None],
                                ignore_index)[0])


def pooled_dice(pred: torch.Tensor, target: torch.Tensor,
                ignore_index: int = IGNORE_INDEX) -> float:
    """Foreground Dice of all pixels together (the sums over the batch first)."""
    return float(dice_from_counts(dice_counts(pred, target, ignore_index).sum(0)))


def batch_dice(counts: torch.Tensor, batch_size: int = 8) -> float:
    """Mean over consecutive batches of ``batch_size`` images (the last one may be smaller) of
    each batch's pooled Dice, from per-image (N, 3) counts in loader order."""
    if len(counts) == 0:
        return float("nan")
    batches = torch.stack([c.sum(0) for c in counts.split(batch_size)])
    return float(dice_from_counts(batches).mean())


#: Boundary band width as a share of the image diagonal (Cheng et al. 2021).
BOUNDARY_DILATION_RATIO = 0.02


def boundary_band(mask: np.ndarray, dilation_ratio: float = BOUNDARY_DILATION_RATIO
                  ) -> np.ndarray:
    """The pixels of a binary (H, W) mask within d of its contour, d = max(1, round(ratio ×
    image diagonal)), as the paper's reference code computes it: the mask minus its erosion by
    a 3×3 square repeated d times, the image's outside counting as background."""
    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * np.hypot(h, w))))
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:h + 1, 1:w + 1]
    return (mask.astype(bool)) & ~eroded.astype(bool)


def boundary_iou(pred: np.ndarray, target: np.ndarray, ignore_index: int = IGNORE_INDEX,
                 dilation_ratio: float = BOUNDARY_DILATION_RATIO) -> float:
    """Boundary IoU of one (H, W) prediction against its mask: 1 when both are empty.

    Ignored target pixels (the trimap's border ring under ``--border ignore``) take the
    prediction's values before the two bands are drawn, and then count in neither band: a
    prediction is neither rewarded nor penalised for what it says there, so one that is right
    on every valid pixel scores 1. (Drawn with the ring as background, the true band ran along
    the ring's inner edge, and a perfect prediction scored anywhere from 0.03 to 0.9.)"""
    pred, target = np.asarray(pred), np.asarray(target)
    valid = target != ignore_index
    filled = np.where(valid, target, pred)
    p = boundary_band(pred == 1, dilation_ratio) & valid
    t = boundary_band(filled == 1, dilation_ratio) & valid
    union = np.count_nonzero(p | t)
    return 1.0 if union == 0 else np.count_nonzero(p & t) / union


def background_fpr(pred: np.ndarray, target: np.ndarray,
                   ignore_index: int = IGNORE_INDEX) -> float:
    """Share of the true background pixels predicted as pet (0 when there is no background)."""
    pred, target = np.asarray(pred), np.asarray(target)
    background = target == 0
    n = np.count_nonzero(background)
    return 0.0 if n == 0 else np.count_nonzero((pred == 1) & background) / n


#: The per-image measures Table 1 compares: column of ``per_image_test.csv`` → (label, higher is
#: better).
MEASURES = {"dice": ("Dice", True), "boundary_iou": ("Boundary IoU", True),
            "background_fpr": ("background false-positive rate", False)}


@dataclass
class DiceMeter:
    """Accumulates per-image counts over batches; reports mean per-image, pooled and per-batch
    Dice, and with ``shape=True`` each image's Boundary IoU and background false-positive rate."""

    ignore_index: int = IGNORE_INDEX
    shape: bool = False
    names: list[str] = field(default_factory=list)
    counts: list[torch.Tensor] = field(default_factory=list)
    boundary: list[float] = field(default_factory=list)
    fpr: list[float] = field(default_factory=list)

    def update(self, pred: torch.Tensor, target: torch.Tensor,
               names: list[str] | None = None) -> None:
        pred, target = pred.cpu(), target.cpu()
        self.counts.append(dice_counts(pred, target, self.ignore_index))
        self.names.extend(names or [""] * pred.shape[0])
        if self.shape:
            for p, t in zip(pred.numpy(), target.numpy(), strict=True):
                self.boundary.append(boundary_iou(p, t, self.ignore_index))
                self.fpr.append(background_fpr(p, t, self.ignore_index))

    def per_batch(self, batch_size: int = 8) -> float:
        """Per-batch Dice over batches of ``batch_size`` in the order the images came."""
        return batch_dice(self.image_counts, batch_size)

    @property
    def image_counts(self) -> torch.Tensor:
        """(N, 3) counts of every image so far, in the order they came."""
        return torch.cat(self.counts) if self.counts else torch.zeros(0, 3, dtype=torch.float64)

    @property
    def per_image(self) -> torch.Tensor:
        return dice_from_counts(self.image_counts)

    @property
    def mean(self) -> float:
        """Average per-image Dice (the report's headline)."""
        per_image = self.per_image
        return float(per_image.mean()) if len(per_image) else float("nan")

    @property
    def pooled(self) -> float:
        return float(dice_from_counts(self.image_counts.sum(0)))
