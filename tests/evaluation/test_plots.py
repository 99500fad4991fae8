"""Each plot writes one valid PNG atomically; the watermark visibly marks untrained-backbone plots."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xvision.errors import RunError
from xvision.evaluation import (
    plot_confusion_matrix,
    plot_prediction_grid,
    plot_roc,
    plot_training_curve,
)

WATERMARK = "UNTRAINED BACKBONE"


def read_png(path: Path) -> np.ndarray:
    """Open the file as a PNG, check it is one, and return its RGB pixels."""
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 100 and image.height > 100
        return np.asarray(image.convert("RGB")).astype(int)


def only_files(folder: Path, *names: str) -> None:
    """Nothing but the expected files is left in the folder (no .part temp files)."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def red_pixels(rgb: np.ndarray) -> int:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(np.sum((r > 200) & (g < 190) & (b < 190) & (np.abs(g - b) < 40)))


def history_rows(epochs: int, *, with_val: bool) -> list[dict[str, object]]:
    rows = []
    for epoch in range(1, epochs + 1):
        rows.append(
            {
                "epoch": epoch,
                "train_loss": 1.0 / epoch,
                "train_accuracy": 1.0 - 0.5 / epoch,
                "val_loss": 1.2 / epoch + 0.05 * epoch if with_val else "",
                "val_accuracy": 0.9 - 0.4 / epoch if with_val else "",
            }
        )
    return rows


def write_history_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_confusion_matrix(tmp_path: Path) -> None:
    out = plot_confusion_matrix([[50, 3], [7, 12]], ["normal", "nodule"], tmp_path / "cm.png")
    assert out == tmp_path / "cm.png"
    read_png(out)
    only_files(tmp_path, "cm.png")


def test_confusion_matrix_many_classes_and_empty_row(tmp_path: Path) -> None:
    cm = np.arange(36).reshape(6, 6)
    cm[2] = 0  # a class with no samples must not break the row percentages
    read_png(plot_confusion_matrix(cm, [f"class {i}" for i in range(6)], tmp_path / "cm6.png", title="six"))


