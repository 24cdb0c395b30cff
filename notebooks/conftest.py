"""nbval runs the notebooks with the smoke profile (seconds per model) unless LAB2_PROFILE says
otherwise, and saves their figures in a temporary folder so a test run never overwrites the
committed figures/. The kernels inherit this environment."""

import os
import tempfile

os.environ.setdefault("LAB2_PROFILE", "smoke")
os.environ.setdefault("LAB2_FIGURES_DIR", tempfile.mkdtemp(prefix="lab2-nbval-figures-"))
