"""How often does a local edit change (almost) nothing? The paper's Fig. 1, for any transform and dataset.

``python -m sla_jax.analyze --dataset=ROOT/CATEGORY [--dataset=...] --out=DIR`` applies each transform
``--trials`` times (default 2,000) to training images of each category, computes the soft label of every
edit (SLA, eq. 6-9), and counts an edit as *invalid* when its soft label is below ``--threshold``. Writes
``analysis.json``, ``analysis.md`` and ``analysis.png`` (cumulative invalid count every ``--every`` trials,
and the soft-label histogram, per transform and dataset).
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from sla_jax import data as data_lib
from sla_jax import labels as labels_lib
from sla_jax import transforms as transforms_lib

ANALYZED = ("co", "cp", "cps")


@partial(jax.jit, static_argnames=("name", "chunk"))
def trial_labels(images_uint8: jax.Array, trials_keys: jax.Array, *, name: str, alpha: float, epsilon: float,
                 chunk: int = 50) -> jax.Array:
    """Soft label of one edit per key in ``trials_keys``; trial ``t`` edits image ``t mod N`` of the
    N×H×W×C stack. Edits run ``chunk`` at a time (``lax.map``) to bound memory at 256 px."""
    n = images_uint8.shape[0]

    def one(args):
        t, k = args
        image = images_uint8[t % n].astype(jnp.float32) / 255.0
        edit = transforms_lib.edit_one(k, image, name=name)
        return labels_lib.soft_label(image, edit.images, edit.masks, alpha=alpha, epsilon=epsilon)

    steps = jnp.arange(trials_keys.shape[0])
    return jax.lax.map(one, (steps, trials_keys), batch_size=chunk)


def invalid_counts(labels_T: np.ndarray, *, threshold: float, every: int) -> list[int]:
    """Cumulative number of invalid edits (label < threshold) after every ``every`` trials."""
    invalid = np.cumsum(np.asarray(labels_T) < threshold)
    return [int(invalid[i - 1]) for i in range(every, len(invalid) + 1, every)]


def analyze_images(key: jax.Array, images_uint8: np.ndarray, *, transforms: tuple[str, ...], trials: int,
                   alpha: float, epsilon: float, threshold: float, every: int, bins: int = 20) -> dict:
    """Per transform: the soft labels' summary, cumulative invalid counts and histogram."""
    out = {}
    edges = np.linspace(0.0, 1.0, bins + 1)
    for i, name in enumerate(transforms):
        keys = jax.random.split(jax.random.fold_in(key, i), trials)
        y = np.asarray(trial_labels(jnp.asarray(images_uint8), keys, name=name, alpha=alpha, epsilon=epsilon))
        out[name] = {
            "invalid": int(np.sum(y < threshold)),
            "invalid_fraction": float(np.mean(y < threshold)),
            "cumulative_invalid": invalid_counts(y, threshold=threshold, every=every),
            "exactly_unchanged": int(np.sum(y == 0.0)),
            "mean_label": float(np.mean(y)),
            "median_label": float(np.median(y)),
            "histogram": np.histogram(y, bins=edges)[0].tolist(),
        }
    return out


