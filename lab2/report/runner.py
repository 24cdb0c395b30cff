"""The main job, in Python alone (``python -m lab2 report``; ``make report`` calls it): audit the
data, run the four-model experiment, then execute the numbered notebooks in place so that every
figure and table regenerates — on Windows too, where ``make`` is rarely installed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .. import atomic
from ..paths import notebooks_dir


def notebook_paths() -> list[Path]:
    """The numbered notebooks of the source checkout, in reading order (none when installed)."""
    folder = notebooks_dir()
    return sorted(folder.glob("0*.ipynb")) if folder is not None else []


def run_notebooks(paths: list[Path], *, timeout_s: int | None = None) -> list[float]:
    """Execute each notebook top to bottom and save it in place with its new outputs (atomically:
    an error or Ctrl-C leaves the notebook as it was). Prints a line per notebook; returns the
    seconds each took. A failing cell raises ``nbclient``'s CellExecutionError, naming the cell."""
    import nbformat
    from nbclient import NotebookClient

    seconds = []
    for i, path in enumerate(paths, 1):
        print(f"notebook {i}/{len(paths)}: {path.name} ...", flush=True)
        started = time.perf_counter()
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=timeout_s, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        atomic.write_text(path, nbformat.writes(notebook),
                          fix="make the notebooks folder writable")
        seconds.append(time.perf_counter() - started)
        print(f"notebook {i}/{len(paths)}: {path.name} done in {seconds[-1]:.0f} s", flush=True)
    return seconds


def notebook_environment(profile: str, data_root, sample_root) -> None:
    """Make the notebooks' kernels (which inherit this process's environment) choose the profile
    and data (real set if present, else the sample) as the experiment just did."""
    os.environ["LAB2_PROFILE"] = profile
    os.environ["LAB2_DATA_DIR"] = str(Path(data_root).expanduser().resolve())
    os.environ["LAB2_SAMPLE_DIR"] = str(Path(sample_root).expanduser().resolve())
