"""Trimap → binary mask.

Oxford-IIIT Pet trimaps hold 1 = pet, 2 = background, 3 = border (not classified). lab2's default,
like the course's starter code and segmentation_models_pytorch, counts the border as pet.
"""

from __future__ import annotations

import numpy as np

PET, BACKGROUND, BORDER = 1, 2, 3
#: Mask value of pixels excluded from the loss and from Dice (``border="ignore"``).
IGNORE_INDEX = 255
BORDER_MODES = ("foreground", "background", "ignore")


def trimap_to_mask(trimap: np.ndarray, border: str = "foreground") -> np.ndarray:
    """Map a trimap (values 1/2/3) to a uint8 mask: pet 1, background 0, border per ``border``.

    ``border``: ``"foreground"`` (default) → 1, ``"background"`` → 0, ``"ignore"`` → 255.
    """
    if border not in BORDER_MODES:
        raise ValueError(f"border={border!r} is not one of {', '.join(BORDER_MODES)}")
    border_value = {"foreground": 1, "background": 0, "ignore": IGNORE_INDEX}[border]
    trimap = np.asarray(trimap)
    mask = np.zeros(trimap.shape, dtype=np.uint8)
    mask[trimap == PET] = 1
    mask[trimap == BORDER] = border_value
    return mask
