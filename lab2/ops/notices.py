"""What lab2 tells its caller without stopping: warnings of these categories.

Library code does not print. It warns through :mod:`warnings`, whose default filter shows each
message once per process; the command line prints each as one line (``lab2: ...``,
:mod:`lab2.ops.console`) and a notebook's settings cell (:func:`lab2.ops.notebook.setup`) folds
them into its banner. Progress and status lines go through :mod:`logging` (logger ``lab2``),
which the command line shows at INFO level.
"""

from __future__ import annotations


class Lab2Warning(UserWarning):
    """Something the user should know about the results lab2 is producing."""


class SyntheticDataWarning(Lab2Warning):
    """The real data set is absent: the synthetic sample is used, whose numbers mean nothing
    for Oxford-IIIT Pet."""


class ProfileWarning(Lab2Warning):
    """The ``auto`` profile fell back to ``quick`` (no CUDA): not the report's settings."""


class SkippedFilesWarning(Lab2Warning):
    """Files of the data set that cannot be read are left out."""


class SharedMemoryWarning(Lab2Warning):
    """Too little shared memory for the loader's workers as configured: fewer batches are
    prepared ahead (the batches themselves, and so the results, are the same)."""


class NoCacheWarning(Lab2Warning):
    """No room on the disk for the cache of resized (and preprocessed) images: every image is
    read and resized (and preprocessed) each time instead; slower, with the same samples."""


__all__ = ["Lab2Warning", "NoCacheWarning", "ProfileWarning", "SharedMemoryWarning",
           "SkippedFilesWarning", "SyntheticDataWarning"]
