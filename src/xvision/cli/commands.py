"""The commands the ``xvision`` group exposes: name, module, and the one-line summary `--help` shows.

Commands are imported only when run (or when their own ``--help`` is asked for): most of them need torch,
scikit-learn or matplotlib, and `xvision --help` should answer at once. Each command lives in
``xvision.cli.<name>_cmd`` (two share a module); ``summary`` repeats the first sentence of its docstring,
and a test keeps the two equal.
"""

from __future__ import annotations

from typing import NamedTuple

import click


class CommandEntry(NamedTuple):
    name: str
    module: str
    summary: str


COMMANDS: list[CommandEntry] = [
    CommandEntry(
        "manifest",
        "xvision.cli.manifest_cmd",
        "Write a manifest CSV from FOLDER (one subfolder per class) or from a labels table TABLE.csv.",
    ),
    CommandEntry(
        "split",
        "xvision.cli.split_cmd",
        "Write a split column into MANIFEST, stratified by label, never dividing a group.",
    ),
    CommandEntry(
        "audit",
        "xvision.cli.audit_cmd",
        "Check MANIFEST for shortcuts: image size, format, intensity, borders, corners, burned-in marks and "
        "DICOM header fields that should not carry the diagnosis.",
    ),
    CommandEntry(
        "extract", "xvision.cli.extract_cmd", "Extract features for the images of MANIFEST into FEATURES_DIR."
    ),
    CommandEntry(
        "train",
        "xvision.cli.train_cmd",
        "Train a classifier head on the train split of FEATURES_DIR (val picks the epoch).",
    ),
    CommandEntry(
        "fit",
        "xvision.cli.fit_cmd",
        "Run a recipe on MANIFEST: extract features, train on its train split (val picks epoch and threshold), "
        "and evaluate on its test split when there is one.",
    ),
    CommandEntry("recipes", "xvision.cli.fit_cmd", "List the recipes `xvision fit` can run."),
    CommandEntry(
        "evaluate",
        "xvision.cli.evaluate_cmd",
        "Score RUN_DIR on a split of FEATURES_DIR, or on the images of --manifest (never seen by the run).",
    ),
    CommandEntry(
        "report",
        "xvision.cli.report_cmd",
        "Write one HTML file about RUN_DIR that opens offline: data, provenance, curves, metrics with intervals, "
        "calibration, threshold, the most confident mistakes and a short model card.",
    ),
    CommandEntry(
        "cv",
        "xvision.cli.cv_cmd",
        "Cross-validate the head on FEATURES_DIR, or a whole recipe on a MANIFEST: grouped stratified folds, "
        "pooled out-of-fold metrics.",
    ),
    CommandEntry(
        "compare",
        "xvision.cli.compare_cmd",
        "Compare the ROC AUC of RUN_A and RUN_B on the same images: A - B with a paired bootstrap interval and "
        "DeLong's test for correlated AUCs.",
    ),
    CommandEntry(
        "predict",
        "xvision.cli.predict_cmd",
        "Predict the class of each image in INPUTS (files or folders) with RUN_DIR.",
    ),
    CommandEntry(
        "serve",
        "xvision.cli.serve_cmd",
        "Serve RUN_DIR's predictions over HTTP: POST /predict and /heatmap, GET /model and /health.",
    ),
    CommandEntry(
        "backbones",
        "xvision.cli.backbones_cmd",
        "List the built-in backbones (any timm model is also available as timm:<name>).",
    ),
    CommandEntry(
        "demo",
        "xvision.cli.demo_cmd",
        "Generate synthetic chest phantoms (normal vs nodule) and run manifest -> split -> extract -> train -> "
        "evaluate -> predict on them, printing the metrics and where the plots are.",
    ),
    CommandEntry(
        "fetch",
        "xvision.cli.fetch_cmd",
        "Download a public chest X-ray collection into a folder (next step: `xvision label`).",
    ),
    CommandEntry(
        "label",
        "xvision.cli.label_cmd",
        "Label the records of FOLDER (from `xvision fetch openi`) and write a manifest (path,label,group,view,...).",
    ),
]


def short_help(entry: CommandEntry, limit: int) -> str:
    """The summary shortened as click shortens a command's own help."""
    return click.Command(entry.name, help=entry.summary).get_short_help_str(limit=limit)
