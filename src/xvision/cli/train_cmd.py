"""``xvision train``: fit the seed's head on a feature store and write a run folder."""

from __future__ import annotations

from pathlib import Path

import click

from xvision.cli.options import SEED, FiniteFloatRange
from xvision.evaluation.operating import describe_threshold
from xvision.heads import MLPClassifier
from xvision.training import CHECKPOINT_POLICIES, train_run


def _hidden(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    if value.strip().lower() in ("none", "0", "linear"):
        return ()  # a linear head (logistic regression trained by SGD)
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("use comma-separated layer widths, e.g. 512,512") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("use comma-separated positive layer widths, e.g. 512,512")
    return sizes


HEAD_OPTIONS = [
    click.option(
        "--hidden",
        default="512,512",
        show_default=True,
        callback=_hidden,
        help="Hidden layer widths; 'none' (or 0) for a linear head.",
    ),
    click.option("--lr", default=0.01, show_default=True, type=FiniteFloatRange(min=0, min_open=True)),
    click.option("--momentum", default=0.0, show_default=True, type=FiniteFloatRange(0, 1)),
    click.option("--weight-decay", default=0.0, show_default=True, type=FiniteFloatRange(min=0)),
    click.option("--batch-size", default=20, show_default=True, type=click.IntRange(1)),
    click.option("--epochs", default=20, show_default=True, type=click.IntRange(1)),
    click.option("--seed", default=0, show_default=True, type=SEED),
    click.option("--no-standardize", is_flag=True, help="Feed raw features (the original tool's behaviour)."),
    click.option(
        "--class-weight",
        type=click.Choice(["none", "balanced"]),
        default="none",
        show_default=True,
        help="balanced: weight each class's loss by the inverse of its share of the training images, so a rare "
        "class (say 211 nodules beside 2,696 normals) counts as much as a common one.",
    ),
]
OPERATING_OPTIONS = [
    click.option(
        "--threshold-rule",
        default="youden",
        show_default=True,
        help="How the validation split picks the decision threshold (two classes): youden, sensitivity:0.9 "
        "(most specific threshold reaching that sensitivity) or specificity:0.9. No validation split: 0.5.",
    ),
    click.option(
        "--calibrate",
        type=click.Choice(["none", "temperature"]),
        default="none",
        show_default=True,
        help="Fit temperature scaling on the validation split and apply it in evaluate and predict.",
    ),
    click.option(
        "--positive",
        default=None,
        help="The positive class of two (sensitivity, threshold) [default: the class not named like 'normal'].",
    ),
]


checkpoints_option = click.option(
    "--checkpoints",
    type=click.Choice(CHECKPOINT_POLICIES),
    default="all",
    show_default=True,
    help="The head's: all, one per epoch (52 MB each on VGG16 features); best: only the last and the best so far.",
)


def head_options(command: click.Command) -> click.Command:
    """The head's options (the seed recipe's defaults), shared by ``train`` and ``cv``."""
    for option in reversed(HEAD_OPTIONS):
        command = option(command)
    return command


def operating_options(command: click.Command) -> click.Command:
    """``--threshold-rule``, ``--calibrate`` and ``--positive``, shared by ``train`` and ``cv``."""
    for option in reversed(OPERATING_OPTIONS):
        command = option(command)
    return command


@click.command("train")
@click.argument("features_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="RUN_DIR to write (the model bundle).",
)
@head_options
@operating_options
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@click.option("--no-audit", is_flag=True, help="Skip the shortcut audit (`xvision audit`) before training.")
@checkpoints_option
def train(
    features_dir: Path,
    run_dir: Path,
    hidden: tuple[int, ...],
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    epochs: int,
    seed: int,
    no_standardize: bool,
    class_weight: str,
    threshold_rule: str,
    calibrate: str,
    positive: str | None,
    overwrite: bool,
    no_audit: bool,
    checkpoints: str,
) -> None:
    """Train a classifier head on the train split of FEATURES_DIR (val picks the epoch).

    Defaults are the seed recipe: 512-512 ReLU MLP, softmax cross-entropy, SGD lr 0.01, batch 20,
    20 epochs, reshuffled every epoch with a fixed seed, one checkpoint per epoch (--checkpoints best keeps
    the last and the best only). The decision threshold (and, with --calibrate, a temperature) is then
    fitted on the validation split and stored in the run.
    """
    head = MLPClassifier(
        hidden=hidden,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        epochs=epochs,
        standardize=not no_standardize,
        seed=seed,
        class_weight=None if class_weight == "none" else class_weight,
    )
    summary = train_run(
        features_dir,
        run_dir,
        head=head,
        overwrite=overwrite,
        threshold_rule=threshold_rule,
        calibrate=calibrate,
        positive=positive,
        audit=not no_audit,
        checkpoints=checkpoints,
    )
    last = summary.history[summary.best_epoch - 1]
    val = "" if summary.n_val == 0 else f", val loss {last['val_loss']:.3f}, val accuracy {last['val_accuracy']:.3f}"
    click.echo(
        f"{run_dir}: trained on {summary.n_train} images ({', '.join(summary.classes)}); "
        f"kept epoch {summary.best_epoch} of {summary.epochs}{val}"
    )
    operating = summary.operating
    if operating.get("calibration", {}).get("method") == "temperature":
        click.echo(f"temperature {operating['calibration']['temperature']:.3f} (fitted on the validation split)")
    click.echo("decision: " + describe_threshold(operating.get("threshold"), operating.get("positive")))
    if summary.untrained_backbone:
        click.secho(
            "UNTRAINED BACKBONE: this model sits on random features; its results mean nothing.",
            fg="red",
            err=True,
        )
