"""Colour jitter as pure jnp functions: brightness, contrast, saturation and hue as torchvision's
``ColorJitter`` does them (in random or fixed order), of a whole image or of a region of it; CutPaste
jitters the pasted patch (:mod:`sla_jax.transforms`) and the whole source before the edit."""

from __future__ import annotations

import jax
import jax.numpy as jnp

JITTER = 0.1  # CutPaste's strength for brightness, contrast, saturation and hue
JITTER_ORDERS = ("random", "fixed")


def _grayscale(image: jax.Array) -> jax.Array:
    if image.shape[-1] == 1:
        return image[..., 0]
    return 0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
    """RGB in [0, 1] to HSV with hue in [0, 1)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = jnp.max(rgb, axis=-1)
    minc = jnp.min(rgb, axis=-1)
    delta = maxc - minc
    safe_delta = jnp.where(delta > 0, delta, 1.0)
    safe_max = jnp.where(maxc > 0, maxc, 1.0)
    saturation = jnp.where(maxc > 0, delta / safe_max, 0.0)
    rc, gc, bc = (maxc - r) / safe_delta, (maxc - g) / safe_delta, (maxc - b) / safe_delta
    hue = jnp.where(maxc == r, bc - gc, jnp.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = jnp.where(delta > 0, (hue / 6.0) % 1.0, 0.0)
    return jnp.stack([hue, saturation, maxc], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = jnp.floor(h * 6.0)
    f = h * 6.0 - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = sector.astype(jnp.int32) % 6
    r = jnp.choose(i, [v, q, p, p, t, v], mode="clip")
    g = jnp.choose(i, [t, v, v, q, p, p], mode="clip")
    b = jnp.choose(i, [p, p, t, v, v, q], mode="clip")
    return jnp.stack([r, g, b], axis=-1)


def _brightness(image, factor, region):
    del region
    return jnp.clip(image * factor, 0.0, 1.0)


def _contrast(image, factor, region):
    mean_grey = jnp.sum(_grayscale(image) * region) / jnp.maximum(jnp.sum(region), 1.0)
    return jnp.clip(factor * image + (1.0 - factor) * mean_grey, 0.0, 1.0)


def _saturation(image, factor, region):
    del region
    return jnp.clip(factor * image + (1.0 - factor) * _grayscale(image)[..., None], 0.0, 1.0)


def _hue(image, shift, region):
    del region
    hsv = rgb_to_hsv(image)
    return jnp.clip(hsv_to_rgb(hsv.at[..., 0].set((hsv[..., 0] + shift) % 1.0)), 0.0, 1.0)


def color_jitter(
    key: jax.Array, image: jax.Array, *, strength: float = JITTER, region=None, order: str = "random"
) -> jax.Array:
    """Brightness, contrast, saturation (factors in [1−s, 1+s]) and hue (shift in [−s, s]).

    ``order='random'`` applies the four in a random order per call, as torchvision's ``ColorJitter``
    (what the CutPaste ports use); ``'fixed'`` in the order brightness, contrast, saturation, hue.
    ``region`` (H×W weights) says which pixels form the jittered patch: contrast blends towards the
    patch's mean grey level, as torchvision does for a cropped patch. Single-channel images only get
    brightness and contrast.
    """
    if order not in JITTER_ORDERS:
        raise ValueError(f"jitter order must be one of {JITTER_ORDERS}, got {order!r}")
    if order == "random":
        k_order, key = jax.random.split(key)
    k_b, k_c, k_s, k_h = jax.random.split(key, 4)
    lo, hi = 1.0 - strength, 1.0 + strength
    factors = jnp.stack(
        [
            jax.random.uniform(k_b, minval=lo, maxval=hi),
            jax.random.uniform(k_c, minval=lo, maxval=hi),
            jax.random.uniform(k_s, minval=lo, maxval=hi),
            jax.random.uniform(k_h, minval=-strength, maxval=strength),
        ]
    )
    weights = jnp.ones(image.shape[:2]) if region is None else region
    ops = [_brightness, _contrast] + ([_saturation, _hue] if image.shape[-1] == 3 else [])
    if order == "fixed":
        out = image
        for i, op in enumerate(ops):
            out = op(out, factors[i], weights)
        return out
    order_ = jax.random.permutation(k_order, len(ops))
    if len(ops) < 4:  # one channel: brightness and contrast in either order
        branches = [lambda x, i=i, op=op: op(x, factors[i], weights) for i, op in enumerate(ops)]
        out = image
        for which in order_:
            out = jax.lax.switch(which, branches, out)
        return out
    # Hue, the costly operation, runs once: at its position k in the drawn order, between the linear
    # operations drawn before it and those drawn after (the same result as applying all four in order).
    k = jnp.argmax(order_ == 3)
    linear = jnp.where(jnp.arange(3) < k, order_[:3], order_[1:])  # the order without hue
    cheap = [lambda x, i=i, op=op: op(x, factors[i], weights) for i, op in enumerate(ops[:3])]
    states = [image]
    for slot in range(3):
        states.append(jax.lax.switch(linear[slot], cheap, states[-1]))
    out = ops[3](jax.lax.switch(k, [lambda _, s=s_: s for s_ in states], None), factors[3], weights)
    for slot in range(3):
        out = jnp.where(slot >= k, jax.lax.switch(linear[slot], cheap, out), out)
    return out


def jitter_images(
    key: jax.Array, images_BxHxWxC: jax.Array, *, strength: float = JITTER, order: str = "random"
) -> jax.Array:
    """Whole-image colour jitter of each image of a batch (the CutPaste ports' augmentation before the edit)."""
    keys = jax.random.split(key, images_BxHxWxC.shape[0])
    return jax.vmap(lambda k, x: color_jitter(k, x, strength=strength, order=order))(keys, images_BxHxWxC)
