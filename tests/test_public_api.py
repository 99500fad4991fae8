"""The names `xvision` exports resolve, lazily, to the objects the CLI uses."""

from __future__ import annotations

import subprocess
import sys


def test_every_exported_name_resolves_to_its_module_object() -> None:
    import xvision
    from xvision.evaluation.on_images import evaluate_manifest
    from xvision.recipes import fit

    for name in xvision.__all__:
        assert getattr(xvision, name) is not None, name
    assert xvision.fit is fit and xvision.evaluate_manifest is evaluate_manifest
    from xvision.evaluation.crossval_recipe import cross_validate_recipe

    assert xvision.cross_validate_recipe is cross_validate_recipe
    assert set(xvision._EXPORTS) <= set(xvision.__all__)  # every lazily exported name is declared
    assert {"fit", "evaluate_manifest", "Predictor"} <= set(dir(xvision))
    assert len(dir(xvision)) == len(set(dir(xvision)))  # a name already used is listed once, not twice


def test_importing_xvision_does_not_import_torch() -> None:
    """`xvision --help` must answer at once: the API is imported on first use."""
    code = "import sys, xvision; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_a_wrong_argument_type_names_the_parameter_before_any_work(tmp_path) -> None:
    """A dict where a config object goes used to fail deep inside with "'dict' object has no attribute ..."."""
    import pytest

    import xvision

    missing = tmp_path / "nothing-here"  # never read: the type is checked first
    calls = {
        "head": lambda: xvision.train_run(missing, tmp_path / "run", head={"epochs": 2}),
        "config": lambda: xvision.cross_validate(missing, tmp_path / "cv", config={"folds": 3}),
        "bootstrap": lambda: xvision.evaluate_run(missing, missing, bootstrap=100),
        "backbone": lambda: xvision.extract_manifest(missing, tmp_path / "f", backbone=16),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=rf"^{name} takes an? \w+.*, got (dict|int) "):
            call()
    with pytest.raises(TypeError, match=r"^config takes a CVConfig .*got dict"):
        xvision.cross_validate_recipe(missing, tmp_path / "cv", config={"folds": 3})
    with pytest.raises(
        TypeError, match=r"^bootstrap takes a BootstrapConfig \(from xvision.evaluation.bootstrap\), got"
    ):
        xvision.compare_cv(missing, missing, bootstrap=None)
    with pytest.raises(TypeError, match=r"^bootstrap takes .* or None, got int"):
        xvision.evaluate_manifest(missing, missing, bootstrap=0)


def test_a_path_argument_given_something_else_says_what_it_takes() -> None:
    """pathlib's own message named no parameter: "expected str, bytes or os.PathLike object, not NoneType"."""
    import numpy as np
    import pytest

    import xvision

    with pytest.raises(TypeError, match=r"^path takes a file path \(str or Path\), got NoneType$"):
        xvision.load_image(None)
    with pytest.raises(TypeError, match=r"got ndarray; for pixels already in memory use Predictor.predict_arrays"):
        xvision.load_radiograph(np.zeros((64, 64)))
    with pytest.raises(TypeError, match=r"^run_dir takes a run folder's path \(str or Path\), got int"):
        xvision.Predictor(3)
