"""Manifests (the image list every stage reads), grouped stratified splits and leakage checks."""

from xvision.data.manifest import (
    SPLITS,
    Manifest,
    ManifestRow,
    build_manifest,
    read_manifest,
    write_manifest,
)
from xvision.data.split import (
    assign_splits,
    check_no_leakage,
    file_hashes,
    group_values,
    split_counts,
)

__all__ = [
    "SPLITS",
    "Manifest",
    "ManifestRow",
    "assign_splits",
    "build_manifest",
    "check_no_leakage",
    "file_hashes",
    "group_values",
    "read_manifest",
    "split_counts",
    "write_manifest",
]
