"""The list of commands the ``xvision`` group exposes (one module per command)."""

from __future__ import annotations

import click

from xvision.cli.audit_cmd import audit
from xvision.cli.backbones_cmd import backbones
from xvision.cli.compare_cmd import compare
from xvision.cli.cv_cmd import cv
from xvision.cli.demo_cmd import demo
from xvision.cli.evaluate_cmd import evaluate
from xvision.cli.extract_cmd import extract
from xvision.cli.fetch_cmd import fetch
from xvision.cli.fit_cmd import fit, recipes
from xvision.cli.label_cmd import label
from xvision.cli.manifest_cmd import manifest
from xvision.cli.predict_cmd import predict
from xvision.cli.report_cmd import report
from xvision.cli.split_cmd import split
from xvision.cli.train_cmd import train

ALL: list[click.Command] = [
    manifest,
    split,
    audit,
    extract,
    train,
    fit,
    recipes,
    evaluate,
    report,
    cv,
    compare,
    predict,
    backbones,
    demo,
    fetch,
    label,
]
