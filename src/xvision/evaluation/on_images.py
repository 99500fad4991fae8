"""`xvision evaluate RUN --manifest other.csv`: judge a run on images it has never seen.

Features are extracted on the fly with the run's own backbone and weights into ``OUT/features`` (reused
if the command is run again), then scored exactly as `evaluate` scores a feature store.

They are extracted in fp32 by default, the precision `predict` (and the API and server) always computes:
the figures are then those of the model as it is served, image for image (to about 1e-6 in a probability:
`predict` runs channels-last and batches other images together, which rounds differently). `extract`'s
automatic path would use bf16 on CPUs with native bf16, and a head's probabilities moved by about 0.01 between
the two (VGG16 pool5 features agree at cosine 0.99997); ``precision="auto"`` takes that faster path for large
sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xvision._fileio import is_inside
from xvision._outputs import check_not_linked
from xvision.backbones import create_backbone
from xvision.data.manifest import Manifest, read_manifest
from xvision.errors import ManifestError
from xvision.evaluation.bootstrap import BootstrapConfig, check_bootstrap
from xvision.evaluation.evaluate import check_results_folder, evaluate_run
from xvision.evaluation.scoring import DEFAULT_BOOTSTRAP
from xvision.features.extract import extract_manifest
from xvision.inference.bundle import load_bundle
from xvision.inference.predictor import weights_argument


def evaluate_manifest(
    run_dir: str | Path,
    manifest: str | Path,
    *,
    split: str | None = None,
    out_dir: str | Path | None = None,
    weights: str | None = None,
    progress: bool = True,
    precision: str = "fp32",
    bootstrap: BootstrapConfig | None = DEFAULT_BOOTSTRAP,
) -> dict[str, Any]:
    """Extract the manifest's images (those of ``split`` when given) with the run's backbone and evaluate them
    (default output: RUN/eval-<name>); ``bootstrap`` as in :func:`~xvision.evaluation.evaluate.evaluate_run`.
    Every argument is named here, so a misspelt one fails at once, not after minutes of extraction."""
    check_bootstrap(bootstrap)
    bundle = load_bundle(run_dir)
    _check_before_extracting(read_manifest(manifest), bundle.classes, split)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / f"eval-{Path(manifest).stem}"
    if out_dir is None or is_inside(Path(out_dir).parent, run_dir):
        check_not_linked(out)  # the run's own eval-* folder
    check_results_folder(out, manifest)  # before minutes of extraction
    backbone = create_backbone(bundle.backbone["name"], weights=weights_argument(bundle, weights))
    features = out / "features"
    extract_manifest(manifest, features, backbone=backbone, split=split, progress=progress, precision=precision)
    return evaluate_run(run_dir, features, split=split, out_dir=out, manifest=manifest, bootstrap=bootstrap)


def _check_before_extracting(manifest: Manifest, classes: list[str], split: str | None) -> None:
    """Refuse, before minutes of extraction, a manifest the run cannot be scored on."""
    unknown = sorted(set(manifest.labels) - set(classes))
    if unknown:
        folded = {c.casefold(): c for c in classes}
        hint = [f"{u!r} -> {folded[u.casefold()]!r}" for u in unknown if u.casefold() in folded]
        raise ManifestError(
            f"{manifest.name}: labels {unknown} are not classes of the run ({', '.join(classes)})"
            + (f"; labels are case-sensitive: rename {', '.join(hint)}" if hint else "")
        )
    manifest.require_split(split)
