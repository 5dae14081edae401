"""Score new images with a trained run: ``python -m sla_jax.predict --workdir=DIR IMAGE_OR_FOLDER...``.

Uses the run's newest checkpoint and the Gaussian and decision threshold saved at training time in
``WORKDIR/gde.npz`` (nothing is refitted). Writes one line per image to ``predictions.jsonl`` and
``predictions.csv`` (path, score, threshold, decision, or the error that kept it from being scored) and,
for patch models, a defect-map overlay PNG per image. A file that cannot be read is reported and skipped.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from sla_jax import cli, experiment
from sla_jax.data import collect_files
from sla_jax.outputs import files

FLAGS = flags.FLAGS


def main(argv):
    workdir = cli.existing_dir(cli.require(FLAGS.workdir, "--workdir is required: a run folder written by "
                                                           "sla_jax.train"), what="--workdir")
    if len(argv) < 2:
        raise cli.UsageError("name at least one image file or folder to score")
    out_dir = FLAGS.out or os.path.join(workdir, "predictions")
    detector = experiment.load_detector(workdir)
    image_files, missing = collect_files(argv[1:])
    records = experiment.predict(detector, image_files, out_dir=out_dir, overlays=FLAGS.heatmaps) + missing
    files.write_predictions(records, out_dir)
    errors = [r for r in records if "error" in r]
    for r in errors:
        print(f"skipped {r['path']}: {r['error']}", file=sys.stderr)
    flagged = sum(r.get("decision") == "defective" for r in records)
    print(f"scored {len(records) - len(errors)} image(s): {flagged} defective (score > {detector.threshold:.4g}), "
          f"{len(errors)} skipped")
    print(f"predictions: {os.path.join(os.path.abspath(out_dir), 'predictions.jsonl')} (and .csv)")
    return 1 if len(errors) == len(records) else 0


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A run folder written by sla_jax.train.")
    flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/predictions).")
    flags.DEFINE_bool("heatmaps", True, "Patch models: write a defect-map overlay PNG per image.")
    cli.run(main)
