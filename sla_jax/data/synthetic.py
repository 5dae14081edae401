"""A small synthetic defect-inspection dataset in MVTec AD layout.

Three procedurally generated categories, each good image a new random
instance: ``weave`` (woven fabric, RGB PNG), ``tile`` (mottled stone, grayscale
PNG) and ``washer`` (a metal tab washer on a flat black belt, RGB JPEG). Defects are
drawn the way real ones look, never as pasted or constant rectangles:
scratches (thin curved bright or dark lines), cracks (jagged branching dark
random walks), spots and stains (soft irregular tinted blobs) and missing
pieces (an irregular chunk of the object replaced by background). Every
defect image has an exact pixel mask.

Command line: ``python -m sla_jax.demo OUT_DIR [--seed N]``.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

MARKER = ".sla_demo_complete.json"
_FORMAT_VERSION = 2  # 2: the washer's belt is flat black (edits there change nothing)
_REFERENCE_SIZE = 128.0
_SUPERSAMPLE = 4
_COVERAGE = (0.01, 0.08)
_MAX_DRAWS = 100


class Scene(NamedTuple):
    """A rendered good image and the layers it was composed from (H×W×C float)."""

    image: np.ndarray
    background: np.ndarray
    alpha: np.ndarray  # H×W, 1 where the object (or the whole texture) is


class Category(NamedTuple):
    """How to render one category, its defects, and how to save it."""

    render: Callable[[np.random.Generator, int], Scene]
    defects: dict[str, Callable[[np.random.Generator, Scene], tuple[np.ndarray, np.ndarray]]]
    mode: str  # PIL mode of the saved file
    suffix: str


# ---------------------------------------------------------------- noise


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Periodic Gaussian blur through the FFT."""
    fy = np.fft.fftfreq(x.shape[0])[:, None]
    fx = np.fft.rfftfreq(x.shape[1])[None, :]
    gain = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    return np.fft.irfft2(np.fft.rfft2(x) * gain, s=x.shape)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Unit-variance low-frequency noise with correlation length ``sigma``."""
    noise = _blur(rng.standard_normal((size, size)), sigma)
    return noise / (noise.std() + 1e-8)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear ramp in a random direction, from -0.5 to 0.5 over the image."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    yy, xx = (np.mgrid[:size, :size] + 0.5) / size - 0.5
    return np.cos(angle) * xx + np.sin(angle) * yy


def _polar(size: int, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size] + 0.5
    dx, dy = xx - center[0], yy - center[1]
    return np.hypot(dx, dy), np.arctan2(dy, dx)


# ---------------------------------------------------------------- good images


def _weave(rng: np.random.Generator, size: int) -> Scene:
    """Plain-weave fabric: over/under threads, fibres, uneven light, colour."""
    s = size / _REFERENCE_SIZE
    pad = int(0.1 * size) + 2
    n = size + 2 * pad
    period = 8.0 * s * rng.uniform(0.94, 1.06)
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    u = (xx + rng.uniform(0, 2 * period)) / period
    v = (yy + rng.uniform(0, 2 * period)) / period
    col, row = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - col, v - row
    warp_on_top = (col + row) % 2 == 0
    warp = np.sin(np.pi * fu) ** 0.6 * (0.75 + 0.25 * np.sin(np.pi * fv))
    weft = np.sin(np.pi * fv) ** 0.6 * (0.75 + 0.25 * np.sin(np.pi * fu))
    thread_tone = rng.normal(0.0, 0.04, 2 * n)
    tone = np.where(warp_on_top, thread_tone[col % (2 * n)], thread_tone[(row + n) % (2 * n)])
    fibres = rng.standard_normal((n, n))
    length = max(2, int(period))
    kernel = np.ones(length) / np.sqrt(length)
    along_warp = np.apply_along_axis(np.convolve, 0, fibres, kernel, mode="same")
    along_weft = np.apply_along_axis(np.convolve, 1, fibres, kernel, mode="same")
    fibre = np.where(warp_on_top, along_warp, along_weft)
    shade = 0.38 + 0.62 * np.where(warp_on_top, warp, weft) + tone + 0.05 * fibre
    angle = rng.uniform(-4.0, 4.0)
    rotated = Image.fromarray(shade.astype(np.float32), mode="F").rotate(angle, Image.Resampling.BICUBIC)
    shade = np.asarray(rotated, np.float64)[pad : pad + size, pad : pad + size]
    light = 1.0 + 0.05 * _smooth_noise(rng, size, size / 5) + 0.12 * _gradient(rng, size)
    colour = np.array([206.0, 182.0, 142.0]) * rng.uniform(0.92, 1.05) + rng.normal(0.0, 3.0, 3)
    image = colour * (shade * light)[..., None] + rng.normal(0.0, 2.0, (size, size, 3))
    return _texture_scene(np.clip(image, 0, 255))


def _tile(rng: np.random.Generator, size: int) -> Scene:
    """Mottled stone tile: cloudy tone, grain, a few small specks, uneven light."""
    s = size / _REFERENCE_SIZE
    level = rng.uniform(135.0, 160.0)
    image = (
        level
        + 9.0 * _smooth_noise(rng, size, 10.0 * s)
        + 5.0 * _smooth_noise(rng, size, 3.0 * s)
        + 16.0 * _gradient(rng, size)
        + rng.normal(0.0, 4.0, (size, size))
    )
    specks = np.zeros((size, size))
    count = rng.poisson(12)
    ys, xs = rng.integers(0, size, count), rng.integers(0, size, count)
    specks[ys, xs] = rng.choice([-1.0, 1.0], count) * rng.uniform(10.0, 18.0, count)
    sigma = 0.8 * s
    image += _blur(specks, sigma) * 2.0 * np.pi * sigma**2
    return _texture_scene(np.clip(image, 0, 255)[..., None])


def _texture_scene(image: np.ndarray) -> Scene:
    return Scene(image, image, np.ones(image.shape[:2]))


def _angle_difference(a: np.ndarray, b: float) -> np.ndarray:
    return np.angle(np.exp(1j * (a - b)))


def _washer(rng: np.random.Generator, size: int) -> Scene:
    """A brushed metal tab washer, shifted and rotated a little, on a flat matte black belt."""
    s = size / _REFERENCE_SIZE
    center = size / 2 + rng.uniform(-4.0, 4.0, 2) * s
    turn = rng.uniform(-np.pi / 9, np.pi / 9)
    r_out = 40.0 * s * rng.uniform(0.98, 1.02)
    r_in = 18.0 * s * rng.uniform(0.98, 1.02)
    d, theta = _polar(size, center)
    notch = np.abs(_angle_difference(theta, turn - np.pi / 2)) < 0.22
    r_hole = np.where(notch, r_in + 6.0 * s, r_in)
    alpha = np.clip(r_out - d + 0.5, 0, 1) * np.clip(d - r_hole + 0.5, 0, 1)

    light = rng.uniform(-0.4, 0.4) + np.pi / 4
    edge = 1.5 * s
    metal = (
        rng.uniform(150.0, 172.0)
        + 26.0 * np.cos(2.0 * (theta - light))
        + 4.0 * np.sin(2.0 * np.pi * d / (2.2 * s) + rng.uniform(0, 2 * np.pi))
        - 30.0 * np.exp(-np.abs(r_out - d) / edge)
        - 22.0 * np.exp(-np.abs(d - r_hole) / edge)
        + 4.0 * _smooth_noise(rng, size, 2.0 * s)
    )
    mark_at = center + 0.5 * (r_in + r_out) * np.array([np.cos(turn + np.pi / 2), np.sin(turn + np.pi / 2)])
    mark_d, _ = _polar(size, mark_at)
    metal -= 35.0 * np.exp(-0.5 * (mark_d / (1.6 * s)) ** 2)
    tint = np.array([1.0, 1.0, 1.04]) * rng.uniform(0.95, 1.05)
    foreground = metal[..., None] * tint

    # A matte black belt, evenly lit, and dark pixels carry little sensor noise: a flat background where a
    # CutPaste edit that moves belt onto belt changes (almost) nothing, as on MVTec AD's metal_nut.
    belt = np.full(3, rng.uniform(5.0, 9.0))
    background = np.broadcast_to(belt, (size, size, 3)) + rng.normal(0.0, 0.4, (size, size, 3))
    gain = rng.uniform(0.94, 1.06)
    background = np.clip(background, 0, 255)
    foreground = np.clip(gain * foreground + rng.normal(0.0, 2.5, (size, size, 3)), 0, 255)
    return Scene(_composite(background, foreground, alpha), background, alpha)


def _composite(background, foreground, alpha):
    return background * (1.0 - alpha[..., None]) + foreground * alpha[..., None]


# ---------------------------------------------------------------- defect shapes


def _strokes_alpha(strokes: Sequence[tuple[np.ndarray, np.ndarray]], size: int) -> np.ndarray:
    """Antialiased coverage of polylines, each with a width per vertex."""
    k = _SUPERSAMPLE
    canvas = Image.new("L", (size * k, size * k), 0)
    draw = ImageDraw.Draw(canvas)
    for points, widths in strokes:
        scaled = points * k
        for (a, b), w in zip(zip(scaled[:-1], scaled[1:]), widths[:-1]):
            draw.line([tuple(a), tuple(b)], fill=255, width=max(1, round(w * k)))
        for p, w in zip(scaled, widths):
            r = w * k / 2
            draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=255)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, np.float64) / 255.0


def _place(points: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Moves a shape so its centre lands in the middle half of the image."""
    target = rng.uniform(0.25 * size, 0.75 * size, 2)
    return points - points.mean(axis=0) + target


