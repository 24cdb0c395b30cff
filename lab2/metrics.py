"""Segmentation metrics as pure functions on tensors: foreground Dice per image and pooled.

Dice = 2·Σ(pred·true) / (Σpred + Σtrue) on the foreground (docs/report.md, "Evaluation").

* per-image Dice, averaged over a split — the report's headline "average Dice";
* pooled Dice — the sums taken over every pixel of the split first.

An image (or split) where both prediction and truth are empty scores 1. Pixels whose target is
``ignore_index`` count in neither sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class DiceMeter:
    """Accumulates per-image counts over batches; reports mean per-image and pooled Dice."""

    ignore_index: int = IGNORE_INDEX
    names: list[str] = field(default_factory=list)
    counts: list[torch.Tensor] = field(default_factory=list)

    def update(self, pred: torch.Tensor, target: torch.Tensor,
               names: list[str] | None = None) -> None:
        self.counts.append(dice_counts(pred.cpu(), target.cpu(), self.ignore_index))
        self.names.extend(names or [""] * pred.shape[0])

    def _all(self) -> torch.Tensor:
        return torch.cat(self.counts) if self.counts else torch.zeros(0, 3, dtype=torch.float64)

    @property
    def per_image(self) -> torch.Tensor:
        return dice_from_counts(self._all())

    @property
    def mean(self) -> float:
        """Average per-image Dice (the report's headline)."""
        per_image = self.per_image
        return float(per_image.mean()) if len(per_image) else float("nan")

    @property
    def pooled(self) -> float:
        return float(dice_from_counts(self._all().sum(0)))
