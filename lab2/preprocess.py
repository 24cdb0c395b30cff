"""The report's OpenCV preprocessing chain, as pure functions on uint8 RGB arrays (H, W, 3).

In the report's order (docs/report.md, "Preprocessing chain"):

1. z-score per image and channel:  X' = (X − μ) / (σ + ε)
2. min-max back to 0–255: X_norm = (X' − min X') / (max X' − min X') × 255
3. bilateral filter (edge-preserving denoising): d = 5, σ_color = σ_space = 75
4. CLAHE, clip limit 2.0 on an 8×8 tile grid, on the L channel of LAB (hue is kept)

Steps 1–2 together are an affine map per channel with a positive slope followed by a min-max, so
they equal a per-channel contrast stretch to the full 0–255 range; they are computed literally
here, as the report writes them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PreprocessParams:
    """Parameters of the chain; the defaults are the report's (see the module docstring)."""

    eps: float = 1e-8                       # ε of eq. (4)
    bilateral_d: int = 5                    # pixel neighbourhood diameter
    bilateral_sigma_color: float = 75.0
    bilateral_sigma_space: float = 75.0
    clahe_clip_limit: float = 2.0
    clahe_tile_grid_size: tuple[int, int] = (8, 8)

    def to_dict(self) -> dict:
        return asdict(self)


def _check_rgb(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB array (H, W, 3), got {image.dtype} {image.shape}")


def zscore_minmax(image: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Equations (4) and (5) per channel: z-score, then min-max to 0–255 (rounded, uint8).

    A constant channel has max X' = min X'; it maps to 0 rather than dividing by zero.
    """
    _check_rgb(image)
    x = image.astype(np.float32)
    mean = x.mean(axis=(0, 1))                         # (3,)
    std = x.std(axis=(0, 1))
    z = (x - mean) / (std + eps)                       # eq. (4), (H, W, 3)
    low, high = z.min(axis=(0, 1)), z.max(axis=(0, 1))
    span = high - low
    scale = np.divide(255.0, span, out=np.zeros_like(span), where=span > 0)
    out = (z - low) * scale                            # eq. (5)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def bilateral(image: np.ndarray, d: int = 5, sigma_color: float = 75.0,
              sigma_space: float = 75.0) -> np.ndarray:
    """Edge-preserving smoothing with ``cv2.bilateralFilter``."""
    _check_rgb(image)
    return cv2.bilateralFilter(image, d, sigma_color, sigma_space)


def clahe(image: np.ndarray, clip_limit: float = 2.0,
          tile_grid_size: tuple[int, int] = (8, 8)) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (``cv2.createCLAHE``) of LAB's L channel."""
    _check_rgb(image)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    equaliser = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tuple(tile_grid_size))
    lab[..., 0] = equaliser.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def preprocess_steps(image: np.ndarray, params: PreprocessParams = PreprocessParams()
                     ) -> dict[str, np.ndarray]:
    """Every intermediate of the chain, in order: original, zscore_minmax, bilateral, clahe."""
    steps = {"original": image}
    steps["zscore_minmax"] = zscore_minmax(image, params.eps)
    steps["bilateral"] = bilateral(steps["zscore_minmax"], params.bilateral_d,
                                   params.bilateral_sigma_color, params.bilateral_sigma_space)
    steps["clahe"] = clahe(steps["bilateral"], params.clahe_clip_limit,
                           params.clahe_tile_grid_size)
    return steps


def preprocess(image: np.ndarray, params: PreprocessParams = PreprocessParams()) -> np.ndarray:
    """The whole chain in the report's order; uint8 RGB in, uint8 RGB of the same shape out."""
    return preprocess_steps(image, params)["clahe"]


# ---- what the network sees: the report's future work proposes grayscale and an edge channel --

#: ``TrainConfig.input``: ``rgb`` (the report's), ``gray`` (one channel: the luminance) or
#: ``edges`` (RGB and a fourth channel, the image's Canny edges).
INPUTS = ("rgb", "gray", "edges")

#: Canny's thresholds around the median intensity (the common "automatic Canny" rule): the lower
#: at (1 − σ)·median, the upper at (1 + σ)·median, so edges are found relative to the image's
#: own brightness and contrast rather than at fixed levels.
CANNY_SIGMA = 0.33


def canny_thresholds(gray: np.ndarray, sigma: float = CANNY_SIGMA) -> tuple[int, int]:
    """(lower, upper) hysteresis thresholds for ``cv2.Canny`` from a uint8 image's median."""
    median = float(np.median(gray))
    return int(max(0.0, (1 - sigma) * median)), int(min(255.0, (1 + sigma) * median))


def edge_map(image: np.ndarray, sigma: float = CANNY_SIGMA) -> np.ndarray:
    """Canny edges (H, W) uint8, 255 on an edge, of an RGB image's luminance."""
    _check_rgb(image)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.Canny(gray, *canny_thresholds(gray, sigma))


def network_input(image: np.ndarray, kind: str = "rgb") -> np.ndarray:
    """What the network sees of a uint8 RGB image (H, W, 3), as uint8 (H, W, C): ``rgb`` as it
    is, ``gray`` its luminance (C = 1), ``edges`` RGB and its Canny edge map (C = 4).

    It is taken last, after resizing, the report's chain and the augmentation: the chain needs
    colour (its CLAHE equalises the L of LAB and keeps the hue), and so do the colour shift and
    the brightness change, so a gray input is the luminance of the image the chain and the
    augmentation made, and the edges are found on it."""
    if kind == "rgb":
        return image
    _check_rgb(image)
    if kind == "gray":
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    if kind == "edges":
        return np.concatenate([image, edge_map(image)[..., None]], axis=2)
    raise ValueError(f"unknown input {kind!r}; choose one of {', '.join(INPUTS)}")
