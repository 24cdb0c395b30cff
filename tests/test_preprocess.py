"""The report's preprocessing chain against direct implementations of its equations and OpenCV."""

from __future__ import annotations

import dataclasses
import warnings

import cv2
import numpy as np
import pytest

from lab2.preprocess import (
    PreprocessParams,
    bilateral,
    clahe,
    preprocess,
    preprocess_steps,
    zscore_minmax,
)

pytestmark = pytest.mark.core

rng = np.random.default_rng(0)
IMAGES = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8),
          rng.integers(60, 120, (33, 17, 3), dtype=np.uint8),      # low contrast
          (rng.normal(128, 20, (64, 64, 3)).clip(0, 255)).astype(np.uint8)]


def reference_zscore_minmax(image: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Equations (4) and (5), written out per channel in float64."""
    out = np.empty(image.shape, np.float64)
    for c in range(3):
        x = image[..., c].astype(np.float64)
        z = (x - x.mean()) / (x.std() + eps)                      # (4)
        out[..., c] = (z - z.min()) / (z.max() - z.min()) * 255   # (5)
    return out


@pytest.mark.parametrize("image", IMAGES)
def test_zscore_minmax_matches_equations_4_and_5(image):
    ours = zscore_minmax(image)
    assert ours.dtype == np.uint8 and ours.shape == image.shape
    assert np.abs(ours.astype(np.float64) - reference_zscore_minmax(image)).max() <= 1.0
    assert (ours.reshape(-1, 3).min(0) == 0).all() and (ours.reshape(-1, 3).max(0) == 255).all()


def test_zscore_minmax_of_a_constant_image_is_finite_zero_without_warnings():
    constant = np.full((8, 8, 3), 77, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            out = zscore_minmax(constant)
    assert out.dtype == np.uint8 and (out == 0).all()


def test_constant_channel_does_not_disturb_the_others():
    image = IMAGES[0].copy()
    image[..., 1] = 200
    out = zscore_minmax(image)
    assert (out[..., 1] == 0).all()
    assert np.abs(out[..., 0].astype(float) - reference_zscore_minmax(IMAGES[0])[..., 0]).max() <= 1


@pytest.mark.parametrize("image", IMAGES)
def test_bilateral_is_opencvs_bilateral_filter(image):
    assert np.array_equal(bilateral(image, 5, 75, 75), cv2.bilateralFilter(image, 5, 75, 75))


@pytest.mark.parametrize("image", IMAGES)
def test_clahe_equalises_the_l_channel_of_lab(image):
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    l_eq = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[..., 0].copy())
    expected = cv2.cvtColor(np.dstack([l_eq, lab[..., 1], lab[..., 2]]), cv2.COLOR_LAB2RGB)
    assert np.array_equal(clahe(image), expected)


@pytest.mark.parametrize("image", IMAGES)
def test_chain_runs_in_the_reports_order_and_keeps_shape_and_dtype(image):
    out = preprocess(image)
    expected = clahe(bilateral(zscore_minmax(image), 5, 75, 75), 2.0, (8, 8))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out, expected)
    assert list(preprocess_steps(image)) == ["original", "zscore_minmax", "bilateral", "clahe"]


def test_parameters_default_to_the_reports_and_are_frozen():
    p = PreprocessParams()
    assert (p.bilateral_d, p.bilateral_sigma_color, p.bilateral_sigma_space) == (5, 75, 75)
    assert (p.clahe_clip_limit, p.clahe_tile_grid_size) == (2.0, (8, 8))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.bilateral_d = 9  # type: ignore[misc]


def test_parameters_change_the_result():
    image = IMAGES[0]
    assert not np.array_equal(preprocess(image), preprocess(image, PreprocessParams(
        clahe_clip_limit=4.0, bilateral_d=9)))


def test_non_rgb_input_is_refused_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"uint8 RGB array \(H, W, 3\)"):
        preprocess(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        zscore_minmax(np.zeros((8, 8, 3), np.float32))


# ---- what the network sees (the report's future work) -----------------------------------------

def test_canny_thresholds_follow_the_images_median():
    from lab2.preprocess import canny_thresholds
    gray = np.full((10, 10), 100, np.uint8)
    assert canny_thresholds(gray) == (67, 133)
    assert canny_thresholds(np.full((4, 4), 250, np.uint8)) == (167, 255)   # capped at 255
    assert canny_thresholds(np.zeros((4, 4), np.uint8)) == (0, 0)


def test_the_network_input_is_rgb_its_luminance_or_rgb_and_edges():
    from lab2.preprocess import network_input
    image = np.zeros((32, 32, 3), np.uint8)
    image[8:24, 8:24] = (200, 100, 50)                    # an orange square on black
    assert network_input(image, "rgb") is image
    gray = network_input(image, "gray")
    assert gray.shape == (32, 32, 1) and gray.dtype == np.uint8
    assert gray[16, 16, 0] == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    edges = network_input(image, "edges")
    assert edges.shape == (32, 32, 4) and np.array_equal(edges[..., :3], image)
    assert set(np.unique(edges[..., 3])) == {0, 255}
    assert edges[16, 16, 3] == 0 and edges[8:24, 7:9, 3].any()   # the square's rim, not its inside
    with pytest.raises(ValueError, match="rgb, gray, edges"):
        network_input(image, "depth")


def test_every_input_is_normalised_channel_by_channel():
    import torch

    from lab2.augment import CHANNEL_STATS, normalize_images
    for channels, (mean, std) in CHANNEL_STATS.items():
        batch = torch.full((2, channels, 4, 4), 255, dtype=torch.uint8)
        out = normalize_images(batch)
        expected = (1 - torch.tensor(mean)) / torch.tensor(std)
        assert out.shape == batch.shape
        assert torch.allclose(out[0, :, 0, 0], expected.float())
