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


def test_importing_xvision_does_not_import_torch() -> None:
    """`xvision --help` must answer at once: the API is imported on first use."""
    code = "import sys, xvision; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
