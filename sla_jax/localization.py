"""Patch-level localization (paper eq. 4): dense patches, receptive-field upsampling, pixel metrics.

Patches and upsampling are jnp (jit- and vmap-friendly, shapes static). The pixel metrics pool
millions of pixels, where float32 rank sums and cumulative sums lose precision, so they are numpy
float64 and run on the host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage, stats

EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def gaussian_window(field: int = 32, sigma: float = 10.0) -> jax.Array:
    """The 1-D window of FCDD's ``gkern(field, sigma)``. For even ``field`` it is the odd ``field − 1`` point
    window with its centre value (1) duplicated, then halved, so that the two middle taps are equal instead
    of both falling off."""
    odd = field - 1 if field % 2 == 0 else field
    n = jnp.arange(odd, dtype=jnp.float32) - (odd - 1) / 2.0
    window = jnp.exp(-0.5 * (n / sigma) ** 2)
    if field % 2 == 0:
        centre = odd // 2
        window = jnp.concatenate([window[: centre + 1], window[centre:]]) / 2.0
    return window


def gaussian_kernel(field: int = 32, sigma: float = 10.0) -> jax.Array:
    """FCDD's ``gkern(field, sigma)``: outer product of :func:`gaussian_window`, not normalised."""
    window = gaussian_window(field, sigma)
    return jnp.outer(window, window)


def stamp_matrix(length: int, window_k: jax.Array, *, stride: int = 4) -> jax.Array:
    """The ((length − 1)·stride + k) × length matrix whose column j holds ``window_k`` from row j·stride:
    a separable kernel's stamps summed along one axis, as a matrix product."""
    k = window_k.shape[0]
    rows = jnp.arange((length - 1) * stride + k)[:, None] - stride * jnp.arange(length)[None, :]
    return jnp.where((rows >= 0) & (rows < k), window_k[jnp.clip(rows, 0, k - 1)], 0.0)


def upsampled_size(length: int, *, field: int = 32, stride: int = 4) -> int:
    """Output length ``(length − 1)·stride + field`` of a transposed convolution without padding."""
    return (length - 1) * stride + field


def num_patches(length: int, *, size: int = 32, stride: int = 4) -> int:
    """Number of sliding-window positions ``(length − size) // stride + 1`` along one axis."""
    return (length - size) // stride + 1


def stamp_sum(scores_Bxhxw: jax.Array, kernel_kxk: jax.Array, *, stride: int = 4) -> jax.Array:
    """Transposed convolution: Σ ``score[i, j] · kernel`` placed at ``(i·stride, j·stride)``.

    No padding, no bias, kernel not flipped (PyTorch's ``conv_transpose2d``). Any number of leading
    axes (including none). HIGHEST precision so that accelerators do not fall back to TF32/bf16.
    """
    *lead, h, w = scores_Bxhxw.shape
    k = kernel_kxk.shape[0]
    lhs = scores_Bxhxw.reshape(-1, h, w, 1).astype(jnp.float32)
    rhs = kernel_kxk[::-1, ::-1, None, None].astype(jnp.float32)
    out = jax.lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides=(1, 1),
        padding=((k - 1, k - 1), (k - 1, k - 1)),
        lhs_dilation=(stride, stride),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return out.reshape(*lead, out.shape[1], out.shape[2])


def receptive_field_upsample(
    scores_Bxhxw: jax.Array,
    *,
    field: int = 32,
    stride: int = 4,
    sigma: float = 10.0,
    normalize: bool = False,
    method: str = "conv",
) -> jax.Array:
    """RFU (FCDD): patch scores h×w → pixel maps H×W, H = (h − 1)·stride + field, Gaussian stamps summed.

    Summed stamps are smaller near the border, where fewer patches overlap (the corner pixel sees
    one patch through the kernel's corner). ``normalize=True`` divides by the summed kernel weight
    at each pixel instead, a weighted average of the overlapping patch scores; pixels no patch
    covers (only when ``stride > field``) are 0 either way. ``method='conv'`` is FCDD's transposed
    convolution; ``'matmul'`` the same sum as ``A · S · Bᵀ`` (the kernel is separable: :func:`stamp_matrix`),
    equal to float rounding, for graphs without transposed convolutions (the ONNX export).
    """
    if method == "matmul":
        window = gaussian_window(field, sigma)
        rows = stamp_matrix(scores_Bxhxw.shape[-2], window, stride=stride)
        cols = stamp_matrix(scores_Bxhxw.shape[-1], window, stride=stride)

        def upsample(s):
            return jnp.einsum(
                "Hh,...hw,Ww->...HW",
                rows,
                s.astype(jnp.float32),
                cols,  # noqa: E731
                precision=jax.lax.Precision.HIGHEST,
            )
    elif method == "conv":
        kernel = gaussian_kernel(field, sigma)
        upsample = lambda s: stamp_sum(s, kernel, stride=stride)  # noqa: E731
    else:
        raise ValueError(f"RFU method must be 'conv' or 'matmul', got {method!r}")
    maps = upsample(scores_Bxhxw)
    if not normalize:
        return maps
    weights = upsample(jnp.ones(scores_Bxhxw.shape[-2:], jnp.float32))
    return jnp.where(weights > 0, maps / jnp.where(weights > 0, weights, 1.0), 0.0)