def test_confusion_matrix_shape_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        plot_confusion_matrix([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "cm.png")
    only_files(tmp_path)


@pytest.mark.parametrize("with_val", [True, False])
def test_training_curve_from_list(tmp_path: Path, with_val: bool) -> None:
    out = plot_training_curve(history_rows(12, with_val=with_val), tmp_path / "curve.png", best_epoch=7)
    read_png(out)
    only_files(tmp_path, "curve.png")


@pytest.mark.parametrize("with_val", [True, False])
def test_training_curve_from_csv(tmp_path: Path, with_val: bool) -> None:
    csv_path = write_history_csv(tmp_path / "history.csv", history_rows(5, with_val=with_val))
    read_png(plot_training_curve(csv_path, tmp_path / "curve.png"))
    only_files(tmp_path, "history.csv", "curve.png")


def test_training_curve_nan_validation_and_single_epoch(tmp_path: Path) -> None:
    rows = [{"epoch": 1, "train_loss": 0.7, "train_accuracy": 0.6, "val_loss": float("nan"), "val_accuracy": None}]
    read_png(plot_training_curve(rows, tmp_path / "one.png"))


def test_training_curve_bad_history(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        plot_training_curve([], tmp_path / "curve.png")
    with pytest.raises(RunError, match="cannot read"):
        plot_training_curve(tmp_path / "missing.csv", tmp_path / "curve.png")
    (tmp_path / "bad.csv").write_text("step,loss\n1,0.5\n", encoding="utf-8")
    with pytest.raises(RunError, match="train_loss"):
        plot_training_curve(tmp_path / "bad.csv", tmp_path / "curve.png")
    only_files(tmp_path, "bad.csv")


def test_roc(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=80)
    scores = np.clip(0.3 * y + rng.random(80) * 0.7, 0, 1)
    read_png(plot_roc(y, scores, tmp_path / "roc.png", positive_name="nodule"))
    read_png(plot_roc(y, scores, tmp_path / "roc_auc.png", auc=0.87))
    only_files(tmp_path, "roc.png", "roc_auc.png")


def test_roc_needs_both_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both"):
        plot_roc([1, 1, 1], [0.2, 0.5, 0.9], tmp_path / "roc.png")
    only_files(tmp_path)


def _images(n: int, size: int = 48) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    return [np.clip((xx + yy * i / max(n, 1)) / 2, 0, 1) for i in range(n)]


@pytest.mark.parametrize("n", [1, 10, pytest.param(64, marks=pytest.mark.slow)])
def test_prediction_grid(tmp_path: Path, n: int) -> None:
    titles = [f"nodule {0.5 + i / (2 * n):.2f}" for i in range(n)]
    colors = ["green" if i % 3 else "red" for i in range(n)]
    out = plot_prediction_grid(_images(n), titles, tmp_path / "grid.png", colors=colors)
    read_png(out)
    only_files(tmp_path, "grid.png")


def test_prediction_grid_ncols_and_validation(tmp_path: Path) -> None:
    one_row = read_png(plot_prediction_grid(_images(4), list("abcd"), tmp_path / "row.png", ncols=4))
    one_col = read_png(plot_prediction_grid(_images(4), list("abcd"), tmp_path / "col.png", ncols=1))
    assert one_row.shape[1] > one_row.shape[0] and one_col.shape[0] > one_col.shape[1]
    with pytest.raises(ValueError, match="titles"):
        plot_prediction_grid(_images(2), ["a"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="colors"):
        plot_prediction_grid(_images(2), ["a", "b"], tmp_path / "x.png", colors=["red"])
    with pytest.raises(ValueError, match="2-D"):
        plot_prediction_grid([np.zeros((8, 8, 3))], ["a"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no images"):
        plot_prediction_grid([], [], tmp_path / "x.png")
    only_files(tmp_path, "row.png", "col.png")


@pytest.mark.parametrize(
    "draw",
    [
        lambda path, **kw: plot_confusion_matrix([[5, 1], [2, 4]], ["normal", "nodule"], path, **kw),
        lambda path, **kw: plot_training_curve(history_rows(6, with_val=True), path, **kw),
        lambda path, **kw: plot_roc([0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.2, 0.9], path, **kw),
        lambda path, **kw: plot_prediction_grid(_images(6), [f"nodule {i}" for i in range(6)], path, **kw),
    ],
    ids=["confusion", "curve", "roc", "grid"],
)
def test_watermark_is_visible_and_red(tmp_path: Path, draw: Callable[..., Path]) -> None:
    plain = read_png(draw(tmp_path / "plain.png"))
    marked = read_png(draw(tmp_path / "marked.png", watermark=WATERMARK))
    assert plain.shape == marked.shape
    changed = np.any(plain != marked, axis=-1)
    assert changed.mean() > 0.01  # a large mark, not a footnote
    assert red_pixels(marked) > red_pixels(plain) + 1000
    only_files(tmp_path, "plain.png", "marked.png")


def test_overwrites_existing_file_atomically(tmp_path: Path) -> None:
    target = tmp_path / "cm.png"
    target.write_bytes(b"old")
    plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], target)
    read_png(target)
    only_files(tmp_path, "cm.png")


def test_matplotlib_is_imported_lazily_and_pyplot_never(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import xvision.evaluation as ev\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at import time'\n"
        f"ev.plot_confusion_matrix([[1, 0], [0, 1]], ['a', 'b'], {str(tmp_path / 'cm.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot global state touched'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_heatmap_overlay_fades_faint_heat_into_the_film(tmp_path: Path) -> None:
    from xvision.evaluation.plots import HEAT_OPACITY, heat_overlay, plot_heatmap

    ramp = np.linspace(0.0, 1.0, 201)
    alpha = heat_overlay(ramp)[:, 3]
    assert alpha[0] == 0.0 and alpha[-1] == HEAT_OPACITY and np.all(np.diff(alpha) >= 0)
    assert alpha[np.searchsorted(ramp, 0.06)] < 0.1  # weak heat is nearly invisible, not a 40% blue patch
    assert np.max(np.diff(alpha)) < 0.02  # no step anywhere along the ramp

    # Drawn: a grey film with heat rising left to right. Next to the cold edge the film shows through
    # almost unchanged; adjacent columns never jump in colour.
    film = np.full((120, 120), 0.5)
    heat = np.tile(np.linspace(0.0, 1.0, 120), (120, 1))
    pixels = read_png(plot_heatmap(film, heat, tmp_path / "heat.png")).astype(int)
    row = pixels[pixels.shape[0] // 2]
    coloured = np.flatnonzero(np.ptp(row, axis=1) > 0)  # columns where the overlay shows colour
    inside = row[coloured[0] : coloured[-1] + 1]
    assert np.abs(np.diff(inside, axis=0)).max() <= 12


def test_a_long_class_name_widens_the_confusion_matrix_instead_of_being_cut(tmp_path) -> None:
    from PIL import Image

    from xvision.evaluation.plots import plot_confusion_matrix

    cm = [[3, 1], [0, 2]]
    short = plot_confusion_matrix(cm, ["a", "normal"], tmp_path / "short.png")
    long = plot_confusion_matrix(cm, ['nódulo/small "x" very long label name', "normal"], tmp_path / "long.png")
    assert Image.open(long).width > Image.open(short).width + 40  # the figure grows to hold the name


def test_dollar_signs_in_names_are_drawn_as_written_not_parsed_as_tex(tmp_path: Path) -> None:
    """A file named m$\\frac{x$.png (predict --grid, --heatmaps, the server's /heatmap) or a label with two dollar
    signs (evaluate, cv) ended in matplotlib's ParseSyntaxException."""
    from xvision.evaluation.plots import plot_heatmap

    odd = "nod$\\frac{$ule"
    plot_confusion_matrix([[3, 1], [2, 4]], [odd, "normal"], tmp_path / "cm.png")
    plot_prediction_grid([np.zeros((8, 8))], ["m$\\frac{x$.png 0.93"], tmp_path / "grid.png", title=odd)
    plot_heatmap(np.zeros((8, 8)), np.ones((8, 8)), tmp_path / "heat.png", title="m$\\frac{x$.png")
    for name in ("cm.png", "grid.png", "heat.png"):
        assert Image.open(tmp_path / name).size[0] > 100
    import matplotlib

    assert matplotlib.rcParams["text.parse_math"]  # only Xvision's own figures are drawn without mathtext


def test_a_heatmap_of_a_huge_film_is_drawn_from_a_display_sized_copy(tmp_path: Path, monkeypatch) -> None:
    """A 7000 x 7000 film sent to the server's /heatmap took 26 s and 4 GB: matplotlib drew a 550 px figure from
    full-size arrays (and an RGBA float64 overlay of them)."""
    from xvision.evaluation import plots

    drawn: list[tuple[int, ...]] = []
    real = plots.heat_overlay
    monkeypatch.setattr(plots, "heat_overlay", lambda heat: drawn.append(heat.shape) or real(heat))
    film = np.tile(np.linspace(0, 1, 3000, dtype=np.float32), (2000, 1))
    plots.plot_heatmap(film, film, tmp_path / "h.png", title="big")
    assert drawn == [(733, 1100)] and max(drawn[0]) == plots.DISPLAY_SIDE
    small = np.random.default_rng(0).random((40, 50))
    assert plots._for_display(small) is small
    assert abs(float(plots._for_display(film).mean()) - float(film.mean())) < 1e-3  # averaged, not sampled
    assert Image.open(tmp_path / "h.png").size == Image.open(_small_heatmap(tmp_path)).size


def _small_heatmap(tmp_path: Path) -> Path:
    from xvision.evaluation.plots import plot_heatmap

    return plot_heatmap(np.zeros((64, 96)), np.zeros((64, 96)), tmp_path / "small.png", title="big")
