"""nbval runs the notebooks with the smoke profile (seconds per model) unless LAB2_PROFILE says
otherwise; the kernels inherit this environment."""

import os

os.environ.setdefault("LAB2_PROFILE", "smoke")
