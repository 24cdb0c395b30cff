"""An ipywidgets browser of test predictions: pick a run and an image, see the overlay and Dice."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt

from ..data.reading import read_example
from ..metrics import image_dice
from ..predict import overlay, predict_mask
from ..report.figures import RUN_TITLES, mask_rgb, stamp


def prediction_browser(models: dict, root, names: Sequence[str], label: str) -> widgets.Widget:
    """``models``: run → (model, config) (see :func:`lab2.ops.notebook.load_models`). Each
    figure is stamped with ``label`` (the data set: ``synthetic sample`` or ``Oxford-IIIT Pet``)
    and the profile, as every other figure of lab2."""
    run_picker = widgets.Dropdown(options=[(RUN_TITLES.get(r, r), r) for r in models],
                                  description="model")
    image_picker = widgets.Dropdown(options=list(names), description="image")
    output = widgets.Output()

    def show(_=None) -> None:
        model, config = models[run_picker.value]
        image, _, mask = read_example(root, image_picker.value)
        pred = predict_mask(model, config, image)
        dice = image_dice(pred, mask)
        with output:
            output.clear_output(wait=True)
            fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
            for ax, picture, title in zip(axes, (overlay(image, pred), mask_rgb(mask),
                                                 mask_rgb(pred)),
                                          ("prediction overlay", "ground truth", "prediction"),
                                          strict=True):
                ax.imshow(picture)
                ax.set_title(title)
                ax.axis("off")
            fig.suptitle(f"{image_picker.value} — {RUN_TITLES.get(run_picker.value)} — "
                         f"Dice {dice:.3f}")
            stamp(fig, label, config.profile)
            plt.show()

    run_picker.observe(show, names="value")
    image_picker.observe(show, names="value")
    show()
    return widgets.VBox([widgets.HBox([run_picker, image_picker]), output])
