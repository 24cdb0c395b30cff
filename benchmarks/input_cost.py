"""What the future work's network inputs cost per image, next to the report's chain: the gray
input and the Canny edge channel (``lab2.preprocess.network_input``) against ``preprocess``, on
one CPU thread, at the quick and full profiles' sizes.

    python benchmarks/input_cost.py [--repeats 100]

The inputs are computed per item after the augmentation (the edges of a flipped, colour-shifted
image are not the flipped edges of the cached one), so they are not cached; this measures what
that costs.
"""

from __future__ import annotations

import argparse
import time

from results import append_section, markdown_table


def per_call_ms(function, image, repeats: int) -> float:
    function(image)                                           # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        function(image)
    return (time.perf_counter() - started) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    import cv2
    import numpy as np

    from lab2.preprocess import network_input, preprocess
    cv2.setNumThreads(1)
    rows = []
    for size in (128, 512):
        noise = np.random.default_rng(0).random((size, size, 3)) * 255
        image = cv2.GaussianBlur(noise.astype(np.uint8), (9, 9), 3)   # edges to find
        chain = per_call_ms(preprocess, image, max(5, args.repeats // 10))
        gray = per_call_ms(lambda im: network_input(im, "gray"), image, args.repeats)
        edges = per_call_ms(lambda im: network_input(im, "edges"), image, args.repeats)
        rows.append((f"{size}×{size}", f"{chain:.2f}", f"{gray:.3f}", f"{edges:.2f}",
                     f"{edges / chain:.0%}"))
    table = markdown_table(("size", "report's chain ms", "gray ms", "RGB + edges ms",
                            "edges / chain"), rows)
    print(table)
    append_section("The future work's inputs against the report's chain (per image, 1 thread)",
                   table)


if __name__ == "__main__":
    main()
