"""The demo data's defects, drawn the way real ones look: scratches (thin curved bright or dark lines),
cracks (jagged branching dark random walks), spots and stains (soft irregular tinted blobs) and missing
pieces (an irregular chunk of the object replaced by background), each with its exact pixel mask."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from sla_jax.data.scenes import _REFERENCE_SIZE, _SUPERSAMPLE, Scene, _polar, _smooth_noise

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
