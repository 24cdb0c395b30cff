"""lab2: binary pet segmentation on Oxford-IIIT Pet with UNet and ResNet34-UNet.

Reproduces (and tries to beat) a course lab report; see README.md for the layout and commands.
"""

import os

__version__ = "0.1.0"

# albumentations asks pypi.org for a newer version on every import (2 s timeout, a warning when
# offline); lab2 fetches nothing at run time but the data set, so that check is switched off.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
