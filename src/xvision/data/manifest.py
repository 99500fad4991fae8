"""The manifest CSV: the list of images (and their labels) that every later stage reads.

Format (UTF-8, a BOM is tolerated when reading)::

    path,label,group,split,<any other columns>
    normal/p001/a.png,normal,p001,train,...

- ``path`` (required): the image file, relative to the manifest's folder (absolute paths are accepted
  when reading; :func:`write_manifest` writes relative POSIX paths where it can).
- ``label`` (required): the class name.
- ``group`` (optional): patient or study id; images of one group always land in the same split.
  Empty means the image is its own group.
- ``split`` (optional): ``train``, ``val`` or ``test``; empty means not assigned yet.
- ``mask`` (optional): a lung-field mask image for the row (nonzero = lung), relative like ``path``; used
  by the recipes that pool over the lungs. Like ``path``, it is rewritten when the manifest is written
  elsewhere.
- Any other column is carried through untouched, in its original order.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shlex
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from xvision._fileio import atomic_write_text
from xvision._text import displayable, nfc
from xvision.data.patients import check_patient_groups, patient_ids, warn_patients_across_groups
from xvision.errors import ManifestError
from xvision.io.loader import SUPPORTED_SUFFIXES, UNREAD_PICTURES

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The allowed values of the ``split`` column, in their canonical order."""

REQUIRED_COLUMNS: tuple[str, ...] = ("path", "label")
BUILTIN_COLUMNS: tuple[str, ...] = ("path", "label", "group", "split")
PATH_COLUMNS: tuple[str, ...] = ("mask",)
"""Optional columns that name a file relative to the manifest, like ``path``."""

GroupFrom = Literal["none", "stem", "parent", "top", "patient"]


@dataclass(frozen=True)
class ManifestRow:
    """One line of a manifest.

    Attributes:
        path: The image path exactly as written in the CSV (use :meth:`Manifest.resolve` for a real path).
        label: The class name, in Unicode NFC form.
        group: Patient/study id (NFC), or ``None`` when the image is its own group.
        split: ``"train"``, ``"val"``, ``"test"``, or ``None`` when not assigned.
        extra: Every other column, by name, untouched.
    """

    path: str
    label: str
    group: str | None = None
    split: str | None = None
    extra: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("label", "group"):  # see xvision._text
            object.__setattr__(self, name, nfc(getattr(self, name)))

    def get(self, column: str) -> str | None:
        """Return the value of any column (built-in or extra); empty values and unknown columns give None."""
        if column in BUILTIN_COLUMNS:
            value = getattr(self, column)
        else:
            value = self.extra.get(column)
        return value or None


