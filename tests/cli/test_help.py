"""`xvision --help` answers at once (no torch), and lists every command with its real summary."""

from __future__ import annotations

import importlib
import subprocess
import sys

from xvision.cli.commands import COMMANDS, short_help
from xvision.cli.main import main


def test_help_does_not_import_torch_or_sklearn() -> None:
    code = (
        "import sys\n"
        "from xvision.cli.main import main\n"
        "assert main(['--help']) == 0\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Commands:" in out and out.strip().endswith("[]")


def test_every_listed_command_exists_with_the_listed_summary() -> None:
    for entry in COMMANDS:
        command = getattr(importlib.import_module(entry.module), entry.name)
        assert command.name == entry.name
        assert short_help(entry, 500) == command.get_short_help_str(limit=500), entry.name


def test_help_lists_the_commands_and_unknown_ones_fail_cleanly(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {entry.name} " in out for entry in COMMANDS)
    assert main(["nonsense"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_the_public_api_still_imports_from_the_package() -> None:
    import xvision

    assert callable(xvision.load_image) and callable(xvision.train_run)
    assert "Predictor" in dir(xvision)
