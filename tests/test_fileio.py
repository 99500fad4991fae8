"""File writing: atomic writes name the file the caller asked for, never the hidden temporary one; the same
weights save to the same bytes."""

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


def test_a_full_disk_during_write_names_the_target(tmp_path: Path) -> None:
    """A real write() that fails on a full disk carries no file name: every command said only "Error: No space
    left on device"."""
    target = tmp_path / "metrics.json"

    def disk_full(tmp: Path) -> None:
        with open(tmp, "w") as handle:
            handle.write("half")
            raise OSError(errno.ENOSPC, "No space left on device")  # as handle.write/flush raises it

    with pytest.raises(OSError, match="No space left on device") as caught:
        atomic_write(target, disk_full)
    assert caught.value.filename == str(target) and list(tmp_path.iterdir()) == []


def test_a_valid_name_of_250_characters_can_be_written(tmp_path: Path) -> None:
    """The hidden temporary name added about 15 characters and went past the file system's 255."""
    for name in ("b" * 246 + ".csv", "結節" * 40 + ".png"):  # 250 bytes; 244 bytes of three-byte characters
        target = tmp_path / name
        assert atomic_write_text(target, "x").read_text() == "x"


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


def test_the_same_weights_and_metadata_save_to_the_same_bytes(tmp_path: Path) -> None:
    """safetensors writes its metadata map in a random order: identical trainings had different model SHA-256s."""
    import torch
    from safetensors import safe_open
    from torch import nn

    from xvision._fileio import sha256_file
    from xvision.heads.mlp import save_net

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    metadata = {"classes": '["nodule", "normal"]', "format": "xvision-mlp", "hidden": "[3]", "n_features": "4"}
    digests = {sha256_file(save_net(tmp_path / f"m{i}.safetensors", net, metadata)) for i in range(12)}
    assert len(digests) == 1
    with safe_open(str(tmp_path / "m0.safetensors"), framework="pt") as handle:
        assert handle.metadata() == metadata
        for name, value in net.state_dict().items():
            assert torch.equal(handle.get_tensor(name), value)


def test_a_file_where_a_folder_should_be_is_named(tmp_path: Path) -> None:
    """`audit -o some.csv/audit.json` said only "File exists"."""
    (tmp_path / "some.csv").write_text("path,label\n")
    with pytest.raises(NotADirectoryError) as caught:
        atomic_write_text(tmp_path / "some.csv" / "sub" / "audit.json", "{}")
    assert caught.value.strerror == f"{tmp_path / 'some.csv'} is a file, not a folder; cannot write"
    assert caught.value.filename == str(tmp_path / "some.csv" / "sub" / "audit.json")
