"""The demo data's defect-free scenes, drawn procedurally: woven fabric (``weave``), mottled stone
(``tile``) and a metal tab washer on a flat black belt (``washer``), each a new random instance."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image

_REFERENCE_SIZE = 128.0
_SUPERSAMPLE = 4


class Scene(NamedTuple):
    """A rendered good image and the layers it was composed from (H×W×C float)."""

    image: np.ndarray
    background: np.ndarray
    alpha: np.ndarray  # H×W, 1 where the object (or the whole texture) is


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
