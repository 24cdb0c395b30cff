"""The first cell of each notebook: ``from lab2_setup import setup; ctx = setup()``.

This file sits beside the notebooks, so every kernel finds it, whatever its Python: a kernel whose
Python lacks lab2 (another environment's, chosen by mistake) is told which Python it is and what to
choose instead. Then :func:`lab2.ops.notebook.setup` picks the data set and the profile."""

import sys


def setup(profile: str | None = None):
    try:
        from lab2.ops.notebook import setup as notebook_setup
    except ModuleNotFoundError as e:    # this kernel's Python is not the one lab2 is installed in
        raise RuntimeError(f"{e} in {sys.executable}: choose lab2's environment as the kernel "
                           "(Kernel > Change Kernel; README: 'The notebooks')") from None
    return notebook_setup(profile)
