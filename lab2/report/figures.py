"""The figures of the report, as functions the notebooks call: each takes numbers or arrays and
returns a matplotlib figure (the notebooks save them to ``figures/``:
:func:`lab2.ops.notebook.save_figure`).

Every figure is stamped with the data set and profile that produced it. Colours per run are fixed
so the four models read the same in every figure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from ..config import run_name
from ..metrics import MEASURES
from ..stats import shows_difference

RUN_COLOURS = {"unet_raw": "tab:blue", "unet_preprocessed": "tab:cyan",
               "resnet34_unet_raw": "tab:red", "resnet34_unet_preprocessed": "tab:orange"}
#: Preprocessed runs are drawn dashed (curves) or with squares (points): the 2 × 2 design reads
#: without telling cyan from blue or orange from red (in print, or with a colour-blind eye).
PREPROCESSED_LINE, PREPROCESSED_MARKER = "--", "s"
RUN_TITLES = {"unet_raw": "UNet", "unet_preprocessed": "UNet + preprocessing",
              "resnet34_unet_raw": "ResNet34-UNet",
              "resnet34_unet_preprocessed": "ResNet34-UNet + preprocessing"}


def stamp(fig: plt.Figure, data: str, profile: str | None = None,
          differences: Collection[str] = ()) -> None:
    """Write which data set (and profile) produced the figure in its bottom-right corner and, in
    the bottom-left, the settings its runs were not trained alike in (``differences``: a figure
    travels without its table)."""
    text = f"data: {data}" + (f" · profile: {profile}" if profile else "")
    if data == "synthetic sample":
        text += " — NOT Oxford-IIIT Pet"
    fig.text(0.995, -0.01, text, ha="right", va="top", fontsize=8, color="dimgray")
    if differences:
        fig.text(0.005, -0.01, f"NOT TRAINED ALIKE: the runs differ in {', '.join(differences)}",
                 ha="left", va="top", fontsize=8, color="firebrick", fontweight="bold")


def mask_rgb(mask: np.ndarray) -> np.ndarray:
    """Binary mask (0/1, 255 = ignore) as an RGB picture: pet white, background black, ignore
    grey."""
    out = np.zeros((*mask.shape, 3), np.uint8)
    out[mask == 1] = 255
    out[mask == 255] = 128
    return out


def trimap_rgb(trimap: np.ndarray) -> np.ndarray:
    """Trimap as RGB: pet orange, background dark blue, border yellow."""
    palette = {1: (240, 120, 30), 2: (20, 30, 90), 3: (250, 230, 60)}
    out = np.zeros((*trimap.shape, 3), np.uint8)
    for value, colour in palette.items():
        out[trimap == value] = colour
    return out


def _grid(rows: int, cols: int, cell: float = 2.3):
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * cell), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


# ---- 01: the data set ----------------------------------------------------------------------------

def plot_split_sizes(sizes: dict[str, int], data: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 3))
    bars = ax.bar(list(sizes), list(sizes.values()), color="tab:blue")
    ax.bar_label(bars)
    ax.set_ylabel("images")
    ax.set_title("Split sizes (usable images)")
    stamp(fig, data)
    return fig


def plot_breed_counts(breeds: Sequence[str], data: str) -> plt.Figure:
    counts = Counter(breeds)
    names = sorted(counts, key=lambda b: (-counts[b], b))
    fig, ax = plt.subplots(figsize=(10, 3.5))
    colours = ["tab:orange" if b[0].isupper() else "tab:blue" for b in names]
    ax.bar(range(len(names)), [counts[b] for b in names], color=colours)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylabel("images (trainval + test)")
    cats = sum(counts[b] for b in names if b[0].isupper())
    dogs = sum(counts.values()) - cats
    ax.set_title(f"Images per breed — cats (orange) {cats}, dogs (blue) {dogs}")
    stamp(fig, data)
    return fig


def plot_image_sizes(sizes: Sequence[tuple[int, int]], data: str) -> plt.Figure:
    w, h = np.array(sizes).T
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(w, h, s=6, alpha=0.4)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title(f"Original image sizes (n={len(sizes)}), "
                 f"median {int(np.median(w))}×{int(np.median(h))}")
    stamp(fig, data)
    return fig


def plot_examples(examples: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                  data: str) -> plt.Figure:
    """Rows of (name, image, trimap, binary mask)."""
    fig, axes = _grid(len(examples), 3)
    for row, (name, image, trimap, mask) in zip(axes, examples, strict=True):
        row[0].imshow(image)
        row[0].set_ylabel(name, fontsize=8)
        row[1].imshow(trimap_rgb(trimap))
        row[2].imshow(mask_rgb(mask))
    for ax, title in zip(axes[0], ("image", "trimap (pet / background / border)",
                                   "binary mask (border → pet)"), strict=True):
        ax.set_title(title, fontsize=9)
    stamp(fig, data)
    return fig


def plot_batch(images, masks, names: Sequence[str], data: str, title: str) -> plt.Figure:
    """A batch as a loader yields it: each image (B, 3, H, W), values 0–1, above its mask
    (B, H, W), named."""
    images = np.asarray(images).transpose(0, 2, 3, 1)               # (B, H, W, 3)
    fig, axes = _grid(2, len(images), cell=1.6)
    for col, (image, mask, name) in enumerate(zip(images, np.asarray(masks), names,
                                                  strict=True)):
        axes[0, col].imshow(np.clip(image, 0, 1))
        axes[0, col].set_title(name, fontsize=6)
        axes[1, col].imshow(mask_rgb(mask))
    axes[0, 0].set_ylabel("image")
    axes[1, 0].set_ylabel("mask")
    fig.suptitle(title, fontsize=10)
    stamp(fig, data)
    return fig


# ---- 02: preprocessing -------------------------------------------------------------------------

STEP_TITLES = {"original": "original", "zscore_minmax": "z-score + min-max (4)–(5)",
               "bilateral": "+ bilateral filter", "clahe": "+ CLAHE (L of LAB)"}


def plot_preprocessing_steps(rows: Sequence[tuple[str, dict[str, np.ndarray]]],
                             data: str) -> plt.Figure:
    """One row per image: every intermediate of the chain (the report's Figure 3, extended)."""
    steps = list(rows[0][1])
    fig, axes = _grid(len(rows), len(steps), cell=2.6)
    for row, (name, images) in zip(axes, rows, strict=True):
        for ax, step in zip(row, steps, strict=True):
            ax.imshow(images[step])
        row[0].set_ylabel(name, fontsize=8)
    for ax, step in zip(axes[0], steps, strict=True):
        ax.set_title(STEP_TITLES.get(step, step), fontsize=9)
    stamp(fig, data)
    return fig


def plot_network_inputs(rows: Sequence[tuple[str, np.ndarray]], data: str) -> plt.Figure:
    """What the network sees of each (title, RGB image) row: the image (``rgb``), its luminance
    (``gray``) and the Canny edge map that ``edges`` adds as a fourth channel."""
    from ..preprocess import edge_map, network_input
    fig, axes = _grid(len(rows), 3, cell=2.6)
    for row, (title, image) in zip(axes, rows, strict=True):
        row[0].imshow(image)
        row[0].set_ylabel(title, fontsize=8)
        row[1].imshow(network_input(image, "gray")[..., 0], cmap="gray", vmin=0, vmax=255)
        row[2].imshow(edge_map(image), cmap="gray", vmin=0, vmax=255)
    for ax, title in zip(axes[0], ("rgb (the report's input)", "gray: 1 channel",
                                   "edges: Canny, the 4th channel"), strict=True):
        ax.set_title(title, fontsize=9)
    stamp(fig, data)
    return fig


def plot_channel_histograms(before: np.ndarray, after: np.ndarray, data: str) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3), sharey=True)
    titles = ("before the chain", "after the chain")
    for ax, image, title in zip(axes, (before, after), titles, strict=True):
        for c, colour in enumerate(("red", "green", "blue")):
            hist = np.bincount(image[..., c].ravel(), minlength=256)
            ax.plot(hist, color=colour, lw=1, label=colour)
        ax.set_title(title)
        ax.set_xlabel("pixel value")
        ax.set_xlim(0, 255)
    axes[0].set_ylabel("pixels")
    axes[0].legend(fontsize=8)
    stamp(fig, data)
    return fig


