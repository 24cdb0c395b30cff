"""lab2: binary pet segmentation on Oxford-IIIT Pet with UNet and ResNet34-UNet.

Reproduces (and tries to beat) a course lab report; see README.md for the layout and commands.
"""

__version__ = "0.1.0"