@dataclass(frozen=True)
class Manifest:
    """A list of labelled images plus the folder their relative paths are relative to.

    Attributes:
        rows: The images, in file order.
        root: Absolute folder that relative ``path`` values are resolved against.
        columns: Column order used when writing (``path`` and ``label`` first, extras kept in place).
            Left empty, it is derived from the rows.
        source: The CSV this manifest was read from, if any (used in error messages).
    """

    rows: list[ManifestRow]
    root: Path
    columns: tuple[str, ...] = ()
    source: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(os.path.abspath(self.root)))
        object.__setattr__(self, "columns", _complete_columns(self.columns, self.rows))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(self.rows)

    @property
    def name(self) -> str:
        """How error messages refer to this manifest."""
        return str(self.source) if self.source else f"manifest in {self.root}"

    @property
    def labels(self) -> list[str]:
        """Sorted unique labels."""
        return sorted({row.label for row in self.rows})

    @property
    def classes(self) -> list[str]:
        """Alias of :attr:`labels` (scikit-learn's word)."""
        return self.labels

    @property
    def has_groups(self) -> bool:
        """True when at least one row has a non-empty ``group``."""
        return any(row.group for row in self.rows)

    @property
    def has_splits(self) -> bool:
        """True when at least one row has a split assigned."""
        return any(row.split for row in self.rows)

    def resolve(self, row: ManifestRow) -> Path:
        """Absolute, normalised path of a row's file (symlinks are not followed)."""
        return Path(os.path.normpath(self.root / row.path))

    def resolve_column(self, row: ManifestRow, column: str) -> Path | None:
        """Absolute path of a file named in one of :data:`PATH_COLUMNS` (None when the cell is empty)."""
        value = row.get(column)
        return None if value is None else Path(os.path.normpath(self.root / value))

    def paths(self) -> list[Path]:
        """Absolute paths of every row, in order."""
        return [self.resolve(row) for row in self.rows]

    def counts(self) -> dict[str, int]:
        """Number of images per label, labels sorted."""
        counts = dict.fromkeys(self.labels, 0)
        for row in self.rows:
            counts[row.label] += 1
        return counts

    def subset(self, split: str) -> Manifest:
        """The rows assigned to ``split`` (one of :data:`SPLITS`)."""
        _check_split_name(split, where=f"subset() of {self.name}")
        return replace(self, rows=[row for row in self.rows if row.split == split])

    def require_split(self, split: str | None) -> None:
        """Raise ManifestError unless some row is in ``split`` (None: every row, always fine): a misspelt or
        absent split would otherwise select nothing, silently."""
        if split is None or any(row.split == split for row in self.rows):
            return
        present = sorted({row.split for row in self.rows if row.split})
        raise ManifestError(
            f"{self.name}: no images in split {split!r} (splits present: {', '.join(present) or 'none'}); "
            "give one of those, or no split to use every image"
        )

    def with_splits(self, mapping: Mapping[str, str | None]) -> Manifest:
        """Return a copy whose ``split`` values come from ``mapping`` (keyed by ``row.path``).

        Rows missing from ``mapping`` keep their current split. Adds a ``split`` column if there was none.
        """
        for value in mapping.values():
            if value:
                _check_split_name(value, where="with_splits()")
        rows = [replace(row, split=mapping.get(row.path, row.split) or None) for row in self.rows]
        columns = self.columns if "split" in self.columns else (*self.columns, "split")
        return replace(self, rows=rows, columns=columns)


def _complete_columns(columns: Iterable[str], rows: list[ManifestRow]) -> tuple[str, ...]:
    ordered = list(dict.fromkeys(columns))
    for name in REQUIRED_COLUMNS[::-1]:
        if name not in ordered:
            ordered.insert(0, name)
    if "group" not in ordered and any(row.group for row in rows):
        ordered.append("group")
    if "split" not in ordered and any(row.split for row in rows):
        ordered.append("split")
    for row in rows:
        ordered.extend(name for name in row.extra if name not in ordered)
    return tuple(ordered)


def _check_split_name(value: str, *, where: str) -> None:
    if value not in SPLITS:
        raise ManifestError(f"{where}: unknown split {value!r}; use one of {', '.join(SPLITS)}")


def read_manifest(path: str | Path, *, columns: Mapping[str, str] | None = None) -> Manifest:
    """Read and validate a manifest CSV.

    ``columns`` maps manifest column names to the file's own (``{"path": "file", "group": "study_id"}``), so a
    data set's labels table reads as a manifest without editing it (`xvision manifest labels.csv --column
    path=file`); the other columns keep their names.

    Raises:
        ManifestError: The file is missing or empty, lacks a ``path``/``label`` column, has a line with an
            empty path or label, an unknown split value or a different number of fields than the header,
            or lists the same file twice. The message names the file and line and says how to fix it.
    """
    path = Path(path)
    if path.is_dir():
        raise ManifestError(
            f"{path} is a folder, not a manifest (a CSV); make one with `xvision manifest {path} -o manifest.csv`"
        )
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found; create one with `xvision manifest FOLDER -o {path}`")
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text))
    header = next(_csv_lines(reader, path), None)
    if not header or not any(name.strip() for name in header):
        raise ManifestError(f"{path}: no header line; the first line must name the columns, e.g. path,label")
    names = [name.strip() for name in header]
    while names and not names[-1]:  # a spreadsheet's empty columns after the last named one (path,label,,)
        names.pop()
    if columns:
        names = _renamed(names, columns, path)
    header_columns = _check_header(names, path)

    root = path.parent
    rows: list[ManifestRow] = []
    seen: dict[str, int] = {}
    for values in _csv_lines(reader, path):
        line = reader.line_num
        if not any(value.strip() for value in values):
            continue
        beyond = [i for i, value in enumerate(values[len(header_columns) :], len(header_columns) + 1) if value.strip()]
        if beyond and len(header) >= beyond[0]:  # under one of the empty names popped above
            raise ManifestError(f"{path} line {line}: a value in column {beyond[0]}, which has no name; name it")
        if not beyond:
            values = values[: len(header_columns)]  # empty cells after the last column
        if len(values) != len(header_columns):
            raise ManifestError(
                f"{path} line {line}: {len(values)} fields but the header has {len(header_columns)} "
                f"({','.join(header_columns)}); quote values that contain commas"
            )
        record = dict(zip(header_columns, values, strict=True))
        row = _parse_row(record, path, line)
        key = os.path.normcase(os.path.normpath(root.absolute() / row.path))
        if key in seen:
            raise ManifestError(
                f"{path} line {line}: {row.path!r} is already listed on line {seen[key]}; "
                "each file may appear only once, remove the duplicate line"
            )
        seen[key] = line
        rows.append(row)
    if not rows:
        raise ManifestError(f"{path}: the manifest lists no images; add one line per image below the header")
    return Manifest(rows=rows, root=root, columns=header_columns, source=path)


