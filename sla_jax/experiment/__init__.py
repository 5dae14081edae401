"""An experiment from its config: the config reader (with ``defaults`` and ``validation``, the only library
code that reads a ``ConfigDict``).

- :mod:`~sla_jax.experiment.configured`: config sections → dataset, model, optimizer, step and evaluation
  specs, ensemble members;
- :mod:`~sla_jax.experiment.pipeline`: the one run pipeline (prepare, init or restore, fit, evaluate, write),
  for a plain run and an ensemble alike; :mod:`~sla_jax.experiment.members` is where the two differ;
- :mod:`~sla_jax.experiment.evaluation`: a model evaluated and its files written (every run, every member);
- :mod:`~sla_jax.experiment.saved`: a finished run's workdir (re-evaluate, load a detector, export).

The names below are what the command lines call.
"""

from sla_jax.experiment.configured import (
    dataset_from_config,
    eval_spec_from_config,
    hparams_from_config,
    members_from_config,
    model_from_config,
    model_input_size,
    optimizer_from_config,
    spec_from_config,
    with_absolute_paths,
)
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
    "config_of_saved",
    "dataset_from_config",
    "eval_spec_from_config",
    "evaluate_workdir",
    "export_workdir",
    "hparams_from_config",
    "load_detector",
    "load_run_config",
    "members_from_config",
    "model_from_config",
    "model_input_size",
    "optimizer_from_config",
    "restore_model",
    "spec_from_config",
    "train_and_evaluate",
    "with_absolute_paths",
]
