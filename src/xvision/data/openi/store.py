"""The output folder of a fetch: ``images/``, ``records.jsonl`` and ``failures.jsonl``.

``records.jsonl`` holds one JSON object per image (see :class:`~xvision.data.openi.records.ImageRecord`) and is
only ever appended to while a fetch runs; a record is written after its image has been downloaded to a temporary
name, verified to decode and renamed into place. Opening the folder repairs what a killed run can leave behind:
a half-written last line, a record whose file is missing or altered, duplicate lines, ``*.part`` files. So every
record in the file names a complete, verified image, and no image is listed twice.

``reports-without-images.jsonl`` lists the reports that have no image at all (records with an empty
``image_id``), so that counts of reports stay complete.

``failures.jsonl`` lists what the last run could not get (pages and images, with the reason); it is rewritten at
the end of every run, and a re-run tries them again.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

from xvision._fileio import atomic_write_text, sha256_file
from xvision.data.openi.records import IMAGES_DIR, ImageRecord
from xvision.errors import FetchError

logger = logging.getLogger(__name__)

RECORDS_FILE = "records.jsonl"
REPORTS_FILE = "reports-without-images.jsonl"
FAILURES_FILE = "failures.jsonl"
_LOCK_FILE = ".fetch.lock"


@dataclass(frozen=True)
class Failure:
    """Something a run could not get: a search page (``key`` = ``"m-n"``), an item, a report or an image.

    ``retry`` is False for what another run will not fix (an unusable item, a URL on another host, a client
    error, a corrupt archive member): such failures are listed but do not make the command fail.
    """

    kind: str
    key: str
    reason: str
    url: str | None = None
    uid: str | None = None
    retry: bool = True


class RecordStore:
    """Read, repair and extend an output folder. Use as a context manager (it holds a lock on the folder).

    Args:
        root: The output folder; created if missing.
        verify: Check each stored image's SHA-256 when opening (a record whose file changed is dropped, so the
            image is fetched again).
    """

    def __init__(self, root: str | Path, *, verify: bool = True) -> None:
        self.root = Path(root)
        self.images_dir = self.root / IMAGES_DIR
        self._verify = verify
        self._records: dict[str, ImageRecord] = {}
        self._reports: dict[str, ImageRecord] = {}
        self._handle: IO[str] | None = None
        self._lock: IO[str] | None = None
        self.repaired = 0

    def __enter__(self) -> RecordStore:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _acquire_lock(self.root / _LOCK_FILE)
        for part in self.images_dir.glob(".*.part"):
            part.unlink(missing_ok=True)
        self._load()
        self._reports = {record.uid: record for record in _read_jsonl(self.root / REPORTS_FILE, report=True)[0]}
        self._handle = open(self.root / RECORDS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()
        if self._lock is not None:
            self._lock.close()

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[ImageRecord]:
        """Every record, in file order."""
        return list(self._records.values())

    def get(self, image_id: str) -> ImageRecord | None:
        return self._records.get(image_id)

    def is_complete(self, image_id: str) -> bool:
        """Whether ``image_id`` has a record with a stored, verified image."""
        record = self._records.get(image_id)
        return record is not None and record.file is not None

    def add(self, record: ImageRecord) -> None:
        """Append ``record`` (flushed at once). A record for an id already present is ignored."""
        if record.image_id in self._records:
            return
        assert self._handle is not None, "use RecordStore as a context manager"
        self._handle.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
        self._handle.flush()
        self._records[record.image_id] = record

    def add_report(self, record: ImageRecord) -> None:
        """Remember a report that has no image (``record.image_id == ""``); a uid already listed is ignored."""
        if record.uid not in self._reports:
            self._reports[record.uid] = record
            text = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in self._reports.values())
            atomic_write_text(self.root / REPORTS_FILE, text)

    def drop_pending(self) -> None:
        """Forget records without an image (from a reports-only bulk run) so that complete ones can replace them."""
        if any(record.file is None for record in self._records.values()):
            self._records = {key: record for key, record in self._records.items() if record.file is not None}
            self._rewrite()

    def final_path(self, record: ImageRecord) -> Path:
        """Where ``record``'s image is stored."""
        return self.images_dir / record.file_name

    def save_image(self, record: ImageRecord, fill: Callable[[IO[bytes], Path], str]) -> ImageRecord:
        """Write an image through a temporary ``.part`` file and return ``record`` with ``file`` and ``sha256``.

        ``fill(handle, tmp_path)`` writes the bytes, verifies them (e.g. decodes ``tmp_path``) and returns their
        SHA-256; only if it returns is the file renamed into place. Nothing half-written keeps the final name.
        """
        final = self.final_path(record)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=self.images_dir)
        tmp_path = Path(tmp)
        try:
            with os.fdopen(fd, "w+b") as handle:
                digest = fill(handle, tmp_path)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
            os.replace(tmp_path, final)
        finally:
            tmp_path.unlink(missing_ok=True)
        return replace(record, file=f"{IMAGES_DIR}/{final.name}", sha256=digest)

    def adopt(self, record: ImageRecord, verify: Callable[[Path], None]) -> ImageRecord | None:
        """The record of an image already in place without a record (a run killed between rename and record).

        Returns None (and removes the file) when the file fails ``verify``; None also when there is no file.
        """
        final = self.final_path(record)
        if not final.is_file():
            return None
        try:
            verify(final)
        except Exception as error:  # any decoder failure means: fetch it again
            logger.warning("%s: removing an unreadable image left by an earlier run (%s)", final, error)
            final.unlink(missing_ok=True)
            return None
        return replace(record, file=f"{IMAGES_DIR}/{final.name}", sha256=sha256_file(final))

    def previous_failures(self) -> list[Failure]:
        """The failures the last run recorded (empty when none or unreadable)."""
        return read_failures(self.root)

    def write_failures(self, failures: Iterable[Failure]) -> None:
        """Replace ``failures.jsonl`` with ``failures`` (the file is removed when there are none)."""
        lines = [json.dumps(asdict(failure), ensure_ascii=False) for failure in failures]
        path = self.root / FAILURES_FILE
        if lines:
            atomic_write_text(path, "\n".join(lines) + "\n")
        else:
            path.unlink(missing_ok=True)

    def _load(self) -> None:
        path = self.root / RECORDS_FILE
        if not path.exists():
            return
        raw = path.read_bytes()
        dropped = 0
        for line in raw.decode("utf-8", errors="replace").splitlines():
            record = _parse_line(line, report=False)
            if record is None or record.image_id in self._records or not self._intact(record):
                dropped += line.strip() != ""
                continue
            self._records[record.image_id] = record
        if dropped or (raw and not raw.endswith(b"\n")):
            self.repaired = dropped
            logger.warning(
                "%s: dropped %d unusable or duplicate line(s); their images are fetched again", path, dropped
            )
            self._rewrite()

    def _intact(self, record: ImageRecord) -> bool:
        if record.file is None:
            return True
        path = self.root / record.file
        if record.file != f"{IMAGES_DIR}/{record.file_name}" or not path.is_file():
            return False
        return not self._verify or sha256_file(path) == record.sha256

    def _rewrite(self) -> None:
        text = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in self._records.values())
        atomic_write_text(self.root / RECORDS_FILE, text)
        if self._handle is not None:  # keep appending to the new file, not the replaced one
            self._handle.close()
            self._handle = open(self.root / RECORDS_FILE, "a", encoding="utf-8")  # noqa: SIM115


