"""Synthetic chest-radiograph phantoms with and without lung nodules, for the demo and the tests.

A phantom is drawn in two layers. The *anatomy* (body, lungs, heart, mediastinum, diaphragm, ribs, clavicles,
spine, lung markings) belongs to a patient; the *view* (slight shift/rotation/scale, exposure, gamma,
low-frequency inhomogeneity, quantum-like noise) belongs to one acquisition. Nodules belong to the patient and
are always drawn *after* every nuisance parameter, so the two classes share exactly the same distribution of
everything except the nodule: a classifier has no shortcut.

Anatomy lives in normalised coordinates (x, y in [-1, 1], y pointing down, image width = 2); every pixel is
mapped through the view's inverse transform and the anatomy is evaluated there, in closed form and vectorised.
Densities add up (air negative, bone positive) and a saturating tone curve turns them into display polarity:
air dark, soft tissue and bone bright, values in [0, 1].

Each rendering comes with a JSON-able description; :func:`lung_mask` rebuilds the lung fields from it.

Difficulty: nodules are 4-10 % of the image width with a log-uniform contrast. At 60 images per class a frozen
EfficientNet-Lite0 with a logistic-regression head reaches a cross-validated ROC AUC of about 0.8 (0.76-0.84
over seeds), so the demo is learnable but not trivial. Rib contrast is the main difficulty knob.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from xvision._fileio import atomic_write_json, atomic_write_text
from xvision.errors import XvisionError

__all__ = ["lung_mask", "make_phantom_dataset", "render_phantom"]

GENERATOR = "xvision.data.phantoms"
FORMAT_VERSION = 1
LABELS = ("normal", "nodule")

_TONE_K = 1.7  # steepness of the density -> display curve
_TONE_NORM = 1.0 - math.exp(-_TONE_K * 1.45)
_NODULE_CONTRAST = (0.6, 1.1)  # peak added density, fraction of the lung air density (log-uniform)
_NODULE_DIAMETER = (0.04, 0.10)  # fraction of the image width


@dataclass(frozen=True)
class _Lung:
    cx: float
    cy: float
    half_width: float
    half_height: float
    tilt: float  # radians
    taper: float  # how much narrower the apex is than the base


@dataclass(frozen=True)
class _Anatomy:
    body_cx: float
    body_half_width: float
    tissue: float
    right_lung: _Lung  # patient's right = image left
    left_lung: _Lung
    air: float
    mediastinum_half_width: float
    heart_cx: float
    heart_cy: float
    heart_a: float
    heart_b: float
    heart_tilt: float
    dome_right: float
    dome_left: float
    dome_curvature: float
    spine_half_width: float
    bone: float
    rib_top: float
    rib_bottom: float
    rib_count: int
    rib_spread: float  # lower ribs are spaced (1 + rib_spread) ** 2 times wider than upper ones
    rib_rise: float
    rib_bend: float
    rib_width: float
    rib_offset_left: float
    clavicle_y: float | None
    gastric_bubble: bool
    markings: float
    texture_seed: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Anatomy:
        values = dict(data)
        values["right_lung"] = _Lung(**data["right_lung"])
        values["left_lung"] = _Lung(**data["left_lung"])
        return cls(**{f.name: values[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class _View:
    shift_x: float
    shift_y: float
    rotation: float  # radians
    scale: float
    gamma: float
    contrast: float
    brightness: float
    field: tuple[float, float, float, float]  # x, y, radial, x*y coefficients of the exposure field
    noise: float


@dataclass(frozen=True)
class _Nodule:
    x: float  # anatomy coordinates
    y: float
    radius: float
    aspect: float
    angle: float
    contrast: float  # peak added density as a fraction of the lung's air density


def _sample_lung(rng: np.random.Generator, side: float, air_scale: float) -> _Lung:
    return _Lung(
        cx=float(side * rng.uniform(0.38, 0.44)),
        cy=float(rng.uniform(-0.1, 0.02)),
        half_width=float(rng.uniform(0.36, 0.42) * air_scale),
        half_height=float(rng.uniform(0.7, 0.8)),
        tilt=float(side * rng.uniform(-0.02, 0.08) + rng.normal(0.0, 0.03)),
        taper=float(rng.uniform(0.12, 0.3)),
    )


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    build = rng.uniform(0.92, 1.06)
    right = _sample_lung(rng, -1.0, build)
    left = _sample_lung(rng, 1.0, build * rng.uniform(0.88, 0.98))
    dome_right = rng.uniform(0.28, 0.42)
    clavicle = rng.random() < 0.8
    clavicle_y = float(rng.uniform(-0.80, -0.66))
    return _Anatomy(
        body_cx=float(rng.normal(0.0, 0.02)),
        body_half_width=float(rng.uniform(0.84, 0.95) * build),
        tissue=float(rng.uniform(0.95, 1.1)),
        right_lung=right,
        left_lung=left,
        air=float(rng.uniform(0.55, 0.72)),
        mediastinum_half_width=float(rng.uniform(0.1, 0.14)),
        heart_cx=float(rng.uniform(0.12, 0.18)),
        heart_cy=float(rng.uniform(0.26, 0.34)),
        heart_a=float(rng.uniform(0.31, 0.38)),
        heart_b=float(rng.uniform(0.22, 0.27)),
        heart_tilt=float(rng.uniform(0.3, 0.55)),  # long axis from the base down to the apex
        dome_right=float(dome_right),
        dome_left=float(dome_right + rng.uniform(0.02, 0.09)),
        dome_curvature=float(rng.uniform(0.9, 1.4)),
        spine_half_width=float(rng.uniform(0.075, 0.095)),
        bone=float(rng.uniform(0.045, 0.065)),
        rib_top=float(rng.uniform(-0.92, -0.84)),
        rib_bottom=float(rng.uniform(0.55, 0.7)),
        rib_count=int(rng.integers(9, 12)),
        rib_spread=float(rng.uniform(0.2, 0.4)),
        rib_rise=float(rng.uniform(0.25, 0.4)),
        rib_bend=float(rng.uniform(0.65, 0.9)),
        rib_width=float(rng.uniform(0.38, 0.5)),
        rib_offset_left=float(rng.normal(0.0, 0.03)),
        clavicle_y=clavicle_y if clavicle else None,
        gastric_bubble=bool(rng.random() < 0.5),
        markings=float(rng.uniform(0.14, 0.22)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _sample_view(rng: np.random.Generator) -> _View:
    return _View(
        shift_x=float(rng.normal(0.0, 0.015)),
        shift_y=float(rng.normal(0.0, 0.015)),
        rotation=float(rng.normal(0.0, 0.02)),
        scale=float(rng.uniform(0.97, 1.03)),
        gamma=float(rng.uniform(0.8, 1.3)),
        contrast=float(rng.uniform(0.85, 1.15)),
        brightness=float(rng.normal(0.0, 0.03)),
        field=tuple(float(v) for v in rng.normal(0.0, [0.05, 0.05, 0.05, 0.03])),
        noise=float(rng.uniform(0.006, 0.02)),
    )


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    return coords[None, :], coords[:, None]


def _anatomy_coords(view: _View, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return, for every pixel, its position in the anatomy frame (the inverse of :func:`_to_pixels`)."""
    xi, yi = _grid(size)
    xi, yi = xi - view.shift_x, yi - view.shift_y
    c, s = math.cos(view.rotation) / view.scale, math.sin(view.rotation) / view.scale
    return c * xi + s * yi, c * yi - s * xi