def extract_patches(images_BxHxWxC: jax.Array, *, size: int = 32, stride: int = 4) -> jax.Array:
    """All ``size``² patches with step ``stride``: B×Nh×Nw×S×S×C, N = (H − size) // stride + 1.

    A gather with constant indices (exact on every backend). Any number of leading axes; pixels
    beyond the last whole stride are dropped, so pick H ≡ size (mod stride) for full coverage.
    """
    height, width = images_BxHxWxC.shape[-3:-1]
    if size > height or size > width:
        raise ValueError(f"patch size {size} exceeds image {height}×{width}")
    rows = (np.arange(num_patches(height, size=size, stride=stride)) * stride)[:, None] + np.arange(size)
    cols = (np.arange(num_patches(width, size=size, stride=stride)) * stride)[:, None] + np.arange(size)
    return images_BxHxWxC[..., rows[:, None, :, None], cols[None, :, None, :], :]


def random_corners(key: jax.Array, *, num: int, height: int, width: int, size: int = 32) -> jax.Array:
    """``num`` top-left corners (row, col), uniform over all positions of a ``size``² patch: num×2 int32."""
    if size > height or size > width:
        raise ValueError(f"patch size {size} exceeds image {height}×{width}")
    return jax.random.randint(key, (num, 2), 0, jnp.array([height - size + 1, width - size + 1]))


def crop_patches(images_BxHxWxC: jax.Array, corners_Bx2: jax.Array, *, size: int = 32) -> jax.Array:
    """The ``size``² patch of each image at its corner: B×S×S×C (shape-static ``dynamic_slice``)."""
    channels = images_BxHxWxC.shape[-1]

    def crop(image, corner):
        return jax.lax.dynamic_slice(image, (corner[0], corner[1], 0), (size, size, channels))

    return jax.vmap(crop)(images_BxHxWxC, corners_Bx2)


def random_patches(key: jax.Array, images_BxHxWxC: jax.Array, *, size: int = 32) -> jax.Array:
    """One uniformly placed ``size``² crop per image (the training patches of eq. 4): B×S×S×C."""
    num, height, width = images_BxHxWxC.shape[:3]
    corners = random_corners(key, num=num, height=height, width=width, size=size)
    return crop_patches(images_BxHxWxC, corners, size=size)


def image_scores_from_maps(maps_NxHxW: jax.Array) -> jax.Array:
    """Image score derived from a pixel map: its maximum, (N,)."""
    return jnp.max(maps_NxHxW, axis=(-2, -1))