def read_records(folder: str | Path) -> list[ImageRecord]:
    """The image records of an output folder (lines that do not parse are skipped; duplicates keep the first).

    Raises:
        FetchError: ``folder`` has no ``records.jsonl``.
    """
    path = Path(folder) / RECORDS_FILE
    if not path.is_file():
        raise FetchError(f"{path} not found; fetch images first with `xvision fetch openi -o {folder}`")
    records, damaged = _read_jsonl(path, report=False)
    repair = f"run the same `xvision fetch openi -o {folder}` again to repair the file"
    if damaged and not records:
        raise FetchError(f"{path}: none of its {len(damaged)} line(s) is a readable record; {repair}")
    if damaged:
        lines = ", ".join(map(str, damaged[:5])) + (", ..." if len(damaged) > 5 else "")
        logger.warning("%s: %d damaged line(s) left out (line %s); %s", path, len(damaged), lines, repair)
    return records


def read_failures(folder: str | Path) -> list[Failure]:
    """What the folder's last fetch could not get (``failures.jsonl``; empty when none or unreadable)."""
    path = Path(folder) / FAILURES_FILE
    failures = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                failures.append(Failure(**json.loads(line)))
            except (ValueError, TypeError):
                continue
    return failures


def read_reports_without_images(folder: str | Path) -> list[ImageRecord]:
    """The reports of an output folder that have no image (records with ``image_id == ""``); may be empty."""
    return _read_jsonl(Path(folder) / REPORTS_FILE, report=True)[0]


def _read_jsonl(path: Path, *, report: bool) -> tuple[list[ImageRecord], list[int]]:
    """The records of a JSONL file (duplicates keep the first), and the numbers of the lines that do not parse."""
    if not path.is_file():
        return [], []
    records: dict[str, ImageRecord] = {}
    damaged = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        record = _parse_line(line, report=report)
        if record is not None:
            records.setdefault(record.uid if report else record.image_id, record)
        elif line.strip():
            damaged.append(number)
    return list(records.values()), damaged


def _parse_line(line: str, *, report: bool) -> ImageRecord | None:
    try:
        obj: Any = json.loads(line)
        return ImageRecord.from_json(obj, report=report) if isinstance(obj, dict) else None
    except ValueError:
        return None


def _acquire_lock(path: Path) -> IO[str]:
    handle = open(path, "a", encoding="utf-8")  # noqa: SIM115
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise FetchError(
            f"{path.parent} is in use by another fetch; wait for it to finish or choose another -o"
        ) from None
    return handle
