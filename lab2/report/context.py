"""The first cell of every notebook: which data set and profile are in use, and where results go."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import resolve_profile
from ..data import choose_data_root
from ..data.sample import dataset_label
from ..experiment import default_out
from ..paths import dataset_dir


@dataclass(frozen=True)
class NotebookContext:
    root: Path          # data root (real set or synthetic sample)
    data: str           # "Oxford-IIIT Pet" or "synthetic sample" — stamped on every figure
    profile: str        # full | quick | smoke
    experiment: Path    # the experiment folder of this data set and profile

    def banner(self) -> str:
        warning = ("  <-- SYNTHETIC: numbers here say nothing about Oxford-IIIT Pet"
                   if self.data == "synthetic sample" else "")
        return (f"data set: {self.data} ({dataset_dir(self.root)}){warning}\n"
                f"profile:  {self.profile}\n"
                f"results:  {self.experiment}")


def setup(profile: str | None = None) -> NotebookContext:
    """Pick the data (real if present, else the generated sample) and the profile
    (``profile`` or ``$LAB2_PROFILE`` or auto); print both."""
    root = choose_data_root()
    chosen = resolve_profile(profile)
    context = NotebookContext(root, dataset_label(root), chosen, default_out(chosen, root))
    print(context.banner())
    return context
