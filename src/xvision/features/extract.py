"""Batched, resumable extraction of CNN codes from the images of a manifest into a FeatureStore."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from xvision._checks import check_type
from xvision._fileio import exclusive_lock, sha256_file
from xvision._threads import machine_is_busy, torch_threads
from xvision._version import __version__
from xvision.backbones import Backbone, PreprocessConfig, preprocess_image
from xvision.backbones.runtime import (
    OPENVINO_MIN_IMAGES,
    ExecutionPlan,
    Runner,
    choose_plan,
    detect_hardware,
    estimate_seconds_per_image,
    fp32_fallback,
    make_runner,
)
from xvision.errors import AccuracyGuardError, FeatureStoreError, ImageLoadError, ManifestError, XvisionError
from xvision.features.guard import DEFAULT_SAMPLE, FEW_DIMS, GuardResult, evaluate_guard, warn_if_failed
from xvision.features.store import STORAGE_DTYPES, FeatureStore, IndexRow
from xvision.io import load_radiograph

log = logging.getLogger(__name__)


@dataclass
class ExtractionReport:
    """What one extraction run did."""

    total: int = 0
    extracted: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    plan: dict[str, Any] | None = None  # the execution plan actually used (None when nothing was extracted)
    guard: dict[str, Any] | None = None  # the accuracy guard's result, when a fast path was used
    rejected: dict[str, Any] | None = None  # a reduced-precision plan the guard rejected (fp32 replaced it)
    seconds: float = 0.0


class _ImageDataset(Dataset):
    """Loads and preprocesses images in worker processes; a bad image yields its error, not an exception."""

    def __init__(self, items: list[tuple[str, Path]], config: PreprocessConfig, reduced_decode: bool) -> None:
        self.items = items
        self.config = config
        self.target_size = config.input_size if reduced_decode else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray | None, str, list[Warning]]:
        key, path = self.items[index]
        if get_worker_info() is None:  # in the main process: warnings go their usual way (and are de-duplicated)
            return key, *_load_one(path, self.config, self.target_size, key), []
        # A worker process's warnings (a MONOCHROME1 film, ...) travel with the batch and are issued by the main
        # process, whose CLI counts them: said from each worker, every film would print a line of its own.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image, error = _load_one(path, self.config, self.target_size, key)
        return key, image, error, [_portable(w.message) for w in caught if isinstance(w.message, Warning)]


def _portable(warning: Warning) -> Warning:
    """The warning as it can cross to the main process: a library's warning class whose constructor takes other
    arguments would fail to unpickle there, and take the batch (and the extraction) down with it."""
    import copy

    try:  # a copy rebuilds the warning from its __reduce__, as unpickling in the main process would
        copy.copy(warning)
    except Exception:  # noqa: BLE001 - any failure to rebuild: send its text instead
        return UserWarning(str(warning))
    return warning


def _load_one(
    path: Path, config: PreprocessConfig, target_size: int | None, key: str | None = None
) -> tuple[np.ndarray | None, str]:
    """The image's network input, or its error. With ``key`` (the SHA-256 the file had when it was listed), a file
    whose content changed since is refused: its features would be stored under the old content's key, and reused
    for any later manifest holding the original image."""
    try:
        # numpy, not a tensor: tensors cross process boundaries through shared-memory file descriptors,
        # whose sharer thread prints tracebacks when the job is interrupted mid-transfer.
        image = preprocess_image(load_radiograph(path, target_size=target_size), config).numpy()
        if key is not None and sha256_file(path) != key:
            return None, "the file changed while it was being extracted; run extract again"
        return image, ""
    except ImageLoadError as error:
        return None, error.reason
    except Exception as error:  # noqa: BLE001 - one bad image must never kill a long job
        return None, f"{type(error).__name__}: {error}"


@dataclass
class _Batch:
    """One loader batch: the decoded images stacked (in the worker), and the keys that failed."""

    keys: list[str]
    images: np.ndarray | None
    failed: list[tuple[str, str]]
    warnings: list[Warning]


def _collate(batch: list[tuple[str, np.ndarray | None, str, list[Warning]]]) -> _Batch:
    good = [(k, a) for k, a, _, _ in batch if a is not None]
    return _Batch(
        keys=[k for k, _ in good],
        images=np.stack([a for _, a in good]) if good else None,
        failed=[(k, err) for k, a, err, _ in batch if a is None],
        warnings=[w for *_, said in batch for w in said],
    )


def _batches(items: list[tuple[str, Path]], config: PreprocessConfig, plan: ExecutionPlan) -> Iterator[_Batch]:
    loader = DataLoader(
        _ImageDataset(items, config, plan.reduced_decode),
        batch_size=plan.batch_size,
        shuffle=False,
        num_workers=plan.workers,
        collate_fn=_collate,
        prefetch_factor=2 if plan.workers else None,  # bounded queue: memory stays flat on large sets
        persistent_workers=False,
    )
    yield from loader


def _plan_for(
    backbone: Backbone,
    first_path: Path | None,
    n_images: int,
    precision: str,
    engine: str,
    device: str,
    batch_size: int | None,
    workers: int | None,
    threads: int | None,
) -> ExecutionPlan:
    """Choose the plan. For CPU jobs, first time one eager forward pass and one decode: whether a compiled
    engine pays, and how to split the cores between decode workers and compute threads, depend on both.

    A backbone whose features are a score (fewer than :data:`FEW_DIMS` numbers, such as the lesion
    detectors' one logit) is extracted in fp32 unless a reduced precision is asked for: its one number ranks
    the images, and bf16 moves it too much for that. On a 2-core AVX512-BF16 EPYC, bf16 moved the `best`
    detector pair's score by up to 0.49 where the scores' spread (standard deviation) over 30 held-out films
    was 1.45 (correlation with fp32 0.988), enough to move that fold's ROC AUC from 0.761 to 0.713. The
    accuracy guard, which then compared the sample's raw scores as one vector, passed that fold at cosine
    0.99915; it now judges a score by its correlation over 8 images (that fold forced to bf16: 0.972, a
    failure), but not spending a bf16 pass that would be rejected is cheaper. ``predict`` runs fp32 too, so
    evaluating a run on images and predicting them give the same scores."""
    options = dict(
        precision=precision, engine=engine, device=device, batch_size=batch_size, workers=workers, threads=threads
    )
    options["busy"] = machine_is_busy() if threads is None and precision != "fp32" else False
    plan = choose_plan(n_images, **options)
    # From the smallest job on which an engine may be chosen: without the measurement, image counts decide,
    # and 60 EfficientNet-Lite0 images went to OpenVINO (converting took longer than eager's whole job).
    measure = n_images >= OPENVINO_MIN_IMAGES and (engine == "auto" or workers is None)
    if plan.device == "cpu" and not plan.is_reference and measure:
        config = backbone.preprocess_config
        shape = (config.channels, config.input_size, config.input_size)
        compute = estimate_seconds_per_image(backbone.model, shape, plan.threads)
        decode = _decode_seconds(first_path, config)
        plan = choose_plan(n_images, eager_seconds_per_image=compute, decode_seconds_per_image=decode, **options)
    if precision == "auto" and plan.precision != "fp32" and backbone.feature_dim < FEW_DIMS:
        log.info("%s gives a score, not a feature vector: extracting in fp32 (--precision overrides)", backbone.name)
        plan = fp32_fallback(plan)
    return plan


def _decode_seconds(path: Path, config: PreprocessConfig) -> float | None:
    """Time decoding and preprocessing one image the way the workers will."""
    start = time.perf_counter()
    image, _ = _load_one(path, config, config.input_size)
    return time.perf_counter() - start if image is not None else None


def _guard_sample(items: list[tuple[str, Path]], n: int | None, *, score: bool = False) -> list[tuple[str, Path]]:
    """``n`` items spread evenly over the job; ``None``: 2 to 8 of them, one per 50 images, or 8 for a
    ``score`` (a feature of fewer than FEW_DIMS numbers), which the guard judges by its correlation over the
    sample."""
    if n is None:
        n = DEFAULT_SAMPLE if score else min(DEFAULT_SAMPLE, max(2, len(items) // 50))
    if n <= 0 or not items:
        return []
    step = max(1, len(items) // n)
    return items[::step][:n]


def _run_guard(
    backbone: Backbone, runner: Runner, sample: list[tuple[str, Path]]
) -> tuple[GuardResult | None, list[str], np.ndarray | None]:
    """Run the sample through the fast path and the reference; return the result and the fast features."""
    config = backbone.preprocess_config
    keys, fast_in, ref_in = [], [], []
    for key, path in sample:
        reduced, _ = _load_one(path, config, config.input_size if runner.plan.reduced_decode else None)
        full, _ = _load_one(path, config, None)
        if reduced is not None and full is not None:
            keys.append(key)
            fast_in.append(reduced)
            ref_in.append(full)
    if not keys:
        return None, [], None
    # The fast path in the plan's batches, as the main loop runs it, and the reference one image at a time:
    # eight 1024 px films in one batch through the detector pair took extraction's peak memory from 2.2 GB
    # (two films) to 4.1 GB.
    step = runner.plan.batch_size
    fast = np.concatenate([runner(np.stack(fast_in[i : i + step])) for i in range(0, len(keys), step)])
    reference = np.concatenate([backbone.extract(torch.from_numpy(image[None])) for image in ref_in])
    return evaluate_guard(fast, reference), keys, fast


def _guarded_runner(
    backbone: Backbone, runner: Runner, sample: list[tuple[str, Path]], precision: str
) -> tuple[Runner, GuardResult | None, list[str], np.ndarray | None, dict[str, Any] | None]:
    """Run the accuracy guard. When the precision was chosen automatically (``precision="auto"``) and the
    reduced precision fails it, the same path in fp32 replaces it and is guarded in turn: an automatic
    choice never trades agreement with the reference for speed. (EfficientNet-Lite0's depthwise layers lose
    more in bf16 than VGG16's: cosine 0.992-0.997 on an AVX512-BF16 EPYC and an H200, against the 0.999 bar.)
    An explicit ``--precision bf16``/``fp16`` is kept, and a failure is warned about.

    Returns the runner to use, its guard result, the sample's keys and features, and the rejected plan with
    its guard result (``None`` when nothing was rejected), for the store's metadata."""
    guard, keys, features = _run_guard(backbone, runner, sample)
    if guard is None or guard.passed or precision != "auto" or runner.plan.precision == "fp32":
        return runner, guard, keys, features, None
    rejected = {"plan": runner.plan.to_dict(), "accuracy_guard": guard.to_dict()}
    # Information, not a warning: the automatic choice is corrected and nothing is wrong with the features.
    log.info(
        "%s in %s disagrees with the fp32 reference (%s, below %s): extracting in fp32 instead "
        "(--precision %s keeps the faster path)",
        backbone.name,
        runner.plan.precision,
        guard.describe(),
        guard.threshold,
        runner.plan.precision,
    )
    runner = make_runner(backbone.model, backbone.extract, fp32_fallback(runner.plan))
    if runner.plan.is_reference:
        return runner, None, [], None, rejected
    guard, keys, features = _run_guard(backbone, runner, sample)
    return runner, guard, keys, features, rejected


def extract_features(
    rows: list[dict[str, Any]],
    backbone: Backbone,
    out_dir: str | Path,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    strict: bool = False,
    shard_size: int = 256,
    progress: bool = True,
    manifest_info: dict[str, Any] | None = None,
    precision: str = "auto",
    engine: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    storage_dtype: str | None = None,
    guard_sample: int | None = None,
) -> ExtractionReport:
    """Extract features for ``rows`` into ``out_dir``, resuming from what is already stored. One extraction
    writes to ``out_dir`` at a time: another one started meanwhile waits for it (``out_dir/.lock``).

    The fastest path the hardware supports is chosen automatically (see :mod:`xvision.backbones.runtime`)
    and recorded in ``meta.json``; unless it is the fp32 reference path, ``guard_sample`` images are also run
    through the reference and their cosine agreement is recorded (and checked).

    Args:
        rows: one dict per image with ``abspath`` (Path), ``path``, ``label``, ``group``, ``split``,
            ``extra`` (dict) and optionally a precomputed ``sha256``.
        backbone: the feature extractor; must match the store's backbone if the store exists.
        batch_size, workers, threads: override the plan's choices (``None``: automatic).
        strict: raise on the first unreadable image, or when the accuracy guard fails, instead of reporting.
        shard_size: images per shard; finished shards survive an interruption.
        precision: ``auto``, ``fp32`` (forces the reference path), ``bf16`` or ``fp16``.
        engine: ``auto``, ``eager``, ``compile`` or ``openvino``.
        device: ``auto``, ``cpu`` or ``cuda``.
        storage_dtype: ``float32`` or ``float16`` for a new store (``None``: the store's, else float32).
        guard_sample: images checked against the fp32 reference when a fast path is used (0 disables;
            ``None``: one per 50 images, at least 2 and at most 8).
    """
    from xvision._progress import progress_bar

    store = FeatureStore(out_dir)
    _refuse_other_folder(store)  # before the lock file is put into it
    # One writer at a time: two extractions into one store would race for shard names, meta.json and
    # index.csv. The second waits, then finds the first one's images stored and extracts only the rest.
    with exclusive_lock(
        store.lock_path, f"{store.root}: another extraction is writing to it; waiting for it to finish"
    ):
        for leftover in store.shard_dir.glob(".*.part"):  # a shard half-written by a killed run (the lock is ours)
            leftover.unlink(missing_ok=True)
        description = backbone.describe()
        meta = _check_or_init_meta(store, description, manifest_info, storage_dtype)

        report = ExtractionReport(total=len(rows))
        hashes, failures = _hash_rows(rows, strict)
        stored = store.keys()
        todo: dict[str, Path] = {}
        for row in rows:
            key = hashes.get(str(row["abspath"]))
            if key is None:
                continue
            if key in stored:
                report.reused += 1
            elif key not in todo:
                todo[key] = Path(row["abspath"])
        key_failures: dict[str, str] = {}
        pending_keys: list[str] = []
        pending: list[np.ndarray] = []

        def flush() -> None:
            if pending_keys:
                store.append(list(pending_keys), np.concatenate(pending, axis=0))
                pending_keys.clear()
                pending.clear()

        items = list(todo.items())
        first = items[0][1] if items else None
        plan = _plan_for(backbone, first, len(items), precision, engine, device, batch_size, workers, threads)
        runner = make_runner(backbone.model, backbone.extract, plan) if items else None
        started = time.monotonic()
        bar = progress_bar(total=len(items), desc="extract", unit="img", disable=not progress or not items)
        guard: GuardResult | None = None
        try:
            with torch_threads(plan.threads), torch.inference_mode():
                rejected = None
                if runner is not None and not runner.plan.is_reference:
                    sample = _guard_sample(items, guard_sample, score=backbone.feature_dim < FEW_DIMS)
                    runner, guard, guard_keys, guard_features, rejected = _guarded_runner(
                        backbone, runner, sample, precision
                    )
                if runner is not None:
                    recorded = runner.plan
                    meta = _record_run(store, meta, recorded, guard, rejected)
                    report.plan, report.guard = runner.plan.to_dict(), guard.to_dict() if guard else None
                    report.rejected = rejected
                if guard is not None:
                    warn_if_failed(guard, f"{backbone.name} via {runner.plan.describe()}")
                    if strict and not guard.passed:
                        raise AccuracyGuardError(
                            f"{store.root}: accuracy guard failed ({guard.describe()}, below {guard.threshold}); "
                            "re-run with --precision fp32, or without --strict to accept these features"
                        )
                    # The sample's fast-path features are what the main loop would compute: keep them.
                    pending_keys.extend(guard_keys)
                    pending.append(guard_features)
                    report.extracted += len(guard_keys)
                    done = set(guard_keys)
                    items = [item for item in items if item[0] not in done]
                    bar.update(len(guard_keys))
                last_flush = time.monotonic()
                for batch in _batches(items, backbone.preprocess_config, runner.plan if runner else plan):
                    for warning in batch.warnings:
                        warnings.warn(warning, stacklevel=1)
                    for key, err in batch.failed:
                        if strict:
                            raise ImageLoadError(todo[key], err)
                        log.warning("skipped %s: %s", todo[key], err)
                        key_failures[key] = err
                    if batch.images is not None:
                        features = runner(batch.images)
                        pending_keys.extend(batch.keys)
                        pending.append(features)
                        report.extracted += len(batch.keys)
                    # Flush by size, and by time so that a hard kill loses at most a minute of work.
                    if len(pending_keys) >= shard_size or (pending_keys and time.monotonic() - last_flush > 60):
                        flush()
                        last_flush = time.monotonic()
                    bar.update(len(batch.keys) + len(batch.failed))
        except KeyboardInterrupt:
            report.interrupted = True
            flush()
            bar.close()
            log.warning(
                "interrupted: %d images stored by this run, %d in the store in all; run the same command to go on",
                report.extracted,
                len(store.keys()),
            )
            raise
        except XvisionError:
            flush()
            bar.close()  # the error then starts a line of its own, not the end of the progress bar's
            raise
        flush()
        bar.close()
        report.seconds = time.monotonic() - started
        if runner is not None and runner.plan != recorded:
            report.plan = runner.plan.to_dict()
            _record_run(store, meta, runner.plan, guard, rejected)  # an engine fell back on its first batch

        index = _index_rows(rows, hashes, failures, key_failures, report)
        _warn_if_index_changes(store, index)
        store.write_index(index)
        if manifest_info is not None and store.read_meta().get("manifest") != manifest_info:
            store.write_meta({**store.read_meta(), "manifest": manifest_info})
        return report


def _hash_rows(rows: list[dict[str, Any]], strict: bool) -> tuple[dict[str, str], dict[str, str]]:
    """SHA-256 of every row's file (precomputed ones reused), and the reasons for files that cannot be read."""
    hashes: dict[str, str] = {}
    failures: dict[str, str] = {}
    for row in rows:
        path = Path(row["abspath"])
        if row.get("sha256"):
            hashes[str(path)] = row["sha256"]
            continue
        try:
            hashes[str(path)] = sha256_file(path)
        except OSError as error:
            reason = "file not found" if isinstance(error, FileNotFoundError) else f"cannot read ({error})"
            if strict:
                raise ImageLoadError(path, reason) from None
            log.warning("skipped %s: %s", path, reason)
            failures[str(path)] = reason
    return hashes, failures


def _warn_if_index_changes(store: FeatureStore, index: list[IndexRow]) -> None:
    """Say so when ``index.csv`` (which images, in which split) is replaced by another manifest's rows.

    Stored features stay (they are keyed by content), but a run trained on the old index judged with this store
    would be scored on other splits; its evaluation warns about images it trained on, yet the figures change.
    """
    if not store.index_path.is_file():
        return
    try:
        before = {(row.sha256, row.split) for row in store.read_index()}
    except XvisionError:
        return
    after = {(row.sha256, row.split) for row in index}
    if before != after:
        log.warning(
            "%s: index.csv now lists this manifest's images and splits (%d of the %d earlier entries kept); "
            "runs trained on the earlier index should be evaluated with their own store",
            store.root,
            len(before & after),
            len(before),
        )


def _index_rows(
    rows: list[dict[str, Any]],
    hashes: dict[str, str],
    failures: dict[str, str],
    key_failures: dict[str, str],
    report: ExtractionReport,
) -> list[IndexRow]:
    """The index.csv rows of this manifest; failed images are also added to ``report.failed``."""
    index_rows = []
    for row in rows:
        path = str(row["abspath"])
        key = hashes.get(path, "")
        error = failures.get(path) or key_failures.get(key, "")
        index_rows.append(
            IndexRow(
                path=str(row["path"]),
                label=str(row["label"]),
                group=str(row.get("group") or ""),
                split=str(row.get("split") or ""),
                sha256=key,
                status="failed" if error else "ok",
                error=error,
                extra=dict(row.get("extra") or {}),
            )
        )
        if error:
            report.failed.append((path, error))
    return index_rows


MAX_RECORDED_RUNS = 20


def _record_run(
    store: FeatureStore,
    meta: dict[str, Any],
    plan: ExecutionPlan,
    guard: GuardResult | None,
    rejected: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write how this run extracts (plan, hardware, guard, and a plan the guard rejected) into meta.json;
    keep the last runs' records."""
    record = {
        "plan": plan.to_dict(),
        "hardware": detect_hardware().to_dict(),
        "accuracy_guard": guard.to_dict() if guard is not None else None,
        "rejected_plan": rejected,
        "torch_version": torch.__version__,
        "xvision_version": __version__,
    }
    runs = [*meta.get("extraction_runs", []), record][-MAX_RECORDED_RUNS:]
    meta = {**meta, "extraction": record, "extraction_runs": runs}
    store.write_meta(meta)
    return meta


def _weights_label(weights: dict[str, Any]) -> str:
    """A weights identity in a few words: its name, and the start of its SHA-256 where it has one (two
    files of the same name can hold different weights)."""
    digest = weights.get("sha256")
    return f"{weights.get('name')}, sha256 {digest[:12]}" if digest else str(weights.get("name"))


def _refuse_other_folder(store: FeatureStore) -> None:
    """A folder that holds something other than a feature store is never written into."""
    if not store.exists() and store.root.exists() and any(e != store.lock_path for e in store.root.iterdir()):
        raise FeatureStoreError(f"{store.root}: folder exists and is not a feature store; choose another -o folder")


def _check_or_init_meta(
    store: FeatureStore, description: dict[str, Any], manifest: dict[str, Any] | None, storage_dtype: str | None
) -> dict[str, Any]:
    if storage_dtype is not None and storage_dtype not in STORAGE_DTYPES:
        raise FeatureStoreError(f"unknown storage dtype {storage_dtype!r}; choose one of: {', '.join(STORAGE_DTYPES)}")
    if store.exists():
        meta = store.read_meta()
        stored_dtype = meta.get("dtype", "float32")
        if storage_dtype is not None and storage_dtype != stored_dtype:
            raise FeatureStoreError(
                f"{store.root}: stores {stored_dtype} features, not {storage_dtype}; "
                "drop the dtype option to add to it, or choose another -o folder"
            )
        old = meta["backbone"]
        same = (
            old["name"] == description["name"]
            and old["weights"] == description["weights"]
            and old["preprocess"] == description["preprocess"]
        )
        if not same:
            raise FeatureStoreError(
                f"{store.root}: holds features from backbone '{old['name']}' "
                f"(weights {_weights_label(old['weights'])}), not '{description['name']}' "
                f"(weights {_weights_label(description['weights'])}); choose another -o folder"
            )
        # A new manifest is recorded only with the index.csv it belongs to (at the end of the run): an
        # interrupted extraction must leave meta.json naming the manifest that index.csv still lists.
        return meta
    meta = {  # a folder holding anything else was refused before the lock (_refuse_other_folder)
        "backbone": description,
        "xvision_version": __version__,
        "torch_version": torch.__version__,
        "dtype": storage_dtype or "float32",
        "manifest": manifest,
    }
    store.write_meta(meta)
    return meta


def extract_manifest(
    manifest_path: str | Path,
    out_dir: str | Path,
    *,
    backbone: str | Backbone = "vgg16",
    weights: str | None = None,
    split: str | None = None,
    **options: Any,
) -> ExtractionReport:
    """Read a manifest, refuse leaky splits, and extract every image's features into ``out_dir`` (only the
    rows of ``split`` when it is given; the splits are checked over the whole manifest).

    ``options`` are passed to :func:`extract_features` (batch_size, workers, strict, shard_size, progress,
    precision, engine, device, threads, storage_dtype, guard_sample).
    """
    check_type(backbone, (str, Backbone), "backbone", "a registry name (see `xvision backbones`) or a Backbone")
    from xvision.backbones import create_backbone
    from xvision.data.manifest import read_manifest
    from xvision.data.split import check_readable_splits

    manifest = read_manifest(manifest_path)
    manifest.require_split(split)
    hashes = check_readable_splits(manifest)  # an unreadable file is reported and skipped by extract_features
    rows: list[dict[str, Any]] = []
    for row in manifest.rows:
        if split is not None and row.split != split:
            continue
        path = manifest.resolve(row)
        rows.append(
            {
                "abspath": path,
                "path": row.path,
                "label": row.label,
                "group": row.group or "",
                "split": row.split or "",
                "extra": dict(row.extra),
                "sha256": hashes.get(str(path)),
            }
        )
    model = backbone if isinstance(backbone, Backbone) else create_backbone(backbone, weights=weights)
    info = {"path": str(Path(manifest_path).resolve()), "sha256": sha256_file(manifest_path)}
    report = extract_features(rows, model, out_dir, manifest_info=info, **options)
    if report.total and len(report.failed) == report.total:
        path, reason = report.failed[0]
        hint = "write the paths with '/', not '\\'" if "\\" in path else "check the paths"
        raise ManifestError(
            f"{manifest.name}: none of its {report.total} images could be read (the first: {path}: {reason}); "
            f"{hint} (relative paths are relative to the manifest's folder)"
        )
    return report