def _csv_lines(reader: Iterator[list[str]], path: Path) -> Iterator[list[str]]:
    """The reader's lines; the csv module's own errors (a field over 128 KB, ...) named by file and line."""
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            line = getattr(reader, "line_num", "?")
            raise ManifestError(f"{path} line {line}: not readable as CSV ({error})") from None
        yield values


def _read_text(path: Path) -> str:
    """The file as text: UTF-8 (a BOM allowed); a workbook or UTF-16 file is named as such."""
    data = path.read_bytes()
    if data.startswith(b"PK\x03\x04"):
        raise ManifestError(
            f"{path}: an Excel workbook (or another zip file), not CSV text; save it as CSV UTF-8 "
            "(in Excel: File > Save As > CSV UTF-8)"
        )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ManifestError(f"{path}: UTF-16 text; save the manifest as UTF-8 CSV (Excel: CSV UTF-8)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(f"{path}: not UTF-8 text ({error}); save the manifest as UTF-8 CSV") from error
    if "\x00" in text:  # no path or label holds one; every later open() would fail on it
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ManifestError(f"{path} line {line}: a NUL byte; the file is damaged or not CSV text")
    return text


def _renamed(names: list[str], columns: Mapping[str, str], path: Path) -> list[str]:
    """The header with the file's columns renamed to the manifest's names in ``columns`` (manifest: file)."""
    _check_duplicates(names, path)
    unknown = [theirs for theirs in columns.values() if theirs not in names]
    if unknown:
        _check_separator(names, path)
        raise ManifestError(
            f"{path} line 1: no column {', '.join(map(repr, unknown))} to rename (found: {', '.join(names)})"
        )
    twice = sorted({theirs for theirs in columns.values() if list(columns.values()).count(theirs) > 1})
    if twice:
        raise ManifestError(f"{path}: column {', '.join(map(repr, twice))} is given more than one manifest name")
    to_manifest = {theirs: mine for mine, theirs in columns.items()}
    renamed = [to_manifest.get(name, name) for name in names]
    clash = sorted({mine for mine in columns if renamed.count(mine) > 1})
    if clash:
        raise ManifestError(
            f"{path} line 1: the file already has a column {clash[0]!r}; give it another name too "
            f"(--column old_{clash[0]}={clash[0]})"
        )
    return renamed


def _check_duplicates(columns: list[str], path: Path) -> None:
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise ManifestError(f"{path} line 1: duplicate column(s) {', '.join(duplicates)}; rename them")


def _check_separator(names: list[str], path: Path) -> None:
    """A header read as one column that holds another separator: the file is not comma-separated."""
    if len(names) == 1 and (separator := next((c for c in ";\t|" if c in names[0]), None)):
        raise ManifestError(
            f"{path} line 1: the columns are separated by {separator!r}, not commas; save the file as "
            "comma-separated CSV (in a spreadsheet: CSV, comma-delimited)"
        )


def _check_header(columns: list[str], path: Path) -> tuple[str, ...]:
    for index, name in enumerate(columns, start=1):
        if not name:
            raise ManifestError(f"{path} line 1: column {index} has no name; name it or remove it")
    _check_duplicates(columns, path)
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        _check_separator(columns, path)
        raise ManifestError(
            f"{path} line 1: missing required column(s) {', '.join(missing)} (found: {', '.join(columns)}); "
            "the header must include path,label (optional: group, split, mask, lesion_x, lesion_y, lesion_diam; "
            f"rename your columns to these names, or map them: `xvision manifest {shlex.quote(str(path))} --column "
            f"path=YOUR_COLUMN ... -o manifest.csv`)"
        )
    return tuple(columns)


def _parse_row(record: dict[str, str], path: Path, line: int) -> ManifestRow:
    file_path = record["path"].strip()
    label = record["label"].strip()
    if not file_path:
        raise ManifestError(f"{path} line {line}: empty path; give the image file or delete the line")
    if not label:
        raise ManifestError(f"{path} line {line}: empty label for {file_path!r}; give its class or delete it")
    split = record.get("split", "").strip().lower() or None
    if split is not None and split not in SPLITS:
        raise ManifestError(
            f"{path} line {line}: unknown split {record['split']!r}; use one of {', '.join(SPLITS)} "
            "(or leave it empty to have `xvision split` assign it)"
        )
    group = record.get("group", "").strip() or None
    extra = {name: value for name, value in record.items() if name not in BUILTIN_COLUMNS}
    return ManifestRow(path=file_path, label=label, group=group, split=split, extra=extra)


def write_manifest(manifest: Manifest, path: str | Path, *, relative: bool = False) -> Path:
    """Write ``manifest`` to ``path`` atomically and return ``path``.

    Written into the manifest's own folder, paths are kept exactly as they were. Written elsewhere, each
    path (``path`` and the :data:`PATH_COLUMNS`) is rewritten relative to the new folder when the file lies
    inside it, and absolute otherwise, so the CSV still points at the same files; with ``relative``, relative
    in every case (``../data/a.png``), so that the CSV and its images can move together and stay the same
    bytes (a cross-validation's fold manifests). Extra columns are kept in their order.
    """
    path = Path(path)
    destination = Path(os.path.abspath(path.parent))
    same_root = os.path.normcase(destination) == os.path.normcase(manifest.root)
    as_written = _relative_path if relative else _relative_or_absolute_path
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(manifest.columns)
    for row in manifest.rows:
        written = row.path if same_root else as_written(manifest.resolve(row), destination)
        values = {"path": written, "label": row.label, "group": row.group or "", "split": row.split or ""}
        for column in PATH_COLUMNS:
            file = manifest.resolve_column(row, column)
            if file is not None and not same_root:
                values[column] = as_written(file, destination)
        writer.writerow([values[name] if name in values else row.extra.get(name, "") for name in manifest.columns])
    return atomic_write_text(path, buffer.getvalue())


def _relative_or_absolute_path(file: Path, folder: Path) -> str:
    try:
        return file.relative_to(folder).as_posix()
    except ValueError:
        return file.as_posix()


def _relative_path(file: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(os.path.abspath(file), folder)).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return file.as_posix()


def build_manifest(
    folder: str | Path,
    *,
    suffixes: Iterable[str] | None = None,
    group_from: GroupFrom = "none",
) -> Manifest:
    """List the images of a folder with one subfolder per class.

    Every immediate, non-hidden subfolder of ``folder`` is a class; its images are found recursively.
    An image is a file whose suffix (case-insensitive) is in ``suffixes`` (default:
    ``xvision.io.SUPPORTED_SUFFIXES``), or a file with no suffix (or a numeric one, as in DICOM UID names)
    that starts with the DICOM preamble (``DICM`` at byte 128).
    Hidden files and folders (names starting with ``.``) are skipped. Rows are sorted by path, and paths are
    relative to ``folder``, so writing the manifest to ``folder/manifest.csv`` keeps them short.

    Args:
        folder: The dataset folder.
        suffixes: Accepted file suffixes such as ``".png"``; overrides the default list.
        group_from: How to fill the ``group`` column. ``"none"`` (default) leaves it empty: every image is
            its own group, which is right only when each patient has one image. ``"parent"`` uses the name of
            the folder holding the image when images are nested as ``class/patient/image``
            (images lying directly in a class folder get no group). ``"top"`` uses the first folder below the
            class folder, for exports nested as ``class/patient/study/series/image`` (a PACS export), where
            ``"parent"`` would take the series folder. ``"stem"`` uses the file name without
            its suffix, for datasets that name files by patient across several class folders. ``"patient"``
            uses the Patient ID in each DICOM header (other images get no group). With any other choice, DICOM
            files of one Patient ID found in several groups are warned about.

    Raises:
        ManifestError: ``folder`` is missing, has no class subfolders, or fewer than two classes hold images.
    """
    folder = Path(folder)
    if group_from not in ("none", "stem", "parent", "top", "patient"):
        raise ManifestError(f"unknown group_from {group_from!r}; use none, stem, parent, top or patient")
    if not folder.is_dir():
        raise ManifestError(f"{folder}: folder not found; give a folder with one subfolder of images per class")
    accepted = _normalise_suffixes(suffixes)
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not _hidden(p.name))
    unnamed = [d for d in class_dirs if displayable(d.name) != d.name]
    if unnamed:  # its name would be the label, and a UTF-8 manifest cannot hold it
        logger.warning(
            "%s: skipping class folder(s) whose names are not UTF-8: %s; rename them",
            folder,
            ", ".join(displayable(d.name) for d in unnamed),
        )
        class_dirs = [d for d in class_dirs if d not in unnamed]
    if not class_dirs:
        raise ManifestError(
            f"{folder}: no class subfolders; put the images in one subfolder per class, e.g. normal/ and abnormal/"
        )
    stray = [p for p in folder.iterdir() if p.is_file() and _is_image(p, accepted)]
    if stray:
        logger.warning("%s: ignoring %d image(s) not inside a class subfolder", folder, len(stray))

    rows: list[ManifestRow] = []
    empty: list[str] = []
    real_root = os.path.realpath(folder)
    for class_dir in class_dirs:
        # A folder linked from inside this class into the dataset folder or another class (`ln -s ../nodule`,
        # `ln -s ..`) would list the same films under a second label: such links are not followed.
        others = [os.path.realpath(d) for d in class_dirs if d != class_dir]
        images = _find_images(class_dir, accepted, root=real_root, others=others, for_manifest=True)
        if not images:
            empty.append(class_dir.name)
        for image in images:
            group = _group_for(image, class_dir, group_from)
            rows.append(ManifestRow(path=image.relative_to(folder).as_posix(), label=class_dir.name, group=group))
    found = sorted({row.label for row in rows})
    if not found:
        raise ManifestError(
            f"{folder}: no images found in the class subfolders (accepted suffixes: {', '.join(sorted(accepted))})"
        )
    if len(found) < 2:
        raise ManifestError(
            f"{folder}: found only class {found[0]}; a classifier needs at least two class subfolders with images"
        )
    if empty:
        logger.warning("%s: skipping class folder(s) with no images: %s", folder, ", ".join(empty))
    if group_from in ("parent", "top") and not any(row.group for row in rows):
        logger.warning(
            "%s: --group-from %s found no image in a folder below its class folder (CLASS/PATIENT/image), "
            "so no group was set; every image counts as its own patient",
            folder,
            group_from,
        )
    rows.sort(key=lambda row: row.path)
    if group_from == "patient":
        check_patient_groups(folder, rows)
    else:
        warn_patients_across_groups(folder, rows, group_from)
    return Manifest(rows=rows, root=folder, columns=("path", "label", "group"))