def pixel_auroc(maps_NxHxW, masks_NxHxW) -> float:
    """AUROC over all pixels pooled (defect = mask > 0), float64 Mann–Whitney U with average ranks.

    NaN when the pixels hold only one class. numpy, not jnp: millions of float32 ranks do not add up.
    """
    scores = np.asarray(maps_NxHxW, dtype=np.float64).ravel()
    positive = np.asarray(masks_NxHxW).ravel() > 0
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = stats.rankdata(scores)[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def region_labels(masks_NxHxW) -> np.ndarray:
    """Connected defect regions numbered 1…R across all images, 0 = defect-free.

    8-connected (a 3×3 structure of ones), as MVTec AD's reference ``compute_pro``.
    """
    masks = np.asarray(masks_NxHxW) > 0
    labels = np.zeros(masks.shape, dtype=np.int64)
    offset = 0
    for index, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
        labels[index] = np.where(labelled > 0, labelled + offset, 0)
        offset += count
    return labels


def pro_curve(maps_NxHxW, masks_NxHxW, *, thresholds=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-region overlap against false-positive rate, as MVTec AD's ``compute_pro``: (fpr, pro).

    A pixel is flagged at threshold t when its score ≥ t. FPR(t) = flagged share of all defect-free
    pixels; PRO(t) = mean over all regions of the region's flagged share. ``thresholds=None`` uses
    every distinct score (the exact curve). Points run from (0, 0) to (1, 1) with FPR non-decreasing.
    """
    labels = region_labels(masks_NxHxW).ravel()
    scores = np.asarray(maps_NxHxW, dtype=np.float64).ravel()
    normal = labels == 0
    sizes = np.bincount(labels)
    num_regions = sizes.size - 1
    pro_weights = np.where(normal, 0.0, 1.0 / (num_regions * np.maximum(sizes[labels], 1)))
    if thresholds is None:
        levels, group = np.unique(scores, return_inverse=True)
        group = group.ravel() + 1
    else:
        levels = np.sort(np.asarray(thresholds, dtype=np.float64))
        group = np.searchsorted(levels, scores, side="right")

    def at_or_above(weights):
        return np.cumsum(np.bincount(group, weights, minlength=levels.size + 1)[::-1])[::-1]

    flagged_fp, flagged_pro = at_or_above(normal.astype(np.float64)), at_or_above(pro_weights)
    fpr = np.minimum(flagged_fp[1:][::-1] / normal.sum(), 1.0)
    pro = np.minimum(flagged_pro[1:][::-1], 1.0)
    return np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], pro, [1.0]])


def partial_area(fpr: np.ndarray, pro: np.ndarray, *, max_fpr: float = 0.3) -> float:
    """∫₀^max_fpr PRO d FPR / max_fpr, trapezoid rule, PRO linearly interpolated at FPR = max_fpr.

    Linear interpolation between operating points is the expected curve when ties are broken at
    random, as in MVTec AD's ``trapezoid_area``.
    """
    end = np.searchsorted(fpr, max_fpr, side="right")
    x, y = fpr[:end], pro[:end]
    if end < fpr.size and x[-1] < max_fpr:
        step = (max_fpr - x[-1]) / (fpr[end] - x[-1])
        x = np.append(x, max_fpr)
        y = np.append(y, y[-1] + step * (pro[end] - y[-1]))
    return float(np.trapezoid(y, x) / max_fpr)


def fpr_grid_thresholds(maps_NxHxW, masks_NxHxW, *, max_fpr: float = 0.3, num_thresholds: int = 200) -> np.ndarray:
    """Thresholds at FPR ≈ 0, …, max_fpr evenly spaced (quantiles of the defect-free scores), plus one
    just above the largest defect-free score so that the curve's FPR = 0 point is exact."""
    scores = np.asarray(maps_NxHxW, dtype=np.float64).ravel()
    normal_scores = scores[np.asarray(masks_NxHxW).ravel() <= 0]
    levels = np.quantile(normal_scores, 1.0 - np.linspace(0.0, max_fpr, num_thresholds))
    return np.append(levels, np.nextafter(normal_scores.max(), np.inf))


def aupro(
    maps_NxHxW, masks_NxHxW, *, max_fpr: float = 0.3, num_thresholds: int = 200, exact_limit: int = 2**26
) -> float:
    """Area under the PRO curve up to FPR ``max_fpr``, normalised by ``max_fpr`` (perfect = 1).

    Exact (every distinct score a threshold, as MVTec AD's reference) up to ``exact_limit`` pixels,
    about 1000 images of 256²; beyond, ``num_thresholds`` thresholds evenly spaced in FPR, which
    errs by at most about ½ / (num_thresholds − 1). NaN without defect or defect-free pixels.
    """
    masks = np.asarray(masks_NxHxW) > 0
    if not masks.any() or masks.all():
        return float("nan")
    thresholds = None
    if masks.size > exact_limit:
        thresholds = fpr_grid_thresholds(maps_NxHxW, masks, max_fpr=max_fpr, num_thresholds=num_thresholds)
    fpr, pro = pro_curve(maps_NxHxW, masks, thresholds=thresholds)
    return partial_area(fpr, pro, max_fpr=max_fpr)
