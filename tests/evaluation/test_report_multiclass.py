"""More than two classes in `evaluate`'s summary and the report; the report of an external evaluation."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from synthetic_store import make_store

from xvision.cli.evaluate_cmd import format_metrics
from xvision.evaluation.evaluate import evaluate_run
from xvision.evaluation.metrics import compute_metrics
from xvision.evaluation.report_card import num
from xvision.features.store import FeatureStore
from xvision.heads import MLPClassifier
from xvision.training import train_run

CLASSES = ("Normal", "Nodule benign", "MALIGNANT nodule", "Ärger ünïcode")
SAME_SOURCE = "Tested only on images from the same source as the training data"


class Tables(HTMLParser):
    """The text of every table cell, table by table and row by row, and the page's words."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def words(self) -> str:
        """The text, one space between words (none before the punctuation that follows a tag)."""
        return " ".join(" ".join(self.text).split()).replace(" ,", ",").replace(" .", ".")

    def table_with(self, header: str) -> list[list[str]]:
        """The rows of the first table whose first row holds ``header``, that row first."""
        return next(table for table in self.tables if table and header in table[0])


def four_class_metrics() -> dict:
    rng = np.random.default_rng(0)
    y = np.arange(40) % 4
    logits = rng.normal(size=(40, 4)) + 1.5 * np.eye(4)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {**compute_metrics(y, proba, list(CLASSES)), "split": "test"}


def test_evaluate_prints_the_macro_one_vs_rest_auc_and_each_class_auc() -> None:
    metrics = four_class_metrics()
    lines = format_metrics(metrics).splitlines()
    assert f"ROC AUC (macro one-vs-rest) {metrics['roc_auc']:.3f}" in lines[0]
    header = lines.index(next(line for line in lines if "precision" in line))
    assert "AUC vs rest" in lines[header]
    for c in CLASSES:
        row = next(line for line in lines[header + 1 :] if line.startswith(c + " "))
        cells = row[len(c) :].split()
        assert cells[3] == f"{metrics['roc_auc_per_class'][c]:.3f}", row  # after precision, recall, f1
        assert cells[4] == str(metrics["support"][c])
    metrics |= {"roc_auc": None, "support": {**metrics["support"], "Normal": 0}}
    metrics.pop("roc_auc_per_class")
    assert "ROC AUC (macro one-vs-rest) n/a (only 3 classes present)" in format_metrics(metrics).splitlines()[0]


def test_two_class_summary_is_unchanged() -> None:
    metrics = {
        "split": "test",
        "n": 20,
        "classes": ["Normal", "MALIGNANT nodule"],
        "accuracy": 0.9,
        "roc_auc": 0.98,
        "positive": "MALIGNANT nodule",
        "sensitivity": 0.9,
        "specificity": 0.8,
        "sensitivity_at_90_specificity": 1.0,
        "intervals": {"accuracy": {"ci_low": 0.8, "ci_high": 1.0}, "roc_auc": {"ci_low": 0.94, "ci_high": 1.0}},
        "precision": {"Normal": 0.9, "MALIGNANT nodule": 0.8},
        "recall": {"Normal": 0.8, "MALIGNANT nodule": 0.9},
        "f1": {"Normal": 0.85, "MALIGNANT nodule": 0.85},
        "support": {"Normal": 10, "MALIGNANT nodule": 10},
        "confusion_matrix": [[8, 2], [1, 9]],
    }
    assert format_metrics(metrics) == (
        "split test: n=20, accuracy 0.900 [0.800, 1.000], ROC AUC 0.980 [0.940, 1.000]\n"
        "MALIGNANT nodule positive: sensitivity 0.900, specificity 0.800; at 90% specificity: sensitivity 1.000\n"
        "                  precision  recall  f1     n\n"
        "Normal                0.900   0.800  0.850  10\n"
        "MALIGNANT nodule      0.800   0.900  0.850  10\n"
        "confusion matrix (rows true, columns predicted): [[8, 2], [1, 9]]"
    )


