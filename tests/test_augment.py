"""Augmentation: labels stay valid, image and mask stay aligned, seeds make it repeatable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab2.augment import (
    MEAN,
    STD,
    AugmentParams,
    build_eval_transforms,
    build_train_transforms,
    normalize_images,
)
from lab2.data.masks import IGNORE_INDEX
from lab2.ops.loaders import open_dataset

pytestmark = pytest.mark.core

GEOMETRY_ONLY = AugmentParams(p_hflip=0.5, p_affine=1.0, p_blur=0, p_color=0,
                              p_brightness_contrast=0)


def square_scene(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A dark image with a bright square left of centre, and the square as the mask."""
    image = np.full((size, size, 3), 20, np.uint8)
    mask = np.zeros((size, size), np.uint8)
    image[20:36, 8:24] = 240
    mask[20:36, 8:24] = 1
    return image, mask


def test_flipped_image_and_mask_stay_aligned():
    image, mask = square_scene()
    flip = build_train_transforms(AugmentParams(p_hflip=1.0, p_affine=0, p_blur=0, p_color=0,
                                                p_brightness_contrast=0), seed=0, normalize=False)
    out = flip(image=image, mask=mask)
    assert out["mask"][20:36, 40:56].all() and not out["mask"][:, :32].any()  # the square moved
    assert np.array_equal(out["image"][..., 0] > 128, out["mask"] == 1)


@pytest.mark.parametrize("seed", range(10))
def test_bright_square_moves_with_its_mask_under_any_geometry(seed):
    image, mask = square_scene()
    out = build_train_transforms(GEOMETRY_ONLY, seed=seed, normalize=False)(image=image, mask=mask)
    bright, labelled = out["image"][..., 0] > 128, out["mask"] == 1
    iou = (bright & labelled).sum() / max(1, (bright | labelled).sum())
    assert labelled.sum() > 50 and iou > 0.85


@pytest.mark.parametrize("labels", [(0, 1), (0, 1, IGNORE_INDEX)])
def test_augmented_masks_hold_only_valid_labels(labels):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    mask = rng.choice(np.array(labels, np.uint8), size=(64, 80))
    transform = build_train_transforms(seed=1)
    for _ in range(30):
        out = transform(image=image, mask=mask)
        assert set(np.unique(out["mask"]).tolist()) <= set(labels)
        assert out["image"].dtype == np.float32 and out["image"].shape == (64, 80, 3)


def test_same_seed_same_augmentation_other_seed_other():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    mask = (rng.random((48, 48)) > 0.5).astype(np.uint8)
    runs = [[build_train_transforms(seed=s)(image=image, mask=mask)["image"] for _ in range(3)]
            for s in (7, 7, 8)]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], runs[2], strict=True))


def test_eval_transform_only_normalises():
    image = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    mask = np.ones((16, 16), np.uint8)
    out = build_eval_transforms()(image=image, mask=mask)
    expected = (image / 255.0 - np.array(MEAN)) / np.array(STD)
    assert np.allclose(out["image"], expected, atol=1e-5)
    assert np.array_equal(out["mask"], mask)


def test_dataset_with_train_transforms_yields_normalised_tensors(sample_root):
    ds = open_dataset(sample_root, "train", image_size=64,
                               transform=build_train_transforms(seed=0), progress=False)
    image, mask, _ = ds[0]
    assert image.shape == (3, 64, 64) and image.min() < 0  # normalised, not 0–1
    assert set(mask.unique().tolist()) <= {0, 1}


def test_batch_normalisation_on_the_device_matches_the_per_image_transform():
    images = np.random.default_rng(3).integers(0, 256, (4, 24, 20, 3), dtype=np.uint8)
    per_image = np.stack([build_eval_transforms()(image=im)["image"] for im in images])
    batch = normalize_images(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    assert batch.dtype == torch.float32
    assert np.allclose(batch.numpy().transpose(0, 2, 3, 1), per_image, atol=1e-5)


def test_training_batches_travel_as_uint8_and_arrive_normalised(sample_root):
    from lab2.train import DevicePlan
    plain = open_dataset(sample_root, "train", image_size=64,
                                  transform=build_eval_transforms(), progress=False)
    compact = open_dataset(sample_root, "train", image_size=64, progress=False,
                                    uint8=True)
    image, mask, name = compact[0]
    assert image.dtype == mask.dtype == torch.uint8 and name == plain[0][2]
    for channels_last in (False, True):
        images, masks = DevicePlan(torch.device("cpu"), None, channels_last).inputs(image[None],
                                                                              mask[None])
        assert masks.dtype == torch.long and torch.equal(masks[0], plain[0][1])
        assert torch.allclose(images[0], plain[0][0], atol=1e-5)
        assert images.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_each_transform_of_a_seeded_pipeline_draws_its_own_numbers():
    # albumentations' Compose(seed=s) gives every transform the same stream: the flip, the affine,
    # the blur, ... all drew the same number and were applied together or not at all
    from lab2.augment import reseed
    transform = build_train_transforms(normalize=False)
    for seed in range(5):
        reseed(transform, seed)
        draws = [t.py_random.random() for t in transform.transforms]
        assert len(set(draws)) == len(draws)
    seeded = build_train_transforms(seed=3, normalize=False)
    draws = [t.py_random.random() for t in seeded.transforms]
    assert len(set(draws)) == len(draws)
