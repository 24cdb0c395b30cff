"""Dice per image and pooled, against hand-computed cases and an independent implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab2.data.masks import IGNORE_INDEX
from lab2.metrics import DiceMeter, dice_per_image, pooled_dice

pytestmark = pytest.mark.core


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


# ---- per-batch Dice, Boundary IoU, background false positives ----------------------------------

def test_per_batch_dice_is_the_mean_of_each_batchs_pooled_dice():
    from lab2.metrics import batch_dice
    # (intersection, Σpred, Σtrue) per image
    counts = torch.tensor([[1, 2, 2], [0, 0, 4], [3, 3, 3]], dtype=torch.float64)
    # batch 1 = images 1-2 pooled: 2·1 / (2 + 6) = 0.25; batch 2 = image 3: 1.0
    assert batch_dice(counts, batch_size=2) == pytest.approx((0.25 + 1.0) / 2)
    assert batch_dice(counts, batch_size=8) == pytest.approx(2 * 4 / (5 + 9))   # one batch
    meter = DiceMeter()
    meter.counts = [counts]
    assert meter.per_batch(2) == pytest.approx(0.625)


def slow_band(mask: np.ndarray, ratio: float = 0.02) -> np.ndarray:
    """Boundary band by its definition: a mask pixel whose d-neighbourhood (Chebyshev distance,
    what d erosions by a 3x3 square reach) holds background or leaves the image."""
    h, w = mask.shape
    d = max(1, int(round(ratio * np.hypot(h, w))))
    band = np.zeros_like(mask, dtype=bool)
    for y, x in zip(*np.nonzero(mask), strict=True):
        y0, y1, x0, x1 = y - d, y + d + 1, x - d, x + d + 1
        outside = y0 < 0 or x0 < 0 or y1 > h or x1 > w
        band[y, x] = outside or not mask[max(0, y0):y1, max(0, x0):x1].all()
    return band


def slow_boundary_iou(pred: np.ndarray, target: np.ndarray) -> float:
    p, t = slow_band(pred == 1), slow_band(target == 1)
    union = (p | t).sum()
    return 1.0 if union == 0 else (p & t).sum() / union


def square(top: int, left: int, side: int = 20, size: int = 100) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[top:top + side, left:left + side] = 1
    return mask


def test_boundary_iou_on_hand_built_masks():
    from lab2.metrics import boundary_band, boundary_iou
    a = square(40, 40)                        # 100x100 image: d = round(0.02 * 141.4) = 3
    assert boundary_band(a).sum() == 20 * 20 - 14 * 14          # a ring 3 pixels wide
    assert boundary_iou(a, a) == 1.0
    # shifted one column: the rings share 170 pixels of 238 (counted by hand)
    assert boundary_iou(square(40, 41), a) == pytest.approx(170 / 238)
    empty = np.zeros_like(a)
    assert boundary_iou(empty, empty) == 1.0
    assert boundary_iou(empty, a) == 0.0 and boundary_iou(a, empty) == 0.0
    # a filled image's band is its outer frame (the outside counts as background)
    assert boundary_band(np.ones((50, 50), np.uint8)).sum() == 50 * 50 - 48 * 48


def test_boundary_iou_matches_a_slow_implementation_on_random_shapes():
    import cv2

    from lab2.metrics import boundary_iou
    rng = np.random.default_rng(0)
    for _ in range(12):
        h, w = rng.integers(24, 90, size=2)
        masks = []
        for _ in range(2):
            mask = np.zeros((h, w), np.uint8)
            for _ in range(rng.integers(1, 4)):
                centre = tuple(int(v) for v in (rng.integers(0, w), rng.integers(0, h)))
                axes = tuple(int(v) for v in rng.integers(3, 25, size=2))
                cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            masks.append(mask)
        assert boundary_iou(*masks) == pytest.approx(slow_boundary_iou(*masks))


def test_background_false_positive_rate():
    from lab2.metrics import IGNORE_INDEX, background_fpr
    target = np.array([[0, 0, 0, 0], [1, 1, IGNORE_INDEX, 0]])
    pred = np.array([[1, 0, 0, 0], [1, 0, 1, 1]])
    assert background_fpr(pred, target) == pytest.approx(2 / 5)   # ignored pixel counts nowhere
    assert background_fpr(pred, np.ones_like(target)) == 0.0       # no background at all


def test_the_meter_collects_shape_measures_per_image():
    from lab2.metrics import background_fpr, boundary_iou
    a, b = square(40, 40), square(40, 41)
    meter = DiceMeter(shape=True)
    meter.update(torch.from_numpy(np.stack([a, b])).long(),
                 torch.from_numpy(np.stack([a, a])).long(), ["a", "b"])
    assert meter.boundary == [1.0, pytest.approx(boundary_iou(b, a))]
    assert meter.fpr == [0.0, pytest.approx(background_fpr(b, a))]


def ring_ignoring_boundary_iou(pred: np.ndarray, target: np.ndarray, ignore: int) -> float:
    """Boundary IoU with an ignored ring, written independently of lab2: the ring takes the
    prediction's values in the target, both bands are drawn (slow_band), and only valid pixels
    count."""
    filled = np.where(target == ignore, pred, target)
    valid = target != ignore
    p, t = slow_band(pred == 1) & valid, slow_band(filled == 1) & valid
    union = (p | t).sum()
    return 1.0 if union == 0 else (p & t).sum() / union


def test_boundary_iou_neither_rewards_nor_penalises_the_ignored_ring():
    """With --border ignore the trimap's border ring is IGNORE_INDEX: a prediction right on every
    valid pixel scores 1.0 whatever it says in the ring (it scored 0.03 to 0.9)."""
    import cv2

    from lab2.metrics import IGNORE_INDEX, boundary_iou
    rng = np.random.default_rng(1)
    for _ in range(10):
        h, w = (int(v) for v in rng.integers(40, 90, size=2))
        pet = np.zeros((h, w), np.uint8)
        cv2.ellipse(pet, (w // 2, h // 2), (int(rng.integers(8, w // 3)),
                                            int(rng.integers(8, h // 3))),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
        ring = cv2.dilate(pet, np.ones((5, 5), np.uint8)) != cv2.erode(pet, np.ones((5, 5),
                                                                                   np.uint8))
        target = np.where(ring, IGNORE_INDEX, pet).astype(np.int64)
        for inside_ring in (0, 1, "random"):
            guess = (rng.integers(0, 2, size=(h, w)) if inside_ring == "random"
                     else np.full((h, w), inside_ring))
            pred = np.where(ring, guess, pet)
            assert boundary_iou(pred, target) == 1.0
        wrong = pet.copy()
        wrong[h // 2, :] = 0                              # a cut through the pet: not perfect
        pred = np.where(ring, rng.integers(0, 2, size=(h, w)), wrong)
        expected = ring_ignoring_boundary_iou(pred, target, IGNORE_INDEX)
        assert expected < 1.0
        assert boundary_iou(pred, target) == pytest.approx(expected)