def _arc(rng, *, start, heading, length, step, turn, wobble) -> np.ndarray:
    """A smooth curve turning by ``turn`` radians in total, with slight wobble."""
    n = max(3, int(length / step))
    drift = rng.normal(0.0, wobble, n).cumsum() * 0.3
    angles = heading + turn * np.linspace(0.0, 1.0, n) + drift + rng.normal(0.0, wobble, n)
    steps = step * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return start + np.vstack([np.zeros((1, 2)), steps.cumsum(axis=0)])


def _scratch_shape(rng, size, *, start=None, heading=None, curvature=None) -> np.ndarray:
    """A thin smoothly curved line, 2.5–4 px wide and 40–80 px long at 128 px.

    Without ``start`` it is placed at random; ``curvature`` (1/px) defaults
    to a random gentle bend.
    """
    s = size / _REFERENCE_SIZE
    heading = rng.uniform(0, 2 * np.pi) if heading is None else heading
    length = rng.uniform(40, 80) * s
    turn = rng.uniform(-0.9, 0.9) if curvature is None else curvature * length
    origin = np.zeros(2) if start is None else start
    points = _arc(rng, start=origin, heading=heading, length=length, step=2.0 * s, turn=turn, wobble=0.02)
    points = _place(points, rng, size) if start is None else points
    widths = np.full(len(points), rng.uniform(2.5, 4.0) * s)
    t = np.linspace(0.0, 1.0, len(points))
    taper = np.minimum(1.0, 4.0 * np.minimum(t, 1.0 - t) + 0.3)
    return _strokes_alpha([(points, widths * taper)], size)


