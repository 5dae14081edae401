"""How often does a local edit change (almost) nothing? The paper's Fig. 1, for any transform and dataset.

``python -m sla_jax.analyze --dataset=ROOT/CATEGORY [--dataset=...] --out=DIR`` applies each transform
``--trials`` times (default 2,000) to training images of each category, computes the soft label of every
edit (SLA, eq. 6-9), and counts an edit as *invalid* when its soft label is below ``--threshold``. Writes
``analysis.json``, ``analysis.md`` and ``analysis.png`` (:func:`sla_jax.training.analysis.analyze_folders`).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from sla_jax import cli
from sla_jax import transforms as transforms_lib
from sla_jax.training import analysis

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.require(FLAGS.dataset, "give at least one --dataset=ROOT/CATEGORY (a category folder in MVTec AD layout)")
    unknown = set(FLAGS.transforms) - set(tuple(transforms_lib.TRANSFORMS))
    if unknown:
        raise cli.UsageError(f"--transforms: unknown {sorted(unknown)}; choose from {tuple(transforms_lib.TRANSFORMS)}")
    if FLAGS.trials < FLAGS.every or FLAGS.every < 1:
        raise cli.UsageError("--trials must be >= --every >= 1")
    if os.path.exists(os.path.join(FLAGS.out, "analysis.json")) and not FLAGS.overwrite:
        raise cli.UsageError(
            f"--out={FLAGS.out} holds an earlier analysis: pass --overwrite to replace it, or choose another --out"
        )
    analysis.analyze_folders(
        FLAGS.dataset,
        transforms=tuple(FLAGS.transforms),
        trials=FLAGS.trials,
        every=FLAGS.every,
        images=FLAGS.images,
        image_size=FLAGS.image_size,
        threshold=FLAGS.threshold,
        alpha=FLAGS.alpha,
        epsilon=FLAGS.epsilon,
        seed=FLAGS.seed,
        out_dir=FLAGS.out,
        command=" ".join(["python -m sla_jax.analyze", *sys.argv[1:]]),
    )
    print(f"written: {os.path.join(os.path.abspath(FLAGS.out), 'analysis.png')} (and .json, .md)")


if __name__ == "__main__":
    flags.DEFINE_multi_string("dataset", [], "A category folder in MVTec AD layout (ROOT/CATEGORY); repeatable.")
    flags.DEFINE_list("transforms", list(analysis.ANALYZED), "Transforms to analyse (co, cp, cps, cpf).")
    flags.DEFINE_integer("trials", 2000, "Edits per transform and dataset (the paper: 2,000).")
    flags.DEFINE_integer("every", 500, "Report the cumulative invalid count every this many trials.")
    flags.DEFINE_integer("images", 4, "Training images per dataset; trial t edits image t mod this.")
    flags.DEFINE_integer("image_size", 256, "Images are resized to this side (the paper: 256).")
    flags.DEFINE_float("threshold", 0.5, "An edit is invalid when its soft label is below this.")
    flags.DEFINE_float("alpha", 10.0, "SLA α.")
    flags.DEFINE_float("epsilon", 0.02, "SLA ε.")
    flags.DEFINE_integer("seed", 0, "PRNG seed for image choice and edits.")
    flags.DEFINE_string("out", "runs/analysis", "Output folder.")
    flags.DEFINE_bool("overwrite", False, "Replace an earlier analysis in --out (without it, it is refused and kept).")
    cli.run(main)
