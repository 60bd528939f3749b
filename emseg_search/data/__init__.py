"""Data layer: readers, validation, splits, fingerprint, torch datasets, synthetic EM data."""

from __future__ import annotations

from emseg_search.data.errors import DataError, FileProblem, Problem
from emseg_search.data.fingerprint import Fingerprint, compute_fingerprint
from emseg_search.data.layout import DataIndex, Pair, scan_folder
from emseg_search.data.loading import EMData, Micrograph, clear_cache, load_data
from emseg_search.data.readers import image_to_float01, read_image, read_mask
from emseg_search.data.splits import (
    GROUP_BY_HELP,
    Split,
    read_groups,
    resolve_split,
    split_names,
    write_split_file,
)

__all__ = [
    "GROUP_BY_HELP",
    "DataError",
    "DataIndex",
    "EMData",
    "FileProblem",
    "Fingerprint",
    "Micrograph",
    "Pair",
    "Problem",
    "Split",
    "clear_cache",
    "compute_fingerprint",
    "image_to_float01",
    "load_data",
    "read_groups",
    "read_image",
    "read_mask",
    "resolve_split",
    "scan_folder",
    "split_names",
    "write_split_file",
]