def _jagged(rng, *, start, heading, length, step) -> np.ndarray:
    n = max(3, int(length / step))
    drift = np.zeros(n)
    for i in range(1, n):
        drift[i] = 0.75 * drift[i - 1] + rng.uniform(-0.75, 0.75)
    angles = heading + drift
    steps = step * rng.uniform(0.7, 1.3, (n, 1)) * np.stack([np.cos(angles), np.sin(angles)], 1)
    return start + np.vstack([np.zeros((1, 2)), steps.cumsum(axis=0)])


def _crack_shape(rng, size) -> np.ndarray:
    """A jagged dark random walk with a few thinner branches."""
    s = size / _REFERENCE_SIZE
    heading = rng.uniform(0, 2 * np.pi)
    trunk = _jagged(rng, start=np.zeros(2), heading=heading, length=rng.uniform(60, 100) * s, step=3.0 * s)
    trunk = _place(trunk, rng, size)
    t = np.linspace(0.0, 1.0, len(trunk))
    width = rng.uniform(2.0, 3.0) * s * (0.45 + 0.55 * np.sin(np.pi * t))
    strokes = [(trunk, width)]
    for i in np.flatnonzero(rng.random(len(trunk)) < 0.08)[:4]:
        side = rng.choice([-1.0, 1.0])
        branch = _jagged(
            rng,
            start=trunk[i],
            heading=heading + side * rng.uniform(0.5, 1.1),
            length=rng.uniform(12, 30) * s,
            step=2.5 * s,
        )
        strokes.append((branch, np.linspace(0.7 * width[i], 0.5 * s, len(branch))))
    return _strokes_alpha(strokes, size)


def _angular_walk(rng: np.random.Generator, theta: np.ndarray, *, knots: int = 72) -> np.ndarray:
    """A closed random walk around the circle, zero mean: a rough outline."""
    steps = rng.standard_normal(knots)
    walk = np.cumsum(steps - steps.mean())
    walk -= walk.mean()
    at = np.linspace(-np.pi, np.pi, knots, endpoint=False)
    return np.interp(theta, at, walk / np.sqrt(knots), period=2 * np.pi)