def plot_analysis(results: dict, path: str, *, every: int, threshold: float) -> None:
    """One row per dataset: cumulative invalid edits against trials, and the soft-label histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        row[0].set(title=f"{dataset}: invalid edits (soft label < {threshold})", xlabel="trials",
                   ylabel="cumulative invalid")
        row[0].legend(fontsize=8)
        row[1].axvline(threshold, color="grey", ls="--", lw=0.8)
        row[1].set(title=f"{dataset}: soft labels", xlabel="soft label y", ylabel="edits", yscale="log")
        row[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown_table(results: dict) -> str:
    every = results["every"]
    lines = [f"Invalid edits (soft label < {results['threshold']}, α = {results['alpha']}, ε = {results['epsilon']}), "
             f"{results['trials']} trials per transform on {results['images_per_dataset']} training image(s) per "
             f"dataset at {results['image_size']} px.", "",
             "| dataset | transform | invalid | fraction | unchanged (y = 0) | mean y | cumulative every "
             f"{every} |", "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for dataset, entry in results["datasets"].items():
        for name, r in entry["transforms"].items():
            lines.append(f"| {dataset} | {name.upper()} | {r['invalid']} | {r['invalid_fraction']:.1%} | "
                         f"{r['exactly_unchanged']} | {r['mean_label']:.3f} | "
                         f"{', '.join(map(str, r['cumulative_invalid']))} |")
    return "\n".join(lines) + "\n"


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    if not f.dataset:
        raise app.UsageError("give at least one --dataset=ROOT/CATEGORY (a category folder in MVTec AD layout)")
    unknown = set(f.transforms) - set(transforms_lib.TRANSFORM_NAMES)
    if unknown:
        raise app.UsageError(f"--transforms: unknown {sorted(unknown)}; choose from {transforms_lib.TRANSFORM_NAMES}")
    if f.trials < f.every or f.every < 1:
        raise app.UsageError("--trials must be >= --every >= 1")
    os.makedirs(f.out, exist_ok=True)
    results = {"trials": f.trials, "every": f.every, "threshold": f.threshold, "alpha": f.alpha,
               "epsilon": f.epsilon, "image_size": f.image_size, "images_per_dataset": f.images, "seed": f.seed,
               "command": " ".join(["python -m sla_jax.analyze", *sys.argv[1:]]), "datasets": {}}
    key = jax.random.key(f.seed)
    for i, folder in enumerate(f.dataset):
        folder = os.path.abspath(folder)
        root, category = os.path.dirname(folder), os.path.basename(folder)
        started = time.perf_counter()
        try:
            train = data_lib.load_split(root, category=category, split="train", image_size=f.image_size,
                                        require_masks=False)
        except data_lib.DataError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)
        pick = np.random.default_rng(f.seed).choice(len(train.images), size=min(f.images, len(train.images)),
                                                    replace=False)
        per = analyze_images(jax.random.fold_in(key, i), train.images[np.sort(pick)], transforms=tuple(f.transforms),
                             trials=f.trials, alpha=f.alpha, epsilon=f.epsilon, threshold=f.threshold, every=f.every)
        results["datasets"][category] = {"path": folder, "images": [train.paths[j] for j in np.sort(pick)],
                                         "transforms": per, "seconds": time.perf_counter() - started}
        summary = ", ".join(f"{n.upper()} {r['invalid']}/{f.trials}" for n, r in per.items())
        print(f"{category}: invalid edits {summary} ({time.perf_counter() - started:.1f} s)")
    with open(os.path.join(f.out, "analysis.json"), "w", encoding="utf-8") as out:
        json.dump(results, out, indent=2)
    with open(os.path.join(f.out, "analysis.md"), "w", encoding="utf-8") as out:
        out.write(markdown_table(results))
    plot_analysis(results, os.path.join(f.out, "analysis.png"), every=f.every, threshold=f.threshold)
    print(f"written: {os.path.join(os.path.abspath(f.out), 'analysis.png')} (and .json, .md)")


if __name__ == "__main__":
    flags.DEFINE_multi_string("dataset", [], "A category folder in MVTec AD layout (ROOT/CATEGORY); repeatable.")
    flags.DEFINE_list("transforms", list(ANALYZED), "Transforms to analyse (co, cp, cps, cpf).")
    flags.DEFINE_integer("trials", 2000, "Edits per transform and dataset (the paper: 2,000).")
    flags.DEFINE_integer("every", 500, "Report the cumulative invalid count every this many trials.")
    flags.DEFINE_integer("images", 4, "Training images per dataset; trial t edits image t mod this.")
    flags.DEFINE_integer("image_size", 256, "Images are resized to this side (the paper: 256).")
    flags.DEFINE_float("threshold", 0.5, "An edit is invalid when its soft label is below this.")
    flags.DEFINE_float("alpha", 10.0, "SLA α.")
    flags.DEFINE_float("epsilon", 0.02, "SLA ε.")
    flags.DEFINE_integer("seed", 0, "PRNG seed for image choice and edits.")
    flags.DEFINE_string("out", "runs/analysis", "Output folder.")
    app.run(main)
