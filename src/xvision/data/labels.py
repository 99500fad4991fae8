"""Label image records by small, auditable rules, and turn the result into a manifest.

Rules file (TOML)
-----------------
::

    description = "normal vs nodule"

    [[rule]]
    label = "normal"
    mesh_major_all = ["normal"]      # every MeSH major term is "normal"

    [[rule]]
    label = "nodule"
    mesh_major_any = ["Nodule*"]     # some MeSH major term starts with "Nodule"

A rule is a ``label`` and one or more conditions, all of which must hold. A condition is
``<field>_<any|all|none> = [patterns]`` where the field is one of :data:`FIELDS` and a pattern is a shell-style
glob (``*``, ``?``, ``[...]``) matched case-insensitively against a whole value (a MeSH term, or a whole text
such as the impression):

- ``any``: at least one value matches a pattern;
- ``all``: there is at least one value, and every value matches a pattern;
- ``none``: no value matches any pattern.

A record gets a label when the rules that match it all carry that label; it is excluded when none match
("no rule matched") or when rules of two labels match ("conflict"). Built-in rule sets: :data:`BUILTIN_RULES`.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from xvision.data.manifest import Manifest, ManifestRow
from xvision.data.openi.records import ImageRecord
from xvision.data.openi.views import metadata_key, view_from_caption
from xvision.errors import LabelRulesError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FIELDS: tuple[str, ...] = (
    "mesh_major",
    "mesh_minor",
    "problems",
    "impression",
    "findings",
    "indication",
    "comparison",
    "caption",
)
"""Record fields a condition can test."""
OPERATORS: tuple[str, ...] = ("any", "all", "none")
BUILTIN_RULES: dict[str, str] = {
    "default": "normal: MeSH major terms exactly 'normal'; nodule: any MeSH major term starting with 'Nodule'",
    "nodule-only": "as default, but nodule only when every MeSH major term starts with 'Nodule'",
    "nodule-noncalcified": "as default, but leaving out calcified or granulomatous nodules, scarring, interstitial "
    "patterns and nipple shadows (by MeSH term and report text)",
}
"""Rule sets shipped with Xvision (``xvision/data/rules/<name>.toml``), by name."""

NO_RULE = "no rule matched"
CONFLICT = "conflict"
NO_FILE = "no image file"
OUTSIDE = "image file outside the folder"
MANIFEST_COLUMNS = ("path", "label", "group", "view", "image_id", "mesh_major", "license")


@dataclass(frozen=True)
class Condition:
    """``field``'s values match ``patterns`` in the way ``operator`` says (see the module doc)."""

    field: str
    operator: str
    patterns: tuple[str, ...]

    def holds(self, record: ImageRecord) -> bool:
        raw = getattr(record, self.field)
        values = [raw] if isinstance(raw, str) else list(raw)
        values = [value.strip().lower() for value in values if value.strip()]
        hits = [any(fnmatchcase(value, pattern) for pattern in self.patterns) for value in values]
        if self.operator == "any":
            return any(hits)
        if self.operator == "all":
            return bool(hits) and all(hits)
        return not any(hits)


@dataclass(frozen=True)
class Rule:
    label: str
    conditions: tuple[Condition, ...]

    def matches(self, record: ImageRecord) -> bool:
        return all(condition.holds(record) for condition in self.conditions)


@dataclass(frozen=True)
class LabelRules:
    """A parsed rules file. ``source`` names it in reports (a built-in name or a path)."""

    rules: tuple[Rule, ...]
    source: str
    description: str = ""
    text: str = ""

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(rule.label for rule in self.rules))

    def labels_of(self, record: ImageRecord) -> list[str]:
        """The distinct labels of the rules ``record`` matches, in rule order."""
        return list(dict.fromkeys(rule.label for rule in self.rules if rule.matches(record)))


