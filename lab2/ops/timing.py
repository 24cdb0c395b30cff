"""Wall-clock cost of the data path's steps, for the preprocessing notebook and the benchmarks."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from ..augment import build_train_transforms
from ..data.index import dataset_dir
from ..data.reading import image_path, read_rgb, read_sample
from ..data.resize import as_hw, resize_image
from ..preprocess import PreprocessParams, bilateral, clahe, zscore_minmax
from .cache import find_cache


def ms_per_item(fn: Callable, items: Sequence, repeat: int = 1) -> float:
    """Average milliseconds of ``fn(item)`` over ``items`` (after one warm-up call)."""
    fn(items[0])
    start = time.perf_counter()
    for _ in range(repeat):
        for item in items:
            fn(item)
    return (time.perf_counter() - start) * 1000 / (repeat * len(items))


def step_costs(root: str | os.PathLike, names: Sequence[str], image_size: int,
               params: PreprocessParams | None = None) -> dict[str, float]:
    """Milliseconds per image of each step at ``image_size``: decoding, resizing, each step of the
    chain, augmentation, and reading from the preprocessed cache if one is built."""
    params = params or PreprocessParams()
    folder = dataset_dir(root)
    size = as_hw(image_size)
    images = {n: read_rgb(image_path(folder, n)) for n in names}
    resized = {n: resize_image(images[n], size) for n in names}
    costs = {"decode JPEG + trimap PNG": ms_per_item(lambda n: read_sample(folder, n), names),
             "resize": ms_per_item(lambda n: resize_image(images[n], size), names)}
    chain = {"z-score + min-max": lambda image: zscore_minmax(image, params.eps),
             "bilateral filter": lambda image: bilateral(
                 image, params.bilateral_d, params.bilateral_sigma_color,
                 params.bilateral_sigma_space),
             "CLAHE": lambda image: clahe(image, params.clahe_clip_limit,
                                          params.clahe_tile_grid_size)}
    inputs = resized
    for step, apply in chain.items():       # each step on what the one before made
        costs[step] = ms_per_item(lambda n, apply=apply, inputs=inputs: apply(inputs[n]), names)
        inputs = {n: apply(inputs[n]) for n in names}
    augment = build_train_transforms(seed=0)
    costs["train augmentation"] = ms_per_item(lambda n: augment(image=resized[n]), names)
    cache = find_cache(root, size, params)
    if cache is not None:
        costs["read from the cache"] = ms_per_item(cache.read, [n for n in names if n in cache],
                                                   repeat=5)
    return costs
