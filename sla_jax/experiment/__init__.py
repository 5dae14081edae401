"""An experiment from its config: the config reader (with :mod:`sla_jax.defaults`, the only library code that
reads a ``ConfigDict``).

- :mod:`~sla_jax.experiment.configured`: :func:`read` turns the config's sections (settings dataclasses) into
  the model, optimizer, schedule, step and evaluation specs and ensemble members, in one place;
- :mod:`~sla_jax.experiment.pipeline`: the one run pipeline (prepare, init or restore, fit, evaluate, write),
  for a plain run and an ensemble alike; :mod:`~sla_jax.experiment.members` is where the two differ;
- :mod:`~sla_jax.experiment.evaluation`: a model evaluated and its files written (every run, every member);
- :mod:`~sla_jax.experiment.saved`: a finished run's workdir (re-evaluate, load a detector, export);
- :mod:`~sla_jax.experiment.validation`: the checks of a config (each section's own, then the rules that span
  sections); :mod:`~sla_jax.experiment.identity`: which settings make a workdir's run.

The names below are what the command lines call.
"""

from sla_jax.experiment.configured import Configured, dataset_from_config, read, with_absolute_paths
from sla_jax.experiment.pipeline import train_and_evaluate
from sla_jax.experiment.saved import (
    config_of_saved,
    evaluate_workdir,
    export_workdir,
    load_detector,
    load_run_config,
    restore_model,
)

__all__ = [
    "Configured",
    "config_of_saved",
    "dataset_from_config",
    "evaluate_workdir",
    "export_workdir",
    "load_detector",
    "load_run_config",
    "read",
    "restore_model",
    "train_and_evaluate",
    "with_absolute_paths",
]
