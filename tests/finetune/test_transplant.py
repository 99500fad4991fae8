"""Nodule transplantation: the lifted signal is the nodule without its background; pastes land where they
should and are marked in the lesion map; the detector uses them when asked to."""

from __future__ import annotations

from dataclasses import replace

import torch

from xvision.finetune import detector
from xvision.finetune.config import DetectorConfig
from xvision.finetune.targets import lesion_map
from xvision.finetune.transplant import nodule_signal, paste


def _blob(size: int, x: float, y: float, radius: float, height: float) -> torch.Tensor:
    rows = torch.arange(size, dtype=torch.float32)[:, None]
    cols = torch.arange(size, dtype=torch.float32)[None, :]
    distance = torch.hypot(cols - x, rows - y)
    return height * (1 - (distance / radius).clamp(max=1) ** 2).sqrt()  # a sphere's projected thickness


def test_the_signal_is_the_nodule_without_the_sloping_background() -> None:
    size, x, y, radius = 200, 90.0, 110.0, 15.0
    rows = torch.arange(size, dtype=torch.float32)[:, None].expand(size, size)
    cols = torch.arange(size, dtype=torch.float32)[None, :].expand(size, size)
    background = 0.3 + 0.002 * rows + 0.001 * cols  # an exposure gradient
    nodule = _blob(size, x, y, radius, 0.05)
    signal = nodule_signal(background + nodule, (x, y), radius)
    centre = signal.shape[0] // 2
    assert abs(float(signal[centre, centre]) - 0.05) < 0.005  # the nodule's full height, background gone
    half = signal.shape[0] // 2
    truth = nodule[int(y) - half : int(y) + half + 1, int(x) - half : int(x) + half + 1]
    assert float((signal - truth).abs().max()) < 0.01
    assert float(signal[0, 0]) == 0.0  # faded out beyond the nodule's edge: no background travels


def test_a_paste_lands_in_the_lung_field_and_is_marked_there() -> None:
    size, cells = 352, 88
    image = torch.full((size, size), 0.4)
    maps = torch.cat([lesion_map(False, None, (size, size), cells), torch.zeros(1, cells, cells)])
    maps[2, 60:70, 20:30] = 1.0  # the only lung in this crop: rows 240-280, columns 80-120 in pixels
    signal = _blob(41, 20.0, 20.0, 12.0, 0.06)
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        out, marked = paste(image, maps, signal, 12.0, 64, generator)
        changed = (out - image).abs() > 1e-6
        ys, xs = changed.nonzero().float().mean(0).tolist()
        assert 236 <= ys <= 284 and 76 <= xs <= 124  # in the lung
        inside = marked[0].nonzero().float().mean(0) * 4 + 2
        assert abs(float(inside[0]) - ys) <= 6 and abs(float(inside[1]) - xs) <= 6  # marked where pasted
        assert float(marked[1][marked[0] > 0].min()) == 1.0  # the pasted nodule is supervised
        assert float(marked[1].min()) == 0.0  # with an undecided ring around it
    assert torch.equal(image, torch.full((size, size), 0.4))  # the film itself is untouched


def test_without_a_lung_field_a_paste_lands_anywhere_inside_the_keep_off_border() -> None:
    size, cells = 352, 88
    maps = torch.cat([lesion_map(False, None, (size, size), cells), torch.zeros(1, cells, cells)])
    generator = torch.Generator().manual_seed(1)
    places = set()
    for _ in range(30):
        out, marked = paste(torch.zeros(size, size), maps, _blob(21, 10.0, 10.0, 6.0, 0.1), 6.0, 64, generator)
        y, x = (marked[0].nonzero().float().mean(0) * 4 + 2).tolist()
        assert 56 <= y <= size - 56 and 56 <= x <= size - 56
        places.add((int(y) // 32, int(x) // 32))
    assert len(places) >= 10


def test_the_detector_transplants_nodules_when_asked(lesion_manifest, monkeypatch, tmp_path) -> None:
    calls = []
    real = detector.paste

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(detector, "paste", counting)
    tiny = DetectorConfig(rounds=1, steps_per_round=2, batch_size=4, crop=32)
    detector.train_detector(lesion_manifest, tmp_path / "none", tiny, weights="random", progress=False)
    assert not calls  # off unless asked for
    pasting = replace(tiny, paste=1.0)
    detector.train_detector(lesion_manifest, tmp_path / "all", pasting, weights="random", progress=False)
    assert len(calls) == tiny.steps_per_round * tiny.batch_size // 2  # every lesion crop is a transplant
