"""``xvision compare``: ROC AUC difference of two runs on the same images, with a paired interval and DeLong."""

from __future__ import annotations

from pathlib import Path

import click

from xvision._fileio import atomic_write_json
from xvision.cli.options import SEED, Resamples
from xvision.errors import RunError
from xvision.evaluation.bootstrap import DEFAULT_RESAMPLES, BootstrapConfig


def format_comparison(result: dict) -> str:
    """A short human summary of a comparison."""
    d = result["difference"]
    b = result["bootstrap"]
    where = (
        f"pooled out-of-fold predictions (matched by {result['matched_by']})"
        if result.get("kind") == "cross-validation"
        else f"split {result['split']}"
    )
    more = {k: n for k, n in (result.get("repeats") or {}).items() if n > 1}
    if more:  # only the first repeat's folds pair image by image; say so, since the cv's own figure is the mean
        where += "; repeat 1 only (" + ", ".join(f"{k.upper()} has {n}" for k, n in more.items()) + ")"
    lines = [
        f"{where}: n={result['n']} images scored by both",
        f"A = {result.get('run_a') or result.get('cv_a')}, B = {result.get('run_b') or result.get('cv_b')}",
        f"ROC AUC  A {result['auc_a']:.3f}   B {result['auc_b']:.3f}",
        f"A - B    {d['value']:+.3f}, {100 * b['level']:.0f}% paired bootstrap interval "
        f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] ({b['n_resamples']} resamples of {b['n_units']} {b['unit']}s)",
    ]
    if b.get("caution"):
        lines.append(f"caution: {b['caution']}")
    delong = result.get("delong")
    if delong:
        z = "n/a" if delong["z"] is None else f"{delong['z']:.3f}"
        p = "n/a (too few cases to estimate its variance)" if delong["p_value"] is None else f"{delong['p_value']:.4g}"
        lines.append(f"DeLong's test: z = {z}, p = {p} (two-sided)")
    elif result.get("delong_note"):
        lines.append(result["delong_note"])
    if result.get("warning"):
        lines.append(f"{result['warning']}: at least one run uses random features; this comparison means nothing.")
    return "\n".join(lines)


@click.command("compare")
@click.argument("run_a", metavar="RUN_A|CV_A", type=click.Path(file_okay=False, path_type=Path))
@click.argument("run_b", metavar="RUN_B|CV_B", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--features",
    "features_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="FEATURES_DIR with the split to compare on (run A's backbone; run B's too unless --features-b). "
    "Required for runs; not taken for two `xvision cv` folders.",
)
@click.option(
    "--features-b",
    "features_b",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run B's FEATURES_DIR when it uses another backbone; images are matched by SHA-256.",
)
@click.option(
    "--split",
    default=None,
    help="Split to compare runs on, or 'all' [default: test]. Not taken for two `xvision cv` folders.",
)
@click.option(
    "--bootstrap",
    "n_resamples",
    default=DEFAULT_RESAMPLES,
    show_default=True,
    type=Resamples(allow_none=False),
    help="Paired bootstrap resamples.",
)
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the bootstrap.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the comparison as JSON to this file.",
)
def compare(
    run_a: Path,
    run_b: Path,
    features_dir: Path | None,
    features_b: Path | None,
    split: str | None,
    n_resamples: int,
    seed: int,
    output: Path | None,
) -> None:
    """Compare the ROC AUC of RUN_A and RUN_B on the same images: A - B with a paired bootstrap interval
    and DeLong's test for correlated AUCs.

    Two `xvision cv` output folders (CV_A, CV_B) are compared on their pooled out-of-fold predictions of
    the images both scored: what one recipe buys over another, with a paired interval."""
    from xvision.evaluation.compare import compare_cv, compare_runs
    from xvision.evaluation.crossval import is_cv_dir
    from xvision.inference.bundle import environment_versions

    bootstrap = BootstrapConfig(n_resamples=n_resamples, seed=seed)
    cv_dirs = [is_cv_dir(run_a), is_cv_dir(run_b)]
    if any(cv_dirs):
        if not all(cv_dirs):
            cv, other = (run_a, run_b) if cv_dirs[0] else (run_b, run_a)
            if not Path(other).exists():
                raise RunError(f"{other}: no such folder")
            raise RunError(f"{cv} is an `xvision cv` folder and {other} is not; compare two runs or two cv folders")
        if features_dir is not None or features_b is not None or split is not None:
            raise RunError(
                "--features, --features-b and --split apply to runs; two cv folders carry their own predictions"
            )
        result = compare_cv(run_a, run_b, bootstrap=bootstrap)
    else:
        if features_dir is None:
            raise RunError("comparing two runs needs --features FEATURES_DIR (the images to score them on)")
        result = compare_runs(
            run_a,
            run_b,
            features_dir,
            features_b=features_b,
            split=None if split == "all" else (split or "test"),
            bootstrap=bootstrap,
        )
    click.echo(format_comparison(result))
    if output is not None:
        atomic_write_json(output, {**result, "versions": environment_versions()})
        click.echo(f"comparison: {output}")
