"""How much of an image AUROC is the test set's luck? A stratified bootstrap of each run's test images.

``python bench/auroc_spread.py --workdir=RUN [--workdir=...] --out=DIR`` reads each training run's
``scores.csv`` and resamples its defective and its good test images separately (scipy's ``bootstrap``,
AUROC as the Mann–Whitney U over the pair count, ties counted half), so every resample keeps the test set's
sizes. Writes ``DIR/auroc_spread.{json,md}``: per run the AUROC, the bootstrap standard deviation and a
95 % percentile interval: how precisely this test set measures the run's AUROC as a property of the
category. Two runs scored on the same images share part of this luck, so comparing them needs a paired test
on those images besides this spread.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
from sla_jax.outputs.files import read_scores  # noqa: E402


def auroc(defective, good, axis=-1):
    """P(score of a defective image > score of a good one), ties counted half: U / (n_defective · n_good)."""
    u = stats.mannwhitneyu(defective, good, axis=axis, method="asymptotic").statistic
    return u / (np.shape(defective)[axis] * np.shape(good)[axis])


def auroc_spread(scores, labels, *, seed: int, resamples: int = 2000) -> dict:
    """The AUROC of ``scores`` against ``labels`` (1 = defective) and its stratified bootstrap spread."""
    scores, labels = np.asarray(scores, float), np.asarray(labels)
    defective, good = scores[labels == 1], scores[labels == 0]
    if len(defective) < 2 or len(good) < 2:
        raise ValueError(f"need at least 2 defective and 2 good test images, got {len(defective)} and {len(good)}")
    boot = stats.bootstrap((defective, good), auroc, n_resamples=resamples, vectorized=True, paired=False,
                           confidence_level=0.95, method="percentile", rng=np.random.default_rng(seed))
    return {"image_auroc": float(auroc(defective, good)), "bootstrap_sd": float(boot.standard_error),
            "ci95": [float(boot.confidence_interval.low), float(boot.confidence_interval.high)],
            "defective": int(len(defective)), "good": int(len(good)), "resamples": resamples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", action="append", required=True, help="a training run's folder (has scores.csv)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/auroc_spread")
    args = parser.parse_args()
    rows = []
    for workdir in args.workdir:
        path = os.path.join(workdir, "scores.csv")
        if not os.path.isfile(path):
            sys.exit(f"{path} not found: --workdir must be a finished run's folder (python -m sla_jax.evaluate "
                     f"--workdir={workdir} writes it)")
        scores, labels, _ = read_scores(path)
        rows.append({"workdir": workdir, **auroc_spread(scores, labels, seed=args.seed, resamples=args.resamples)})
    command = " ".join(["python bench/auroc_spread.py", *sys.argv[1:]])
    common.write_json(os.path.join(args.out, "auroc_spread.json"),
                      {"command": command, "machine": common.machine(), "runs": rows})
    shown = [{**r, "interval": f"{r['ci95'][0]:.4f}–{r['ci95'][1]:.4f}"} for r in rows]
    text = (f"Stratified bootstrap of the test images ({args.resamples} resamples). Command: `{command}`\n\n"
            + common.table(shown, [("workdir", "run", ""), ("defective", "defective", "d"), ("good", "good", "d"),
                                   ("image_auroc", "image AUROC", ".4f"), ("bootstrap_sd", "bootstrap sd", ".4f"),
                                   ("interval", "95 % interval", "")]) + "\n")
    with open(os.path.join(args.out, "auroc_spread.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
