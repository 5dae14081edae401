"""Local-editing transforms (Cutout, CutPaste, CutPaste-Scar, CutPaste-Fusion) as pure jnp functions.

Every transform maps ``(key, image_HxWxC) -> (edited_HxWxC, mask_HxW)`` with images in [0, 1] and the
mask 1 where the transform wrote. Random sizes and positions only change values, never shapes, so a
whole batch runs under one ``jax.jit(jax.vmap(...))`` compilation. Distributions follow the CutPaste
paper (DESIGN.md §1).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from sla_jax.common.settings import Section, choice, setting
from sla_jax.jitter import JITTER, JITTER_ORDERS, color_jitter, hsv_to_rgb, jitter_images, rgb_to_hsv

AREA_RANGE = (0.02, 0.15)
ASPECT_RANGES = ((0.3, 1.0), (1.0, 3.3))
SCAR_WIDTH = (2.0, 16.0)
SCAR_LENGTH = (10.0, 25.0)
SCAR_REFERENCE_SIZE = 256.0
SCAR_MAX_DEGREES = 45.0

SCAR_SIZE_RULES = ("relative", "pixels")


@dataclasses.dataclass(frozen=True)
class TransformSettings(Section):
    """``config.transform``: the local edit of the pretext task and how a batch is built."""

    SECTION = "transform"
    name: str = setting("cps", "co | cp | cps | cpf (3-way CutPaste-Fusion)")
    pairing: str = setting("bernoulli", "bernoulli (eq. 2, b ~ Bernoulli(0.5)) | paired")
    cutout_fill: str = setting("random", "random | zero")
    scar_size: str = setting("relative", "relative (scales with data.image_size / 256) | pixels (the PyTorch ports)")
    global_jitter: float = setting(0.1, "colour jitter of the whole image before the edit (CutPaste); 0: none")
    jitter_order: str = setting("random", "colour-jitter operations in random order (torchvision) | fixed")

    def check(self) -> None:
        choice("transform.name", self.name, tuple(TRANSFORMS))
        choice("transform.pairing", self.pairing, ("bernoulli", "paired"))
        choice("transform.cutout_fill", self.cutout_fill, ("random", "zero"))
        choice("transform.scar_size", self.scar_size, SCAR_SIZE_RULES)
        choice("transform.jitter_order", self.jitter_order, JITTER_ORDERS)
        if not 0 <= self.global_jitter < 1:
            raise ValueError(
                f"config.transform.global_jitter={self.global_jitter} must lie in [0, 1) "
                "(CutPaste: 0.1; 0 turns it off)"
            )


def _pixel_grid(height: int, width: int) -> tuple[jax.Array, jax.Array]:
    """Pixel-centre coordinates (row, column) of an H×W image."""
    rows = jnp.arange(height, dtype=jnp.float32)[:, None] + 0.5
    cols = jnp.arange(width, dtype=jnp.float32)[None, :] + 0.5
    return jnp.broadcast_to(rows, (height, width)), jnp.broadcast_to(cols, (height, width))


def sample_box_size(key: jax.Array, *, height: int, width: int) -> tuple[jax.Array, jax.Array]:
    """Height and width (integers, as floats) of a CutPaste rectangle.

    Area ~ U(0.02, 0.15)·H·W; aspect ratio (w/h) uniform in (0.3, 1) or (1, 3.3), each interval with
    probability 1/2. Sides are rounded and clipped to the image.
    """
    k_area, k_side, k_aspect = jax.random.split(key, 3)
    area = jax.random.uniform(k_area, minval=AREA_RANGE[0], maxval=AREA_RANGE[1]) * height * width
    low = jnp.where(jax.random.bernoulli(k_side), ASPECT_RANGES[1][0], ASPECT_RANGES[0][0])
    high = jnp.where(low == ASPECT_RANGES[1][0], ASPECT_RANGES[1][1], ASPECT_RANGES[0][1])
    aspect = jax.random.uniform(k_aspect, minval=low, maxval=high)
    box_w = jnp.clip(jnp.round(jnp.sqrt(area * aspect)), 1, width)
    box_h = jnp.clip(jnp.round(jnp.sqrt(area / aspect)), 1, height)
    return box_h, box_w


def _sample_corner(key: jax.Array, *, box_h, box_w, height: int, width: int) -> tuple[jax.Array, jax.Array]:
    """Top-left corner (integer-valued floats) of a box placed uniformly inside the image."""
    k_row, k_col = jax.random.split(key)
    top = jnp.floor(jax.random.uniform(k_row) * (height - box_h + 1))
    left = jnp.floor(jax.random.uniform(k_col) * (width - box_w + 1))
    return top, left


def _box_mask(*, top, left, box_h, box_w, height: int, width: int) -> jax.Array:
    rows, cols = _pixel_grid(height, width)
    inside = (rows > top) & (rows < top + box_h) & (cols > left) & (cols < left + box_w)
    return inside.astype(jnp.float32)


def cutout(key: jax.Array, image: jax.Array, *, fill: str = "random") -> tuple[jax.Array, jax.Array]:
    """Cutout: one rectangle filled with one colour (uniform per transform, or zero with ``fill='zero'``)."""
    height, width, channels = image.shape
    k_size, k_pos, k_fill = jax.random.split(key, 3)
    box_h, box_w = sample_box_size(k_size, height=height, width=width)
    top, left = _sample_corner(k_pos, box_h=box_h, box_w=box_w, height=height, width=width)
    mask = _box_mask(top=top, left=left, box_h=box_h, box_w=box_w, height=height, width=width)
    if fill == "zero":
        colour = jnp.zeros((channels,), image.dtype)
    elif fill == "random":
        colour = jax.random.uniform(k_fill, (channels,), dtype=image.dtype)
    else:
        raise ValueError(f"cutout fill must be 'random' or 'zero', got {fill!r}")
    edited = jnp.where(mask[..., None] > 0, colour, image)
    return edited, mask


# --- colour jitter (torchvision ColorJitter semantics, fixed order: brightness, contrast, saturation, hue) ---


def _gather(image: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """Nearest-pixel lookup at (fractional) pixel-centre coordinates, clamped to the image."""
    height, width = image.shape[:2]
    r = jnp.clip(jnp.floor(rows).astype(jnp.int32), 0, height - 1)
    c = jnp.clip(jnp.floor(cols).astype(jnp.int32), 0, width - 1)
    return image[r, c]


def cutpaste(
    key: jax.Array, image: jax.Array, *, jitter: float = JITTER, jitter_order: str = "random"
) -> tuple[jax.Array, jax.Array]:
    """CutPaste: a rectangle cut at a random source, colour-jittered, pasted at a random destination."""
    height, width, _ = image.shape
    k_size, k_src, k_dst, k_jit = jax.random.split(key, 4)
    box_h, box_w = sample_box_size(k_size, height=height, width=width)
    src_top, src_left = _sample_corner(k_src, box_h=box_h, box_w=box_w, height=height, width=width)
    dst_top, dst_left = _sample_corner(k_dst, box_h=box_h, box_w=box_w, height=height, width=width)
    source = _box_mask(top=src_top, left=src_left, box_h=box_h, box_w=box_w, height=height, width=width)
    jittered = color_jitter(k_jit, image, strength=jitter, region=source, order=jitter_order)
    rows, cols = _pixel_grid(height, width)
    patch = _gather(jittered, rows - dst_top + src_top, cols - dst_left + src_left)
    mask = _box_mask(top=dst_top, left=dst_left, box_h=box_h, box_w=box_w, height=height, width=width)
    return jnp.where(mask[..., None] > 0, patch, image), mask


def cutpaste_scar(
    key: jax.Array,
    image: jax.Array,
    *,
    jitter: float = JITTER,
    scale: float | None = None,
    jitter_order: str = "random",
) -> tuple[jax.Array, jax.Array]:
    """CutPaste-Scar: a thin rectangle cut, jittered, rotated by U[−45°, 45°] and pasted.

    Width U[2, 16] and length U[10, 25] pixels are those of a 256 px image and scale with the image
    side (``scale`` overrides the factor: ``scale=1`` keeps those sizes in pixels at any image size, as
    the PyTorch ports do; see :func:`scar_scale`). The mask is the rotated rectangle itself (not its
    bounding box).
    """
    height, width, _ = image.shape
    scale = min(height, width) / SCAR_REFERENCE_SIZE if scale is None else scale
    k_w, k_l, k_rot, k_src, k_dst, k_jit = jax.random.split(key, 6)
    scar_w = jax.random.uniform(k_w, minval=SCAR_WIDTH[0], maxval=SCAR_WIDTH[1]) * scale
    scar_l = jax.random.uniform(k_l, minval=SCAR_LENGTH[0], maxval=SCAR_LENGTH[1]) * scale
    scar_w = jnp.clip(scar_w, 1.0, width)
    scar_l = jnp.clip(scar_l, 1.0, height)
    theta = jnp.deg2rad(jax.random.uniform(k_rot, minval=-SCAR_MAX_DEGREES, maxval=SCAR_MAX_DEGREES))
    cos, sin = jnp.cos(theta), jnp.sin(theta)

    def uniform_centre(k, half_h, half_w):
        k_r, k_c = jax.random.split(k)
        row = half_h + jax.random.uniform(k_r) * jnp.maximum(height - 2 * half_h, 0.0)
        col = half_w + jax.random.uniform(k_c) * jnp.maximum(width - 2 * half_w, 0.0)
        return row, col

    src_row, src_col = uniform_centre(k_src, scar_l / 2, scar_w / 2)
    ext_h = jnp.abs(scar_l / 2 * cos) + jnp.abs(scar_w / 2 * sin)
    ext_w = jnp.abs(scar_l / 2 * sin) + jnp.abs(scar_w / 2 * cos)
    dst_row, dst_col = uniform_centre(k_dst, ext_h, ext_w)

    rows, cols = _pixel_grid(height, width)
    dr, dc = rows - dst_row, cols - dst_col
    along = cos * dr + sin * dc
    across = -sin * dr + cos * dc
    mask = ((jnp.abs(along) < scar_l / 2) & (jnp.abs(across) < scar_w / 2)).astype(jnp.float32)
    source = _box_mask(
        top=src_row - scar_l / 2, left=src_col - scar_w / 2, box_h=scar_l, box_w=scar_w, height=height, width=width
    )
    jittered = color_jitter(k_jit, image, strength=jitter, region=source, order=jitter_order)
    patch = _gather(jittered, src_row + along, src_col + across)
    return jnp.where(mask[..., None] > 0, patch, image), mask


class Edit(NamedTuple):
    """A batch of pretext inputs: the network image, the edit mask and the class of the edit."""

    images: jax.Array  # B×H×W×C
    masks: jax.Array  # B×H×W
    classes: jax.Array  # (B,) int32: 0 original, 1 CO/CP, 2 CPS (3-way CPF)


TransformFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def _cutout_edit(key, image, *, cutout_fill="random", **_) -> Edit:
    edited, mask = cutout(key, image, fill=cutout_fill)
    return Edit(edited, mask, jnp.int32(1))


def _cutpaste_edit(key, image, *, jitter_order="random", **_) -> Edit:
    edited, mask = cutpaste(key, image, jitter_order=jitter_order)
    return Edit(edited, mask, jnp.int32(1))


def _scar_edit(key, image, *, scar_scale=None, jitter_order="random", **_) -> Edit:
    edited, mask = cutpaste_scar(key, image, scale=scar_scale, jitter_order=jitter_order)
    return Edit(edited, mask, jnp.int32(1))


def _fusion_edit(key, image, *, scar_scale=None, jitter_order="random", **_) -> Edit:
    """CutPaste-Fusion (3-way): per sample CP (class 1) or CPS (class 2)."""
    k_pick, k_edit = jax.random.split(key)
    scar = jax.random.bernoulli(k_pick)
    cp_img, cp_mask = cutpaste(k_edit, image, jitter_order=jitter_order)
    sc_img, sc_mask = cutpaste_scar(k_edit, image, scale=scar_scale, jitter_order=jitter_order)
    return Edit(
        jnp.where(scar, sc_img, cp_img), jnp.where(scar, sc_mask, cp_mask), jnp.where(scar, 2, 1).astype(jnp.int32)
    )


class Transform(NamedTuple):
    """A registered local edit: ``edit(key, image, *, cutout_fill, scar_scale, jitter_order) -> Edit`` of one
    image (keyword options it does not use are ignored; its class is 1, or 1..classes-1), and the
    classifier's width (the "original" class included)."""

    edit: Callable[..., Edit]
    classes: int = 2


