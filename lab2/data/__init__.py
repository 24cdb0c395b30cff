"""The Oxford-IIIT Pet data layer: acquisition, index and splits, masks, audit, sample, Dataset."""

from .audit import AuditEntry, AuditReport, audit_dataset, dataset_fingerprint
from .cache import SampleCache, build_cache, find_cache
from .choose import choose_data_root, has_dataset
from .dataset import OxfordPetSegmentation
from .download import (
                       RESOURCES,
                       ChecksumError,
                       DownloadError,
                       UnsafeArchiveError,
                       download_oxford_pet,
                       safe_extract,
)
from .index import BREEDS, SPLITS, Record, load_split, parse_list, read_list, split_records
from .masks import IGNORE_INDEX, trimap_to_mask
from .sample import SampleInfo, make_sample_dataset

__all__ = [
    "AuditEntry", "AuditReport", "audit_dataset", "dataset_fingerprint", "OxfordPetSegmentation",
    "RESOURCES", "ChecksumError", "DownloadError", "UnsafeArchiveError", "download_oxford_pet",
    "safe_extract", "BREEDS", "SPLITS", "Record", "load_split", "parse_list", "read_list",
    "split_records", "choose_data_root", "has_dataset", "SampleCache", "build_cache",
    "find_cache", "IGNORE_INDEX", "trimap_to_mask", "SampleInfo", "make_sample_dataset",
]
