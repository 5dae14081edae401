"""Pretext training with soft labels, then GDE evaluation: ``python -m sla_jax.train --config=... --workdir=...``.

Transforms, labels, normalisation and the update all run inside one jitted step, data-parallel over a
1-D ``('data',)`` mesh of all devices (batch split, parameters replicated). The training images sit on
the device; each step draws its batch indices and edits from ``fold_in(key, step)``, so a resumed run
repeats exactly the stream of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import app, flags, logging
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import config_flags
from tqdm import tqdm

from sla_jax import distributed, evaluate
from sla_jax import labels as labels_lib
from sla_jax import localization
from sla_jax import transforms as transforms_lib
from sla_jax.models import PretextNet, normalize
from sla_jax.state import (TrainState, checkpoint_manager, data_mesh, init_state, lr_schedule, make_optimizer,
                           restore_latest)
from sla_jax.validation import validate

# Key purposes, folded into the root key from config.seed.
KEY_INIT, KEY_STEP = 0, 2


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Static options of the train step (changing them recompiles)."""

    batch_size: int
    transform: str = "cps"
    pairing: str = "bernoulli"
    cutout_fill: str = "random"
    label_mode: str = "soft"
    alpha: float = 10.0
    epsilon: float = 0.02
    patch_size: int = 0  # > 0: train on random square crops of this side (localization)
    scar_scale: float | None = None  # scar size factor; None: the network input side / 256


def pretext_batch(key: jax.Array, train_images: jax.Array, *, spec: StepSpec):
    """Draw sources, edit them and label them: returns (network inputs in [0,1], targets, classes, y)."""
    k_idx, k_edit = jax.random.split(key)
    n_sources = spec.batch_size // 2 if spec.pairing == "paired" else spec.batch_size
    idx = jax.random.randint(k_idx, (n_sources,), 0, train_images.shape[0])
    sources = train_images[idx].astype(jnp.float32) / 255.0
    if spec.patch_size:
        k_crop, k_edit = jax.random.split(k_edit)
        sources = localization.random_patches(k_crop, sources, size=spec.patch_size)
    edit = transforms_lib.assemble_batch(k_edit, sources, name=spec.transform, pairing=spec.pairing,
                                         cutout_fill=spec.cutout_fill, scar_scale=spec.scar_scale)
    originals = jnp.concatenate([sources, sources]) if spec.pairing == "paired" else sources
    y = labels_lib.batch_labels(originals, edit.images, edit.masks, edit.classes, mode=spec.label_mode,
                                alpha=spec.alpha, epsilon=spec.epsilon)
    targets = labels_lib.targets(edit.classes, y, num_classes=transforms_lib.num_classes(spec.transform))
    return edit.images, targets, edit.classes, y


def train_step(state: TrainState, train_images: jax.Array, key: jax.Array, *, model: PretextNet,
               optimizer: optax.GradientTransformation, spec: StepSpec, batch_sharding=None):
    """One SGD step on a freshly edited batch; returns the new state and scalar metrics."""
    inputs, targets, classes, y = pretext_batch(jax.random.fold_in(key, state.step), train_images, spec=spec)
    if batch_sharding is not None:
        inputs = jax.lax.with_sharding_constraint(inputs, batch_sharding)
    inputs = normalize(inputs)

    def loss_fn(params):
        (logits, _), updates = model.apply({"params": params, "batch_stats": state.batch_stats}, inputs,
                                           train=True, mutable=["batch_stats"])
        return labels_lib.soft_cross_entropy(logits, targets), (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    transformed = classes > 0
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == classes),
        "mean_label": jnp.sum(jnp.where(transformed, y, 0.0)) / jnp.maximum(jnp.sum(transformed), 1),
        "invalid_fraction": jnp.sum(transformed & (y < 0.5)) / jnp.maximum(jnp.sum(transformed), 1),
    }
    new_state = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics


def compile_train_step(*, model, optimizer, spec: StepSpec, mesh):
    """Jit the step with replicated state/images and a batch sharded over ``mesh``; donates the state."""
    replicated = NamedSharding(mesh, P())
    step = partial(train_step, model=model, optimizer=optimizer, spec=spec,
                   batch_sharding=NamedSharding(mesh, P("data")))
    return jax.jit(step, in_shardings=(replicated, replicated, replicated),
                   out_shardings=(replicated, replicated), donate_argnums=(0,))


def fit(state: TrainState, train_images: jax.Array, key: jax.Array, *, step_fn, total_steps: int,
        images_per_step: int, manager: ocp.CheckpointManager | None, checkpoint_every: int,
        log_every: int, log=None, schedule=None, progress: bool = True) -> TrainState:
    """Run ``step_fn`` from ``state.step`` to ``total_steps`` with checkpoints, a JSON-lines ``log`` file
    and a progress bar. A non-finite loss stops the run before it can overwrite a good checkpoint."""
    start = int(state.step)
    bar = tqdm(total=total_steps, initial=start, desc="train", unit="step", disable=not progress,
               dynamic_ncols=True, file=sys.stdout)
    window_start, window_steps = time.perf_counter(), 0
    for step in range(start, total_steps):
        state, metrics = step_fn(state, train_images, key)
        window_steps += 1
        done = step + 1
        logging_now = done % log_every == 0 or done == total_steps
        saving_now = manager is not None and (done % checkpoint_every == 0 or done == total_steps)
        if logging_now or saving_now:
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if not np.isfinite(metrics["loss"]):
                kept = manager.latest_step() if manager is not None else None
                raise FloatingPointError(
                    f"loss is {metrics['loss']} at step {done}; stopped. "
                    + (f"The last good checkpoint (step {kept}) is kept in {manager.directory}; lower "
                       "--config.train.learning_rate and run the same command to resume from it."
                       if kept is not None else "No checkpoint was written yet."))
        if logging_now:
            elapsed = time.perf_counter() - window_start
            rate = window_steps * images_per_step / max(elapsed, 1e-9)
            record = {"step": done, **metrics, "images_per_s": rate,
                      "learning_rate": float(schedule(step)) if schedule else None}
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['accuracy']:.2f}",
                            y=f"{metrics['mean_label']:.2f}", img_s=f"{rate:.0f}")
            window_start, window_steps = time.perf_counter(), 0
        bar.update(1)
        if saving_now:
            manager.save(done, args=ocp.args.StandardSave(state))
    bar.close()
    if manager is not None:
        manager.wait_until_finished()
    return state


