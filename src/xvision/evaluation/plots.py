"""PNG plots of a run: confusion matrix, training curve, ROC curve, reliability diagram, prediction grid.

matplotlib is imported only when a plot is drawn, and figures are built with ``Figure`` + the Agg canvas, so
no global pyplot state (or display) is touched. Every file is written atomically and its path returned.

Pass ``watermark="UNTRAINED BACKBONE"`` for any run whose backbone had random weights: the text is drawn
large, red and semi-transparent across the whole figure, so such a plot cannot be mistaken for a real result.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np

from xvision._fileio import atomic_write
from xvision._outputs import PNG_SOFTWARE
from xvision._version import __version__
from xvision.errors import RunError
from xvision.evaluation.metrics import roc_points

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110
HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
P = ParamSpec("P")
R = TypeVar("R")
_TRAIN_COLOR = "tab:blue"
_VAL_COLOR = "tab:purple"  # not orange or red: red is reserved for the watermark and for wrong predictions


def _plain_text(draw: Callable[P, R]) -> Callable[P, R]:
    """Draw with matplotlib's mathtext off: class names, file names and titles are shown as written. A file
    named m$\\frac{x$.png or a label with two dollar signs was parsed as TeX and ended in a traceback (a 500
    from the server's /heatmap)."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)

    return wrapper


@_plain_text
def plot_confusion_matrix(
    cm: Sequence[Sequence[int]] | np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    *,
    title: str | None = None,
    watermark: str | None = None,
) -> Path:
    """Draw a confusion matrix (rows = true class, columns = predicted) with counts and row percentages.

    Cell colour is the row fraction (recall for the diagonal), so classes of different sizes compare fairly.
    """
    counts = np.asarray(cm)
    k = len(classes)
    if counts.shape != (k, k):
        raise ValueError(f"confusion matrix has shape {counts.shape}, expected ({k}, {k}) for classes {list(classes)}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("confusion matrix must hold non-negative counts")
    row_sums = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(row_sums > 0, counts / np.where(row_sums > 0, row_sums, 1), np.nan)

    side = max(3.6, 1.0 + 0.9 * k)
    fig = _new_figure((side + 1.0, side))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(np.nan_to_num(fractions), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fontsize = 11 if k <= 4 else max(6, 11 - (k - 4))
    for i in range(k):
        for j in range(k):
            share = "n/a" if np.isnan(fractions[i, j]) else f"{100 * fractions[i, j]:.0f}%"
            dark = not np.isnan(fractions[i, j]) and fractions[i, j] > 0.5
            ax.text(
                j,
                i,
                f"{int(counts[i, j])}\n({share})",
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    slanted = k > 3 or max(len(c) for c in classes) > 10  # long names side by side would overlap
    ax.set_xticklabels(list(classes), rotation=30 if slanted else 0, ha="right" if slanted else "center")
    ax.set_yticklabels(list(classes))
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title if title is not None else f"Confusion matrix (n = {int(counts.sum())})")
    return _save(fig, path, watermark)


@_plain_text
def plot_training_curve(
    history: Sequence[Mapping[str, Any]] | str | Path,
    path: str | Path,
    *,
    best_epoch: int | None = None,
    title: str | None = None,
    watermark: str | None = None,
) -> Path:
    """Draw loss and error (1 - accuracy) per epoch, train and validation, from dicts or a history.csv.

    Columns are ``epoch,train_loss,train_accuracy,val_loss,val_accuracy``; empty or NaN validation values
    (no validation split) simply leave the validation lines out. ``best_epoch`` is marked on both panels.
    """
    rows = _read_history(history) if isinstance(history, (str, Path)) else list(history)
    series = _history_series(rows)
    epochs = series["epoch"]
    marker = "o" if len(epochs) <= 40 else None

    fig = _new_figure((10.0, 4.0))
    panels = [
        ("Loss", "loss", series["train_loss"], series["val_loss"]),
        ("Error (1 - accuracy)", "error", 1.0 - series["train_accuracy"], 1.0 - series["val_accuracy"]),
    ]
    for index, (panel_title, ylabel, train, val) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, 2, index)
        drawn = False
        for values, label, color in ((train, "train", _TRAIN_COLOR), (val, "validation", _VAL_COLOR)):
            if np.any(np.isfinite(values)):
                ax.plot(epochs, values, marker=marker, markersize=3, color=color, label=label)
                drawn = True
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.3", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="0.4")
        else:
            ax.legend(loc="best", fontsize=9)
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    return _save(fig, path, watermark)


@_plain_text
def plot_roc(
    y_true: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    path: str | Path,
    *,
    auc: float | None = None,
    positive_name: str = "",
    title: str | None = None,
    watermark: str | None = None,
    band: Mapping[str, Sequence[float]] | None = None,
    auc_interval: tuple[float, float] | None = None,
    operating_point: tuple[float, float] | None = None,
) -> Path:
    """Draw the ROC curve of scores for the positive class (``y_true`` 1 = positive, 0 = negative).

    ``auc`` is shown in the legend; when not given it is computed from the curve. ``band`` (``fpr``,
    ``tpr_low``, ``tpr_high``, as in metrics.json's ``roc_band``) is shaded, ``auc_interval`` is added to
    the legend, and ``operating_point`` ``(fpr, tpr)`` marks the decision threshold's position.
    """
    fpr, tpr, _ = roc_points(y_true, scores)
    if auc is None:
        from sklearn.metrics import auc as area_under_curve

        auc = float(area_under_curve(fpr, tpr))

    fig = _new_figure((5.2, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    if band is not None:
        ax.fill_between(
            band["fpr"],
            band["tpr_low"],
            band["tpr_high"],
            color=_TRAIN_COLOR,
            alpha=0.18,
            linewidth=0,
            label="95% bootstrap band",
        )
    interval = f" [{auc_interval[0]:.3f}, {auc_interval[1]:.3f}]" if auc_interval else ""
    ax.plot(fpr, tpr, color=_TRAIN_COLOR, linewidth=2, label=f"ROC (AUC = {auc:.3f}{interval})")
    if operating_point is not None:
        ax.plot(*operating_point, marker="o", color="black", linestyle="none", label="operating threshold")
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="chance (AUC = 0.5)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    n_pos = int(np.sum(np.asarray(y_true) == 1))
    n_neg = len(np.asarray(y_true)) - n_pos
    default_title = f"ROC: {positive_name}" if positive_name else "ROC"
    ax.set_title(title if title is not None else f"{default_title} ({n_pos} pos / {n_neg} neg)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path, watermark)


@_plain_text
def plot_reliability(
    bins: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    xlabel: str = "predicted probability",
    ylabel: str = "observed fraction",
    ece: float | None = None,
    brier: float | None = None,
    title: str | None = None,
    watermark: str | None = None,
) -> Path:
    """Draw a reliability diagram from metrics.json's ``calibration.bins`` (``lower``, ``upper``, ``n``,
    ``mean_predicted``, ``observed``): observed against predicted per bin, with the image count per bin.
    """
    filled = [b for b in bins if b["n"]]
    if not filled:
        raise ValueError("no non-empty calibration bins to plot")
    fig = _new_figure((5.2, 6.0))
    ax = fig.add_axes((0.14, 0.34, 0.8, 0.58))
    hist = fig.add_axes((0.14, 0.08, 0.8, 0.15), sharex=ax)
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="perfect calibration")
    predicted = [b["mean_predicted"] for b in filled]
    observed = [b["observed"] for b in filled]
    sizes = [20 + 180 * b["n"] / max(f["n"] for f in filled) for b in filled]
    summary = ", ".join(
        text
        for text in (
            f"ECE {ece:.3f}" if ece is not None else "",
            f"Brier {brier:.3f}" if brier is not None else "",
        )
        if text
    )
    ax.plot(predicted, observed, color=_TRAIN_COLOR, linewidth=1.5)
    ax.scatter(predicted, observed, s=sizes, color=_TRAIN_COLOR, zorder=3, label=summary or "bins")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else "Reliability diagram")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    ax.tick_params(labelbottom=False)
    lowers = [b["lower"] for b in bins]
    widths = [b["upper"] - b["lower"] for b in bins]
    hist.bar(lowers, [b["n"] for b in bins], width=widths, align="edge", color="0.6", edgecolor="white")
    hist.set_xlabel(xlabel)
    hist.set_ylabel("images")
    return _save(fig, path, watermark, tight=False)


@_plain_text
def plot_prediction_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | Path,
    *,
    ncols: int | None = None,
    colors: Sequence[str] | None = None,
    title: str | None = None,
    watermark: str | None = None,
) -> Path:
    """Draw grayscale images (2-D, floats in [0, 1]) in a grid, each with its title (e.g. ``"nodule 0.93"``).

    ``colors`` sets each title's colour, e.g. green for a correct and red for a wrong prediction.
    ``ncols`` defaults to a near-square grid of at most 8 columns.
    """
    n = len(images)
    if n == 0:
        raise ValueError("no images to plot")
    if len(titles) != n:
        raise ValueError(f"got {n} images but {len(titles)} titles")
    if colors is not None and len(colors) != n:
        raise ValueError(f"got {n} images but {len(colors)} colors")
    arrays = [np.asarray(image) for image in images]
    for index, array in enumerate(arrays):
        if array.ndim != 2:
            raise ValueError(f"image {index} has shape {array.shape}; expected a 2-D grayscale array")
    if ncols is None:
        ncols = min(8, math.ceil(math.sqrt(n)))
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)

    cell = 4.0 if ncols == 1 else 2.4 if ncols <= 4 else 1.9
    header = 0.5 if title else 0.0
    fig = _new_figure((max(2.6, cell * ncols), cell * nrows + 0.35 + header))
    fontsize = 10 if ncols <= 4 else 8
    for index, (array, text) in enumerate(zip(arrays, titles, strict=True)):
        ax = fig.add_subplot(nrows, ncols, index + 1)
        ax.imshow(array, cmap="gray", vmin=0.0, vmax=1.0, interpolation="antialiased")
        ax.set_title(str(text), fontsize=fontsize, color=colors[index] if colors is not None else "black")
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path, watermark)


#: Heat at or above this is drawn at full overlay opacity; below it the overlay fades out linearly.
HEAT_FADE = 0.5
HEAT_OPACITY = 0.5


def heat_overlay(heat: np.ndarray) -> np.ndarray:
    """RGBA of a [0, 1] heatmap for drawing over a film: the jet colour of each value, with an opacity that
    rises from 0 (no heat) to HEAT_OPACITY at HEAT_FADE. Faint heat fades into the film instead of being cut
    off at a threshold, which painted every weak value as a hard-edged blue patch."""
    from matplotlib import colormaps

    heat = np.clip(np.asarray(heat, dtype=np.float64), 0.0, 1.0)
    rgba = colormaps["jet"](heat)
    rgba[..., 3] = HEAT_OPACITY * np.clip(heat / HEAT_FADE, 0.0, 1.0)
    return rgba


@_plain_text
def plot_heatmap(
    image: np.ndarray, heat: np.ndarray, path: str | Path, *, title: str = "", watermark: str | None = None
) -> Path:
    """Draw a radiograph (2-D, [0, 1]) with a heatmap of the same shape ([0, 1]) over it (see heat_overlay)."""
    fig = _new_figure((5.0, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(_for_display(image), cmap="gray", vmin=0.0, vmax=1.0)
    ax.imshow(heat_overlay(_for_display(heat)))
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return _save(fig, path, watermark)


#: Longest side an image is drawn at: twice the 550 px of a heatmap figure, so nothing visible is lost.
DISPLAY_SIDE = 1100


def _for_display(array: np.ndarray) -> np.ndarray:
    """``array`` (2-D) box-averaged down to at most :data:`DISPLAY_SIDE` pixels a side. matplotlib draws a figure
    a few hundred pixels wide from full-size arrays: a 7000 x 7000 film took 26 s and 4 GB in the server."""
    from PIL import Image

    height, width = array.shape
    scale = DISPLAY_SIDE / max(height, width)
    if scale >= 1:
        return array
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(array.astype(np.float32)).resize(size, Image.Resampling.BOX))


def _new_figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _add_watermark(fig: Figure, text: str) -> None:
    from matplotlib import patheffects

    width_in, height_in = fig.get_size_inches()
    # The text runs along the figure's diagonal; bold capitals are about 0.75 em wide, so this spans
    # roughly 70% of the diagonal and stays clear of the corners.
    diagonal_pt = math.hypot(width_in, height_in) * 72
    fontsize = min(120.0, max(14.0, 0.95 * diagonal_pt / max(len(text), 1)))
    angle = math.degrees(math.atan2(height_in, width_in))
    fig.text(
        0.5,
        0.5,
        text,
        fontsize=fontsize,
        fontweight="bold",
        color="red",
        alpha=0.35,
        rotation=angle,
        rotation_mode="anchor",
        ha="center",
        va="center",
        zorder=1000,
        # A light outline keeps the red legible over dark radiographs; on white it is invisible.
        path_effects=[patheffects.withStroke(linewidth=2, foreground="white", alpha=0.5)],
    )


def _save(fig: Figure, path: str | Path, watermark: str | None, *, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    if watermark:
        _add_watermark(fig, watermark)
    # Temp names end in .part, so the format must be given explicitly. A tight box also keeps a long class
    # name whole where tight_layout alone would cut it at the figure's edge.
    box = "tight" if tight else None
    # The Software chunk marks the file as Xvision's: a later command may replace it, but no other file
    # (xvision._outputs).
    metadata = {"Software": f"{PNG_SOFTWARE} {__version__}"}
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches=box, metadata=metadata))


def _read_history(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = reader.fieldnames or []
    except OSError as error:
        raise RunError(f"{path}: cannot read training history ({error.strerror or error})") from None
    missing = [c for c in ("epoch", "train_loss") if c not in columns]
    if missing:
        raise RunError(f"{path}: training history lacks column(s) {missing}; expected {','.join(HISTORY_COLUMNS)}")
    return rows


def _history_series(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    if not rows:
        raise ValueError("training history is empty: no epochs to plot")
    if "epoch" not in rows[0] or "train_loss" not in rows[0]:
        raise ValueError(f"training history rows need 'epoch' and 'train_loss', got keys {sorted(rows[0])}")
    return {column: np.array([_as_float(row.get(column)) for row in rows]) for column in HISTORY_COLUMNS}


def _as_float(value: Any) -> float:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"training history holds a non-numeric value {value!r}") from None
