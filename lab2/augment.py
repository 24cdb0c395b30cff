"""Augmentation and normalisation pipelines (albumentations 2.x, ``strict=True``).

Training (docs/report.md, "Augmentation"): horizontal flip, rotation + scaling + translation (one
``Affine``), Gaussian blur, colour shift (``RGBShift``), brightness/contrast; then normalisation.
Evaluation: normalisation only. Geometric transforms move the mask with nearest-neighbour
interpolation, so it keeps its labels ({0, 1}, or {0, 1, 255} with the ignore convention).

Pipelines are deterministic for a seed (``seed=`` here, or :func:`reseed` later; training reseeds
the pipeline for every sample from (run seed, epoch, sample), see
:class:`lab2.ops.loaders.SeededSampler`).
Each transform of a pipeline gets its own seed: albumentations' ``Compose(seed=s)`` gives every
transform the same stream, so that the flip, the affine, the blur, the colour shift and the
brightness change all drew the same number and were applied together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch

#: ImageNet statistics, albumentations' default; applied to every split.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: By the channels an input has (lab2.preprocess.network_input): RGB; the luminance, with
#: ImageNet's mean luminance and the channels' mean spread; RGB and an edge map of 0 and 255,
#: centred on ±1.
CHANNEL_STATS = {3: (MEAN, STD), 1: ((0.299 * MEAN[0] + 0.587 * MEAN[1] + 0.114 * MEAN[2],),
                                     (sum(STD) / 3,)),
                 4: ((*MEAN, 0.5), (*STD, 0.5))}


@dataclass(frozen=True)
class AugmentParams:
    """Magnitudes of the training augmentation (probabilities ``p_*``)."""

    p_hflip: float = 0.5
    p_affine: float = 0.7
    rotate_deg: float = 15.0                    # rotation drawn from ±rotate_deg
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.1                      # shift up to 10 % of the side, each axis
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    p_color: float = 0.3
    rgb_shift: float = 15.0                     # per-channel shift, ±, on the 0–255 scale
    p_brightness_contrast: float = 0.3
    brightness: float = 0.2
    contrast: float = 0.2
    fill_mask: int = 0                          # mask value of pixels moved in from outside


def _normalize() -> A.Normalize:
    return A.Normalize(mean=MEAN, std=STD, max_pixel_value=255.0)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """A batch of uint8 images (B, C, H, W) → float32, normalised as :func:`build_eval_transforms`
    does one RGB image (``(x / 255 - MEAN) / STD``, :data:`CHANNEL_STATS` for 1 and 4 channels),
    on the batch's device and in its memory format. Training feeds uint8 through the data loader
    and normalises here: the loader passes a quarter of the bytes (benchmarks/RESULTS.md)."""
    mean, std = (torch.tensor(v, device=images.device).view(1, -1, 1, 1)
                 for v in CHANNEL_STATS[images.shape[1]])
    return images.float().div_(255).sub_(mean).div_(std)


def build_train_transforms(params: AugmentParams = AugmentParams(), seed: int | None = None,
                           normalize: bool = True) -> A.Compose:
    """The training pipeline; ``normalize=False`` keeps uint8 output (for figures)."""
    transforms = [
        A.HorizontalFlip(p=params.p_hflip),
        A.Affine(scale=params.scale,
                 translate_percent=(-params.translate, params.translate),
                 rotate=(-params.rotate_deg, params.rotate_deg),
                 interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=params.fill_mask,
                 p=params.p_affine),
        A.GaussianBlur(blur_limit=0, sigma_limit=params.blur_sigma, p=params.p_blur),
        A.RGBShift(r_shift_limit=params.rgb_shift, g_shift_limit=params.rgb_shift,
                   b_shift_limit=params.rgb_shift, p=params.p_color),
        A.RandomBrightnessContrast(brightness_limit=params.brightness,
                                   contrast_limit=params.contrast, p=params.p_brightness_contrast),
    ]
    if normalize:
        transforms.append(_normalize())
    compose = A.Compose(transforms, strict=True)
    if seed is not None:
        reseed(compose, seed)
    return compose


def build_eval_transforms() -> A.Compose:
    """Normalisation only, per image (the reference :func:`normalize_images` is tested against;
    lab2's evaluation and prediction normalise whole batches with that function)."""
    return A.Compose([_normalize()], strict=True)


def reseed(transform, seed: int) -> None:
    """Re-seed an albumentations pipeline, each of its transforms with a seed of its own derived
    from ``seed`` (no-op for other callables)."""
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)
        children = getattr(transform, "transforms", None) or []
        for child, child_seed in zip(children, np.random.SeedSequence(seed).generate_state(
                len(children)), strict=True):
            reseed(child, int(child_seed))