def _blob(rng, size, *, center, radius, softness, rough=0.0) -> np.ndarray:
    """Irregular blob coverage: a radius wobbling with angle, soft inner edge."""
    d, theta = _polar(size, center)
    profile = np.ones_like(theta)
    for k in range(2, 6):
        profile += rng.uniform(0.0, 0.35) / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    profile += rough * _angular_walk(rng, theta)
    return np.clip((radius * profile - d) / max(softness * radius, 1e-3), 0.0, 1.0)


def _cut(alpha: np.ndarray, *, threshold: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Drops faint coverage so the mask holds every changed pixel and no more."""
    mask = alpha >= threshold
    return alpha * mask, mask


# ---------------------------------------------------------------- defects


def _blend(image, alpha, target):
    return image + alpha[..., None] * (target - image)


def _scratch(rng: np.random.Generator, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    size = scene.image.shape[0]
    bright = rng.random() < 0.5
    target = np.full_like(scene.image, 245.0) if bright else scene.image * rng.uniform(0.2, 0.35)
    alpha, mask = _cut(_scratch_shape(rng, size) * (scene.alpha >= 1.0))
    return _blend(scene.image, alpha * rng.uniform(0.8, 1.0), target), mask


def _ring_scratch(rng: np.random.Generator, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """A scratch on the washer's metal, from along the ring to across it."""
    size = scene.image.shape[0]
    on_metal = scene.alpha >= 1.0
    ys, xs = np.nonzero(on_metal)
    center_of_object = np.array([xs.mean(), ys.mean()]) + 0.5
    i = rng.integers(len(xs))
    at = np.array([xs[i], ys[i]]) + 0.5
    offset = at - center_of_object
    radial = np.arctan2(offset[1], offset[0])
    sense = rng.choice([-1.0, 1.0])
    heading = radial + sense * np.pi / 2 + rng.uniform(-0.8, 0.8)
    curvature = sense * rng.uniform(0.0, 1.0) / max(np.hypot(*offset), 1.0)
    bright = rng.random() < 0.5
    target = np.full_like(scene.image, 250.0) if bright else scene.image * rng.uniform(0.15, 0.3)
    shape = _scratch_shape(rng, size, start=at, heading=heading, curvature=curvature)
    alpha, mask = _cut(shape * on_metal)
    return _blend(scene.image, alpha, target), mask


def _crack(rng: np.random.Generator, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    alpha, mask = _cut(_crack_shape(rng, scene.image.shape[0]))
    return _blend(scene.image, alpha, scene.image * rng.uniform(0.15, 0.3)), mask


def _stain_alpha(rng, size) -> np.ndarray:
    s = size / _REFERENCE_SIZE
    center = rng.uniform(0.2 * size, 0.8 * size, 2)
    blob = _blob(rng, size, center=center, radius=rng.uniform(10.0, 17.0) * s, softness=0.45, rough=0.15)
    mottling = np.clip(0.88 + 0.12 * _smooth_noise(rng, size, 2.0 * s), 0.6, 1.0)
    return blob * mottling


def _spot(rng: np.random.Generator, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Oil or ink: a soft irregular blob that tints the fabric."""
    tints = (np.array([0.32, 0.27, 0.2]), np.array([0.3, 0.42, 0.9]), np.array([0.85, 0.28, 0.22]))
    tint = tints[rng.integers(len(tints))]
    alpha, mask = _cut(_stain_alpha(rng, scene.image.shape[0]) * rng.uniform(0.9, 1.0))
    return _blend(scene.image, alpha, scene.image * tint), mask


def _stain(rng: np.random.Generator, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """A dark or rust-like soft blob soaked into the stone."""
    factor = rng.choice([0.45, 0.55, 1.5])
    alpha, mask = _cut(_stain_alpha(rng, scene.image.shape[0]))
    return _blend(scene.image, alpha, np.clip(scene.image * factor, 0, 255)), mask


def _missing(rng: np.random.Generator, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """A broken-off irregular chunk: the object's alpha removed, background shows."""
    size = scene.image.shape[0]
    s = size / _REFERENCE_SIZE
    ys, xs = np.nonzero(scene.alpha >= 1.0)
    i = rng.integers(len(xs))
    center = np.array([xs[i], ys[i]]) + 0.5
    radius = rng.uniform(9.0, 15.0) * s
    chunk = _blob(rng, size, center=center, radius=radius, softness=1.5 * s / radius, rough=0.35)
    alpha, mask = _cut(chunk * (scene.alpha > 0.0))
    return _blend(scene.image, alpha, scene.background), mask


CATEGORIES: dict[str, Category] = {
    "weave": Category(_weave, {"scratch": _scratch, "spot": _spot}, "RGB", ".png"),
    "tile": Category(_tile, {"crack": _crack, "stain": _stain}, "L", ".png"),
    "washer": Category(_washer, {"missing": _missing, "scratch": _ring_scratch}, "RGB", ".jpg"),
}


# ---------------------------------------------------------------- samples and files


def _rng(seed: int, *parts: str | int) -> np.random.Generator:
    words = [int(seed)] + [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return np.random.default_rng(words)


def make_example(
    category: str, defect_type: str, *, rng: np.random.Generator, size: int = 128
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(good image, image with the defect, mask) as uint8 ``H×W×C`` / ``H×W``.

    ``defect_type='good'`` returns the good image twice and an empty mask.
    Defects are redrawn (up to 100 times) until they cover 1–8% of the image.
    """
    spec = CATEGORIES[category]
    scene = spec.render(rng, size)
    good = _to_uint8(scene.image)
    if defect_type == "good":
        return good, good, np.zeros((size, size), np.uint8)
    draw = spec.defects[defect_type]
    for _ in range(_MAX_DRAWS):
        edited, mask = draw(rng, scene)
        if _COVERAGE[0] <= mask.mean() <= _COVERAGE[1]:
            break
    return good, _to_uint8(edited), mask.astype(np.uint8)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _save(array: np.ndarray, path: Path, *, mode: str) -> None:
    image = Image.fromarray(array[..., 0] if array.ndim == 3 and mode == "L" else array, mode=mode)
    if path.suffix == ".jpg":
        image.save(path, quality=95)
    else:
        image.save(path)


def _defect_counts(n: int, types: Sequence[str]) -> dict[str, int]:
    return {t: n // len(types) + (i < n % len(types)) for i, t in enumerate(types)}


def _write_category(
    root: Path, name: str, *, seed: int, n_train: int, n_test_good: int, n_test_defect: int, size: int
) -> None:
    spec = CATEGORIES[name]
    jobs = [("train", "good", i) for i in range(n_train)]
    jobs += [("test", "good", i) for i in range(n_test_good)]
    for defect, count in _defect_counts(n_test_defect, list(spec.defects)).items():
        jobs += [("test", defect, i) for i in range(count)]
    for split, kind, i in jobs:
        _, image, mask = make_example(name, kind, rng=_rng(seed, name, split, kind, i), size=size)
        folder = root / name / split / kind
        folder.mkdir(parents=True, exist_ok=True)
        _save(image, folder / f"{i:03d}{spec.suffix}", mode=spec.mode)
        if kind != "good":
            masks = root / name / "ground_truth" / kind
            masks.mkdir(parents=True, exist_ok=True)
            _save(mask * np.uint8(255), masks / f"{i:03d}_mask.png", mode="L")


def write_demo_dataset(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    categories: Sequence[str] = ("weave", "tile", "washer"),
    n_train: int = 60,
    n_test_good: int = 20,
    n_test_defect: int = 30,
    size: int = 128,
    log: Callable[[str], None] | None = None,
) -> str:
    """Writes the demo dataset under ``out_dir`` (its root) and returns that path.

    Same arguments → byte-identical files. A complete earlier run with the same
    arguments (recorded in a marker file) is reused; otherwise the category
    folders are replaced, so ``out_dir`` should be dedicated to the demo.
    ``log`` is told when the files are generated (it takes seconds).
    """
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"unknown demo categories {unknown}; choose from {sorted(CATEGORIES)}")
    root = Path(out_dir)
    params = dict(
        version=_FORMAT_VERSION,
        seed=int(seed),
        categories=list(categories),
        n_train=n_train,
        n_test_good=n_test_good,
        n_test_defect=n_test_defect,
        size=size,
    )
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return os.fspath(root)
    if log is not None:
        count = len(categories) * (n_train + n_test_good + n_test_defect)
        log(f"generating the demo data ({len(categories)} categories, {count} images) into {root}")
    root.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for name in categories:
        shutil.rmtree(root / name, ignore_errors=True)
        _write_category(
            root,
            name,
            seed=int(seed),
            n_train=n_train,
            n_test_good=n_test_good,
            n_test_defect=n_test_defect,
            size=size,
        )
    marker.write_text(json.dumps(params, indent=1))
    return os.fspath(root)