def load_rules(rules: str | Path | None = None) -> LabelRules:
    """Read a rules file, or a built-in rule set by name (None: ``default``).

    Raises:
        LabelRulesError: The file is missing, not TOML, or not in the format of the module doc.
    """
    name = str(rules) if rules is not None else "default"
    if name in BUILTIN_RULES:
        text = resources.files("xvision.data").joinpath("rules").joinpath(f"{name}.toml").read_text(encoding="utf-8")
        return parse_rules(text, source=name)
    path = Path(name)
    if not path.is_file():
        raise LabelRulesError(
            f"{path}: rules file not found; give a TOML rules file or one of: {', '.join(BUILTIN_RULES)}"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a BOM from Windows Notepad is not TOML's concern
    except UnicodeDecodeError:
        raise LabelRulesError(f"{path}: not UTF-8 text; save the rules file as UTF-8 (TOML requires it)") from None
    return parse_rules(text, source=str(path))


def parse_rules(text: str, *, source: str = "<rules>") -> LabelRules:
    """Parse the TOML text of a rules file (format in the module doc)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise LabelRulesError(f"{source}: not valid TOML ({error})") from None
    unknown = set(data) - {"description", "rule"}
    if unknown:
        raise LabelRulesError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}; use [[rule]] tables")
    entries = data.get("rule")
    if not isinstance(entries, list) or not entries:
        raise LabelRulesError(f'{source}: no rules; add at least one [[rule]] with a label, e.g. label = "normal"')
    rules = tuple(_parse_rule(entry, f"{source} rule {number}") for number, entry in enumerate(entries, start=1))
    return LabelRules(rules=rules, source=source, description=str(data.get("description", "")), text=text)


def _parse_rule(entry: Any, where: str) -> Rule:
    if not isinstance(entry, Mapping):
        raise LabelRulesError(f"{where}: a rule must be a [[rule]] table")
    label = entry.get("label")
    if not isinstance(label, str) or not label.strip():
        raise LabelRulesError(f'{where}: missing label; add e.g. label = "normal"')
    conditions = []
    for key, value in entry.items():
        if key == "label":
            continue
        name, _, operator = key.rpartition("_")
        if name not in FIELDS or operator not in OPERATORS:
            raise LabelRulesError(
                f"{where}: unknown condition {key!r}; use <field>_<any|all|none> with a field among "
                f"{', '.join(FIELDS)} (e.g. mesh_major_any)"
            )
        patterns = [value] if isinstance(value, str) else value
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
            raise LabelRulesError(f"{where}: {key} must be a non-empty list of strings")
        conditions.append(Condition(name, operator, tuple(p.strip().lower() for p in patterns)))
    if not conditions:
        raise LabelRulesError(f"{where}: rule {label!r} has no condition, so it would label everything")
    return Rule(label=label.strip(), conditions=tuple(conditions))


@dataclass
class LabelReport:
    """What labelling did, in two stages.

    Attributes:
        source: The rules' name or path.
        labelled: Records per label given by the rules (reports without images included, as records with an
            empty ``image_id``).
        excluded: Records the rules left out, per reason (``no rule matched``, ``conflict``).
        conflicts: Report uid -> the labels whose rules it matched.
        left_out: Labelled image records kept out of the manifest, per reason (no image file, view).
        kept: Records per label in the manifest.
    """

    source: str
    labelled: dict[str, list[ImageRecord]] = field(default_factory=dict)
    excluded: dict[str, list[ImageRecord]] = field(default_factory=dict)
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    left_out: dict[str, list[ImageRecord]] = field(default_factory=dict)
    kept: dict[str, list[ImageRecord]] = field(default_factory=dict)

    def reports(self, label: str) -> int:
        """Reports the rules gave ``label`` (with or without images)."""
        return len({record.uid for record in self.labelled.get(label, [])})

    def images(self, label: str) -> int:
        """Images the rules gave ``label``."""
        return sum(1 for record in self.labelled.get(label, []) if record.image_id)

    def to_json(self) -> dict[str, Any]:
        """Counts (reports, images) per class and reason, and the conflicts, for a sidecar file."""

        def counts(groups: Mapping[str, list[ImageRecord]]) -> dict[str, dict[str, int]]:
            return {
                name: {"reports": len({r.uid for r in rs}), "images": sum(1 for r in rs if r.image_id)}
                for name, rs in sorted(groups.items())
            }

        return {
            "rules": self.source,
            "labelled": counts(self.labelled),
            "excluded": counts(self.excluded),
            "conflicts": self.conflicts,
            "left_out": counts(self.left_out),
            "manifest": counts(self.kept),
        }

    def format(self) -> str:
        """The printed label report."""
        lines = [f"Rules: {self.source}", f"Labelled by the rules: {_count(self.labelled)}"]
        lines += _table("class", self.labelled)
        imageless = {label: sum(1 for r in rs if not r.image_id) for label, rs in self.labelled.items()}
        if any(imageless.values()):
            counts = ", ".join(f"{label} {n}" for label, n in imageless.items() if n)
            lines.append(f"  (reports without any image, counted above: {counts})")
        lines.append(f"Excluded by the rules: {_count(self.excluded)}")
        lines += _table("reason", self.excluded) if self.excluded else []
        if self.conflicts:
            shown = ", ".join(f"{uid} ({' + '.join(labels)})" for uid, labels in list(self.conflicts.items())[:10])
            more = f" and {len(self.conflicts) - 10} more" if len(self.conflicts) > 10 else ""
            lines.append(f"Conflicts: {len(self.conflicts)} report(s) matched rules of two labels: {shown}{more}")
        else:
            lines.append("Conflicts: none")
        if self.left_out:
            lines.append(f"Labelled but left out of the manifest: {_count(self.left_out)}")
            lines += _table("reason", self.left_out)
        lines.append(f"Manifest: {_count(self.kept)}")
        lines += _table("class", self.kept)
        return "\n".join(lines)


def _count(groups: Mapping[str, list[ImageRecord]]) -> str:
    records = [record for records in groups.values() for record in records]
    images = sum(1 for record in records if record.image_id)
    return f"{images:,} images of {len({r.uid for r in records}):,} reports"


def _table(title: str, groups: Mapping[str, list[ImageRecord]]) -> list[str]:
    rows = [
        (name, f"{len({r.uid for r in rs}):,}", f"{sum(1 for r in rs if r.image_id):,}")
        for name, rs in sorted(groups.items())
    ]
    rows.insert(0, (title, "reports", "images"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [f"  {a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows]


def label_records(
    records: Iterable[ImageRecord],
    rules: LabelRules,
    *,
    reports_without_images: Iterable[ImageRecord] = (),
    folder: str | Path | None = None,
    views: str | None = None,
    dicom_views: Mapping[str, str] | None = None,
) -> tuple[list[tuple[ImageRecord, str, str]], LabelReport]:
    """Label records; return ``[(record, label, view)]`` for the manifest, and the report.

    Args:
        records: Image records (duplicates of an image id are ignored after the first).
        rules: From :func:`load_rules`.
        reports_without_images: Reports with no image, labelled too so that report counts are complete
            (they add nothing to the manifest); ignored for a uid that also has image records.
        folder: The output folder the records' files are relative to; when given, records whose image is not
            there are left out ("no image file"). None keeps records without checking files.
        views: Keep only this view (``frontal`` or ``lateral``); images of unknown view are then left out.
        dicom_views: ``{metadata key: view}`` from :func:`~xvision.data.openi.views.read_dicom_views`.
    """
    report = LabelReport(source=rules.source)
    report.labelled = {label: [] for label in rules.labels}
    report.kept = {label: [] for label in rules.labels}
    kept: list[tuple[ImageRecord, str, str]] = []
    unique: dict[str, ImageRecord] = {}
    for record in records:
        unique.setdefault(record.image_id, record)
    images_per_report = Counter(record.uid for record in unique.values())
    with_images = set(images_per_report)
    imageless = [record for record in reports_without_images if record.uid not in with_images]
    for record in [*unique.values(), *imageless]:
        labels = rules.labels_of(record)
        if len(labels) != 1:
            if labels:
                report.conflicts.setdefault(record.uid, labels)
            report.excluded.setdefault(CONFLICT if labels else NO_RULE, []).append(record)
            continue
        report.labelled[labels[0]].append(record)
        if not record.image_id:
            continue
        view = _view(record, dicom_views or {}, images_per_report[record.uid])
        if folder is not None and (record.file is None or not (Path(folder) / record.file).is_file()):
            report.left_out.setdefault(NO_FILE, []).append(record)
        elif folder is not None and not _within(record.file):
            # records.jsonl is data from elsewhere too (a shared folder): `fetch` only ever writes images/<id>.
            # Judged by the text, not the resolved path: the user's own images/ may be a link to a bigger disk.
            report.left_out.setdefault(OUTSIDE, []).append(record)
        elif views and view != views:
            report.left_out.setdefault(f"view {view or 'unknown'}, not {views}", []).append(record)
        else:
            report.kept[labels[0]].append(record)
            kept.append((record, labels[0], view))
    return kept, report


def _within(file: str) -> bool:
    """Whether a record's ``file`` names a place below the folder (relative, no ``..``)."""
    path = PurePosixPath(file.replace("\\", "/"))
    return not path.is_absolute() and ".." not in path.parts and not PureWindowsPath(file).drive


def _view(record: ImageRecord, dicom_views: Mapping[str, str], images_in_report: int) -> str:
    """The view from the DICOM metadata, else from the caption when the report has this one image only (a
    caption describes the whole study, so it cannot tell two images apart)."""
    view = dicom_views.get(metadata_key(record.image_id))
    if view is None and images_in_report == 1:
        view = view_from_caption(record.caption)
    return view or ""


def label_manifest(kept: list[tuple[ImageRecord, str, str]], folder: str | Path) -> Manifest:
    """A manifest of labelled records (``group`` = report uid) whose paths are relative to ``folder``."""
    rows = [
        ManifestRow(
            path=record.file or "",
            label=label,
            group=record.uid,
            extra={
                "view": view,
                "image_id": record.image_id,
                "mesh_major": "; ".join(record.mesh_major),
                "license": record.license,
            },
        )
        for record, label, view in kept
    ]
    return Manifest(rows=rows, root=Path(folder), columns=MANIFEST_COLUMNS)
