"""`xvision --help` answers at once (no torch), and lists every command with its real summary."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

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


def test_python_warnings_print_as_one_log_line_without_source_paths() -> None:
    code = (
        "import warnings\n"
        "from xvision.cli.main import main\n"
        "assert main({argv}) == 0\n"
        "warnings.warn('film.dcm: MONOCHROME1 inverted', UserWarning)\n"
        "def again(): warnings.warn('film.dcm: MONOCHROME1 inverted', UserWarning)\n"  # the same, said elsewhere
        "again()\n"
        "warnings.warn('other.dcm: MONOCHROME1 inverted', UserWarning)\n"
    )
    for argv, where in ((["backbones"], False), (["-v", "backbones"], True)):
        run = subprocess.run([sys.executable, "-c", code.format(argv=argv)], capture_output=True, text=True, check=True)
        lines = [line for line in run.stderr.splitlines() if "MONOCHROME1" in line]
        assert len(lines) == 2 and lines[0].startswith("WARNING: film.dcm: MONOCHROME1 inverted"), run.stderr
        assert lines[1].startswith("WARNING: other.dcm: MONOCHROME1 inverted")
        assert ("UserWarning at <string>:4" in lines[0]) == where and "warnings.warn(" not in run.stderr


def test_huggingface_hub_records_print_once() -> None:
    """An offline timm download logs its retries through huggingface_hub's own handler; with the CLI's root
    handler as well, every line came twice."""
    code = (
        "from xvision.cli.main import main\n"
        "from huggingface_hub.utils import logging as hub_logging\n"
        "assert main(['backbones']) == 0\n"
        "hub_logging.get_logger('huggingface_hub.file_download').warning('Retrying in 8s [Retry 5/5].')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stderr.count("Retrying in 8s") == 1, run.stderr


def test_backbones_lists_the_lung_variants_it_accepts(capsys) -> None:
    from xvision.backbones.registry import get_spec, lung_bases

    assert main(["backbones"]) == 0
    listed = capsys.readouterr().out
    lung_line = next(line for line in listed.splitlines() if line.startswith("<name>_lung"))
    assert "efficientnet_lite0_512" in lung_line and "lesion" not in lung_line
    for base in lung_bases():  # every base named there is accepted with the suffix, and only those
        assert get_spec(base + "_lung").name == base + "_lung"
    assert "vgg16" not in lung_bases() and "efficientnet_lite0_1024_lesion" not in lung_bases()


def test_sigterm_interrupts_like_ctrl_c_and_exits_143(tmp_path) -> None:
    import signal

    # A slow command: the demo builds phantoms, extracts and trains. Once it has said anything, the handler
    # is installed; SIGTERM then stops it as Ctrl-C would, with the shell's status for SIGTERM.
    code = "import sys\nfrom xvision.cli.main import main\nsys.exit(main(['demo', '-o', sys.argv[1]]))\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "demo")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    proc.stderr.readline()  # the first progress or log line
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Interrupted." in err and "Traceback" not in err, err[-2000:]


@pytest.mark.parametrize("command", ["split", "audit", "train", "cv", "evaluate", "compare", "demo", "fit"])
def test_every_seed_option_takes_the_range_numpy_takes(command: str, capsys) -> None:
    """`--seed -1` was a ValueError traceback in most commands (after minutes of extraction in `fit`)."""
    for seed in ("-1", str(2**31)):  # the top half of numpy's range is left for the numbers added to a seed
        assert main([command, "--seed", seed, "x"]) == 2
        err = capsys.readouterr().err
        assert f"Invalid value for '--seed': {seed} is not in the range 0<=x<=2147483647" in err, err


@pytest.mark.parametrize("option", ["--lr", "--momentum", "--weight-decay"])
@pytest.mark.parametrize("command", ["train", "cv"])
def test_head_rates_refuse_nan_and_inf(command: str, option: str, capsys) -> None:
    for value in ("nan", "inf"):
        assert main([command, "x", option, value]) == 2
        assert f"Invalid value for '{option}'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["evaluate", "cv", "compare"])
def test_a_handful_of_bootstrap_resamples_is_refused(command: str, capsys) -> None:
    """--bootstrap 1 printed "95%" intervals such as [0.625, 0.625] that excluded the estimate."""
    assert main([command, "x", "y", "--bootstrap", "1"]) == 2
    err = capsys.readouterr().err
    assert "1 resamples give intervals that are noise; use" in err and "at least 100" in err


def test_slips_in_demo_size_and_fetch_collection_are_refused_before_any_work(tmp_path, capsys) -> None:
    """`demo --n-per-class 100000` set out to write 200,000 phantoms; `--collection cxrr` asked Open-i for a
    collection that does not exist."""
    assert main(["demo", "-o", str(tmp_path / "d"), "--n-per-class", "100000"]) == 2
    assert "100000 is not in the range 10<=x<=5000" in capsys.readouterr().err
    assert main(["fetch", "openi", "-o", str(tmp_path / "o"), "--collection", "cxrr"]) == 2
    assert "'cxrr' is not one of 'cxr', 'pmc', 'usc', 'hmd', 'mpx'" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not (tmp_path / "o").exists()


def test_options_that_contradict_each_other_are_refused(tmp_path, capsys) -> None:
    """Each was accepted without a word: --weights was ignored, and no upload could pass the request limit."""
    assert main(["evaluate", str(tmp_path), "--features", str(tmp_path), "--weights", "w.safetensors"]) == 2
    assert "--weights applies with --manifest" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--max-upload-mb", "100", "--max-request-mb", "10"]) == 2
    assert "--max-upload-mb 100 is more than --max-request-mb 10" in capsys.readouterr().err


def test_a_file_read_twice_is_warned_about_and_counted_once() -> None:
    """`predict --heatmaps` reads each film again: "4 more files" were counted where 1 was left."""
    code = (
        "import logging, warnings\n"
        "logging.basicConfig(format='%(levelname)s: %(message)s')\n"
        "from xvision.cli import main as cli\n"
        "from xvision.errors import ImageWarning\n"
        "cli._warnings_as_log_lines(False)\n"
        "warnings.simplefilter('always')  # as if Python's own once-registry had been reset meanwhile\n"
        "for name in 'abcd':\n"
        "    for _ in range(2):\n"
        "        warnings.warn(ImageWarning(f'{name}.dcm', 'DICOM is MONOCHROME1'))\n"
        "cli._say_counted_warnings()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = [line for line in run.stderr.splitlines() if "MONOCHROME1" in line]
    assert lines == [
        "WARNING: a.dcm: DICOM is MONOCHROME1",
        "WARNING: b.dcm: DICOM is MONOCHROME1",
        "WARNING: c.dcm: DICOM is MONOCHROME1",
        "WARNING: 1 more files: DICOM is MONOCHROME1 (-v lists them)",
    ], run.stderr


@pytest.mark.parametrize("command", ["extract", "fit", "cv", "evaluate", "predict", "serve"])
def test_an_empty_weights_value_is_refused_not_taken_for_the_default(command: str, tmp_path, capsys) -> None:
    """`--weights "$WEIGHTS"` with the variable unset meant the default pretrained weights without a word."""
    output = [] if command in ("predict", "serve") else ["-o", str(tmp_path / "o")]
    assert main([command, str(tmp_path / "x"), "--weights", "", *output]) == 2
    err = capsys.readouterr().err
    assert "Invalid value for '--weights': an empty value; leave --weights out" in err, err
    assert not (tmp_path / "o").exists()


def test_timms_info_lines_are_quiet_unless_verbose(caplog) -> None:
    """timm logged "Loading pretrained weights from file (...)" at INFO beside Xvision's own line on the weights."""
    import logging

    timm_log = logging.getLogger("timm.models._builder")
    try:
        with caplog.at_level(logging.INFO):
            assert main(["backbones"]) == 0
            timm_log.info("Loading pretrained weights from file (x)")
            assert "Loading pretrained weights" not in caplog.text
            assert main(["-v", "backbones"]) == 0
            timm_log.info("Loading pretrained weights from file (y)")
            assert "Loading pretrained weights from file (y)" in caplog.text
    finally:
        logging.getLogger("timm").setLevel(logging.NOTSET)


def test_an_error_no_check_foresaw_is_one_line_and_verbose_shows_where(monkeypatch, capsys, caplog) -> None:
    """Damaged inputs that slipped past every check ended in a Python traceback."""
    import logging

    from xvision.cli import backbones_cmd

    def broken() -> list:
        raise ValueError("could not convert string to float: 'x'\n  on line 3" + "!" * 500)

    monkeypatch.setattr(backbones_cmd, "list_backbones", broken)
    monkeypatch.delenv("XVISION_TRACEBACK")
    assert main(["backbones"]) == 70  # not 1: `fetch` means "run again to retry" by it
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: ValueError: could not convert string to float: 'x' on line 3!!!") and "\n" not in err
    assert "Traceback" not in err and "`xvision -v ...` shows where" in err and len(err) < 500
    with caplog.at_level(logging.DEBUG):
        assert main(["-v", "backbones"]) == 70
    assert any(record.exc_info for record in caplog.records)  # -v: the traceback, for a report
