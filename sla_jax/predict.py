"""Score new images with a trained run: ``python -m sla_jax.predict --workdir=DIR IMAGE_OR_FOLDER...``.

Uses the run's newest checkpoint and the density and decision threshold saved at training time in
``WORKDIR/gde.npz`` (nothing is refitted). Writes one line per image to ``predictions.jsonl`` and
``predictions.csv`` (path, score, threshold, decision, or the error that kept it from being scored) and,
for patch models, a defect-map overlay PNG per image. A file that cannot be read is reported and skipped
(:func:`sla_jax.scoring.inspection.inspect`).
"""

from __future__ import annotations

import os

from absl import flags

from sla_jax import cli, experiment
from sla_jax.scoring import inspection

FLAGS = flags.FLAGS


def main(argv):
    workdir = cli.run_workdir(FLAGS.workdir)
    if len(argv) < 2:
        raise cli.UsageError("name at least one image file or folder to score")
    return inspection.inspect(
        experiment.load_detector(workdir),
        argv[1:],
        out_dir=FLAGS.out or os.path.join(workdir, "predictions"),
        overlays=FLAGS.heatmaps,
        overwrite=FLAGS.overwrite,
    )


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A run folder written by sla_jax.train.")
    flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/predictions).")
    flags.DEFINE_bool(
        "overwrite",
        False,
        "Replace the predictions of an earlier scoring in the output folder "
        "(without it, such a folder is refused and kept).",
    )
    flags.DEFINE_bool("heatmaps", True, "Patch models: write a defect-map overlay PNG per image.")
    cli.run(main)
