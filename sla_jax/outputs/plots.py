"""The figures of a run, as PNG: ROC curves, score histograms, training curves, defect-map grids (the
studies' charts are in :mod:`sla_jax.outputs.study_plots`).

The defect-map grids use one colour scale for every panel, stated on a single colourbar, so that panels
can be compared: a map that looks hot is hot relative to the whole test set, not just to itself.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from sklearn.metrics import auc as sk_auc  # noqa: E402
from sklearn.metrics import roc_curve

from sla_jax.outputs import atomic  # noqa: E402

CMAP = "jet"
OVERLAY_ALPHA = 0.45
OUTLINE_COLOR = "lime"
OUTLINE_WIDTH = 1.2
DPI = 110
PANEL_INCHES = 2.4


def number(value: float) -> str:
    """A score as people read it, the same in every figure, title and table: four significant digits in
    fixed notation from 0.001 to a million (``15,640``, ``40,000``, ``0.01234``), scientific outside."""
    v = float(value)
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    magnitude = math.floor(math.log10(abs(float(f"{v:.4g}"))))  # of the rounded value: 9.9996 → 10.00
    if -3 <= magnitude < 6:
        return f"{v:,.{max(0, 3 - magnitude)}f}"
    return f"{v:.3e}"


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


def map_label(density: str = "gde", *, patch_size: int | None = None) -> str:
    """What a defect map's value is, for its colour bar."""
    patches = f"{patch_size} px patches" if patch_size else "patches"
    kind = {"gde": "squared Mahalanobis distances (GDE)", "kde": "KDE scores"}.get(density, f"{density} scores")
    return f"defect score of a pixel: the {kind} of the\n{patches} covering it, Gaussian-weighted and summed (RFU)"


def threshold_scale(threshold: float | None) -> tuple[float, float] | None:
    """The colour scale of every defect map of a run, in ``heatmaps.png`` and ``predict``'s overlays alike:
    0 to twice the decision threshold, so the threshold sits mid-scale (green in jet) and red means well above
    it. None when the threshold is not a positive number (the maps' own range is then used)."""
    if threshold is None or not np.isfinite(threshold) or threshold <= 0:
        return None
    return 0.0, 2.0 * float(threshold)


def plot_heatmap_grid(
    images_NxHxWx3: np.ndarray,
    masks_NxHxW: np.ndarray,
    maps_NxHxW: np.ndarray,
    *,
    path: str,
    titles: Sequence[str] | None = None,
    max_images: int = 16,
    columns: int = 4,
    title: str = "",
    score_label: str = "anomaly score",
    threshold: float | None = None,
    scale: tuple[float, float] | None = None,
) -> list[int]:
    """Save a grid of images overlaid with their anomaly maps and defect outlines; return the indices shown.

    The map is drawn in ``jet`` over the image, the mask's 0.5 contour outlines the true defect
    (none for good images), and one colourbar states the scale shared by every panel: ``scale``, else
    :func:`threshold_scale` of ``threshold`` (marked on the colour bar), else :func:`shared_scale` of the maps.
    """
    images = np.asarray(images_NxHxWx3)
    masks = np.asarray(masks_NxHxW)
    maps = np.asarray(maps_NxHxW, dtype=np.float32)
    if not len(images) == len(masks) == len(maps):
        raise ValueError(f"need as many masks and maps as images, got {len(images)}, {len(masks)}, {len(maps)}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"need one title per image, got {len(titles)} for {len(images)}")
    chosen = select_images(masks, max_images=max_images)
    norm = Normalize(*(scale or threshold_scale(threshold) or shared_scale(maps)))
    n_cols = max(1, min(columns, len(chosen)))
    n_rows = max(1, math.ceil(len(chosen) / n_cols))
    # The colour-bar label wrapped to the bar's height: a one-image figure (predict's overlays) is short.
    label = "\n".join(
        textwrap.fill(part, width=int(11 * PANEL_INCHES * n_rows * 0.9))
        for part in (score_label + (", one scale for all" if len(chosen) > 1 else "")).split("\n")
    )
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        squeeze=False,
        dpi=DPI,
        layout="constrained",
        figsize=(PANEL_INCHES * n_cols + 0.9 + 0.2 * label.count("\n"), PANEL_INCHES * n_rows + 0.6),
    )
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, i in zip(axes.ravel(), chosen):
        _draw_panel(ax, images[i], masks[i], maps[i], norm=norm, label=titles[i] if titles is not None else f"#{i}")
    extend = "max" if maps.size and float(np.nanmax(maps)) > norm.vmax else "neither"
    bar = fig.colorbar(
        ScalarMappable(norm=norm, cmap=CMAP),
        ax=axes.ravel().tolist(),
        shrink=0.9,
        extend=extend,
        label=label,
        format=FuncFormatter(lambda v, _: number(v) if v else "0"),
    )
    if threshold is not None and norm.vmin <= threshold <= norm.vmax:
        bar.ax.axhline(threshold, color="white", lw=3)
        bar.ax.axhline(threshold, color="black", lw=1.5)
        bar.ax.text(
            -0.15,
            threshold,
            f"threshold {number(threshold)}",
            transform=bar.ax.get_yaxis_transform(),
            ha="right",
            va="center",
            fontsize=7,
            rotation=90,
        )
    if title:
        fig.suptitle(title)
    atomic.save_figure(fig, path)
    plt.close(fig)
    return chosen


