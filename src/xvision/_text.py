"""Unicode normal form for names that are compared: class labels and groups.

"nódulo" typed on one machine and decomposed (o + combining accent) by a Mac's file system or editor look the
same and compare unequal: they were two classes, and a patient two groups. Manifests are read in NFC; so are
the classes of runs, feature stores and cross-validations written before that rule, so that an older run
still evaluates on the same table.
"""

from __future__ import annotations

import unicodedata
from typing import TypeVar

T = TypeVar("T")


def nfc(value: T) -> T:
    """``value`` in Unicode NFC form when it is a string; anything else unchanged."""
    if isinstance(value, str) and not unicodedata.is_normalized("NFC", value):
        return unicodedata.normalize("NFC", value)  # type: ignore[return-value]
    return value


def displayable(name: str) -> str:
    """A file name as text to draw or write: bytes that are not UTF-8 (a Latin-1 ``caf\xe9.png`` arrives from the
    file system as a lone surrogate) become U+FFFD, which matplotlib and UTF-8 files accept."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
