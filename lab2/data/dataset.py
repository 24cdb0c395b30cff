"""``OxfordPetSegmentation``: the binary pet/background data set as a torch ``Dataset``."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection

import numpy as np
import torch
from torch.utils.data import Dataset

from ..augment import reseed
from ..preprocess import PreprocessParams, network_input
from ..preprocess import preprocess as run_chain
from .index import Record, dataset_dir, load_split
from .index import subset as subset_of
from .masks import trimap_to_mask
from .reading import read_example, read_trimap, trimap_path
from .resize import as_hw, resize_pair


def to_tensors(image: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
               uint8: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) uint8 or float array → float (3, H, W) tensor (uint8 scaled to 0–1); mask → long.
    With ``uint8`` a uint8 image and mask stay uint8 (a quarter and an eighth of the bytes)."""
    if isinstance(image, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if uint8 and tensor.dtype == torch.uint8:
            return tensor, torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))
        image = tensor.float().div_(255) if tensor.dtype == torch.uint8 else tensor.float()
    return image, torch.as_tensor(np.ascontiguousarray(mask), dtype=torch.long)


class OxfordPetSegmentation(Dataset):
    """Oxford-IIIT Pet images with binary masks (pet 1, background 0).

    Args:
        root: data root holding ``oxford-iiit-pet/`` (real set or generated sample).
        split: ``train``, ``val``, ``trainval`` or ``test``.
        image_size: side (or ``(h, w)``) every sample is resized to; ``None`` keeps originals.
        transform: albumentations-style callable ``transform(image=…, mask=…) -> dict`` applied to
            the resized uint8 image and mask.
        border: what the trimap's border band becomes (see :func:`trimap_to_mask`).
        preprocess: ``False`` for raw images, ``True`` (or a :class:`PreprocessParams`) for the
            report's OpenCV chain, applied after resizing.
        skip: names of samples to leave out: the ones the audit found unusable (unreadable
            images, missing or bad trimaps; :attr:`lab2.ops.audit.AuditReport.skipped_names`).
        cache: where the resized (and preprocessed) samples were stored once (far faster than
            decoding them: :func:`lab2.ops.cache.find_cache`); without it every sample is
            decoded, resized and preprocessed each time, to the same arrays.
        max_samples: keep only ``max_samples`` usable samples of the split, chosen by ``subset``:
            ``spread`` evenly over the split's list (every breed), ``first`` its first ones
            (see :func:`lab2.data.index.subset`).
        input: what the network sees (:func:`lab2.preprocess.network_input`): ``rgb``, ``gray``
            (one channel) or ``edges`` (RGB and a Canny edge map), taken after ``transform``,
            which then must leave the image uint8 (``build_train_transforms(normalize=False)``).
        uint8: return the image and mask as uint8 tensors, for a transform that leaves them uint8
            (training: :func:`lab2.augment.normalize_images` then runs on the whole batch on the
            device; the loader's workers pass a quarter of the bytes).

    Items are ``(image, mask, name)``: a float tensor (3, H, W), a long tensor (H, W) and the
    sample's name (uint8 tensors with ``uint8``).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 image_size: int | tuple[int, int] | None = 256,
                 transform: Callable | None = None, border: str = "foreground",
                 preprocess: bool | PreprocessParams = False, skip: Collection[str] = (),
                 cache=None, max_samples: int | None = None, subset: str = "spread",
                 input: str = "rgb", uint8: bool = False) -> None:
        self.root = root
        self.uint8 = uint8
        self.input = input
        network_input(np.zeros((1, 1, 3), np.uint8), input)     # validate ``input`` early
        self.folder = dataset_dir(root)
        self.split = split
        self.image_size = None if image_size is None else as_hw(image_size)
        self.transform = transform
        self.border = border
        self.preprocess: PreprocessParams | None = (
            preprocess if isinstance(preprocess, PreprocessParams)
            else PreprocessParams() if preprocess else None)
        trimap_to_mask(np.ones((1, 1), np.uint8), border)  # validate `border` early
        skipped = frozenset(skip)
        self.records: list[Record] = subset_of(
            [r for r in load_split(root, split) if r.name not in skipped], max_samples, subset)
        self.cache = cache if self.image_size is not None else None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    def read_original(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The sample at its original size: uint8 RGB image (H, W, 3) and uint8 mask (H, W)."""
        image, _, mask = read_example(self.root, self.records[index].name, self.border)
        return image, mask

    def original_mask(self, name: str) -> np.ndarray:
        """The mask of sample ``name`` at its original size, uint8 (H, W)."""
        return trimap_to_mask(read_trimap(trimap_path(self.folder, name)), self.border)

    def read_resized(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The sample at ``image_size`` (uint8 image, preprocessed if asked, and mask), before any
        transform; from the cache when there is one."""
        name = self.records[index].name
        if self.cache is not None and name in self.cache:
            image, trimap = self.cache.read(name)
            return image, trimap_to_mask(trimap, self.border)
        image, mask = self.read_original(index)
        if self.image_size is not None:
            image, mask = resize_pair(image, mask, self.image_size)
        if self.preprocess is not None:
            image = run_chain(image, self.preprocess)
        return image, mask

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, str]:
        """Item ``index``; an index ``(seed, i)`` (from
        :class:`lab2.ops.loaders.SeededSampler`) first reseeds the transform with ``seed``, so a
        sample's augmentation does not depend on which worker or in which order it is read."""
        if isinstance(index, tuple):
            seed, index = index
            reseed(self.transform, seed)
        image, mask = self.read_resized(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image = network_input(image, self.input)                     # (H, W, C)
        image_t, mask_t = to_tensors(image, mask, self.uint8)
        return image_t, mask_t, self.records[index].name