@pytest.fixture(scope="module")
def four_class_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A (synthetic, pretrained) four-class run evaluated on its test split."""
    root = tmp_path_factory.mktemp("four")
    store = make_store(root / "store", classes=CLASSES, n_groups=80, signal=1.5)
    set_manifest(store, root / "train.csv", "1" * 64)
    run = root / "run"
    train_run(store, run, head=MLPClassifier(hidden=(16,), epochs=3), progress=False)
    evaluate_run(run, store, split="test", bootstrap=None)
    return run


def set_manifest(store: Path, path: Path, sha256: str) -> None:
    """Record in the store the manifest it was extracted from, as `extract` does."""
    features = FeatureStore(store)
    features.write_meta({**features.read_meta(), "manifest": {"path": str(path.resolve()), "sha256": sha256}})


def test_report_names_the_macro_auc_and_shows_each_class_auc(four_class_run: Path) -> None:
    metrics = json.loads((four_class_run / "metrics.json").read_text(encoding="utf-8"))
    page = Tables((four_class_run / "report.html").read_text(encoding="utf-8"))
    assert f"ROC AUC (macro one-vs-rest) {num(metrics['roc_auc'])}" in page.words  # summary card
    results = page.table_with("metric")
    assert ["ROC AUC (macro one-vs-rest)", num(metrics["roc_auc"]), ""] in results
    assert not any(row[:1] == ["ROC AUC"] for table in page.tables for row in table)  # never unqualified
    per_class = page.table_with("precision")
    column = per_class[0].index("ROC AUC (one-vs-rest)")
    shown = {row[0]: row[column] for row in per_class[1:]}
    assert shown == {c: num(metrics["roc_auc_per_class"][c]) for c in CLASSES}


def test_two_class_report_keeps_the_plain_auc(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", classes=("Normal", "MALIGNANT nodule"), n_groups=30)
    run = tmp_path / "run"
    train_run(store, run, head=MLPClassifier(hidden=(16,), epochs=3), progress=False)
    evaluate_run(run, store, split="test", bootstrap=None)
    page = Tables((run / "report.html").read_text(encoding="utf-8"))
    assert "one-vs-rest" not in page.words
    assert any(row[:1] == ["ROC AUC"] for row in page.table_with("metric"))
    assert page.table_with("precision")[0][-1] == "images"  # no per-class AUC column


def test_report_of_an_external_evaluation_names_that_manifest(four_class_run: Path, tmp_path: Path) -> None:
    external = tmp_path / "sealed.csv"
    store = make_store(tmp_path / "features", classes=CLASSES, n_groups=24, splits=None, seed=7)
    set_manifest(store, external, "2" * 64)
    out = four_class_run / "eval-sealed"
    evaluate_run(four_class_run, store, split=None, out_dir=out, manifest=external, bootstrap=None)

    page = Tables((out / "report.html").read_text(encoding="utf-8"))
    assert "Evaluated on the external manifest sealed.csv (48 images)" in page.words
    assert "all split" not in page.words
    assert "Evaluated on 48 images of the external manifest sealed.csv." in page.words  # model card
    assert SAME_SOURCE not in page.words
    assert "Tested on the external manifest sealed.csv: whether its images come from another source" in page.words
    assert f"Test data: the external manifest {external.resolve()}, SHA-256 {'2' * 64}" in page.words
    assert f"Training manifest: {(four_class_run.parent / 'train.csv').resolve()}" in page.words
    assert "Shortcut audit of the training manifest" in page.words

    # An evaluation of the run's own data keeps the same-source limitation and the plain audit heading.
    own = Tables((four_class_run / "report.html").read_text(encoding="utf-8"))
    assert SAME_SOURCE in own.words and "external manifest" not in own.words
    assert "Shortcut audit" in own.words and "of the training manifest" not in own.words
