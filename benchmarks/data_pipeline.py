"""Data path speed at the training size: what the cache saves, which storage format, which loader.

Three tables, appended to benchmarks/RESULTS.md:

1. per-sample cost, one process: decode + resize; decode + resize + chain (+ train augmentation);
   cache read; cache read + train augmentation — and the speed-up of the cached path;
2. storage formats for the cache: a row of a memory-mapped .npy array, one .npy file per sample,
   one PNG file per sample (image + trimap);
3. the DataLoader (batch 8): raw / preprocessed × cached / uncached × float32 items (normalised in
   the workers) / uint8 items (normalised per batch, as lab2 trains) × 0, 1, 2 workers.

Runs on the real data set when ``data/oxford-iiit-pet`` holds it, otherwise on a synthetic sample
drawn at photo-like sizes (``--sample-size``, default 500 px) in a temporary folder; the table says
which.

    python benchmarks/data_pipeline.py [--image-size 512] [--n 48] [--epochs 3] [--skip-loader]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from results import append_section, markdown_table

from lab2.augment import build_train_transforms, normalize_images
from lab2.data.index import dataset_dir
from lab2.data.reading import read_sample
from lab2.data.resize import resize_pair
from lab2.ops.cache import build_cache
from lab2.ops.loaders import open_dataset
from lab2.ops.paths import default_data_root
from lab2.ops.sample import make_sample_dataset
from lab2.ops.timing import ms_per_item
from lab2.preprocess import PreprocessParams, preprocess


def per_second(fn, items, repeat: int = 1) -> float:
    return 1000 / ms_per_item(fn, items, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--n", type=int, default=48, help="samples timed per measurement")
    parser.add_argument("--sample-size", type=int, default=500)
    parser.add_argument("--skip-loader", action="store_true", help="skip table 3")
    parser.add_argument("--epochs", type=int, default=3, help="timed loader epochs (table 3)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    size = (args.image_size, args.image_size)

    real = default_data_root()
    tmp = tempfile.TemporaryDirectory()
    if (dataset_dir(real) / "annotations" / "trainval.txt").is_file():
        root, data_label = real, "real Oxford-IIIT Pet"
    else:
        root = Path(tmp.name)
        make_sample_dataset(root, n_trainval=max(60, args.n + 12), n_test=20,
                            size=args.sample_size)
        data_label = f"SYNTHETIC sample, photos up to {args.sample_size} px"
    folder = dataset_dir(root)
    raw_ds = open_dataset(root, "train", size, progress=False)
    names = raw_ds.names[: args.n]
    params = PreprocessParams()
    build_cache(root, size, None, progress=False)  # the raw variant, for the loader table
    cache_pre = build_cache(root, size, params, progress=False)
    augment = build_train_transforms(seed=0)

    def decode_resize(name):
        return resize_pair(*read_sample(folder, name), size)

    def decode_chain(name):
        image, trimap = decode_resize(name)
        return preprocess(image, params), trimap

    def decode_chain_augment(name):
        image, trimap = decode_chain(name)
        return augment(image=image, mask=trimap)

    def cache_read(name):
        return cache_pre.read(name)

    def cache_augment(name):
        image, trimap = cache_pre.read(name)
        return augment(image=image, mask=trimap)

    rates = {
        "decode + resize": per_second(decode_resize, names),
        "decode + resize + chain": per_second(decode_chain, names),
        "decode + resize + chain + train augmentation": per_second(decode_chain_augment, names),
        "cache read": per_second(cache_read, names, repeat=5),
        "cache read + train augmentation": per_second(cache_augment, names, repeat=2),
    }
    base = rates["decode + resize + chain"]
    rows = [(k, f"{v:,.1f}", f"{1000 / v:.2f}", f"{v / base:.1f}x") for k, v in rates.items()]
    table1 = markdown_table(("path (one process)", "samples/s", "ms/sample",
                             "vs decode+resize+chain"), rows)
    speedup_aug = rates["cache read + train augmentation"] / rates[
        "decode + resize + chain + train augmentation"]
    table1 += (f"\n\nCached path with augmentation vs decoding and running the chain each time: "
               f"{rates['cache read + train augmentation'] / base:.1f}x "
               f"(vs decode + chain + the same augmentation: {speedup_aug:.1f}x).")
    print(table1)

    # ---- storage formats --------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as store:
        store = Path(store)
        for name in names:
            image, trimap = cache_pre.read(name)
            np.save(store / f"{name}.image.npy", image)
            np.save(store / f"{name}.trimap.npy", trimap)
            cv2.imwrite(str(store / f"{name}.image.png"), image)
            cv2.imwrite(str(store / f"{name}.trimap.png"), trimap)

        def npy_files(name):
            return np.load(store / f"{name}.image.npy"), np.load(store / f"{name}.trimap.npy")

        def png_files(name):
            return (cv2.imread(str(store / f"{name}.image.png"), cv2.IMREAD_UNCHANGED),
                    cv2.imread(str(store / f"{name}.trimap.png"), cv2.IMREAD_UNCHANGED))

        formats = {"memory-mapped .npy row (lab2)": per_second(cache_read, names, repeat=5),
                   ".npy file per sample": per_second(npy_files, names, repeat=5),
                   "PNG file per sample": per_second(png_files, names)}
        sizes = {"memory-mapped .npy row (lab2)": 3 * size[0] * size[1] + size[0] * size[1],
                 ".npy file per sample": sum((store / f"{names[0]}.{k}.npy").stat().st_size
                                             for k in ("image", "trimap")),
                 "PNG file per sample": sum((store / f"{names[0]}.{k}.png").stat().st_size
                                            for k in ("image", "trimap"))}
    table2 = markdown_table(("cache format", "samples/s", "bytes/sample on disk"),
                            [(k, f"{v:,.0f}", f"{sizes[k]:,}") for k, v in formats.items()])
    print(table2)

    sections = [f"Data: {data_label}; image size {size[0]}x{size[1]}; {len(names)} samples; "
                f"one thread per process.", table1, table2]

    # ---- data loader --------------------------------------------------------------------------
    if not args.skip_loader:
        rows = []
        for preprocessed in (False, True):
            for cached in (False, True):
                for items in ("float32", "uint8"):
                    # float32: normalised per sample in the workers (lab2 before); uint8: the
                    # workers pass uint8 and the batch is normalised after it arrives (lab2 now;
                    # on CUDA that happens on the GPU, here it is counted on the CPU)
                    compact = items == "uint8"
                    ds = open_dataset(
                        root, "train", size, preprocess=preprocessed, use_cache=cached,
                        transform=build_train_transforms(normalize=not compact), progress=False,
                        uint8=compact)
                    ds.records = ds.records[: args.n]
                    for workers in (0, 1, 2):
                        loader = torch.utils.data.DataLoader(
                            ds, batch_size=8, num_workers=workers,
                            prefetch_factor=2 if workers else None, persistent_workers=workers > 0)

                        def epoch(loader=loader, compact=compact):
                            for images, _, _ in loader:
                                if compact:
                                    normalize_images(images)
                        epoch()  # warm-up epoch: starts the workers
                        start = time.perf_counter()
                        for _ in range(args.epochs):
                            epoch()
                        rate = args.epochs * len(ds) / (time.perf_counter() - start)
                        rows.append(("preprocessed" if preprocessed else "raw",
                                     "cached" if cached else "uncached", items, workers,
                                     f"{rate:,.1f}"))
                        print(rows[-1], flush=True)
        table3 = markdown_table(("variant", "source", "items", "workers",
                                 f"samples/s (mean of {args.epochs} epochs after a warm-up)"), rows)
        print(table3)
        sections.append(table3)
    append_section("Data pipeline", "\n\n".join(sections))
    tmp.cleanup()


if __name__ == "__main__":
    main()
