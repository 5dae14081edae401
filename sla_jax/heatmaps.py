"""Defect-localization figures: test images with their anomaly maps and ground-truth outlines.

Every panel uses one colour scale, stated on a single colourbar, so that panels can be compared:
a map that looks hot is hot relative to the whole test set, not just to itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

CMAP = "jet"
OVERLAY_ALPHA = 0.45
OUTLINE_COLOR = "lime"
OUTLINE_WIDTH = 1.2
DPI = 110
PANEL_INCHES = 2.4


def _spread(indices: Sequence[int], count: int) -> list[int]:
    """``count`` of ``indices`` evenly spaced from the first, so every stretch (defect type) shows."""
    n = len(indices)
    return [int(indices[i * n // count]) for i in range(count)] if count > 0 else []


def select_images(masks_NxHxW: np.ndarray, *, max_images: int = 16) -> list[int]:
    """Indices to show, ascending: all if they fit, else mostly defective and about a quarter good.

    Deterministic (no randomness), so figures from reruns show the same images.
    """
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    masks = np.asarray(masks_NxHxW)
    n = len(masks)
    if n <= max_images:
        return list(range(n))
    has_defect = masks.reshape(n, -1).any(axis=1)
    defective = np.flatnonzero(has_defect)
    good = np.flatnonzero(~has_defect)
    good_quota = max(max_images // 4, 1) if max_images > 1 else 0
    n_good = min(len(good), good_quota)
    n_defective = min(len(defective), max_images - n_good)
    n_good = min(len(good), max_images - n_defective)
    return sorted(_spread(defective, n_defective) + _spread(good, n_good))


def shared_scale(maps_NxHxW: np.ndarray, *, percentile: float = 99.5) -> tuple[float, float]:
    """(vmin, vmax) for all maps: the minimum and a high percentile, so one outlier cannot wash out the rest."""
    values = np.asarray(maps_NxHxW, dtype=np.float64)
    vmin = float(np.nanmin(values))
    vmax = float(np.nanpercentile(values, percentile))
    if not vmax > vmin:
        vmax = vmin + max(abs(vmin) * 1e-6, 1e-6)
    return vmin, vmax


def plot_heatmap_grid(images_NxHxWx3: np.ndarray, masks_NxHxW: np.ndarray, maps_NxHxW: np.ndarray, *,
                      path: str, titles: Sequence[str] | None = None, max_images: int = 16, columns: int = 4,
                      title: str = "", score_label: str = "anomaly score",
                      scale: tuple[float, float] | None = None) -> list[int]:
    """Save a grid of images overlaid with their anomaly maps and defect outlines; return the indices shown.

    The map is drawn in ``jet`` over the image, the mask's 0.5 contour outlines the true defect
    (none for good images), and one colourbar states the scale shared by every panel (``scale``, or
    :func:`shared_scale` of the maps).
    """
    images = np.asarray(images_NxHxWx3)
    masks = np.asarray(masks_NxHxW)
    maps = np.asarray(maps_NxHxW, dtype=np.float32)
    if not len(images) == len(masks) == len(maps):
        raise ValueError(f"need as many masks and maps as images, got {len(images)}, {len(masks)}, {len(maps)}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"need one title per image, got {len(titles)} for {len(images)}")
    chosen = select_images(masks, max_images=max_images)
    norm = Normalize(*(scale or shared_scale(maps)))
    n_cols = max(1, min(columns, len(chosen)))
    n_rows = max(1, math.ceil(len(chosen) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, dpi=DPI, layout="constrained",
                             figsize=(PANEL_INCHES * n_cols + 1.0, PANEL_INCHES * n_rows + 0.5))
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, i in zip(axes.ravel(), chosen):
        _draw_panel(ax, images[i], masks[i], maps[i], norm=norm, label=titles[i] if titles is not None else f"#{i}")
    extend = "max" if maps.size and float(np.nanmax(maps)) > norm.vmax else "neither"
    fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), ax=axes.ravel().tolist(), shrink=0.9, extend=extend,
                 label=f"{score_label} (shared scale)")
    if title:
        fig.suptitle(title)
    fig.savefig(path)
    plt.close(fig)
    return chosen


def _draw_panel(ax, image_HxWx3: np.ndarray, mask_HxW: np.ndarray, map_HxW: np.ndarray, *,
                norm: Normalize, label: str) -> None:
    """One panel: the image, its map overlaid and its mask outlined, both stretched over the image's pixels."""
    height, width = image_HxWx3.shape[:2]
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    ax.imshow(image_HxWx3, extent=extent)
    ax.imshow(map_HxW, cmap=CMAP, norm=norm, alpha=OVERLAY_ALPHA, extent=extent)
    if np.any(mask_HxW):
        ax.contour(np.asarray(mask_HxW, dtype=np.float32), levels=[0.5], colors=OUTLINE_COLOR,
                   linewidths=OUTLINE_WIDTH, extent=extent, origin="upper")
    ax.set_title(label, fontsize=7)
    ax.set_axis_off()
