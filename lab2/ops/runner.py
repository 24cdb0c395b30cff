"""The main job, in Python alone (``python -m lab2 report``; ``make report`` calls it): audit the
data, run the four-model experiment, then execute the numbered notebooks in place so that every
figure and table regenerates — on Windows too, where ``make`` is rarely installed."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from . import atomic
from .paths import notebooks_dir

#: The notebooks the main job re-runs: the report's. ``05_future_work`` reads the study, which
#: is a command of its own (``experiment --study future-work``), and is left out of it.
REPORT_NOTEBOOKS = ("01_data_inspection", "02_preprocessing", "03_training", "04_results")


def notebook_paths(names=REPORT_NOTEBOOKS) -> list[Path]:
    """The report's notebooks of the source checkout (or those ``names``), in reading order
    (none when installed)."""
    folder = notebooks_dir()
    if folder is None:
        return []
    return [folder / f"{name}.ipynb" for name in names if (folder / f"{name}.ipynb").is_file()]


class NotebookFailed(RuntimeError):
    """A cell of a notebook raised; the notebook on disk was left as it was."""


@functools.cache
def this_python_kernel() -> type:
    """A kernel manager class (for nbclient) that starts IPython in *this* interpreter, whatever
    kernel the notebook names: a ``python3`` kernel spec registered by another Python (conda's
    base, a system JupyterLab, ``ipykernel install --user`` from elsewhere) would otherwise run
    the notebooks without lab2, or with another copy of it. nbval's ``--nbval-current-env`` does
    the same for the tests."""
    import ipykernel.kernelspec
    import zmq
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from traitlets import default

    class ThisPythonSpec(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(resource_dir=ipykernel.kernelspec.RESOURCES,
                              **ipykernel.kernelspec.get_kernel_dict())

    class ThisPythonKernel(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self):
            return ThisPythonSpec(data_dir=self.data_dir)

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            # encrypt the kernel's channels where both ends can (CurveZMQ): on a shared server
            # nobody else reads the outputs, and ipykernel no longer warns that they could
            if self.has_trait("transport_encryption") and zmq.has("curve"):
                self.transport_encryption = "auto"

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client sends SIGINT to every kernel it shuts down, in case it is busy; ours
            # has run its notebook by then, and when the signal lands while it is still tidying
            # up, ipykernel logs "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel."
            # under a report that succeeded (seen in make report). The shutdown request that
            # follows, then SIGTERM and SIGKILL if need be, still end it.
            if not self.shutting_down:
                await super()._async_interrupt_kernel()
    return ThisPythonKernel


def failed_cell(notebook) -> str:
    """``cell [N] (Error: message)`` for the first code cell whose outputs hold an error (N counts
    code cells, as Jupyter numbers a run from the top), or ``a cell`` if none does."""
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for number, cell in enumerate(code, 1):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"cell [{number}] ({output.get('ename')}: {output.get('evalue')})"
    return "a cell"


def run_notebooks(paths: list[Path], *, timeout_s: int | None = None) -> list[float]:
    """Execute each notebook top to bottom, in a kernel of this Python, and save it in place with
    its new outputs (atomically: an error or Ctrl-C leaves the notebook as it was). Prints a line
    per notebook; returns the seconds each took. A failing cell raises :class:`NotebookFailed`,
    naming the notebook, the cell and its error."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    seconds = []
    for i, path in enumerate(paths, 1):
        print(f"notebook {i}/{len(paths)}: {path.name} ...", flush=True)
        started = time.perf_counter()
        notebook = nbformat.read(path, as_version=4)
        # the widgets of an earlier run (its progress bars): nbclient saves this run's, if any,
        # and would otherwise keep those forever beside outputs that no longer show them
        notebook.metadata.pop("widgets", None)
        # no per-cell timestamps: a rerun's diff shows what changed in the outputs, not the clock
        client = NotebookClient(notebook, timeout=timeout_s, kernel_name="python3",
                                record_timing=False,
                                kernel_manager_class=this_python_kernel(),
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        except CellExecutionError:
            raise NotebookFailed(
                f"{path} stopped at {failed_cell(notebook)} and was left as it was; open it in "
                f"JupyterLab and run its cells to see where") from None
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
