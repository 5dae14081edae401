"""Train the pretext task, then evaluate: ``python -m sla_jax.train --config=configs/<name>.py --workdir=DIR``.

Writes ``DIR/results.json`` (and the files listed in the README); running the same command again resumes
from the newest checkpoint. The work is :func:`sla_jax.experiment.train_and_evaluate`.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from sla_jax import cli, experiment
from sla_jax.common import timing
from sla_jax.outputs import files, report
from sla_jax.training import distributed

FLAGS = flags.FLAGS


def main(argv):
    startup_seconds = timing.process_age()  # interpreter start, imports, flags: the "startup" of timing.json
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.require(FLAGS.workdir, "--workdir is required: the folder for checkpoints, metrics and results.json")
    cli.require(FLAGS.config, "--config is required, e.g. --config=configs/demo.py")
    try:
        distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    except ValueError as e:
        raise cli.UsageError(str(e)) from None
    results = experiment.train_and_evaluate(FLAGS.config, FLAGS.workdir, startup_seconds=startup_seconds)
    if distributed.is_primary():
        print("\n".join(files.summary_lines(results)))
        print(f"results: {os.path.join(os.path.abspath(FLAGS.workdir), 'results.json')}")
        print(f"report: {os.path.join(os.path.abspath(FLAGS.workdir), report.REPORT)}")


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, results.")
    flags.DEFINE_string("coordinator_address", None, "Multi-process run: host:port of process 0 (docs/multihost.md).")
    flags.DEFINE_integer("num_processes", None, "Multi-process run: number of processes.")
    flags.DEFINE_integer("process_id", None, "Multi-process run: this process's index in [0, num_processes).")
    cli.run(main, config_flag="config")