def _to_pixels(view: _View, x: float, y: float, size: int) -> tuple[float, float]:
    c, s = math.cos(view.rotation), math.sin(view.rotation)
    xi = view.scale * (c * x - s * y) + view.shift_x
    yi = view.scale * (s * x + c * y) + view.shift_y
    return (xi + 1.0) * size / 2.0 - 0.5, (yi + 1.0) * size / 2.0 - 0.5


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    out = t * -2.0  # in place from here: fewer temporaries is measurably faster on large images
    out += 3.0
    out *= t
    out *= t
    return out


def _blob(q: np.ndarray) -> np.ndarray:
    """A cheap bell curve of a squared distance ``q`` (close to exp(-q), exactly 0 beyond q = 3)."""
    t = np.clip(1.0 - q / 3.0, 0.0, 1.0)
    return t * t * t


def _ellipse(x, y, cx, cy, a, b, tilt, taper=0.0):
    """Return the normalised squared radius of a (tilted, tapered) ellipse: < 1 inside."""
    c, s = math.cos(tilt), math.sin(tilt)
    u = (x - cx) * c + (y - cy) * s
    v = (y - cy) * c - (x - cx) * s
    if taper:
        u = u / (1.0 + taper * np.clip(v / b, -1.0, 1.0))
    return (u / a) ** 2 + (v / b) ** 2


