"""The report's model card: intended use, model, data, figures and limitations, in a few plain sentences.

The limitations are derived from the run itself (an untrained backbone, a small test set, a shortcut audit
that warned, a default threshold, poor calibration, missing patient ids, test images from the training source
or from an external manifest), so that they cannot be forgotten.
"""

from __future__ import annotations

from typing import Any

SMALL_TEST_SET = 100
"""Below this many evaluated images the model card warns that intervals are wide."""
POOR_CALIBRATION = 0.1
"""Above this expected calibration error the model card warns that probabilities are off."""


def model_card(
    bundle: dict[str, Any],
    metrics: dict[str, Any],
    classes: list[str],
    positive: str | None,
    audit: dict[str, Any] | None,
    index: list[dict[str, str]],
    *,
    figures: list[str],
    external: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Intended use, model, data, figures and limitations, from bundle.json, metrics.json and the index.

    ``external`` is the manifest `evaluate --manifest` scored (``{"path", "name", ...}``) when it is not the
    training manifest: it is named as the test data instead of a split of the training data.
    """
    backbone = bundle.get("backbone") or {}
    data = bundle.get("data") or {}
    per_class = ", ".join(f"{n} {c}" for c, n in (data.get("train_per_class") or {}).items())
    use = f"Research and education: sorting chest radiographs into {', '.join(classes)}"
    use += f" (positive class: {positive})." if positive else "."
    model = f"{(bundle.get('head') or {}).get('head', 'head')} classifier on {backbone.get('name')} features"
    model += f" ({(backbone.get('weights') or {}).get('name')})."
    trained = f"Trained on {data.get('n_train')} images ({per_class}); {data.get('n_val', 0)} for validation."
    split = metrics.get("split")
    if not metrics.get("n"):
        evaluated = "Not evaluated yet."
    elif external:
        of_split = f" ({split} split)" if split not in (None, "all") else ""
        evaluated = f"Evaluated on {metrics['n']} images of the external manifest {external['name']}{of_split}."
    else:
        evaluated = f"Evaluated on {metrics['n']} images of the {split} split."
    return {
        "use": use,
        "not_for": "Not a medical device: not validated for clinical use; it must not guide the care of a patient.",
        "model": model,
        "data": f"{trained} {evaluated}",
        "figures": figures,
        "limitations": limitations(bundle, metrics, audit, index, external=external),
    }


def limitations(
    bundle: dict[str, Any],
    metrics: dict[str, Any],
    audit: dict[str, Any] | None,
    index: list[dict[str, str]],
    *,
    external: dict[str, Any] | None = None,
) -> list[str]:
    """What a reader must keep in mind, most serious first; the last item, on where the test images come from,
    always applies (``external``: the manifest `evaluate --manifest` scored, as in :func:`model_card`)."""
    notes = []
    if bundle.get("untrained_backbone"):
        notes.append("UNTRAINED BACKBONE: random features; the figures measure nothing but chance.")
    n = metrics.get("n")
    auc = (metrics.get("intervals") or {}).get("roc_auc") or {}
    if n and n < SMALL_TEST_SET:
        spread = (
            f" (the AUC could lie anywhere from {num(auc['ci_low'])} to {num(auc['ci_high'])})"
            if auc.get("ci_low") is not None
            else ""
        )
        notes.append(f"Small test set: {n} images{spread}. Intervals are wide and only approximate at this size.")
    if metrics and "intervals" not in metrics:
        notes.append("No confidence intervals were computed for this evaluation.")
    if audit is None:
        notes.append("No shortcut audit was recorded for this run; run `xvision audit MANIFEST`.")
    elif audit.get("verdict") == "warn":
        names = "; ".join(item.get("meaning") or item["feature"] for item in audit.get("strongest", [])[:2])
        notes.append(
            f"The shortcut audit warned (AUC {num(audit.get('auc'))}; strongest: {names}): the model may have "
            "learned these artefacts instead of the disease."
        )
    elif audit.get("status") in ("skipped", "off"):
        notes.append(f"The shortcut audit did not run ({audit.get('reason')}).")
    if metrics.get("overlap_with_training", 0) is None or metrics.get("overlap_with_validation", 0) is None:
        notes.append("Whether evaluated images were used in training is unknown (no train_keys.json/val_keys.json).")
    if metrics.get("overlap_with_training"):
        notes.append(f"{metrics['overlap_with_training']} evaluated images were also used in training.")
    if metrics.get("overlap_with_validation"):
        notes.append(f"{metrics['overlap_with_validation']} evaluated images chose the run's epoch and threshold.")
    threshold = bundle.get("threshold") or {}
    if threshold.get("source") == "none":
        notes.append(f"The decision threshold is a default ({threshold.get('note') or 'no validation split'}).")
    ece = metrics.get("ece")
    if ece is not None and ece > POOR_CALIBRATION:
        notes.append(f"Probabilities are poorly calibrated (ECE {num(ece)}): read them as scores, not risks.")
    if index and not any(row.get("group") for row in index):
        notes.append("No patient ids (group column): if a patient has several images, figures may be optimistic.")
    if external:
        notes.append(
            f"Tested on the external manifest {external['name']}: whether its images come from another source than "
            "the training data (hospitals, scanners, populations, prevalences) is for the reader to judge; "
            "performance on sources not tested is unknown."
        )
    else:
        notes.append(
            "Tested only on images from the same source as the training data; performance on other hospitals, "
            "scanners, populations or prevalences is unknown."
        )
    return notes


def num(value: Any, digits: int = 3) -> str:
    """A number for people: floats to ``digits`` decimals, ``n/a`` for None, anything else as text."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


__all__ = ["POOR_CALIBRATION", "SMALL_TEST_SET", "limitations", "model_card", "num"]
