"""Grouped, stratified train/val/test splits, and checks that no patient or image leaks across them.

A *group* is the unit that is never divided between splits: the value of the ``group_by`` column (a patient
or study id), or the image alone when that value is empty. When SHA-256 hashes are given, files with identical
bytes are merged into one group too, so an image copied under two names cannot end up on both sides.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from xvision._fileio import sha256_file
from xvision._text import nfc
from xvision.data.hints import warn_conflicting_labels
from xvision.data.manifest import SPLITS, Manifest, ManifestRow, read_manifest
from xvision.errors import LeakageError, ManifestError

logger = logging.getLogger(__name__)


def file_hashes(manifest: Manifest) -> dict[str, str]:
    """Return ``{absolute path: SHA-256 hex}`` for every file of ``manifest``.

    Keys are ``str(manifest.resolve(row))``, the form :func:`check_no_leakage` and later stages look up.

    Raises:
        ManifestError: A listed file does not exist or cannot be read.
    """
    hashes: dict[str, str] = {}
    missing: list[_Missing] = []
    for row in manifest.rows:
        key = str(manifest.resolve(row))
        if key not in hashes:
            try:
                hashes[key] = _hash_file(manifest, row, key)
            except _Missing as error:
                missing.append(error)
    if len(missing) == 1:
        raise missing[0]
    if missing:  # all of them at once: a folder moved, or images never fetched, is not fixed line by line
        raise ManifestError(
            f"{manifest.name}: {len(missing)} of the {len(manifest.rows)} listed files not found, e.g. "
            f"{missing[0].row_path!r} (looked for {missing[0].key}); fix the paths (were the images moved, or never "
            "fetched?) or remove those lines"
        )
    return hashes


class _Missing(ManifestError):
    """A listed file that does not exist (collected by :func:`file_hashes`)."""

    def __init__(self, manifest: Manifest, row: ManifestRow, key: str) -> None:
        super().__init__(f"{manifest.name}: {row.path!r} not found (looked for {key}); fix the path or remove the line")
        self.row_path, self.key = row.path, key


def check_readable_splits(manifest: Manifest) -> dict[str, str]:
    """Check the splits of the files that can be read; return their ``{absolute path: SHA-256}``.

    For stages that report and skip an unreadable file rather than stop (`extract`, `fit`): such a file
    cannot leak, and it is reported where it is read. A manifest without splits is not checked. Identical
    files under different labels are warned about (:func:`~xvision.data.hints.warn_conflicting_labels`)."""
    hashes = readable_hashes(manifest)
    warn_conflicting_labels(manifest, hashes, manifest.name)
    if manifest.has_splits:
        readable = replace(manifest, rows=[r for r in manifest.rows if str(manifest.resolve(r)) in hashes])
        check_no_leakage(readable, hashes=hashes)
    return hashes


def readable_hashes(manifest: Manifest) -> dict[str, str]:
    """``{absolute path: SHA-256}`` of the manifest's files that can be read; the others are left out."""
    hashes: dict[str, str] = {}
    for row in manifest.rows:
        key = str(manifest.resolve(row))
        try:
            hashes.setdefault(key, sha256_file(key))
        except OSError:
            pass
    return hashes


def _hash_file(manifest: Manifest, row: ManifestRow, key: str) -> str:
    try:
        return sha256_file(key)
    except FileNotFoundError as error:
        raise _Missing(manifest, row, key) from error
    except OSError as error:
        raise ManifestError(f"{manifest.name}: cannot read {row.path!r}: {error}") from error


def group_values(manifest: Manifest, group_by: str | None) -> list[str | None]:
    """The grouping value of every row (``None``: the row is its own group).

    ``group_by`` may name any column. A manifest without a ``group`` column is accepted for the default
    ``group_by="group"`` (every image is then its own group); any other unknown column is an error.

    Raises:
        ManifestError: ``group_by`` is not a column of the manifest.
    """
    if group_by is None or (group_by == "group" and group_by not in manifest.columns):
        return [None] * len(manifest.rows)
    if group_by not in manifest.columns:
        raise ManifestError(
            f"{manifest.name}: no column {group_by!r} to group by; available columns: "
            f"{', '.join(manifest.columns)}; or use `--group-by none` to make every image its own group"
        )
    return [nfc(row.get(group_by)) for row in manifest.rows]  # any column: a patient is one group (xvision._text)


def _units(manifest: Manifest, group_by: str | None, hashes: Mapping[str, str] | None) -> list[list[int]]:
    """Row indices of each indivisible unit: rows joined by a shared group value or identical bytes."""
    digests = [(hashes or {}).get(str(manifest.resolve(row))) for row in manifest.rows]
    codes = link_groups(digests, group_values(manifest, group_by))
    members: dict[int, list[int]] = defaultdict(list)
    for index, code in enumerate(codes.tolist()):
        members[code].append(index)
    return [members[code] for code in sorted(members)]