TRANSFORMS: dict[str, Transform] = {
    "co": Transform(_cutout_edit),
    "cp": Transform(_cutpaste_edit),
    "cps": Transform(_scar_edit),
    "cpf": Transform(_fusion_edit, classes=3),
}
TRANSFORM_NAMES = tuple(TRANSFORMS)  # the built-in ones; registered ones are in TRANSFORMS


def register(name: str, transform: Transform) -> None:
    """Make ``transform.name=name`` train with ``transform`` (an entry here is all a new transform needs)."""
    TRANSFORMS[name] = transform


def _registered(name: str) -> Transform:
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; expected one of {tuple(TRANSFORMS)}")
    return TRANSFORMS[name]


def num_classes(name: str) -> int:
    """Classifier width for a transform: 3 for CutPaste-Fusion, else 2 (a registered one: its own)."""
    return _registered(name).classes


def edit_one(
    key: jax.Array,
    image: jax.Array,
    *,
    name: str,
    cutout_fill: str = "random",
    scar_scale: float | None = None,
    jitter_order: str = "random",
) -> Edit:
    """Apply the registered transform ``name`` (co, cp, cps, cpf, ...) to one image; the edit with its class."""
    return _registered(name).edit(key, image, cutout_fill=cutout_fill, scar_scale=scar_scale, jitter_order=jitter_order)