def _draw_panel(
    ax, image_HxWx3: np.ndarray, mask_HxW: np.ndarray, map_HxW: np.ndarray, *, norm: Normalize, label: str
) -> None:
    """One panel: the image, its map overlaid and its mask outlined, both stretched over the image's pixels."""
    height, width = image_HxWx3.shape[:2]
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    ax.imshow(image_HxWx3, extent=extent)
    ax.imshow(map_HxW, cmap=CMAP, norm=norm, alpha=OVERLAY_ALPHA, extent=extent)
    if np.any(mask_HxW):
        ax.contour(
            np.asarray(mask_HxW, dtype=np.float32),
            levels=[0.5],
            colors=OUTLINE_COLOR,
            linewidths=OUTLINE_WIDTH,
            extent=extent,
            origin="upper",
        )
    ax.set_title(label, fontsize=7)
    ax.set_axis_off()


def plot_roc(scores: np.ndarray, split, path: str, *, title: str) -> None:
    """ROC curves (overall and per defect type) as a PNG, readable at AUROC 1.0: the axes leave a margin so
    a perfect curve does not hide in the frame, the overall curve is drawn on top in black, and when every
    curve is perfect a note says that they coincide."""
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    types = np.asarray(split.defect_types)
    curves = [(name, (types == name) | (split.labels == 0)) for name in sorted(set(split.defect_types) - {"good"})]
    curves.append(("all defects", np.ones_like(split.labels, bool)))  # last: drawn on top
    aurocs = []
    for name, keep in curves:
        if len(set(split.labels[keep])) < 2:
            continue
        fpr, tpr, _ = roc_curve(split.labels[keep], scores[keep])
        aurocs.append(float(sk_auc(fpr, tpr)))
        overall = name == "all defects"
        ax.plot(
            fpr,
            tpr,
            lw=2.6 if overall else 1.6,
            ls="-" if overall else "--",
            zorder=3 if overall else 2,
            color="black" if overall else None,
            alpha=0.75 if overall else 1.0,
            label=f"{name} (AUROC {aurocs[-1]:.3f})",
        )
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", zorder=1)
    ax.set(
        xlabel="false positive rate (good images flagged)",
        ylabel="true positive rate (defects found)",
        title=title,
        xlim=(-0.03, 1.01),
        ylim=(-0.01, 1.03),
    )
    if aurocs:
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], loc="lower right", fontsize=8)  # the overall curve first
        if min(aurocs) == 1.0:
            ax.text(
                0.5,
                0.45,
                "every curve is perfect and they coincide:\nevery defective image scores above every good one",
                ha="center",
                va="center",
                fontsize=8.5,
                color="dimgrey",
            )
    else:  # a test set of one class: say so instead of an empty frame and an empty legend
        ax.text(
            0.5,
            0.55,
            "no ROC curve: the test set holds\nonly good or only defective images",
            ha="center",
            va="center",
            fontsize=10,
            bbox=dict(facecolor="white", edgecolor="grey"),
        )
    fig.tight_layout()
    atomic.save_figure(fig, path)
    plt.close(fig)


def plot_score_histogram(
    scores: np.ndarray,
    labels: np.ndarray,
    path: str,
    *,
    threshold: float | None,
    title: str,
    xlabel: str = "anomaly score (squared Mahalanobis distance)",
) -> None:
    """Histograms of the anomaly scores of good and of defective test images, with the threshold; on a
    log axis when the positive scores span more than two decades (squared Mahalanobis distances of
    defects often do, and linear bins then put every good image in the first bin)."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    low, high = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 0.0)
    logarithmic = low > 0 and high > 100 * low
    bins = np.geomspace(low, high, 31) if logarithmic else np.histogram_bin_edges(scores, bins=30)
    if logarithmic:
        ax.set_xscale("log")
    for value, name, color in ((0, "good", "tab:blue"), (1, "defective", "tab:red")):
        chosen = scores[labels == value]
        if len(chosen):
            ax.hist(chosen, bins=bins, alpha=0.55, color=color, label=f"{name} ({len(chosen)})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="black", ls="--", lw=1.2, label=f"threshold {number(threshold)}")
    ax.set(xlabel=xlabel, ylabel="test images", title=title)
    if not logarithmic:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: number(v) if v else "0"))
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic.save_figure(fig, path)
    plt.close(fig)


def plot_training(records: Sequence[dict], path: str, *, title: str) -> bool:
    """Pretext loss and accuracy against the step from ``metrics.jsonl``; False when there is nothing."""
    records = [r for r in records if "step" in r and "loss" in r]
    if not records:
        return False
    steps = [r["step"] for r in records]
    mean = lambda v: float(np.mean(v))  # noqa: E731  (ensembles log one value per member)
    fig, ax = plt.subplots(figsize=(6.6, 4.0), dpi=110, layout="constrained")
    ax.plot(steps, [mean(r["loss"]) for r in records], color="tab:blue", label="loss")
    ax.set(xlabel="step", ylabel="pretext loss", title=title)
    other = ax.twinx()
    other.plot(steps, [mean(r["accuracy"]) for r in records], color="tab:orange", label="accuracy")
    if "mean_label" in records[0]:
        other.plot(steps, [mean(r["mean_label"]) for r in records], color="tab:green", ls=":", label="mean soft label")
    if "invalid_fraction" in records[0]:
        other.plot(
            steps,
            [mean(r["invalid_fraction"]) for r in records],
            color="tab:red",
            ls="--",
            label="invalid edits (soft label < 0.5)",
        )
    other.set(ylabel="fraction", ylim=(0, 1.02))
    lines = ax.get_legend_handles_labels(), other.get_legend_handles_labels()
    fig.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=8, loc="outside lower center", ncol=4)
    atomic.save_figure(fig, path)
    plt.close(fig)
    return True
