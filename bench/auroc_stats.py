"""AUROC statistics for the benchmarks: the stratified bootstrap of one run's test images, and the paired
bootstrap of two runs scored on the same images (``bench/auroc_spread.py``, ``bench/peer_cutpaste.py``)."""

from __future__ import annotations

import os

import numpy as np
from scipy import stats

from sla_jax.outputs.files import read_scores


def auroc(defective, good, axis=-1):
    """P(score of a defective image > score of a good one), ties counted half: U / (n_defective · n_good)."""
    u = stats.mannwhitneyu(defective, good, axis=axis, method="asymptotic").statistic
    return u / (np.shape(defective)[axis] * np.shape(good)[axis])


def strata(labels_N) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the defective (label 1) and the good (label 0) test images, the bootstrap's two strata;
    ValueError below two of either."""
    labels_N = np.asarray(labels_N)
    defective, good = np.flatnonzero(labels_N == 1), np.flatnonzero(labels_N == 0)
    if len(defective) < 2 or len(good) < 2:
        raise ValueError(f"need at least 2 defective and 2 good test images, got {len(defective)} and {len(good)}")
    return defective, good


def auroc_spread(scores, labels, *, seed: int, resamples: int = 2000) -> dict:
    """The AUROC of ``scores`` against ``labels`` (1 = defective) and its stratified bootstrap spread."""
    scores = np.asarray(scores, float)
    defective_idx, good_idx = strata(labels)
    defective, good = scores[defective_idx], scores[good_idx]
    boot = stats.bootstrap(
        (defective, good),
        auroc,
        n_resamples=resamples,
        vectorized=True,
        paired=False,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return {
        "image_auroc": float(auroc(defective, good)),
        "bootstrap_sd": float(boot.standard_error),
        "ci95": [float(boot.confidence_interval.low), float(boot.confidence_interval.high)],
        "defective": int(len(defective)),
        "good": int(len(good)),
        "resamples": resamples,
    }


def aligned_scores(workdirs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(scores_RxN, labels_N) of runs scored on the same test images, matched by the image's real path;
    ValueError when the runs' image sets or labels differ."""
    tables = []
    for workdir in workdirs:
        scores, labels, _, paths = read_scores(os.path.join(workdir, "scores.csv"), with_paths=True)
        tables.append({os.path.realpath(p): (int(y), float(v)) for p, y, v in zip(paths, labels, scores)})
    keys = sorted(tables[0])
    for workdir, table in zip(workdirs[1:], tables[1:]):
        if sorted(table) != keys:
            raise ValueError(f"{workdir} scored other test images than {workdirs[0]}")
        if any(table[k][0] != tables[0][k][0] for k in keys):
            raise ValueError(f"{workdir} labels some test images differently from {workdirs[0]}")
    return (np.asarray([[t[k][1] for k in keys] for t in tables]), np.asarray([tables[0][k][0] for k in keys]))


def paired_difference(scores_a_SxN, scores_b_SxN, labels_N, *, seed: int, resamples: int = 2000) -> dict:
    """The mean over S pairs of runs of AUROC(a) − AUROC(b), all scored on the same N test images, and its
    stratified bootstrap: each resample draws defective and good images once for every run, so the luck of the
    test set that the two sides share cancels out of the difference, and is not counted as a difference."""
    a, b = np.atleast_2d(np.asarray(scores_a_SxN, float)), np.atleast_2d(np.asarray(scores_b_SxN, float))
    defective, good = strata(labels_N)

    def per_pair(defective_idx, good_idx):
        d, g = np.asarray(defective_idx, int), np.asarray(good_idx, int)
        return auroc(a[:, d], a[:, g]) - auroc(b[:, d], b[:, g])

    def mean_difference(defective_idx, good_idx, axis=-1):
        return per_pair(defective_idx, good_idx).mean(axis=0)

    boot = stats.bootstrap(
        (defective, good),
        mean_difference,
        n_resamples=resamples,
        vectorized=True,
        paired=False,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    observed = per_pair(defective, good)
    resampled = boot.bootstrap_distribution
    # ties at 0 count half to each side: near AUROC 1 many resamples give both runs the same AUROC
    tie = 0.5 * np.mean(resampled == 0)
    p_two_sided = min(1.0, 2 * min(np.mean(resampled < 0) + tie, np.mean(resampled > 0) + tie))
    return {
        "pairs": int(a.shape[0]),
        "difference": float(observed.mean()),
        "per_pair": observed.tolist(),
        "bootstrap_sd": float(boot.standard_error),
        "ci95": [float(boot.confidence_interval.low), float(boot.confidence_interval.high)],
        "p_two_sided": float(p_two_sided),
        "defective": int(len(defective)),
        "good": int(len(good)),
        "resamples": resamples,
    }