def assemble_batch(
    key: jax.Array,
    images: jax.Array,
    *,
    name: str,
    pairing: str = "bernoulli",
    cutout_fill: str = "random",
    scar_scale: float | None = None,
    jitter_order: str = "random",
) -> Edit:
    """Build pretext inputs from source images B×H×W×C (paper eq. 2).

    ``pairing='bernoulli'``: each sample kept original with probability ½, else transformed (B inputs).
    ``pairing='paired'``: every source appears original and transformed (2B inputs, originals first).
    """
    batch = images.shape[0]
    k_edit, k_keep = jax.random.split(key)
    edits = jax.vmap(
        lambda k, x: edit_one(
            k, x, name=name, cutout_fill=cutout_fill, scar_scale=scar_scale, jitter_order=jitter_order
        )
    )(jax.random.split(k_edit, batch), images)
    zeros = jnp.zeros(images.shape[:3], jnp.float32)
    if pairing == "paired":
        return Edit(
            jnp.concatenate([images, edits.images]),
            jnp.concatenate([zeros, edits.masks]),
            jnp.concatenate([jnp.zeros((batch,), jnp.int32), edits.classes]),
        )
    if pairing != "bernoulli":
        raise ValueError(f"pairing must be 'bernoulli' or 'paired', got {pairing!r}")
    keep = jax.random.bernoulli(k_keep, 0.5, (batch,))
    return Edit(
        jnp.where(keep[:, None, None, None], images, edits.images),
        jnp.where(keep[:, None, None], zeros, edits.masks),
        jnp.where(keep, 0, edits.classes).astype(jnp.int32),
    )


