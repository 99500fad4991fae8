"""Atomic writes: a failure names the file the caller asked for, never the hidden temporary one."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest

from xvision._fileio import atomic_write, atomic_write_text


def test_a_failed_write_names_the_target_not_the_part_file(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"

    def disk_full(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(OSError, match="No space left on device") as caught:
        atomic_write(target, disk_full)
    assert caught.value.filename == str(target) and ".part" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_an_error_about_another_file_is_left_as_it_is(tmp_path: Path) -> None:
    def reads_a_missing_input(tmp: Path) -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "input.png")

    with pytest.raises(FileNotFoundError) as caught:
        atomic_write(tmp_path / "out.png", reads_a_missing_input)
    assert caught.value.filename == "input.png"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc refuses new files on Linux only")
def test_a_folder_that_refuses_files_is_named_as_the_target() -> None:
    with pytest.raises(OSError) as caught:
        atomic_write_text("/proc/xvision-grid.png", "x")
    assert caught.value.filename == "/proc/xvision-grid.png" and ".part" not in str(caught.value)