def _normalise_suffixes(suffixes: Iterable[str] | None) -> frozenset[str]:
    if suffixes is None:
        return SUPPORTED_SUFFIXES
    if isinstance(suffixes, str):  # ".png" alone, not its characters
        suffixes = [suffixes]
    normalised = frozenset(s.lower() if s.startswith(".") else f".{s.lower()}" for s in suffixes)
    if not normalised:
        raise ManifestError("suffixes is empty; give at least one, e.g. .png")
    return normalised


def _hidden(name: str) -> bool:
    return name.startswith(".")


def find_images(folder: str | Path, suffixes: Iterable[str] | None = None) -> list[Path]:
    """The images under ``folder``, sorted: files with an image suffix, and DICOMs named otherwise (no suffix, a
    UID, a vendor's suffix), found by their header; not DICOMDIR. Hidden files and folders are skipped; linked
    folders are followed, each real folder once."""
    return _find_images(Path(folder), _normalise_suffixes(suffixes))


def _find_images(
    class_dir: Path,
    accepted: frozenset[str],
    *,
    root: str | None = None,
    others: Sequence[str] = (),
    for_manifest: bool = False,
) -> list[Path]:
    """The images under ``class_dir``. A linked folder whose real path is the dataset folder ``root`` or lies in
    one of the ``others`` class folders is skipped with a warning: its images are listed there, under their
    own label."""
    images: list[Path] = []
    broken: list[Path] = []
    undecodable: list[str] = []
    unread: Counter[str] = Counter()
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back up the tree, or two links to one folder
            dirnames[:] = []
            continue
        seen.add(real)
        crossing = root if real == root else next((other for other in others if _inside(real, other)), None)
        if crossing is not None:
            logger.warning(
                "%s: not following the linked folder %s: it leads to %s, which is listed on its own "
                "(its images would get a second label)",
                class_dir,
                Path(dirpath).relative_to(class_dir).as_posix(),
                crossing,
            )
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        for name in sorted(filenames):
            candidate = Path(dirpath) / name
            if _hidden(name):
                continue
            relative = os.path.relpath(candidate, class_dir)  # the file's name and the folders below the class's
            if for_manifest and displayable(relative) != relative:  # bytes that are not UTF-8: a UTF-8 manifest
                undecodable.append(displayable(relative))  # cannot name the file (predict reads it all the same)
                continue
            if _is_image(candidate, accepted):
                if candidate.is_file():
                    images.append(candidate)
                else:  # a link to nothing, or a loop: no later stage could read it, and `split` would stop on it
                    broken.append(candidate)
            elif candidate.suffix.lower() in UNREAD_PICTURES:  # named; notes and tables are skipped quietly
                unread[candidate.suffix.lower()] += 1
    if undecodable:
        logger.warning(
            "%s: skipping %d file(s) whose names are not UTF-8 (first: %s); rename them to list them",
            class_dir,
            len(undecodable),
            undecodable[0],
        )
    if broken:
        logger.warning(
            "%s: skipping %d name(s) that are not readable files (a link to nothing, a pipe, a device; first: %s)",
            class_dir,
            len(broken),
            broken[0].name,
        )
    if unread:
        logger.warning(
            "%s: skipping %s: not a format Xvision reads (%s); convert them to PNG",
            class_dir,
            ", ".join(f"{n} {suffix} file(s)" for suffix, n in sorted(unread.items())),
            ", ".join(sorted(accepted)),
        )
    return images


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_image(path: Path, accepted: frozenset[str]) -> bool:
    suffix = path.suffix.lower()
    if suffix in accepted:
        return True
    if path.name.upper() == "DICOMDIR":  # an export's index of its files: DICOM, but never an image
        return False
    # DICOM files are often named without a suffix, by a UID such as 1.2.840.113619.5 (suffix ".5"), or with a
    # vendor's own suffix (.img, .dc3, ...): any other file is taken when it opens as DICOM does.
    return ".dcm" in accepted and suffix not in UNREAD_PICTURES and _has_dicom_preamble(path)


def _has_dicom_preamble(path: Path) -> bool:
    if not path.is_file():  # a named pipe would block the scan, a device never end it
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _group_for(image: Path, class_dir: Path, group_from: GroupFrom) -> str | None:
    if group_from == "stem":
        return image.stem
    if group_from == "patient":
        return patient_ids(image.parent, [image.name]).get(image.name)
    if group_from == "parent" and image.parent != class_dir:
        return image.parent.name
    if group_from == "top" and image.parent != class_dir:
        return image.relative_to(class_dir).parts[0]
    return None