def scar_scale(image_size: int, *, rule: str = "relative") -> float:
    """Scar size factor for images of side ``image_size``: ``'relative'`` scales the 256 px sizes with the
    image side; ``'pixels'`` keeps them in pixels (the PyTorch ports). Both give 1 at 256 px."""
    if rule not in SCAR_SIZE_RULES:
        raise ValueError(f"scar size rule must be one of {SCAR_SIZE_RULES}, got {rule!r}")
    return image_size / SCAR_REFERENCE_SIZE if rule == "relative" else 1.0


def scar_size_range(image_size: int, *, rule: str = "relative") -> tuple[tuple[float, float], tuple[float, float]]:
    """(width range, length range) in pixels of a scar on an image of side ``image_size``."""
    scale = scar_scale(image_size, rule=rule)
    return ((SCAR_WIDTH[0] * scale, SCAR_WIDTH[1] * scale), (SCAR_LENGTH[0] * scale, SCAR_LENGTH[1] * scale))


__all__ = [
    "cutout",
    "cutpaste",
    "cutpaste_scar",
    "color_jitter",
    "jitter_images",
    "rgb_to_hsv",
    "hsv_to_rgb",
    "edit_one",
    "assemble_batch",
    "Edit",
    "num_classes",
    "sample_box_size",
    "TRANSFORM_NAMES",
    "TRANSFORMS",
    "Transform",
    "register",
    "SCAR_SIZE_RULES",
    "JITTER_ORDERS",
    "scar_scale",
    "scar_size_range",
]
