"""Decoding images and masks: any PIL mode to 8-bit RGB, resized; every unreadable file a DataError."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sla_jax.common.errors import SKIP_HINT, DataError

_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})  # more than 8 bits per pixel
RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}  # PIL's, antialiased


def _open(data: bytes, *, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as error:
        raise DataError(
            f"Image file {name} is too large to decode safely ({error}). Downscale it, or remove it, {SKIP_HINT}.",
            path=name,
        ) from error
    except Exception as error:  # PIL raises many types for corrupt files
        if not data:
            reason = "empty file"
        elif isinstance(error, UnidentifiedImageError):
            reason = "not in an image format PIL can read"
        else:
            reason = f"{type(error).__name__}: {error}"
        raise DataError(
            f"Cannot decode image file {name} ({reason}). Replace or remove it, {SKIP_HINT}.",
            path=name,
        ) from error


def _wide_to_gray(image: Image.Image, *, name: str) -> Image.Image:
    """A 16-bit, 32-bit integer or 32-bit float gray image as 8-bit gray, scaled by its value range: integers
    of up to 16 bits by 255/65535; floats in [0, 1] by 255, in [0, 255] as they are, in [0, 65535] by
    255/65535. Values outside those ranges (or not finite) are refused: no scale would be faithful."""
    values = np.asarray(image).astype(np.float64)
    finite = bool(np.all(np.isfinite(values)))
    low, high = (float(values.min()), float(values.max())) if values.size and finite else (0.0, 0.0)
    if image.mode == "F" and finite and low >= 0 and high <= 1.0:
        scale = 255.0
    elif image.mode == "F" and finite and low >= 0 and high <= 255.0:
        scale = 1.0
    elif finite and low >= 0 and high <= 65535.0:
        scale = 255.0 / 65535.0
    else:
        shown = f"values from {low:g} to {high:g}" if finite else "values that are not finite numbers"
        raise DataError(
            f"Image file {name} (mode {image.mode}) has {shown}: sla_jax reads such images as 16-bit (0 to "
            f"65535) or, for floats, 0 to 1 or 0 to 255. Re-save it as 8- or 16-bit PNG, {SKIP_HINT}.",
            path=name,
        )
    gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L")


def _to_rgb(image: Image.Image, *, name: str) -> Image.Image:
    """8-bit RGB: gray replicated, alpha dropped, palette expanded, wider gray scaled by its value range."""
    if image.mode in _WIDE_MODES:
        return _wide_to_gray(image, name=name).convert("RGB")
    try:
        if image.mode in ("P", "PA"):
            return image.convert("RGBA").convert("RGB")
        return image.convert("RGB")
    except Exception as error:
        raise DataError(
            f"Cannot convert image file {name} (mode {image.mode}) to RGB "
            f"({type(error).__name__}: {error}). Re-save it as 8-bit PNG or JPEG, "
            f"{SKIP_HINT}.",
            path=name,
        ) from error


def _resized_rgb(image: Image.Image, *, size: int, name: str, resample: str = "bilinear") -> np.ndarray:
    rgb = _to_rgb(image, name=name)
    return np.asarray(rgb.resize((size, size), RESAMPLING[resample]))


def decode_image(data: bytes, *, size: int, name: str = "<bytes>", resample: str = "bilinear") -> np.ndarray:
    """Encoded image → ``size×size×3`` uint8, resized with PIL's antialiased ``resample`` filter (bilinear, or
    bicubic: PIL's default, which the PyTorch CutPaste ports use).

    Any file PIL cannot read (empty, truncated, corrupt, over PIL's
    decompression-bomb limit) raises :class:`DataError` naming ``name``.
    """
    return _resized_rgb(_open(data, name=name), size=size, name=name, resample=resample)


def _binary_mask(image: Image.Image, *, size: int, name: str) -> tuple[np.ndarray, bool]:
    """(``size×size`` mask in {0, 1}, whether the file had more than two levels)."""
    values = np.asarray(_to_rgb(image, name=name)).max(axis=-1)
    if values.any() and values.max() <= 127:
        raise DataError(
            f"Mask file {name} has values up to {values.max()} only: a defect pixel "
            "must be > 127 (MVTec AD masks use 255), so this mask would mark nothing. "
            f"Re-save it with 255 = defect, {SKIP_HINT}.",
            path=name,
        )
    binary = (values > 127).astype(np.float32)
    resized = Image.fromarray(binary, mode="F").resize((size, size), Image.Resampling.BILINEAR)
    levels = np.unique(values)
    nonbinary = len(levels) > 2 or (len(levels) == 2 and levels[0] != 0)
    return (np.asarray(resized) >= 0.5).astype(np.uint8), nonbinary


def decode_mask(data: bytes, *, size: int, name: str = "<bytes>") -> np.ndarray:
    """Encoded mask → ``size×size`` uint8 in {0, 1}; empty bytes → zeros.

    A pixel is defective where any colour channel exceeds 127; the resized
    mask is thresholded at 0.5 so it stays binary.
    """
    if not data:
        return np.zeros((size, size), np.uint8)
    return _binary_mask(_open(data, name=name), size=size, name=name)[0]


def decode_record(record: Mapping, *, folder: Path, size: int, resample: str = "bilinear"):
    """(image, mask, mask had more than two levels) of one stored record."""
    path = folder / text(record["path"])
    image = _open(record["image"], name=os.fspath(path))
    if not record["mask"]:
        return (
            _resized_rgb(image, size=size, name=os.fspath(path), resample=resample),
            np.zeros((size, size), np.uint8),
            False,
        )
    mask_name = os.fspath(folder / _mask_path(text(record["path"])))
    mask = _open(record["mask"], name=mask_name)
    if mask.size != image.size:
        raise DataError(
            f"Mask file {mask_name} is {mask.size[0]}×{mask.size[1]} px but its image "
            f"{path} is {image.size[0]}×{image.size[1]} px. A mask must match its "
            f"image pixel for pixel: fix or remove the pair, {SKIP_HINT}.",
            path=mask_name,
        )
    binary, nonbinary = _binary_mask(mask, size=size, name=mask_name)
    return _resized_rgb(image, size=size, name=os.fspath(path), resample=resample), binary, nonbinary


def _mask_path(image_path: str) -> str:
    """``test/<type>/<stem>.ext`` → ``ground_truth/<type>/<stem>_mask.png`` (the MVTec layout); in another
    layout, the mask of ``image_path``."""
    parts = image_path.split("/")
    if len(parts) == 3 and parts[0] == "test":
        return f"ground_truth/{parts[1]}/{Path(parts[2]).stem}_mask.png"
    return f"{image_path} (its mask)"


def text(value) -> str:
    """A stored name as the file system's ``str`` (bytes that are not UTF-8 kept as surrogate escapes)."""
    return os.fsdecode(value) if isinstance(value, bytes) else str(value)


def read_image(path: Path, *, size: int, resample: str = "bilinear") -> np.ndarray | str:
    """The decoded image file, or the reason it cannot be used (for scoring loose files one by one)."""
    try:
        return decode_image(path.read_bytes(), size=size, name=str(path), resample=resample)
    except DataError as error:
        return str(error)
    except OSError as error:
        return f"cannot read {path} ({error.strerror or error})"