# ----------------------------------------------------------------------------- entry point

def spec_from_config(config: ml_collections.ConfigDict) -> StepSpec:
    return StepSpec(batch_size=config.train.batch_size, transform=config.transform.name,
                    pairing=config.transform.pairing, cutout_fill=config.transform.cutout_fill,
                    label_mode=config.labels.mode, alpha=float(config.labels.alpha),
                    epsilon=float(config.labels.epsilon), patch_size=int(config.localization.patch_size),
                    scar_scale=(config.data.image_size / transforms_lib.SCAR_REFERENCE_SIZE
                                if config.localization.patch_size else None))


def run(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> dict:
    """Train (resuming from ``workdir`` when it holds a checkpoint), then evaluate; returns the results."""
    validate(config)
    primary = distributed.is_primary()
    os.makedirs(workdir, exist_ok=True)
    if primary:
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
            f.write(config.to_json_best_effort(indent=2))
    started = time.perf_counter()
    dataset = distributed.primary_first(lambda: evaluate.load_dataset(config, workdir))
    mesh = data_mesh()
    spec = spec_from_config(config)
    model = evaluate.model_from_config(config)
    total = int(config.train.steps)
    optimizer = make_optimizer(learning_rate=config.train.learning_rate, momentum=config.train.momentum,
                               weight_decay=config.train.weight_decay, total_steps=total)
    root = jax.random.key(config.seed)
    replicated = NamedSharding(mesh, P())
    state = jax.jit(partial(init_state, model=model, optimizer=optimizer, image_size=evaluate.model_input_size(config)),
                    out_shardings=replicated)(jax.random.fold_in(root, KEY_INIT))
    manager = checkpoint_manager(workdir, keep=config.train.keep_checkpoints)
    state = restore_latest(manager, state)
    resumed_from = int(state.step)
    if resumed_from:
        print(f"resuming from the checkpoint at step {resumed_from} in {manager.directory}")
    train_images = distributed.replicated_array(dataset.train.images, replicated)
    step_fn = compile_train_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh)
    n_train = len(dataset.train.images)
    patches = f", {spec.patch_size} px patches" if spec.patch_size else ""
    print(f"training {config.transform.name.upper()} ({config.labels.mode} labels) on {n_train} images of "
          f"{config.data.image_size} px{patches}, {total} steps of {spec.batch_size}, {jax.device_count()} device(s)"
          + (f" in {jax.process_count()} processes (this is process {jax.process_index()})"
             if jax.process_count() > 1 else ""))
    log_name = "metrics.jsonl" if primary else f"metrics.process{jax.process_index()}.jsonl"
    try:
        with open(os.path.join(workdir, log_name), "a", encoding="utf-8") as log:
            state = fit(state, train_images, jax.random.fold_in(root, KEY_STEP), step_fn=step_fn, total_steps=total,
                        images_per_step=spec.batch_size, manager=manager,
                        checkpoint_every=config.train.checkpoint_every, log_every=config.train.log_every,
                        log=log, schedule=lr_schedule(learning_rate=config.train.learning_rate, total_steps=total),
                        progress=progress and primary)
    finally:
        manager.close()
    train_seconds = time.perf_counter() - started
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    results = evaluate.evaluate(variables, dataset, model=model, config=config, workdir=workdir if primary else None,
                                mesh=mesh)
    results.update(steps=total, resumed_from_step=resumed_from, train_seconds=train_seconds,
                   seconds=time.perf_counter() - started, processes=jax.process_count())
    if primary:
        evaluate.write_results(results, workdir)
    return results


def main(argv):
    logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every file operation at INFO
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.workdir is None:
        raise app.UsageError("--workdir is required: the folder for checkpoints, metrics and results.json")
    if FLAGS.config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/demo.py")
    try:
        distributed.initialize(coordinator_address=FLAGS.coordinator_address, num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    results = run(FLAGS.config, FLAGS.workdir)
    if distributed.is_primary():
        print(f"image AUROC: {results['image_auroc']:.4f}")
        print(f"results: {os.path.join(os.path.abspath(FLAGS.workdir), 'results.json')}")


FLAGS = flags.FLAGS

if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, results.")
    flags.DEFINE_string("coordinator_address", None, "Multi-process run: host:port of process 0 (docs/multihost.md).")
    flags.DEFINE_integer("num_processes", None, "Multi-process run: number of processes.")
    flags.DEFINE_integer("process_id", None, "Multi-process run: this process's index in [0, num_processes).")
    app.run(main)