def _heart(an: _Anatomy, x, y):
    f = _ellipse(x, y, an.heart_cx, an.heart_cy, an.heart_a, an.heart_b, an.heart_tilt)
    return _smoothstep((1.0 - f) / 0.15)


def _below_diaphragm(an: _Anatomy, x, y):
    """Return 1 under the diaphragm domes (abdomen), 0 above; the right dome is usually higher."""
    top = np.where(x < an.body_cx, np.float32(an.dome_right), np.float32(an.dome_left))
    dome = top + an.dome_curvature * (np.abs(x - an.body_cx) - 0.4) ** 2
    return _smoothstep((y - dome) / 0.03 + 0.5)


def _mediastinum(an: _Anatomy, x, y):
    """Return 1 over the mediastinum (with the aortic knob) and the heart, 0 elsewhere."""
    width = an.mediastinum_half_width * (1.0 + 0.3 * _smoothstep((y + 0.2) / 0.5))
    central = _smoothstep((width - np.abs(x - an.body_cx)) / 0.04 + 0.5)
    knob_x = an.body_cx + an.mediastinum_half_width - 0.01
    knob = _smoothstep((1.0 - _ellipse(x, y, knob_x, -0.3, 0.065, 0.1, 0.0)) / 0.6)
    return np.maximum(np.maximum(central, knob), _heart(an, x, y))


def _lung_fields(an: _Anatomy, x, y, abdomen=None) -> tuple[np.ndarray, np.ndarray]:
    """Return (mask, air depth) of both lungs; works on any broadcastable x, y."""
    depth = 0.0
    for lung in (an.right_lung, an.left_lung):
        f = _ellipse(x, y, lung.cx, lung.cy, lung.half_width, lung.half_height, lung.tilt, lung.taper)
        depth = depth + np.sqrt(np.sqrt(np.clip(1.0 - f, 0.0, 1.0)))
    if abdomen is None:
        abdomen = _below_diaphragm(an, x, y)
    depth = depth * (1.0 - abdomen) * (1.0 - _mediastinum(an, x, y))
    return np.clip(depth * 4.0, 0.0, 1.0), depth


