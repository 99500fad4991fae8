"""The HTML report: one well-formed, self-contained file with every section, that degrades when parts are missing."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from synthetic_store import make_store

from xvision.cli.main import main
from xvision.data.phantoms import make_phantom_dataset
from xvision.evaluation.evaluate import evaluate_run
from xvision.evaluation.report import write_report
from xvision.heads import MLPClassifier
from xvision.training import train_run

TINY = "timm:mobilenetv3_small_050"
SECTIONS = ("summary", "model-card", "data", "provenance", "training", "results", "calibration", "threshold", "errors")
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "wbr"}


class Page(HTMLParser):
    """Collects what the tests look at, and checks that every tag is closed in order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.links: list[tuple[str, str]] = []  # (tag, url) of every src/href/action attribute
        self.tags: set[str] = set()
        self.text: list[str] = []
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed tags: {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        values = dict(attrs)
        if "id" in values:
            self.ids.add(str(values["id"]))
        for name in ("src", "href", "action", "poster", "data"):
            if values.get(name):
                self.links.append((tag, str(values[name])))
        if tag == "img":
            self.images.append(str(values.get("src")))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifest -> split -> extract (random tiny backbone) -> train (audit on) -> evaluate, as a user would."""
    root = tmp_path_factory.mktemp("report")
    manifest = make_phantom_dataset(root / "data", n_per_class=12, size=64, seed=3)
    assert main(["split", str(manifest), "--test", "0.3", "--val", "0.25", "--seed", "1"]) == 0
    feats, run = root / "feats", root / "run"
    assert main(["extract", str(manifest), "--backbone", TINY, "--weights", "random", "-o", str(feats)]) == 0
    assert main(["train", str(feats), "-o", str(run), "--epochs", "3"]) == 0
    assert main(["evaluate", str(run), "--features", str(feats)]) == 0
    return run


def test_evaluate_writes_a_well_formed_report_with_every_section(phantom_run: Path) -> None:
    page = Page((phantom_run / "report.html").read_text(encoding="utf-8"))
    assert set(SECTIONS) <= page.ids
    for heading in ("Model card", "Intended use", "Limitations", "Configuration and provenance", "Shortcut audit"):
        assert heading in page.words
    assert "Decision threshold" in page.words and "youden" in page.words
    assert "Expected calibration error" in page.words
    assert "Sensitivity at 90% specificity" in page.words  # threshold-free operating figure
    assert "95% CI" in page.words  # intervals are shown where metrics.json has them
    assert TINY in page.words and "random-init-seed0" in page.words  # backbone and weights identity
    manifest = json.loads((phantom_run / "bundle.json").read_text())["data"]["manifest"]
    assert manifest["sha256"] in page.words


def test_report_is_self_contained(phantom_run: Path) -> None:
    text = (phantom_run / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert page.images and all(src.startswith("data:image/") for src in page.images)
    assert sum(src.startswith("data:image/png;base64,") for src in page.images) >= 4  # curve, matrix, ROC, reliability
    assert any(src.startswith("data:image/jpeg;base64,") for src in page.images)  # error thumbnails
    assert all(url.startswith(("#", "data:")) for _, url in page.links), page.links
    assert not {"script", "link", "iframe", "object", "embed"} & page.tags
    assert "url(" not in text and "@import" not in text  # no CSS fetches either


def test_untrained_backbone_is_loud(phantom_run: Path) -> None:
    page = Page((phantom_run / "report.html").read_text(encoding="utf-8"))
    assert page.words.count("UNTRAINED BACKBONE") >= 2  # the banner and the model card
    assert "meaningless" in page.words


def test_audit_verdict_and_data_summary_come_from_the_run(phantom_run: Path) -> None:
    audit = json.loads((phantom_run / "bundle.json").read_text())["audit"]
    assert audit["status"] == "done" and audit["verdict"] in ("pass", "warn")
    page = Page((phantom_run / "report.html").read_text(encoding="utf-8"))
    assert f"cross-validated AUC {audit['auc']:.3f}" in page.words
    assert audit["strongest"][0]["meaning"] in page.words
    for split in ("train", "val", "test"):
        assert f" {split} " in f" {page.words} "


def test_report_command_and_graceful_degradation(phantom_run: Path, tmp_path: Path, capsys) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(phantom_run, bare)
    metrics = json.loads((bare / "metrics.json").read_text())
    for key in ("intervals", "roc_band", "calibration", "threshold_rule", "bootstrap", "ece", "brier"):
        metrics.pop(key, None)
    (bare / "metrics.json").write_text(json.dumps(metrics))
    bundle = json.loads((bare / "bundle.json").read_text())
    bundle.pop("audit")
    bundle["head"]["features_dir"] = str(tmp_path / "gone")  # store and images out of reach
    bundle["data"]["manifest"]["path"] = str(tmp_path / "gone" / "manifest.csv")
    (bare / "bundle.json").write_text(json.dumps(bundle))
    shutil.rmtree(bare / "plots")
    metrics["features"] = str(tmp_path / "gone")
    (bare / "metrics.json").write_text(json.dumps(metrics))

    out = tmp_path / "old.html"
    assert main(["report", str(bare), "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = Page(out.read_text(encoding="utf-8"))
    assert set(SECTIONS) <= page.ids
    assert "95% CI" not in page.words and "no interval" in page.words
    assert "No image could be read" in page.words  # mistakes listed as a table, without thumbnails
    assert not any(src.startswith("data:image/jpeg") for src in page.images)
    assert "without the audit" in page.words

    for name in ("metrics.json", "predictions.csv"):
        (bare / name).unlink()
    page = Page(write_report(bare).read_text(encoding="utf-8"))
    assert "Not evaluated yet" in page.words and "UNTRAINED BACKBONE" in page.words

    assert main(["report", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    # --results naming a folder without metrics.json is a mistake, not a run "not evaluated yet"
    (tmp_path / "images").mkdir()
    assert main(["report", str(phantom_run), "--results", str(tmp_path / "images")]) == 2
    assert "images: no metrics.json" in capsys.readouterr().err
    assert not (tmp_path / "images" / "report.html").exists()


def test_multiclass_run_without_images(tmp_path: Path) -> None:
    """A pretrained (synthetic) three-class run: no UNTRAINED warning, macro figures, mistakes listed."""
    store = make_store(tmp_path / "store", classes=("a", "b", "c"), n_groups=30, signal=0.8)
    run = tmp_path / "run"
    train_run(store, run, head=MLPClassifier(hidden=(16,), epochs=3), progress=False)
    evaluate_run(run, store, split="test")
    page = Page((run / "report.html").read_text(encoding="utf-8"))
    assert "UNTRAINED BACKBONE" not in page.words
    assert "Most confident mistakes" in page.words and "Positive class" not in page.words
    assert "skipped" in page.words  # the audit could not reach any image: said, not hidden


def test_report_refuses_a_features_folder_that_is_not_a_store(phantom_run: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "images").mkdir()
    out = tmp_path / "r.html"
    assert main(["report", str(phantom_run), "--features", str(tmp_path / "images"), "-o", str(out)]) == 2
    assert "images: not a feature store (no meta.json)" in capsys.readouterr().err  # was silently the run's store
    assert not out.exists()
    assert main(["report", str(phantom_run), "--features", str(tmp_path / "nowhere"), "-o", str(out)]) == 2
    assert "nowhere: no such feature folder" in capsys.readouterr().err


def test_a_run_evaluated_only_on_other_images_points_to_those_results(
    phantom_run: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    shutil.copytree(phantom_run, run)
    for name in ("metrics.json", "predictions.csv", "report.html"):
        (run / name).unlink(missing_ok=True)
    shutil.copytree(phantom_run, run / "eval-sealed", ignore=shutil.ignore_patterns("eval-*", "checkpoints"))
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    printed = capsys.readouterr().out
    assert f"`xvision report {run} --results {run / 'eval-sealed'}`" in printed
    page = Page((run / "report.html").read_text(encoding="utf-8"))
    assert "evaluated on other images" in page.words and "RUN/eval-sealed" in page.words


def test_a_received_run_cannot_put_files_of_this_machine_into_its_report(phantom_run: Path, tmp_path: Path) -> None:
    """A run folder from someone else embedded a plots/roc.png that was a link to a private file, and a thumbnail
    of any image its predictions.csv named by absolute path: reports are sent on."""
    import base64
    import csv

    from PIL import Image

    received = tmp_path / "received"
    shutil.copytree(phantom_run, received)
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY----- TOPSECRET")
    (received / "plots" / "roc.png").unlink()
    (received / "plots" / "roc.png").symlink_to(secret)
    private = tmp_path / "private-scan.png"
    Image.new("L", (64, 64), 77).save(private)
    with open(received / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["sha256"]  # the content each row scored
    wrong = [r for r in rows if r["label"] != r["predicted"]]
    assert wrong, "the phantom run should make mistakes for its gallery"
    for row in wrong:
        row["path"] = str(private)
    with open(received / "predictions.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = write_report(received).read_text(encoding="utf-8")
    embedded = [base64.b64decode(src.split(",", 1)[1]) for src in Page(text).images]
    assert not any(b"TOPSECRET" in data for data in embedded)
    assert not any(src.startswith("data:image/jpeg") for src in Page(text).images)  # no thumbnail of the scan
    # the run's own images, unchanged, still get their thumbnails
    assert any(src.startswith("data:image/jpeg") for src in Page((phantom_run / "report.html").read_text()).images)


def test_an_older_predictions_csv_says_why_it_has_no_thumbnails(phantom_run: Path, tmp_path: Path) -> None:
    """Without the sha256 column (evaluations before it was written), the gallery said "No image could be read",
    though the images were there."""
    import csv

    older = tmp_path / "older"
    shutil.copytree(phantom_run, older)
    with open(older / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(older / "predictions.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[c for c in rows[0] if c != "sha256"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    page = Page(write_report(older).read_text(encoding="utf-8"))
    assert "an evaluation by an older Xvision" in page.words and "No image could be read" not in page.words