def plot_augmentations(image: np.ndarray, mask: np.ndarray, augmented: Sequence[dict],
                       data: str) -> plt.Figure:
    """The original and augmented copies, each image above its mask outline."""
    fig, axes = _grid(2, len(augmented) + 1)
    pairs = [{"image": image, "mask": mask}, *augmented]
    for col, pair in enumerate(pairs):
        axes[0, col].imshow(pair["image"])
        axes[1, col].imshow(mask_rgb(pair["mask"]))
        axes[0, col].set_title("original" if col == 0 else f"augmented #{col}", fontsize=9)
    axes[0, 0].set_ylabel("image")
    axes[1, 0].set_ylabel("mask")
    stamp(fig, data)
    return fig


def plot_costs(costs: dict[str, float], title: str, data: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(costs)))
    names = list(costs)
    bars = ax.barh(names, [costs[n] for n in names], color="tab:purple")
    ax.bar_label(bars, fmt="%.2f ms", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds per image (one process)")
    ax.set_title(title)
    stamp(fig, data)
    return fig


# ---- 03: training --------------------------------------------------------------------------------

def curve_group(row: dict) -> str:
    """The model a history row belongs to, whatever its seed: a study's arm, or the run's name
    without the seed (``unet_raw``)."""
    return row.get("arm") or run_name(row["model"], row["preprocess"])


def plot_training_curves(histories: Sequence[dict], data: str, profile: str) -> plt.Figure:
    """The report's Table 2: train and validation loss, and validation Dice, per epoch per model:
    with several seeds, the mean over the seeds and a band from their lowest to their highest."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    groups = list(dict.fromkeys(curve_group(h) for h in histories))
    palette = plt.get_cmap("tab10")
    for i, group in enumerate(groups):
        rows = [h for h in histories if curve_group(h) == group]
        seeds = sorted({h.get("seed", 0) for h in rows})
        epochs = sorted({h["epoch"] for h in rows})
        colour = RUN_COLOURS.get(group, palette(i % 10))
        # the first group (a baseline) on top: a later one repeating its epochs must not hide it
        style = dict(color=colour, linewidth=1.6, zorder=3 + len(groups) - i,
                     linestyle=PREPROCESSED_LINE if group.endswith("_preprocessed") else "-",
                     label=RUN_TITLES.get(group, group.replace("_", " "))
                     + (f" ({len(seeds)} seeds)" if len(seeds) > 1 else ""))
        for ax, key in zip(axes, ("train_loss", "val_loss", "val_dice"), strict=True):
            values = np.array([[next((h[key] for h in rows if h["epoch"] == e
                                      and h.get("seed", 0) == seed), np.nan) for e in epochs]
                               for seed in seeds])                      # (seeds, epochs)
            ax.plot(epochs, np.nanmean(values, axis=0), **style)
            if len(seeds) > 1:
                ax.fill_between(epochs, np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                                color=colour, alpha=0.18, linewidth=0)
    for ax, title, ylabel in zip(axes, ("training loss", "validation loss",
                                        "validation Dice (mean per image)"),
                                 ("cross-entropy", "cross-entropy", "Dice"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    stamp(fig, data, profile)
    return fig


# ---- 04: results ---------------------------------------------------------------------------------

def plot_prediction_grid(rows: Sequence[dict], runs: Sequence[str], data: str,
                         profile: str) -> plt.Figure:
    """The report's Table 3: per test image, the photo, the truth and each run's prediction.

    ``rows``: dicts with ``name``, ``image``, ``mask``, ``note`` and ``predictions`` /
    ``dice`` keyed by run.
    """
    fig, axes = _grid(len(rows), 2 + len(runs), cell=2.2)
    for ax_row, row in zip(axes, rows, strict=True):
        ax_row[0].imshow(row["image"])
        ax_row[0].set_ylabel(f"{row['name']}\n{row.get('note', '')}", fontsize=7)
        ax_row[1].imshow(mask_rgb(row["mask"]))
        for ax, run in zip(ax_row[2:], runs, strict=True):
            ax.imshow(mask_rgb(row["predictions"][run]))
            ax.set_xlabel(f"Dice {row['dice'][run]:.3f}", fontsize=8)
    titles = ["photo", "ground truth", *(RUN_TITLES.get(r, r) for r in runs)]
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title, fontsize=8)
    fig.tight_layout()                              # no band of white under the last row
    stamp(fig, data, profile)
    return fig


def plot_dice_table(results: Sequence[dict], data: str, profile: str,
                    differences: Collection[str] = ()) -> plt.Figure:
    """Table 1 as bars: lab2's average test Dice beside the report's, per model; with several
    seeds, lab2's bar is their mean and its error bar ± one standard deviation. ``differences``,
    the settings the runs were not trained alike in (the keys of
    :func:`lab2.ops.experiment.training_differences`), are named under the bars."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = [RUN_TITLES[run_name(r["model"], r["preprocess"])] for r in results]
    x = np.arange(len(results))
    seeds = max(r.get("n_seeds", 1) for r in results)
    spread = [r.get("dice_std", 0.0) for r in results] if seeds > 1 else None
    label = f"lab2 ({data}" + (f", mean ± sd of {seeds} seeds)" if seeds > 1 else ", one seed)")
    ours = ax.bar(x - 0.2, [r["dice"] for r in results], 0.4, yerr=spread, capsize=3,
                  label=label)
    theirs = ax.bar(x + 0.2, [r["reported_dice"] for r in results], 0.4,
                    label="report (Oxford-IIIT Pet)", color="lightgray")
    ax.bar_label(ours, fmt="%.3f", fontsize=8)
    ax.bar_label(theirs, fmt="%.3f", fontsize=8)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("average test Dice")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Test Dice per model (Table 1)")
    stamp(fig, data, profile, differences)
    return fig


def plot_comparisons(comparisons: Sequence[dict], data: str, profile: str,
                     differences: Collection[str] = ()) -> plt.Figure:
    """The paired comparisons (rows of :func:`lab2.ops.comparisons.compare`) as intervals: one panel
    per measure, one line per pair of models (b − a), the 95 % interval as a bar, the mean
    difference filled where the verdict shows a difference (interval and Holm-adjusted p-value,
    :func:`lab2.stats.shows_difference`) and hollow where it does not, and the report's claimed
    Dice difference as a red cross."""
    measures = [m for m in MEASURES if any(c["measure"] == m for c in comparisons)]
    fig, axes = plt.subplots(1, max(1, len(measures)), figsize=(4.2 * max(1, len(measures)), 3.2),
                             sharey=True, squeeze=False)
    axes = axes[0]
    if not measures:
        axes[0].text(0.5, 0.5, "no two models to compare yet", ha="center", va="center")
        axes[0].set_axis_off()
        stamp(fig, data, profile)
        return fig
    pairs = list(dict.fromkeys((c["model_a"], c["model_b"]) for c in comparisons))
    for ax, measure in zip(axes, measures, strict=True):
        label, higher_is_better = MEASURES[measure]
        for c in (c for c in comparisons if c["measure"] == measure):
            y = pairs.index((c["model_a"], c["model_b"]))
            mean = c["mean_difference"]
            shown = shows_difference(c["ci_low"], c["ci_high"], c["p_holm"])
            ax.errorbar(mean, y, xerr=[[mean - c["ci_low"]], [c["ci_high"] - mean]], fmt="o",
                        capsize=3, color="black", markerfacecolor="black" if shown else "white")
            if c.get("reported_difference") is not None:
                ax.plot(c["reported_difference"], y, "x", color="firebrick", markersize=7,
                        zorder=4)
        ax.axvline(0, color="gray", linewidth=0.8)
        ax.margins(x=0.08)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_xlabel(f"{label}: b − a\n" + ("right of 0: b better" if higher_is_better
                                               else "left of 0: b better (fewer)"), fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(pairs)), [f"{RUN_TITLES.get(b, b)}\n− {RUN_TITLES.get(a, a)}"
                                           for a, b in pairs], fontsize=8)
    axes[0].set_ylim(len(pairs) - 0.5, -0.5)
    seeds = max(c["n_seeds"] for c in comparisons)
    over = "test images and seeds" if seeds > 1 else "test images, one seed"
    claims = any(c.get("reported_difference") is not None for c in comparisons)
    fig.suptitle(f"Is each difference real? 95 % intervals over {over}; filled: shown after "
                 f"Holm's correction for the {len(comparisons)} comparisons"
                 + ("\n× (red): the difference the report claims, from single runs on "
                    "Oxford-IIIT Pet" if claims else ""), fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    stamp(fig, data, profile, differences)
    return fig


def plot_dice_by_group(rows: Sequence[dict], data: str, profile: str, title: str
                       ) -> plt.Figure:
    """Mean test Dice per group (species or breed) and model with 95 % bootstrap intervals over
    the group's images (rows of :func:`lab2.report.analysis.dice_by_group`), groups sorted by
    their Dice over the models, hardest at the top."""
    groups = list(dict.fromkeys(r["group"] for r in rows))
    runs = list(dict.fromkeys(r["run"] for r in rows))
    height = max(3.2, (0.1 + 0.08 * len(runs)) * len(groups) + 1.4)
    fig, ax = plt.subplots(figsize=(9, height))
    step = 0.8 / max(1, len(runs))
    for k, run in enumerate(runs):
        mine = {r["group"]: r for r in rows if r["run"] == run}
        y = np.array([i + (k - (len(runs) - 1) / 2) * step for i in range(len(groups))])
        dice = np.array([mine[g]["dice"] if g in mine else np.nan for g in groups])
        low = np.array([mine[g]["ci_low"] if g in mine else np.nan for g in groups])
        high = np.array([mine[g]["ci_high"] if g in mine else np.nan for g in groups])
        marker = PREPROCESSED_MARKER if run.endswith("_preprocessed") else "o"
        ax.errorbar(dice, y, xerr=[dice - low, high - dice], fmt=marker, markersize=3,
                    capsize=2, linewidth=0.8, color=RUN_COLOURS.get(run),
                    label=RUN_TITLES.get(run, run))
    counts = {g: max(r["n_images"] for r in rows if r["group"] == g) for g in groups}
    ax.set_yticks(range(len(groups)), [f"{g} ({counts[g]})" for g in groups], fontsize=7)
    ax.set_ylim(len(groups) - 0.5, -0.5)            # hardest at the top, no empty margins
    ax.set_xlabel("mean test Dice, 95 % interval over the group's images")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title)
    fig.tight_layout(rect=(0, 0.04, 1, 1))          # room for the stamp below the axis label
    stamp(fig, data, profile)
    return fig