def _bump(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt(4.0 * t * (1.0 - t))


def _ribs(an: _Anatomy, x, y, abdomen) -> np.ndarray:
    d = np.abs(x - an.body_cx) / an.body_half_width
    y_side = y - np.where(x > an.body_cx, np.float32(an.rib_offset_left), np.float32(0.0))
    span = an.rib_bottom - an.rib_top
    # posterior ribs leave the spine rising slightly, then bend down along the lateral chest wall
    posterior = (y_side + an.rib_rise * d - an.rib_bend * d * d - an.rib_top) / span
    t = np.clip(posterior, 0.0, 1.0)
    phase = an.rib_count * t * (1.0 + an.rib_spread) / (1.0 + an.rib_spread * t)
    width = an.rib_width * (0.8 + 0.4 * d)
    band = _bump((phase % 1.0) / width) * ((posterior > 0.0) & (posterior < 1.0))
    # fainter anterior ribs slope down towards the sternum and fade out medially (cartilage)
    anterior = (y_side + 0.55 * d - an.rib_top - 0.25) / span
    t = np.clip(anterior, 0.0, 1.0)
    a_phase = 6.0 * t * 1.2 / (1.0 + 0.2 * t)
    a_band = _bump((a_phase % 1.0) / 0.4) * ((anterior > 0.0) & (anterior < 1.0)) * _smoothstep((d - 0.25) / 0.2)
    medial = _smoothstep((np.abs(x - an.body_cx) - an.spine_half_width) / 0.05)
    lateral = _smoothstep((1.02 - d) / 0.12)
    return (band + 0.35 * a_band) * medial * lateral * (1.0 - 0.6 * abdomen)


def _clavicles(an: _Anatomy, x, y) -> np.ndarray | float:
    if an.clavicle_y is None:
        return 0.0
    d = np.abs(x - an.body_cx)
    u = np.clip(d / 0.7, 0.0, 1.0)
    centre = an.clavicle_y - 0.22 * d + 0.24 * u * (1.0 - u)
    q = ((y - centre) / 0.04) ** 2
    band = np.clip(1.0 - q * q, 0.0, 1.0)
    return band * _smoothstep((d - 0.06) / 0.05) * _smoothstep((0.75 - d) / 0.08)


def _spine(an: _Anatomy, x, y) -> np.ndarray:
    across = np.abs(x - an.body_cx) / an.spine_half_width
    column = _smoothstep((1.0 - across) / 0.3)
    discs = 0.75 + 0.25 * _smoothstep(np.abs(((y + 1.0) / 0.11) % 1.0 - 0.5) * 4.0)
    return column * discs


def _markings(an: _Anatomy, x, y) -> np.ndarray:
    """Vessel-like lines radiating from the hila, fixed per patient.

    Noise that is smooth along the radius and busy across the angle, looked up in polar-like coordinates
    around each hilum; its zero crossings are wiggly, branching radial lines.
    """
    n_angle, n_radius = 256, 32
    rng = np.random.default_rng(an.texture_seed)
    spectrum = np.fft.rfft2(rng.standard_normal((n_angle, n_radius)))
    k_angle = np.abs(np.fft.fftfreq(n_angle, 1.0 / n_angle))[:, None]
    k_radius = np.fft.rfftfreq(n_radius, 1.0 / n_radius)[None, :]
    band = np.exp(-(((k_angle - 14.0) / 7.0) ** 2) - (k_radius / 3.5) ** 2)
    noise = np.fft.irfft2(spectrum * band, s=(n_angle, n_radius)).astype(np.float32)
    noise /= noise.std() + 1e-6

    left = x > an.body_cx
    dx = np.abs(x - an.body_cx) - 0.03  # lines converge inside the mediastinum, out of sight
    dy = y + 0.05
    radius = np.sqrt(dx * dx + dy * dy)
    # a pseudo-angle in [-1, 1] facing laterally (cheaper than arctan2); each lung gets half the rows
    rows = (dy / (np.abs(dx) + np.abs(dy) + 1e-6) + 1.0) * (n_angle / 4.0) + left.astype(np.float32) * (n_angle / 2.0)
    cols = np.clip(radius * (n_radius / 1.2), 0.0, n_radius - 1.001)
    r0 = np.floor(rows)
    c0 = np.floor(cols)
    fr, fc = rows - r0, cols - c0
    r0 = r0.astype(np.intp) % n_angle
    r1 = (r0 + 1) % n_angle
    c0 = c0.astype(np.intp)
    flat = noise.ravel()
    top = flat[r0 * n_radius + c0] * (1.0 - fc) + flat[r0 * n_radius + c0 + 1] * fc
    bottom = flat[r1 * n_radius + c0] * (1.0 - fc) + flat[r1 * n_radius + c0 + 1] * fc
    sampled = top + (bottom - top) * fr
    # lines converge on the hilum in the lookup, so keep their width on the image (not in the noise) in check
    width = 0.25 * (1.0 - 0.6 * np.clip(radius / 0.9, 0.0, 1.0)) / (radius + 0.03)
    lines = np.clip(1.0 - np.abs(sampled) / width, 0.0, 1.0)
    return lines * np.sqrt(lines)


def _nodule_density(nodules: list[_Nodule], x, y) -> np.ndarray | float:
    total = 0.0
    for nod in nodules:
        f = _ellipse(x, y, nod.x, nod.y, nod.radius * nod.aspect, nod.radius / nod.aspect, nod.angle)
        t = np.clip(1.0 - f, 0.0, 1.0)
        total = total + nod.contrast * np.sqrt(t * np.sqrt(t))  # ~ a sphere's projection, softened
    return total


def _density(an: _Anatomy, nodules: list[_Nodule], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    mid = np.abs(x - an.body_cx)
    across = mid / (an.body_half_width * (1.0 + 0.18 * _smoothstep((-0.45 - y) / 0.5)))
    body = np.sqrt(np.sqrt(np.clip(1.0 - across * across, 0.0, 1.0))) * an.tissue
    abdomen = _below_diaphragm(an, x, y)
    mask, depth = _lung_fields(an, x, y, abdomen)
    hila = _blob(((mid - 0.15) ** 2 + (y + 0.05) ** 2) / 0.08)
    markings = _markings(an, x, y) * (0.3 + 0.9 * hila)
    density = body - an.air * depth + an.markings * markings * mask
    density = density + 0.12 * _blob((mid - 0.17) ** 2 / 0.004 + (y + 0.05) ** 2 / 0.02)
    trachea = _smoothstep((0.035 - mid) / 0.02) * _smoothstep((-0.25 - y) / 0.1)
    density = density - 0.18 * trachea
    if an.gastric_bubble:
        bubble = _ellipse(x, y, an.body_cx + 0.33, an.dome_left + 0.12, 0.1, 0.06, 0.0)
        density = density - 0.25 * _smoothstep((1.0 - bubble) / 0.3)
    bone = _ribs(an, x, y, abdomen) + 1.2 * _clavicles(an, x, y) + 0.8 * _spine(an, x, y)
    density = density + an.bone * bone * (body > 0)
    density = density + _nodule_density(nodules, x, y) * an.air
    return density.astype(np.float32)


def _expose(density: np.ndarray, view: _View, noise: np.ndarray) -> np.ndarray:
    size = density.shape[0]
    image = np.clip((1.0 - np.exp(-_TONE_K * np.maximum(density, 0.0))) / _TONE_NORM, 0.0, 1.0) ** view.gamma
    image = 0.5 + view.contrast * (image - 0.5) + view.brightness
    x, y = _grid(size)
    fx, fy, fr, fxy = view.field
    image = image * (1.0 + fx * x + fy * y + fr * (x * x + y * y - 0.66) + fxy * x * y)
    # quantum-like: fewer photons where the film is bright, slight detector blur
    grain = ndimage.gaussian_filter(noise, 0.6) * 1.6
    image = image + view.noise * (0.4 + np.clip(image, 0.0, 1.0)) * grain
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _sample_nodules(rng: np.random.Generator, an: _Anatomy) -> list[_Nodule]:
    count = 2 if rng.random() < 0.15 else 1
    nodules: list[_Nodule] = []
    ring = np.linspace(0.0, 2.0 * np.pi, 8, endpoint=False)
    for _ in range(1000):
        radius = rng.uniform(*_NODULE_DIAMETER)  # normalised coordinates: image width = 2
        cx = rng.uniform(-0.95, 0.95, 64)
        cy = rng.uniform(-0.9, 0.7, 64)
        inner = _lung_fields(an, cx, cy)[0]
        edge = _lung_fields(an, cx[:, None] + 0.8 * radius * np.cos(ring), cy[:, None] + 0.8 * radius * np.sin(ring))[0]
        ok = (inner > 0.95) & (edge.min(axis=1) > 0.5)
        for other in nodules:
            ok &= np.hypot(cx - other.x, cy - other.y) > 2.5 * (radius + other.radius)
        if not ok.any():
            continue
        pick = int(np.argmax(ok))
        nodules.append(
            _Nodule(
                x=float(cx[pick]),
                y=float(cy[pick]),
                radius=float(radius),
                aspect=float(rng.uniform(0.88, 1.12)),
                angle=float(rng.uniform(0.0, np.pi)),
                contrast=float(np.exp(rng.uniform(*np.log(_NODULE_CONTRAST)))),
            )
        )
        if len(nodules) == count:
            return nodules
    raise RuntimeError("could not place a nodule inside the lung fields; the anatomy sampler is broken")


def _render(an: _Anatomy, nodules: list[_Nodule], view: _View, noise: np.ndarray) -> tuple[np.ndarray, dict]:
    size = noise.shape[0]
    image = _expose(_density(an, nodules, *_anatomy_coords(view, size)), view, noise)
    described = []
    for nod in nodules:
        px, py = _to_pixels(view, nod.x, nod.y, size)
        described.append(
            {
                "x": round(px, 2),
                "y": round(py, 2),
                "diameter": round(2.0 * nod.radius * view.scale * size / 2.0, 2),
                "contrast": round(nod.contrast, 4),
                "anatomy_frame": asdict(nod),
            }
        )
    info = {
        "size": size,
        "label": LABELS[int(bool(nodules))],
        "nodules": described,
        "anatomy": asdict(an),
        "view": asdict(view),
    }
    return image, info


def render_phantom(rng: np.random.Generator, *, size: int = 256, nodule: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one synthetic chest radiograph.

    Args:
        rng: source of randomness. All nuisance parameters (anatomy, view, noise) are drawn first and in the
            same order whatever ``nodule`` is, so the same seed with ``nodule=True`` and ``nodule=False`` gives
            images that differ only around the nodule(s).
        size: side of the square image in pixels.
        nodule: add one (sometimes two) nodules inside the lung fields.

    Returns:
        ``(image, info)``: a ``float32`` array of shape ``(size, size)`` in [0, 1], display polarity (air dark,
        bone bright); and a JSON-able dict with ``size``, ``label``, ``nodules`` (each with centre ``x``, ``y``
        and ``diameter`` in pixels and ``contrast``, the peak added density as a fraction of the lung's air
        density, from 0.6 (subtle) to 1.1 (obvious)), and the ``anatomy`` and ``view`` parameters used
        (:func:`lung_mask` rebuilds the lung fields from them).
    """
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    anatomy = _sample_anatomy(rng)
    view = _sample_view(rng)
    noise = rng.standard_normal((size, size), dtype=np.float32)
    nodules = _sample_nodules(rng, anatomy) if nodule else []
    return _render(anatomy, nodules, view, noise)


def lung_mask(info: dict[str, Any]) -> np.ndarray:
    """Rebuild the boolean lung-field mask of a phantom from its ``info`` dict (as rendered, view included)."""
    anatomy = _Anatomy.from_dict(info["anatomy"])
    view = _View(**{**info["view"], "field": tuple(info["view"]["field"])})
    return _lung_fields(anatomy, *_anatomy_coords(view, int(info["size"])))[0] > 0.5


def _to_png_bytes(image: np.ndarray, bit_depth: int) -> bytes:
    if bit_depth == 8:
        pil = Image.fromarray(np.round(image * 255.0).astype(np.uint8))
    else:
        pil = Image.fromarray(np.round(image * 65535.0).astype(np.uint16))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def _check_out_dir(out_dir: Path, params: dict[str, int]) -> None:
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    index = out_dir / "phantoms.json"
    try:
        previous = json.loads(index.read_text(encoding="utf-8"))
        is_phantom_set = previous.get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        is_phantom_set = False
    if not is_phantom_set:
        raise XvisionError(
            f"{out_dir} is not empty and does not hold a phantom set; "
            "choose a new or empty folder so nothing there is overwritten"
        )
    if previous.get("params") != params:
        raise XvisionError(
            f"{out_dir} holds a phantom set made with other parameters ({previous.get('params')}); "
            "choose a new or empty folder, or delete the old set first"
        )


def make_phantom_dataset(
    out_dir: str | Path,
    *,
    n_per_class: int = 60,
    size: int = 256,
    seed: int = 0,
    views_per_patient: int = 1,
    bit_depth: int = 8,
) -> Path:
    """Write a labelled set of phantom PNGs and return the path of its manifest.

    Layout: ``out_dir/normal/P0007_v1.png`` and ``out_dir/nodule/...`` (one patient id per patient, shuffled so
    ids say nothing about the label); ``manifest.csv`` with columns ``path,label,group`` (path relative to
    ``out_dir``, group = patient id); ``phantoms.json`` with the generator parameters and each image's ``info``
    (see :func:`render_phantom`). With ``views_per_patient > 1`` every view of a patient shares anatomy, nodules
    and label but has its own exposure, noise and slight shift. The same arguments give the same files.

    Raises:
        XvisionError: ``out_dir`` is not empty and is not a phantom set made with the same parameters.
    """
    if n_per_class < 1 or views_per_patient < 1:
        raise ValueError("n_per_class and views_per_patient must be at least 1")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    out_dir = Path(out_dir)
    params = {
        "n_per_class": n_per_class,
        "size": size,
        "seed": seed,
        "views_per_patient": views_per_patient,
        "bit_depth": bit_depth,
    }
    _check_out_dir(out_dir, params)

    root = np.random.SeedSequence(seed)
    label_seq, *patient_seqs = root.spawn(1 + 2 * n_per_class)
    labels = np.random.default_rng(label_seq).permutation(np.repeat([0, 1], n_per_class))
    rows: list[tuple[str, str, str]] = []
    images: list[dict[str, Any]] = []
    for index, (has_nodule, patient_seq) in enumerate(zip(labels, patient_seqs, strict=True)):
        patient = f"P{index:04d}"
        label = LABELS[int(has_nodule)]
        anatomy_seq, *view_seqs = patient_seq.spawn(1 + views_per_patient)
        anatomy_rng = np.random.default_rng(anatomy_seq)
        anatomy = _sample_anatomy(anatomy_rng)
        nodules = _sample_nodules(anatomy_rng, anatomy) if has_nodule else []
        for number, view_seq in enumerate(view_seqs, start=1):
            view_rng = np.random.default_rng(view_seq)
            view = _sample_view(view_rng)
            noise = view_rng.standard_normal((size, size), dtype=np.float32)
            image, info = _render(anatomy, nodules, view, noise)
            relative = f"{label}/{patient}_v{number}.png"
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_to_png_bytes(image, bit_depth))
            rows.append((relative, label, patient))
            images.append({"path": relative, "group": patient, "view": number, **info})

    atomic_write_json(
        out_dir / "phantoms.json",
        {"generator": GENERATOR, "format_version": FORMAT_VERSION, "params": params, "images": images},
    )
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("path", "label", "group"))
    writer.writerows(rows)
    return atomic_write_text(out_dir / "manifest.csv", text.getvalue())
