"""How often does a local edit change (almost) nothing? The paper's Fig. 1, for any transform and dataset.

The library behind ``python -m sla_jax.analyze --dataset=ROOT/CATEGORY [--dataset=...] --out=DIR``: it applies
each transform
``--trials`` times (default 2,000) to training images of each category, computes the soft label of every
edit (SLA, eq. 6-9), and counts an edit as *invalid* when its soft label is below ``--threshold``. Writes
``analysis.json``, ``analysis.md`` and ``analysis.png`` (cumulative invalid count every ``--every`` trials,
and the soft-label histogram, per transform and dataset).
"""

from __future__ import annotations

import os
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from sla_jax import data as data_lib
from sla_jax import labels as labels_lib
from sla_jax import transforms as transforms_lib
from sla_jax.outputs import files

ANALYZED = ("co", "cp", "cps")


@partial(jax.jit, static_argnames=("name", "chunk"))
def trial_labels(
    images_uint8: jax.Array, trials_keys: jax.Array, *, name: str, alpha: float, epsilon: float, chunk: int = 50
) -> jax.Array:
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


def analyze_images(
    key: jax.Array,
    images_uint8: np.ndarray,
    *,
    transforms: tuple[str, ...],
    trials: int,
    alpha: float,
    epsilon: float,
    threshold: float,
    every: int,
    bins: int = 20,
) -> dict:
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


def analyze_folders(
    folders,
    *,
    transforms: tuple[str, ...] = ANALYZED,
    trials: int = 2000,
    every: int = 500,
    images: int = 4,
    image_size: int = 256,
    threshold: float = 0.5,
    alpha: float = 10.0,
    epsilon: float = 0.02,
    seed: int = 0,
    out_dir: str,
    command: str = "",
    log=print,
) -> dict:
    """Analyse the training images of each category folder (``ROOT/CATEGORY``) and write analysis.json,
    .md and .png into ``out_dir``; returns the results. A folder that cannot be read raises DataError
    before ``out_dir`` is created."""
    results = {
        "trials": trials,
        "every": every,
        "threshold": threshold,
        "alpha": alpha,
        "epsilon": epsilon,
        "image_size": image_size,
        "images_per_dataset": images,
        "seed": seed,
        "command": command,
        "datasets": {},
    }
    key = jax.random.key(seed)
    splits = []
    for folder in folders:
        folder = os.path.abspath(folder)
        root, category = os.path.dirname(folder), os.path.basename(folder)
        splits.append(
            (
                folder,
                category,
                data_lib.load_split(root, category=category, split="train", image_size=image_size, require_masks=False),
            )
        )
    for i, (folder, category, train) in enumerate(splits):
        started = time.perf_counter()
        pick = np.sort(
            np.random.default_rng(seed).choice(len(train.images), size=min(images, len(train.images)), replace=False)
        )
        per = analyze_images(
            jax.random.fold_in(key, i),
            train.images[pick],
            transforms=tuple(transforms),
            trials=trials,
            alpha=alpha,
            epsilon=epsilon,
            threshold=threshold,
            every=every,
        )
        results["datasets"][category] = {
            "path": folder,
            "images": [train.paths[j] for j in pick],
            "transforms": per,
            "seconds": time.perf_counter() - started,
        }
        summary = ", ".join(f"{n.upper()} {r['invalid']}/{trials}" for n, r in per.items())
        log(f"{category}: invalid edits {summary} ({time.perf_counter() - started:.1f} s)")
    os.makedirs(out_dir, exist_ok=True)
    files.write_analysis(results, out_dir)
    return results
