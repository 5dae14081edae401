"""The figures of studies, as PNG: the benchmark chart, image AUROC against α (an ensemble's sweep), the
invalid-edit analysis (``python -m sla_jax.analyze``)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sla_jax.outputs import atomic  # noqa: E402

# The paper's Table 4 (MVTec AD mean image AUROC %, CPS-SLA, 256 px): drawn for reference only.
PAPER_TABLE4 = {1: 67.9, 2: 79.5, 5: 91.2, 7: 92.7, 10: 94.2, 15: 94.1}


def plot_benchmark(summary: dict, path: str, *, title: str) -> None:
    """Image AUROC per category, one bar per setting (mean, with the seed range as an error bar)."""
    categories = [*summary["categories"], "mean over categories"]
    settings = summary["settings"]
    width = 0.8 / max(1, len(settings))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(categories) * max(1, len(settings)) ** 0.5), 4), dpi=110)
    for i, setting in enumerate(settings):
        cells = [summary["table"].get(c, {}).get(setting) for c in categories]
        x = np.arange(len(categories)) + (i - (len(settings) - 1) / 2) * width
        means = [c["mean"] if c else np.nan for c in cells]
        seeded = [c if c and name != categories[-1] else None for c, name in zip(cells, categories)]  # mean: no bar
        low = [c["mean"] - min(c["values"]) if c else np.nan for c in seeded]
        high = [max(c["values"]) - c["mean"] if c else np.nan for c in seeded]
        ax.bar(x, means, width, yerr=[low, high], capsize=2, label=setting)
    ax.set_xticks(np.arange(len(categories)), categories, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel="image AUROC", ylim=(0.4, 1.0), title=title)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    if len(settings) > 1:  # below the axes: sweep labels are long
        ax.legend(
            fontsize=7,
            ncol=2 if max(map(len, settings)) > 24 else min(len(settings), 4),
            loc="upper center",
            bbox_to_anchor=(0.5, -0.22),
            frameon=False,
        )
    fig.tight_layout()
    atomic.save_figure(fig, path, bbox_inches="tight")
    plt.close(fig)


SWEEP_PANELS = (  # (metric, its mean and std keys in a sweep row, axis label)
    ("image_auroc", "mean", "std", "image AUROC"),
    ("pixel_auroc", "pixel_auroc_mean", "pixel_auroc_std", "pixel AUROC"),
    ("pixel_aupro", "pixel_aupro_mean", "pixel_aupro_std", "AUPRO (FPR ≤ 0.3)"),
)


def plot_sweep(rows: list[dict], path: str, *, title: str) -> None:
    """Each metric the rows hold against α (image AUROC; for patch models also pixel AUROC and AUPRO), one
    curve per label mode and ε (mean ± std over seeds, dots: each seed), hard labels as a band; the paper's
    Table 4 beside the image AUROC for reference. Undefined values are left out."""
    panels = [p for p in SWEEP_PANELS if any(p[0] in r for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 if len(panels) == 1 else 4.6 * len(panels), 4), dpi=120)
    axes = np.atleast_1d(axes)
    for ax, (metric, mean, std, label) in zip(axes, panels):
        _sweep_panel(ax, rows, metric=metric, mean=mean, std=std)
        if metric == "image_auroc":
            ax.plot(
                list(PAPER_TABLE4),
                [v / 100 for v in PAPER_TABLE4.values()],
                color="grey",
                ls=":",
                marker="x",
                label="paper Table 4 (MVTec AD mean, CPS, 256 px)",
            )
        ax.set(xlabel="α (SLA steepness)", ylabel=label, title=title if len(panels) == 1 else label)
        ax.legend(fontsize=7, loc="lower right")
    if len(panels) > 1:
        fig.suptitle(title)
    fig.tight_layout()
    atomic.save_figure(fig, path)
    plt.close(fig)


def _sweep_panel(ax, rows: list[dict], *, metric: str, mean: str, std: str) -> None:
    by_curve: dict[tuple, list] = {}
    for r in rows:
        if r["alpha"] is not None and r.get(mean) is not None:
            by_curve.setdefault((r["labels"], r["epsilon"]), []).append(r)
    for (mode, eps), curve in by_curve.items():
        curve = sorted(curve, key=lambda r: r["alpha"])
        line = ax.errorbar(
            [r["alpha"] for r in curve],
            [r[mean] for r in curve],
            yerr=[r[std] for r in curve],
            marker="o",
            capsize=3,
            label=f"{mode} labels, ε={eps:g} (mean ± std over seeds)",
        )
        for r in curve:
            ax.scatter([r["alpha"]] * len(r[metric]), r[metric], s=10, alpha=0.5, color=line[0].get_color())
    for r in rows:
        if r["labels"] == "hard" and r.get(mean) is not None:
            ax.axhline(r[mean], color="black", ls="--", lw=1, label=f"hard labels (mean {r[mean]:.3f})")
            if r[std]:
                ax.axhspan(r[mean] - r[std], r[mean] + r[std], color="black", alpha=0.08)


def plot_analysis(results: dict, path: str, *, every: int, threshold: float) -> None:
    """One row per dataset: cumulative invalid edits against trials, and the soft-label histograms."""
    names = list(results["datasets"])
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 3.2 * len(names)), dpi=110, squeeze=False)
    bins = None
    for row, dataset in zip(axes, names):
        per = results["datasets"][dataset]["transforms"]
        for name, r in per.items():
            xs = [every * (i + 1) for i in range(len(r["cumulative_invalid"]))]
            row[0].plot(xs, r["cumulative_invalid"], marker="o", label=f"{name.upper()} ({r['invalid_fraction']:.1%})")
            bins = np.linspace(0, 1, len(r["histogram"]) + 1)
            row[1].stairs(r["histogram"], bins, label=name.upper())
        most = max(max(r["cumulative_invalid"], default=0) for r in per.values())
        row[0].set(
            title=f"{dataset}: invalid edits (soft label < {threshold})",
            xlabel="trials",
            ylabel="cumulative invalid",
            ylim=(0, max(5, 1.1 * most)),
            xlim=(0, None),
        )
        if most == 0:  # a flat line at 0 on an axis from 0: said in words too
            row[0].text(
                0.5, 0.5, "no invalid edit in any trial", transform=row[0].transAxes, ha="center", color="dimgrey"
            )
        row[0].legend(fontsize=8)
        row[1].axvline(threshold, color="grey", ls="--", lw=0.8)
        row[1].set(
            title=f"{dataset}: soft labels",
            xlabel="soft label y",
            ylabel="edits (log scale)",
            yscale="log",
            xlim=(0, 1),
        )
        row[1].set_ylim(bottom=0.8)
        row[1].legend(fontsize=8)
    fig.tight_layout()
    atomic.save_figure(fig, path)
    plt.close(fig)
