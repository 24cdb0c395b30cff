"""The Oxford-IIIT Pet data layer: acquisition, index and splits, masks, audit, sample, Dataset.

The names below are imported from their modules on first use (PEP 562), not when the package is:
the worker processes of the cache build and the audit import ``lab2.data.cache`` or
``lab2.data.audit``, and under ``spawn`` (Windows, macOS) an eager package would import PyTorch
and albumentations into each of them for nothing (``benchmarks/worker_memory.py``).
"""

from __future__ import annotations

import importlib

#: Public name → the module of this package that defines it.
_EXPORTS = {
    **dict.fromkeys(("AuditEntry", "AuditReport", "audit_dataset"), "audit"),
    **dict.fromkeys(("dataset_fingerprint", "same_data"), "fingerprint"),
    **dict.fromkeys(("SampleCache", "build_cache", "find_cache"), "cache"),
    **dict.fromkeys(("choose_data_root", "has_dataset"), "choose"),
    "OxfordPetSegmentation": "dataset",
    **dict.fromkeys(("RESOURCES", "ChecksumError", "DownloadError", "UnfinishedDownload",
                     "UnsafeArchiveError", "check_extracted", "download_oxford_pet",
                     "safe_extract"), "download"),
    **dict.fromkeys(("BREEDS", "SPLITS", "Record", "load_split", "parse_list", "read_list",
                     "split_records"), "index"),
    **dict.fromkeys(("IGNORE_INDEX", "trimap_to_mask"), "masks"),
    **dict.fromkeys(("SampleInfo", "make_sample_dataset"), "sample"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value            # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
