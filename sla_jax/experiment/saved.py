"""A finished run's workdir: its config read back and checked, its model restored from a checkpoint, its
evaluation redone (``python -m sla_jax.evaluate``), a detector ready to score new images
(``python -m sla_jax.predict``) and its ONNX export (``python -m sla_jax.export``)."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections

import sla_jax.experiment.configured as configured
import sla_jax.experiment.evaluation as evaluation
import sla_jax.experiment.identity as identity
from sla_jax import density
from sla_jax.common import workdir as workdir_lib
from sla_jax.experiment.validation import ConfigError, validate_any
from sla_jax.outputs import files, report
from sla_jax.scoring import detector
from sla_jax.training import pretext
from sla_jax.training import state as state_lib
from sla_jax.training.models import PretextNet


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was started with (``WORKDIR/config.json``), over the current defaults, checked. A file
    that is missing, cut short, edited into an unknown key or value, or records a relative path is a
    :class:`~sla_jax.common.errors.WorkdirError` naming it."""
    path = os.path.join(workdir, identity.CONFIG)
    saved = identity.read_saved_config(workdir)
    if saved is None:
        raise FileNotFoundError(f"{path} not found: --workdir must be a folder written by sla_jax.train")
    if "ensemble" in saved:
        raise workdir_lib.WorkdirError(
            f"{workdir} holds an ensemble (alpha sweep): re-run its sla_jax.train "
            "command, which resumes from the newest checkpoint and evaluates every member"
        )
    return config_of_saved(saved, path=path)


def config_of_saved(saved: dict, *, path: str) -> ml_collections.ConfigDict:
    """The saved config ``saved`` (read from ``path``) over the current defaults, checked: a relative path, an
    unknown key or a value out of range is a :class:`~sla_jax.common.errors.WorkdirError` naming the file."""
    from sla_jax.defaults import base_config

    relative = identity.relative_paths(saved)
    if relative:
        key, value = relative[0]
        raise workdir_lib.WorkdirError(
            f"{path} records {key}={value!r}, a relative path (written by an older "
            "sla_jax), which would depend on where a command runs: edit it to the "
            "absolute path the run was trained with."
        )
    config = base_config()
    try:
        if "ensemble" in saved:
            config.ensemble = ml_collections.ConfigDict(identity.flatten(saved["ensemble"]))
        config.update_from_flattened_dict(identity.flatten(saved))
        validate_any(config)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        reason = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise workdir_lib.WorkdirError(
            f"{path} does not hold a config this sla_jax can use ({reason}). Restore it "
            "from the run's command, or train again in another --workdir."
        ) from None
    return config


def restore_model(
    config: ml_collections.ConfigDict, workdir: str, *, step: int | None = None
) -> tuple[PretextNet, dict, int]:
    """The run's model, its variables from the newest checkpoint in ``workdir`` (or that of ``step``), and
    that step."""
    kept = identity.checkpoint_steps(workdir)
    folder = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not kept:
        raise FileNotFoundError(f"no checkpoint in {folder}: train first with sla_jax.train")
    if step is not None and step not in kept:
        raise FileNotFoundError(
            f"no checkpoint of step {step} in {folder}; it holds steps {kept} (train.keep_checkpoints keeps the newest)"
        )
    run = configured.read(config)
    model, optimizer = run.model, run.optimizer
    state = state_lib.init_state(jax.random.key(0), model=model, optimizer=optimizer, image_size=run.input_size)
    state = pretext.with_label_params(state, run.hparams, learn=tuple(config.labels.learn), optimizer=optimizer)
    manager = state_lib.checkpoint_manager(workdir, keep=config.train.keep_checkpoints)
    try:
        state = state_lib.restore_latest(manager, state, step=step)
    finally:
        manager.close()
    return model, {"params": pretext.network_params(state.params), "batch_stats": state.batch_stats}, int(state.step)


KEPT_ON_EVALUATE = ("init", "processes", "learned_labels", "lineage")  # facts of training, not of the evaluation