def link_groups(shas: Sequence[str | None], values: Sequence[str | None]) -> np.ndarray:
    """Unit id (0..k-1, in order of each unit's first row) per row: rows sharing a content hash or a
    non-empty group value share one, and so does every row linked to them through either (union-find)."""
    parent = list(range(len(shas)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of: dict[tuple[str, str], int] = {}
    for index, (digest, value) in enumerate(zip(shas, values, strict=True)):
        keys = ([("group", value)] if value else []) + ([("sha256", digest)] if digest else [])
        for key in keys:
            a, b = find(index), find(first_of.setdefault(key, index))
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(len(shas))], dtype=np.int64)
    return np.unique(roots, return_inverse=True)[1].reshape(-1)


def _check_fractions(test: float, val: float) -> None:
    for name, value in (("test", test), ("val", val)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ManifestError(f"{name} fraction must be a number >= 0, got {value!r}")
    if test + val >= 1:
        raise ManifestError(
            f"test + val fractions must leave images for training (test={test}, val={val}, sum >= 1); "
            "lower them, e.g. --test 0.2 --val 0.1"
        )


def assign_splits(
    manifest: Manifest | str | Path,
    *,
    group_by: str | None = "group",
    test: float = 0.2,
    val: float = 0.1,
    seed: int = 0,
    hashes: Mapping[str, str] | None = None,
) -> Manifest:
    """Return a copy of ``manifest`` with a ``split`` for every row, stratified by label and grouped.

    Groups are never divided between splits. A group whose images carry different labels is stratified by
    its majority label (ties: the first label alphabetically). Per class, groups are shuffled with ``seed``
    and dealt, one at a time, to the split furthest below its share of that class's images, so the fractions
    are of images and hold approximately (to within about one group). Train, and every split requested with a
    fraction > 0, gets at least one group of each class. Existing splits are overwritten.

    Args:
        manifest: The images to split (a :class:`Manifest`, or a manifest file's path).
        group_by: Column holding the patient/study id (``"group"`` or any extra column); ``None`` treats every
            image as its own group. Rows with an empty value are their own group.
        test: Fraction of images for the test split.
        val: Fraction of images for the validation split.
        seed: Seed of the shuffle; the same inputs and seed always give the same split.
        hashes: ``{absolute path: SHA-256}`` (see :func:`file_hashes`); files with identical hashes are kept
            in one split as if they shared a group.

    Raises:
        ManifestError: Invalid fractions, an unknown ``group_by`` column, or a class with fewer groups than
            there are splits to fill.
    """
    manifest = as_manifest(manifest)
    _check_fractions(test, val)
    fractions = {"train": 1.0 - test - val, "val": val, "test": test}
    wanted = [name for name in SPLITS if fractions[name] > 0]
    units = _units(manifest, group_by, hashes)
    if group_by is not None and all(len(unit) == 1 for unit in units) and len(units) > 1:
        logger.info("no two images share a %r value: every image is its own group", group_by)

    by_class: dict[str, list[list[int]]] = defaultdict(list)
    for unit in units:
        labels = Counter(manifest.rows[i].label for i in unit)
        majority = min(labels, key=lambda label: (-labels[label], label))
        by_class[majority].append(unit)
    _check_enough_groups(manifest, by_class, wanted, group_by)

    rng = np.random.default_rng(seed)
    mapping: dict[str, str] = {}
    for label in sorted(by_class):
        class_units = by_class[label]
        shuffled = [class_units[i] for i in rng.permutation(len(class_units))]
        for split, members in _deal(shuffled, wanted, fractions).items():
            for unit in members:
                for index in unit:
                    mapping[manifest.rows[index].path] = split
    return manifest.with_splits(mapping)


def _check_enough_groups(
    manifest: Manifest, by_class: Mapping[str, list[list[int]]], wanted: list[str], group_by: str | None
) -> None:
    short = {label: len(units) for label, units in sorted(by_class.items()) if len(units) < len(wanted)}
    if not short:
        return
    what = f"groups ({group_by!r} values)" if group_by else "images"
    counts = ", ".join(f"{label!r} has {n}" for label, n in short.items())
    if min(short.values()) < 2:  # no choice of splits helps: one image can only go to train
        one = what[:-1] if group_by is None else "group"
        fix = f"Add data, or remove the class with one {one} from the manifest: it could only be trained on"
    else:
        fix = "Add data, or request fewer splits (" + " or ".join(f"--{s} 0" for s in wanted if s != "train") + ")"
    raise ManifestError(
        f"{manifest.name}: too few {what} to split into {', '.join(wanted)}: {counts}; each class needs at "
        f"least {len(wanted)} (one per split). {fix}"
    )


def _deal(units: list[list[int]], wanted: list[str], fractions: Mapping[str, float]) -> dict[str, list[list[int]]]:
    """Give each unit, in order, to the split with the largest shortfall; then make sure none is empty."""
    total = sum(len(unit) for unit in units)
    target = {name: fractions[name] * total for name in wanted}
    dealt: dict[str, list[list[int]]] = {name: [] for name in wanted}
    size = dict.fromkeys(wanted, 0)
    for unit in units:
        name = max(wanted, key=lambda s: target[s] - size[s])  # ties: the earlier split in SPLITS order
        dealt[name].append(unit)
        size[name] += len(unit)
    for name in wanted:
        if not dealt[name]:
            donor = max(wanted, key=lambda s: len(dealt[s]))
            smallest = min(range(len(dealt[donor])), key=lambda i: len(dealt[donor][i]))
            dealt[name].append(dealt[donor].pop(smallest))
    return dealt


def split_counts(
    manifest: Manifest, group_by: str | None = "group", hashes: Mapping[str, str] | None = None
) -> list[tuple[str, str, int, int]]:
    """``(split, label, images, groups)`` for every split and label present, in split then label order.

    A group is counted once per (split, label) it has images in; rows without a group count as one each.
    With ``hashes`` (from :func:`file_hashes`), byte-identical files count as one group, as the split
    treats them. Rows without a split are reported under the split name ``"-"``.
    """
    images: Counter[tuple[str, str]] = Counter()
    groups: dict[tuple[str, str], set[int]] = defaultdict(set)
    for unit, members in enumerate(_units(manifest, group_by, hashes)):
        for index in members:
            row = manifest.rows[index]
            images[(row.split or "-", row.label)] += 1
            groups[(row.split or "-", row.label)].add(unit)
    order = {name: i for i, name in enumerate((*SPLITS, "-"))}
    return [
        (split, label, images[(split, label)], len(groups[(split, label)]))
        for split, label in sorted(images, key=lambda key: (order[key[0]], key[1]))
    ]


def as_manifest(manifest: Manifest | str | Path) -> Manifest:
    """A Manifest as given, or read from its file; anything else is a TypeError naming what was expected."""
    if isinstance(manifest, Manifest):
        return manifest
    if isinstance(manifest, (str, Path)):
        return read_manifest(manifest)
    raise TypeError(f"manifest: expected a Manifest or a manifest file's path, got {type(manifest).__name__}")


def check_no_leakage(
    manifest: Manifest | str | Path,
    *,
    group_by: str | None = "group",
    check_hashes: bool = True,
    hashes: Mapping[str, str] | None = None,
) -> None:
    """Raise :class:`LeakageError` if a group, or a file's exact bytes, appear in more than one split.

    Rows without a split are ignored.

    Args:
        manifest: The split manifest (a :class:`Manifest`, or a manifest file's path).
        group_by: Column holding the patient/study id; ``None`` skips the group check.
        check_hashes: Also look for identical files (same SHA-256) in different splits.
        hashes: Precomputed ``{absolute path: SHA-256}`` (see :func:`file_hashes`); missing files are hashed.

    Raises:
        LeakageError: The message names the group or the two files, their splits, and how to fix it.
        ManifestError: ``group_by`` is not a column, or a file cannot be read for hashing.
    """
    manifest = as_manifest(manifest)
    fix = f"re-split with `xvision split {manifest.source or 'MANIFEST'}"
    splits_of: dict[str, dict[str, ManifestRow]] = defaultdict(dict)
    for row, value in zip(manifest.rows, group_values(manifest, group_by), strict=True):
        if row.split and value is not None:
            splits_of[value].setdefault(row.split, row)
    leaked = {value: rows for value, rows in splits_of.items() if len(rows) > 1}
    if leaked:
        value = sorted(leaked)[0]
        where = ", ".join(f"{row.path!r} in {split}" for split, row in _in_split_order(leaked[value]))
        more = f" (and {len(leaked) - 1} more group(s))" if len(leaked) > 1 else ""
        raise LeakageError(
            f"{manifest.name}: {group_by} {value!r} is in more than one split: {where}{more}; "
            f"{fix} --group-by {group_by}` so each group stays in one split"
        )
    if check_hashes:
        _check_identical_files(manifest, hashes or {}, fix)


def _check_identical_files(manifest: Manifest, hashes: Mapping[str, str], fix: str) -> None:
    first_with: dict[str, ManifestRow] = {}
    for row in manifest.rows:
        if not row.split:
            continue
        key = str(manifest.resolve(row))
        digest = hashes.get(key) or _hash_file(manifest, row, key)
        other = first_with.setdefault(digest, row)
        if other.split != row.split:
            raise LeakageError(
                f"{manifest.name}: identical files (same SHA-256) in different splits: {other.path!r} in "
                f"{other.split} and {row.path!r} in {row.split}; delete one copy, or {fix}` "
                "(it keeps identical files in one split)"
            )


def _in_split_order(rows: Mapping[str, ManifestRow]) -> list[tuple[str, ManifestRow]]:
    return [(name, rows[name]) for name in SPLITS if name in rows]
