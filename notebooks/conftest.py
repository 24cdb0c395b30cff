"""nbval runs the notebooks with the smoke profile (seconds per model) unless LAB2_PROFILE says
otherwise, and saves their figures in a temporary folder so a test run never overwrites the
committed figures/; the folder is removed when the run ends. The kernels inherit this
environment."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("LAB2_PROFILE", "smoke")
if "LAB2_FIGURES_DIR" not in os.environ:
    os.environ["LAB2_FIGURES_DIR"] = tempfile.mkdtemp(prefix="lab2-nbval-figures-")
    atexit.register(shutil.rmtree, os.environ["LAB2_FIGURES_DIR"], ignore_errors=True)
