"""The seed head as a scikit-learn-style estimator."""

from __future__ import annotations

import numpy as np
import pytest

from xvision.errors import NotFittedError
from xvision.heads import MLPClassifier


def _blobs(n: int = 120, d: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.array(["normal", "nodule"])[rng.integers(0, 2, n)]
    X = rng.normal(size=(n, d)).astype(np.float32) * 5 + 10
    X[y == "nodule", :3] += 8.0
    return X, y


def test_init_only_stores_parameters() -> None:
    head = MLPClassifier(hidden=(8,), lr=0.5)
    assert head.get_params()["hidden"] == (8,) and head.lr == 0.5
    assert not hasattr(head, "classes_")


def test_predict_before_fit_raises_not_fitted() -> None:
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(np.zeros((1, 3)))


def test_fit_learns_separable_classes_and_follows_the_contract() -> None:
    X, y = _blobs(400)
    head = MLPClassifier(hidden=(32, 32), epochs=20, lr=0.05)
    assert head.fit(X[:300], y[:300]) is head
    assert list(head.classes_) == ["nodule", "normal"]
    proba = head.predict_proba(X[300:])
    assert proba.shape == (100, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (head.predict(X[300:]) == y[300:]).mean() >= 0.9
    assert len(head.history_) == 20 and head.best_epoch_ == 20


def test_same_seed_same_model_and_different_seed_differs() -> None:
    X, y = _blobs()
    a = MLPClassifier(epochs=3, seed=1).fit(X, y).predict_proba(X)
    b = MLPClassifier(epochs=3, seed=1).fit(X, y).predict_proba(X)
    c = MLPClassifier(epochs=3, seed=2).fit(X, y).predict_proba(X)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_prediction_does_not_depend_on_the_batch() -> None:
    """The original tool's batch norm used batch statistics at test time; a 1-image batch was constant."""
    X, y = _blobs()
    head = MLPClassifier(epochs=5).fit(X, y)
    together = head.predict_proba(X[:10])
    alone = np.concatenate([head.predict_proba(X[i : i + 1]) for i in range(10)])
    assert np.allclose(together, alone, atol=1e-6)
    assert not np.allclose(alone[0], alone[1])


def test_validation_keeps_the_best_epoch() -> None:
    X, y = _blobs(200)
    head = MLPClassifier(hidden=(64,), epochs=25, lr=0.2).fit(X[:100], y[:100], X_val=X[100:], y_val=y[100:])
    losses = [r["val_loss"] for r in head.history_]
    assert head.best_epoch_ == int(np.argmin(losses)) + 1
    val_loss, _ = head._score(X[100:], head._encode(y[100:]))
    assert val_loss == pytest.approx(min(losses), rel=1e-5)


def test_save_and_load_round_trip_without_pickle(tmp_path) -> None:
    X, y = _blobs()
    head = MLPClassifier(epochs=2).fit(X, y)
    path = head.save(tmp_path / "head.safetensors")
    assert path.read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle
    loaded = MLPClassifier.load(path)
    assert np.array_equal(loaded.predict_proba(X), head.predict_proba(X))
    assert list(loaded.classes_) == list(head.classes_)


@pytest.mark.parametrize(
    "edit",
    [
        {"hidden": [30000], "n_features_in": 30000},  # a 400-byte file that made every command allocate gigabytes
        {"hidden": [-5]},
        {"hidden": "abc"},
        {"n_features_in": 0},
    ],
)
def test_a_head_whose_metadata_lies_about_its_sizes_is_refused_before_building_it(tmp_path, edit, monkeypatch) -> None:
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from xvision.errors import RunError
    from xvision.heads import mlp

    X, y = _blobs()
    path = MLPClassifier(hidden=(8,), epochs=1).fit(X, y).save(tmp_path / "head.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    params = json.loads(meta["params"])
    for key, value in edit.items():
        if key == "hidden":
            params["hidden"] = value
        else:
            meta[key] = str(value)
    meta["params"] = json.dumps(params)
    save_file(load_file(str(path)), str(path), metadata=meta)
    built = []
    monkeypatch.setattr(mlp, "MLPNet", lambda *sizes: built.append(sizes))
    with pytest.raises(RunError, match=r"head.safetensors: not a readable Xvision head \(ValueError: "):
        MLPClassifier.load(path)
    assert built == []  # no network of the claimed sizes was allocated


def test_wrong_feature_width_is_a_clear_error() -> None:
    X, y = _blobs()
    head = MLPClassifier(epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="expected features of shape"):
        head.predict(np.zeros((2, 5)))


def test_inputs_that_would_train_a_broken_head_are_refused() -> None:
    X, y = _blobs()
    broken = X.copy()
    broken[[7, 9], 2] = np.nan
    with pytest.raises(ValueError, match=r"X has NaN or infinite values in 2 rows \(first: row 7\)"):
        MLPClassifier(epochs=1).fit(broken, y)
    with pytest.raises(ValueError, match="X_val has NaN"):
        MLPClassifier(epochs=1).fit(X, y, X_val=broken, y_val=y)
    with pytest.raises(ValueError, match="give X_val and y_val together"):
        MLPClassifier(epochs=1).fit(X, y, X_val=X)  # validation silently skipped before
    with pytest.raises(TypeError, match=r"hidden must be a sequence of layer sizes, such as .*got 8"):
        MLPClassifier(hidden=8, epochs=1).fit(X, y)
    assert MLPClassifier(hidden=(8,), epochs=1).fit(X, y).predict(X[:2]).shape == (2,)


def test_balanced_class_weight_finds_more_of_a_rare_class_at_the_default_decision(tmp_path) -> None:
    rng = np.random.default_rng(3)
    n_common, n_rare = 600, 40
    y = np.array(["normal"] * n_common + ["nodule"] * n_rare)
    X = rng.normal(size=(len(y), 10)).astype(np.float32)
    X[y == "nodule", 0] += 1.5  # overlapping classes: the unweighted head leans towards "normal"
    test_y = np.array(["normal"] * 300 + ["nodule"] * 300)
    test_X = rng.normal(size=(600, 10)).astype(np.float32)
    test_X[test_y == "nodule", 0] += 1.5

    def recall(head: MLPClassifier) -> float:
        return float((head.predict(test_X[test_y == "nodule"]) == "nodule").mean())

    params = {"hidden": (), "epochs": 30, "lr": 0.05, "momentum": 0.9}
    plain = MLPClassifier(**params).fit(X, y)
    balanced = MLPClassifier(**params, class_weight="balanced").fit(X, y)
    assert recall(plain) < 0.3 < 0.5 < recall(balanced)
    loaded = MLPClassifier.load(balanced.save(tmp_path / "head.safetensors"))
    assert loaded.class_weight == "balanced"
    with pytest.raises(ValueError, match="class_weight must be None or 'balanced'"):
        MLPClassifier(class_weight="auto").fit(X, y)


def test_scikit_learn_tools_take_the_head() -> None:
    from sklearn.base import clone, is_classifier
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    head = MLPClassifier(hidden=(8,), epochs=20, lr=0.1, momentum=0.9)
    twin = clone(head).set_params(epochs=5)
    assert twin.get_params()["hidden"] == (8,) and twin.epochs == 5 and head.epochs == 20 and is_classifier(head)
    with pytest.raises(ValueError, match="no parameter"):
        twin.set_params(depth=3)
    scores = cross_val_score(head, X, y, cv=4, scoring="roc_auc")
    assert scores.mean() > 0.8
    # Integer (and boolean) labels keep their type: accuracy scoring compared "1" with 1 and gave 0.
    fitted = clone(head).fit(X, y)
    assert fitted.classes_.tolist() == [0, 1] and fitted.predict(X[:3]).dtype.kind == "i"
    assert fitted.score(X, y) > 0.8 and cross_val_score(head, X, y, cv=4).mean() > 0.8
    assert clone(head).fit(X, y > 0).classes_.tolist() == [False, True]


def test_fit_leaves_the_callers_torch_random_state_alone() -> None:
    import torch

    X, y = _blobs(40)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    MLPClassifier(hidden=(4,), epochs=2, seed=7).fit(X, y)
    assert torch.equal(torch.rand(3), expected)


def test_nan_features_are_refused_at_prediction_too() -> None:
    X, y = _blobs(40)
    head = MLPClassifier(hidden=(4,), epochs=2).fit(X, y)
    X[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"X has NaN or infinite values in 1 rows \(first: row 5\)"):
        head.predict_proba(X)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"lr": float("nan")}, "lr must be a positive number, got nan"),
        ({"lr": float("inf")}, "lr must be a positive number, got inf"),
        ({"momentum": float("nan")}, r"momentum must lie in \[0, 1\], got nan"),
        ({"weight_decay": float("inf")}, "weight_decay must be a non-negative number, got inf"),
        ({"hidden": (100_000_000,)}, r"makes a head of 3,200,000,000 weights, more than 1,073,741,824 \(4 GB"),
    ],
)
def test_parameters_no_training_could_use_are_refused_before_training(params: dict, match: str) -> None:
    """nan passed every `> 0` check and was then blamed on the learning rate as divergence; a typo'd layer
    size asked torch for hundreds of GB."""
    X, y = _blobs(d=30)
    with pytest.raises(ValueError, match=match):
        MLPClassifier(epochs=1, **params).fit(X, y)


def test_an_unknown_validation_label_names_the_classes_plainly() -> None:
    X, y = _blobs(d=5)
    names = np.where(y == y[0], "a", "b")
    with pytest.raises(ValueError, match=r"^label 'c' is not one of the classes \['a', 'b'\]$"):  # not np.str_('a')
        MLPClassifier(epochs=1).fit(X, names, X_val=X, y_val=np.array(["c"] * len(y)))
