"""Dice per image and pooled, against hand-computed cases and an independent implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab2.data import IGNORE_INDEX
from lab2.metrics import DiceMeter, dice_per_image, pooled_dice


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def test_hand_computed_dice():
    pred = t([[[1, 1, 0, 0]]])
    true = t([[[1, 0, 1, 0]]])
    assert dice_per_image(pred, true).tolist() == [0.5]          # 2·1 / (2 + 2)
    assert dice_per_image(true, true).tolist() == [1.0]
    assert dice_per_image(1 - true, true).tolist() == [0.0]


def test_empty_prediction_and_truth_score_one_and_empty_prediction_alone_zero():
    empty = t([[[0, 0], [0, 0]]])
    assert dice_per_image(empty, empty).tolist() == [1.0]
    assert pooled_dice(empty, empty) == 1.0
    assert dice_per_image(empty, t([[[0, 1], [0, 0]]])).tolist() == [0.0]


def test_ignored_pixels_count_in_neither_sum():
    pred = t([[[1, 1, 1, 0]]])
    true = t([[[1, IGNORE_INDEX, IGNORE_INDEX, 0]]])
    assert dice_per_image(pred, true).tolist() == [1.0]


def test_mean_of_per_image_differs_from_pooled():
    pred = t([[[1, 1, 1, 1]], [[0, 0, 0, 0]]])
    true = t([[[1, 1, 1, 1]], [[1, 0, 0, 0]]])
    assert dice_per_image(pred, true).tolist() == [1.0, 0.0]
    assert pooled_dice(pred, true) == pytest.approx(2 * 4 / (4 + 5))


def reference_dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Loop over pixels, the textbook way."""
    inter = p_sum = t_sum = 0
    for p, g in zip(pred.ravel(), true.ravel(), strict=True):
        if g == IGNORE_INDEX:
            continue
        inter += int(p == 1 and g == 1)
        p_sum += int(p == 1)
        t_sum += int(g == 1)
    return 1.0 if p_sum + t_sum == 0 else 2 * inter / (p_sum + t_sum)


def test_against_an_independent_implementation_on_random_masks():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 2, (6, 9, 11))
    true = rng.choice([0, 1, IGNORE_INDEX], size=(6, 9, 11), p=[0.5, 0.4, 0.1])
    ours = dice_per_image(torch.from_numpy(pred), torch.from_numpy(true))
    expected = [reference_dice(p, g) for p, g in zip(pred, true, strict=True)]
    assert np.allclose(ours.numpy(), expected)
    assert pooled_dice(torch.from_numpy(pred), torch.from_numpy(true)) == pytest.approx(
        reference_dice(pred, true))


def test_meter_over_batches_equals_one_shot():
    rng = np.random.default_rng(1)
    pred = torch.from_numpy(rng.integers(0, 2, (10, 8, 8)))
    true = torch.from_numpy(rng.integers(0, 2, (10, 8, 8)))
    meter = DiceMeter()
    for start in range(0, 10, 3):
        meter.update(pred[start:start + 3], true[start:start + 3])
    assert meter.mean == pytest.approx(float(dice_per_image(pred, true).mean()))
    assert meter.pooled == pytest.approx(pooled_dice(pred, true))


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ"):
        dice_per_image(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))
