"""Warnings about a manifest that is valid but probably not what its author meant.

They are hints, never errors: a data set may really have classes named alike, or a patient with films of two
classes. They are printed by ``xvision manifest`` and ``xvision split``, the commands a user runs right after
writing the labels, where a fix is still cheap.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from contextvars import ContextVar
from pathlib import Path

from xvision.data.manifest import Manifest

log = logging.getLogger(__name__)

#: Fewer validation images than this in a class, and the epoch, round and threshold it picks are noise.
MIN_VAL_PER_CLASS = 5

#: Labels shorter than this (after folding) are never called typos of each other: "T1"/"T2", "AP"/"PA".
MIN_TYPO_LENGTH = 4


def _folded(label: str) -> str:
    return re.sub(r"[\s_\-.]+", "", label.casefold())


def similar_labels(labels: list[str]) -> list[str]:
    """One line per pair of labels that differ only by case or punctuation, or look like a typo of each other."""
    hints = []
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            fa, fb = _folded(a), _folded(b)
            if fa == fb:
                hints.append(f"labels {a!r} and {b!r} differ only by case or punctuation")
            elif min(len(fa), len(fb)) >= MIN_TYPO_LENGTH and _one_edit_apart(fa, fb):
                hints.append(f"labels {a!r} and {b!r} look alike (a typo?)")
    return hints


def warn_similar_labels(manifest: Manifest, source: str | Path) -> None:
    """Log one warning per pair of :func:`similar_labels`, naming ``source``."""
    for hint in similar_labels(manifest.labels):
        log.warning("%s: %s; they are separate classes. If they are one, fix the labels first", source, hint)


def warn_one_class(manifest: Manifest, source: str | Path) -> None:
    """Warn when every image has one label: `train` and `fit` refuse such a set, minutes later."""
    if len(manifest.labels) == 1:
        log.warning(
            "%s: every image is %r: a classifier needs two classes, so `train` and `fit` will refuse this set",
            source,
            manifest.labels[0],
        )


def misspelling_of(name: str, names: tuple[str, ...]) -> str | None:
    """The one of ``names`` that ``name`` looks like a slip for ("lesionx", "Lesion-X", "lesion_xx" for
    "lesion_x"), or None; ``name`` itself in ``names`` is no slip."""
    if name in names:
        return None
    folded = _folded(name)
    return next((n for n in names if _folded(n) == folded or _one_edit_apart(_folded(n), folded)), None)


def _one_edit_apart(a: str, b: str) -> bool:
    """One letter added, dropped, changed or two neighbours swapped ("nodule": "nodules", "nodlue").

    Not a digit: "class1"/"class2" and "grade1"/"grade2" are numbered classes, not typos. Two edits never
    count, so "normal"/"abnormal" is left alone."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) < len(b):  # b has one letter more, at i
        return a[i:] == b[i + 1 :] and not b[i].isdigit()
    if a[i + 1 :] == b[i + 1 :]:  # one letter changed
        return not (a[i].isdigit() or b[i].isdigit())
    return i + 1 < len(a) and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :]


def groups_spanning_classes(manifest: Manifest) -> tuple[int, str] | None:
    """``(how many groups, an example)`` for groups whose images carry more than one label, or None."""
    labels: dict[str, set[str]] = defaultdict(set)
    for row in manifest:
        if row.group:
            labels[row.group].add(row.label)
    mixed = sorted(g for g, found in labels.items() if len(found) > 1)
    if not mixed:
        return None
    return len(mixed), f"{mixed[0]!r}: {', '.join(sorted(labels[mixed[0]]))}"


def warn_small_validation(labels: list[str], where: str | Path) -> None:
    """Warn when a validation split holds fewer than :data:`MIN_VAL_PER_CLASS` images of some class: what it
    chooses (the epoch or round kept, the decision threshold) then follows one or two images."""
    counts = {label: labels.count(label) for label in sorted(set(labels))}
    few = [f"{label} {n}" for label, n in counts.items() if n < MIN_VAL_PER_CLASS]
    if labels and few:
        log.warning(
            "%s: the validation split holds few images of a class (%s; under %d): the epoch, round and threshold "
            "it picks are noisy; a larger `split --val` helps",
            where,
            ", ".join(few),
            MIN_VAL_PER_CLASS,
        )


#: A class this many times as common as another, and decisions at probability 0.5 lean towards it.
IMBALANCE_RATIO = 3
#: What the command being run offers against imbalance, when it wraps another (`cv MANIFEST --recipe` runs `fit`
#: per fold, whose own advice, a val split in the manifest, the folds would replace).
IMBALANCE_CURE: ContextVar[str | None] = ContextVar("IMBALANCE_CURE", default=None)


def warn_imbalance(
    labels: list[str],
    where: str | Path,
    *,
    threshold_fitted: bool,
    class_weight: str | None,
    cure: str | None = None,
) -> None:
    """Warn when the classes are imbalanced, the loss weights them alike and nothing fits the threshold (of
    two classes; with more, the most probable class decides and no threshold is fitted, so only the weights help).

    A head trained on, say, 13 normals to each nodule learns to say "normal"; with a validation split the
    threshold moves to where the classes part, but without one the decision stays at 0.5 and most of the
    rare class is missed. ``cure`` names what the command at hand offers (default: ``--class-weight balanced``
    or a validation split, as `train` and `cv` have both).
    """
    counts = {label: labels.count(label) for label in sorted(set(labels))}
    if class_weight is not None or len(counts) < 2:
        return
    if max(counts.values()) < IMBALANCE_RATIO * min(counts.values()):
        return
    if len(counts) > 2:  # the most probable class decides: no threshold, so no validation split moves it
        why = "each image gets its most probable class, which favours the common classes"
        cure = "weigh them with --class-weight balanced (`xvision train`, or `cv` on features)"
    elif threshold_fitted:
        return
    else:
        why = "no validation split picks the threshold, so decisions at 0.5 will favour the common class"
        # A command around this one (cv over `fit`) knows its own options.
        default = "use --class-weight balanced, or give the manifest a val split (`xvision split MANIFEST --val 0.1`)"
        cure = IMBALANCE_CURE.get() or cure or default
    log.warning(
        "%s: the classes are imbalanced (%s) and %s; %s",
        where,
        ", ".join(f"{label} {n}" for label, n in counts.items()),
        why,
        cure,
    )


def conflicting_labels(manifest: Manifest, hashes: dict[str, str]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Identical files (same SHA-256 in ``hashes``, keyed by resolved path) listed under different labels:
    ``[(sha256, [(path, label), ...]), ...]`` in manifest order."""
    by_hash: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in manifest.rows:
        digest = hashes.get(str(manifest.resolve(row)))
        if digest:
            by_hash[digest].append((row.path, row.label))
    return [(digest, rows) for digest, rows in by_hash.items() if len({label for _, label in rows}) > 1]


def warn_conflicting_labels(manifest: Manifest, hashes: dict[str, str], where: str | Path) -> None:
    """Warn when one image (identical bytes) is listed under two labels: a copy in the wrong class folder, or a
    linked folder; training would see the same film as both."""
    conflicts = conflicting_labels(manifest, hashes)
    if conflicts:
        _, rows = conflicts[0]
        log.warning(
            "%s: %d image(s) are listed under more than one label (identical files), e.g. %s; a film cannot be "
            "both: remove the wrong line or file",
            where,
            len(conflicts),
            " = ".join(f"{path!r} ({label})" for path, label in rows[:3]),
        )
