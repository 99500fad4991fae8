"""Where a command may write a file that the user named: never over one of its own inputs, and never over an
existing file that is not an earlier output of the same kind (a manifest, a model, a radiograph).

`predict --heatmaps` into the folder of the images it read replaced those radiographs with their heatmaps, and
`audit -o` or `report -o` given a manifest's or a model's name replaced it without a word. Each command checks
its outputs with :func:`check_output` before any work, so a refusal costs nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from xvision.errors import OutputError

#: What every PNG that Xvision draws carries in its ``Software`` text chunk (see evaluation.plots).
PNG_SOFTWARE = "Xvision"


def check_output(path: Path, *, what: str, ours: Callable[[Path], bool], inputs: Iterable[Path] = ()) -> None:
    """Refuse to write ``path`` when it is one of ``inputs`` or an existing file that ``ours`` does not
    recognise as an earlier ``what``; a folder at ``path`` is refused too."""
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give the {what} a file name")
    if not path.exists():
        return
    if any(same_file(path, source) for source in inputs):
        raise OutputError(f"{path}: the {what} would replace an input of this command; choose another name")
    if not ours(path):
        raise OutputError(
            f"{path} exists and is not an earlier {what} from Xvision; choose another name, or remove it first"
        )


def check_writable(folder: Path) -> None:
    """Create ``folder`` and a file in it (removed at once) before any work: a read-only or full output folder
    was found out only after every fold of `cv`, or every image of `evaluate` and `predict --grid`, was done.

    Raises:
        OSError: naming ``folder`` (the CLI says it in one line).
    """
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise type(error)(error.errno, error.strerror, str(folder)) from None


def check_not_linked(folder: Path) -> None:
    """Refuse a folder that Xvision writes inside a run or a results folder (``plots/``, ``checkpoints/``, the
    ``eval-*`` folders) when it is a link: a run folder received from someone else with ``plots`` linked to
    another folder of this machine had `evaluate` overwrite the files there."""
    if folder.is_symlink():
        raise OutputError(
            f"{folder}: a link (to {os.readlink(folder)}); Xvision writes a run's plots, checkpoints and "
            "evaluations only into real folders of the run (a run folder received from elsewhere could lead them "
            "anywhere): remove the link, or link the whole run folder instead"
        )


def is_xvision_png(path: Path) -> bool:
    """Whether ``path`` is a PNG that Xvision drew (a plot, grid or heatmap). Versions before the mark drew
    with matplotlib, whose own mark is taken too: such a figure is not an image anyone would read as input."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            software = str(image.info.get("Software", ""))
            return image.format == "PNG" and software.startswith((PNG_SOFTWARE, "Matplotlib"))
    except Exception:  # noqa: BLE001 - unreadable or not an image: not ours
        return False


def is_xvision_report(path: Path) -> bool:
    """Whether ``path`` is an HTML report that Xvision wrote (its generator meta tag)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2048)
    except OSError:
        return False
    return b'<meta name="generator" content="Xvision' in head


def is_json_with(keys: set[str]) -> Callable[[Path], bool]:
    """A test for a JSON object holding every one of ``keys`` (an earlier audit.json, ...)."""

    def test(path: Path) -> bool:
        try:
            if path.stat().st_size > 50_000_000:
                return False
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and keys <= set(data)

    return test


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False