def evaluate_workdir(workdir: str, *, step: int | None = None, progress: bool = True) -> dict:
    """Evaluate the newest checkpoint of a run and rewrite its results.json (and scores, density, figures);
    with ``step``, evaluate that checkpoint instead and write its results.json, scores.csv, roc.png and
    density into WORKDIR/steps/STEP (the run's own files stay as they are). Every file names the checkpoint
    step it comes from; the facts of training in the old results.json are kept when they are of that step."""
    started = time.perf_counter()
    config = load_run_config(workdir)
    with workdir_lib.claimed(workdir):
        mesh = state_lib.data_mesh()
        model, variables, restored = restore_model(config, workdir, step=step)
        dataset = configured.dataset_from_config(config, workdir)
        out_dir = workdir if step is None else os.path.join(workdir, "steps", str(step))
        os.makedirs(out_dir, exist_ok=True)
        earlier = files.read_json(os.path.join(workdir, "results.json"))
        results = evaluation.evaluate_and_write(
            variables,
            dataset,
            model=model,
            spec=configured.read(config).evaluation,
            config=config,
            mesh=mesh,
            out_dir=out_dir,
            step=restored,
            progress=progress,
        )
        same_step = earlier.get("checkpoint_step", earlier.get("steps")) == restored
        results.update({k: earlier[k] for k in KEPT_ON_EVALUATE if k in earlier and same_step})
        results.update(steps=restored, init=config.model.init or "random")
        files.write_results(results, out_dir)
        if step is None:
            files.write_timing({"evaluate_seconds": time.perf_counter() - started}, workdir)
            report.write_run_report(workdir)
    return results


# ----------------------------------------------------------------------------- scoring new images


def load_detector(workdir: str) -> detector.Detector:
    """A trained run ready to score images: its newest checkpoint and the density and decision threshold
    saved in ``WORKDIR/gde.npz`` (``kde.npz`` for ``eval.density=kde``; nothing is refitted). A density
    fitted on another checkpoint than the newest (a run continued or interrupted after its evaluation) is
    refused, with the command that refits it."""
    config = load_run_config(workdir)
    if config.localization.patch_size and config.localization.gde == "per_position":
        raise ConfigError(
            "this run uses localization.gde='per_position', whose Gaussians (one per patch "
            "position) are not stored; prediction supports the shared patch GDE"
        )
    kind = config.eval.density
    fitted_type = density.DENSITIES[kind].fitted
    arrays, threshold, fitted_on = files.read_density(workdir, kind=kind, fields=fitted_type._fields)
    kept = identity.checkpoint_steps(workdir)
    newest = kept[-1] if kept else None
    if newest is not None and fitted_on != newest:  # refused before the checkpoint is restored
        raise workdir_lib.WorkdirError(
            f"{os.path.join(workdir, files.density_file(kind))} was fitted on "
            + ("an unrecorded checkpoint" if fitted_on is None else f"the checkpoint of step {fitted_on}")
            + f", but the newest checkpoint is of step {newest}: run `python -m sla_jax.evaluate --workdir={workdir}` "
            "to refit it on that checkpoint, then score again."
        )
    model, variables, step = restore_model(config, workdir)
    fitted = fitted_type(*(jnp.asarray(arrays[k]) for k in fitted_type._fields))
    return detector.Detector(
        model=model,
        variables=variables,
        fitted=fitted,
        threshold=threshold,
        spec=configured.read(config).evaluation,
        image_size=int(config.data.image_size),
        step=step,
        mesh=state_lib.data_mesh(),
        resample=config.data.resize,
    )


def export_workdir(workdir: str, out: str) -> dict:
    """The run's detector as one ONNX file at ``out`` (:mod:`sla_jax.scoring.deploy`); returns what was written."""
    from sla_jax.scoring import deploy

    config = load_run_config(workdir)
    detector = load_detector(workdir)
    return deploy.export_detector(
        detector, out, category=config.data.category, transform=config.transform.name, labels=config.labels.mode
    )
