"""Re-evaluate a run from its newest checkpoint: ``python -m sla_jax.evaluate --workdir=DIR [--step=N]``.

Embeds the training and test images with the checkpoint's backbone, fits the density, scores the test
set and rewrites ``results.json``; ``--step=N`` evaluates the checkpoint of step N instead and writes into
``DIR/steps/N/`` (:func:`sla_jax.experiment.evaluate_workdir`).
"""

from __future__ import annotations

import os

from absl import flags

from sla_jax import cli, experiment
from sla_jax.outputs import files

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments: {argv[1:]}")
    workdir = cli.run_workdir(FLAGS.workdir)
    results = experiment.evaluate_workdir(workdir, step=FLAGS.step)
    out_dir = workdir if FLAGS.step is None else os.path.join(workdir, "steps", str(FLAGS.step))
    first, *rest = files.summary_lines(results)
    print("\n".join([f"{first} (step {results['steps']})", *rest]))
    print(f"results: {os.path.join(os.path.abspath(out_dir), 'results.json')}")


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A run directory written by sla_jax.train.")
    flags.DEFINE_integer("step", None, "Evaluate the checkpoint of this step (default: the newest).")
    cli.run(main)