# ---- the architectures (the report's Figures 1 and 2) --------------------------------------------

PART_COLOURS = {"encoder": "#cfe2f3", "decoder": "#f9d9c2", "head": "#d9ead3",
                "output": "#eeeeee"}


def plot_architecture(stages: Sequence[dict], title: str, size: int = 512) -> plt.Figure:
    """A network as a U: each stage (from :func:`lab2.report.architecture.architecture_stages`)
    a box at the depth of its resolution, with its channels × height × width and parameters;
    arrows in forward order, dashed lines for the skip connections the decoder concatenates."""
    levels = [int(round(np.log2(size / s["height"]))) for s in stages]
    fig_w, fig_h = 1.55 * len(stages) + 0.5, 1.25 * (max(levels) + 1) + 1.0
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    box_w, box_h = 1.3, 0.95
    centres = []
    for x, (stage, level) in enumerate(zip(stages, levels, strict=True)):
        cx, cy = x * 1.55, -level * 1.25
        centres.append((cx, cy))
        ax.add_patch(plt.Rectangle((cx - box_w / 2, cy - box_h / 2), box_w, box_h,
                                   facecolor=PART_COLOURS.get(stage["part"], "white"),
                                   edgecolor="black", linewidth=0.8))
        params = stage["parameters"]
        count = (f"{params / 1e6:.2f} M" if params >= 1e6 else
                 f"{params / 1e3:.1f} k" if params >= 1e3 else str(params))
        ax.text(cx, cy, f"{stage['label']}\n{stage['channels']} × {stage['height']} × "
                f"{stage['width']}\n{count} params", ha="center", va="center", fontsize=6.2,
                wrap=True)
    for (x0, y0), (x1, y1) in zip(centres, centres[1:], strict=False):
        ax.annotate("", xy=(x1 - box_w / 2, y1), xytext=(x0 + box_w / 2, y0),
                    arrowprops=dict(arrowstyle="->", linewidth=0.8))
    encoder = [(i, lv) for i, (s, lv) in enumerate(zip(stages, levels, strict=True))
               if s["part"] == "encoder"]
    for j, (stage, level) in enumerate(zip(stages, levels, strict=True)):
        if stage["part"] != "decoder":
            continue
        skips = [i for i, lv in encoder if lv == level]
        if skips:
            (x0, y0), (x1, y1) = centres[skips[-1]], centres[j]
            ax.plot([x0 + box_w / 2, x1 - box_w / 2], [y0 + 0.3, y1 + 0.3], "--",
                    color="grey", linewidth=0.8)
    total = sum(s["parameters"] for s in stages)
    ax.set_title(f"{title}: {total:,} parameters, input 3 × {size} × {size} (dashed: skip "
                 "connections, concatenated)", fontsize=9)
    ax.set_xlim(-box_w, (len(stages) - 1) * 1.55 + box_w)
    ax.set_ylim(-max(levels) * 1.25 - box_h, box_h)
    ax.axis("off")
    fig.text(0.99, 0.01, "computed from lab2.models (meta-device forward pass)", ha="right",
             va="bottom", fontsize=7, color="grey")
    return fig
