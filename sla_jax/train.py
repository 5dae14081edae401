"""Pretext training with soft labels, then GDE evaluation: ``python -m sla_jax.train --config=... --workdir=...``.

Transforms, labels, normalisation and the update all run inside one jitted step, data-parallel over a
1-D ``('data',)`` mesh of all devices (batch split, parameters replicated). The training images sit on
the device; each step draws its batch indices and edits from ``fold_in(key, step)``, so a resumed run
repeats exactly the stream of an uninterrupted one.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import flax
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

from sla_jax import runtime
from sla_jax import distributed, evaluate
from sla_jax import labels as labels_lib
from sla_jax import localization
from sla_jax import pretrained
from sla_jax import report
from sla_jax import transforms as transforms_lib
from sla_jax.models import PretextNet, normalize
from sla_jax.state import (TrainState, checkpoint_manager, data_mesh, init_state, lr_schedule, restore_latest,
                           tree_bytes)
from sla_jax.data import DataError
from sla_jax.validation import ConfigError, validate
from sla_jax import workdir as workdir_lib

# Key purposes, folded into the root key from config.seed.
KEY_INIT, KEY_STEP = 0, 2


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Static options of the train step (changing them recompiles); the label options are :class:`HParams`."""

    batch_size: int
    transform: str = "cps"
    pairing: str = "bernoulli"
    cutout_fill: str = "random"
    patch_size: int = 0  # > 0: train on random square crops of this side (localization)
    scar_scale: float | None = None  # scar size factor; None: the network input side / 256
    global_jitter: float = transforms_lib.JITTER  # whole-source colour jitter before the edit; 0: none
    jitter_order: str = "random"  # order of the colour-jitter operations: random (torchvision) | fixed


@flax.struct.dataclass
class HParams:
    """Label hyper-parameters as traced values: changing them does not recompile, and a stack of them
    (leading member axis) drives a vmapped ensemble. ``tau > 0``: smooth SLA; ``hard = 1``: hard labels
    (see :func:`sla_jax.labels.label_strength`)."""

    alpha: Any = 10.0
    epsilon: Any = 0.02
    tau: Any = 0.0
    hard: Any = 0.0

    @classmethod
    def create(cls, *, alpha=10.0, epsilon=0.02, tau=0.0, hard=0.0) -> "HParams":
        return cls(*(jnp.asarray(v, jnp.float32) for v in (alpha, epsilon, tau, hard)))


def label_params(hparams: HParams, *, learn: tuple[str, ...]) -> dict:
    """Trainable log-parameters (positive after ``exp``) for the label hyper-parameters named in ``learn``."""
    return {f"log_{name}": jnp.log(jnp.asarray(getattr(hparams, name), jnp.float32)) for name in learn}


def with_label_params(state: TrainState, hparams: HParams, *, learn: tuple[str, ...],
                      optimizer: optax.GradientTransformation) -> TrainState:
    """``state`` whose params also hold ``label_params`` under ``"sla"`` (updated by the same optimizer)."""
    if not learn:
        return state
    params = {**state.params, "sla": label_params(hparams, learn=learn)}
    return state.replace(params=params, opt_state=optimizer.init(params))


def network_params(params) -> dict:
    """The network's parameters: ``params`` without the learned label parameters (``"sla"``)."""
    return {k: v for k, v in params.items() if k != "sla"}


def effective_hparams(params, hparams: HParams) -> HParams:
    """``hparams`` with the learned values from ``params["sla"]`` (when present) substituted."""
    learned = params.get("sla", {}) if isinstance(params, dict) else {}
    return hparams.replace(**{key[len("log_"):]: jnp.exp(value) for key, value in learned.items()})


def pretext_edit(key: jax.Array, train_images: jax.Array, *, spec: StepSpec, data_key: jax.Array | None = None):
    """Draw sources and edit them: returns (originals in [0,1] aligned with the edits, the ``Edit``).

    The source indices and the whole-source colour jitter come from ``data_key`` when given (an ensemble's
    shared data stream), else from ``key``; the crops and edits always come from ``key``.
    """
    k_idx, k_edit = jax.random.split(key)
    if data_key is not None:
        k_idx = jax.random.split(data_key)[0]
    n_sources = spec.batch_size // 2 if spec.pairing == "paired" else spec.batch_size
    idx = jax.random.randint(k_idx, (n_sources,), 0, train_images.shape[0])
    sources = train_images[idx].astype(jnp.float32) / 255.0
    if spec.patch_size:
        k_crop, k_edit = jax.random.split(k_edit)
        sources = localization.random_patches(k_crop, sources, size=spec.patch_size)
    if spec.global_jitter:  # part of the data stream: ensemble members sharing the sources share their jitter
        sources = transforms_lib.jitter_images(jax.random.fold_in(k_idx, 1), sources, strength=spec.global_jitter,
                                               order=spec.jitter_order)
    edit = transforms_lib.assemble_batch(k_edit, sources, name=spec.transform, pairing=spec.pairing,
                                         cutout_fill=spec.cutout_fill, scar_scale=spec.scar_scale,
                                         jitter_order=spec.jitter_order)
    originals = jnp.concatenate([sources, sources]) if spec.pairing == "paired" else sources
    return originals, edit


def label_targets(originals: jax.Array, edit: transforms_lib.Edit, hparams: HParams, *, spec: StepSpec):
    """(soft target distributions, label strengths y) of an edited batch."""
    y = labels_lib.traced_batch_labels(originals, edit.images, edit.masks, edit.classes, alpha=hparams.alpha,
                                       epsilon=hparams.epsilon, tau=hparams.tau, hard=hparams.hard)
    return labels_lib.targets(edit.classes, y, num_classes=transforms_lib.num_classes(spec.transform)), y


def pretext_batch(key: jax.Array, train_images: jax.Array, *, spec: StepSpec, hparams: HParams | None = None,
                  data_key: jax.Array | None = None):
    """Draw sources, edit them and label them: returns (network inputs in [0,1], targets, classes, y)."""
    originals, edit = pretext_edit(key, train_images, spec=spec, data_key=data_key)
    targets, y = label_targets(originals, edit, HParams() if hparams is None else hparams, spec=spec)
    return edit.images, targets, edit.classes, y


def apply_gradients(state: TrainState, inputs: jax.Array, target_fn, *, model: PretextNet,
                    optimizer: optax.GradientTransformation):
    """Forward, backward and optimizer update of the network on normalised ``inputs``.

    ``target_fn(params) -> (soft targets, aux)`` is called inside the differentiated function, so learned
    label parameters in ``params`` get their gradient through the labels. Returns (new state, loss,
    logits, aux).
    """
    def loss_fn(params):
        targets, aux = target_fn(params)
        (logits, _), updates = model.apply({"params": network_params(params), "batch_stats": state.batch_stats}, inputs,
                                           train=True, mutable=["batch_stats"])
        return labels_lib.soft_cross_entropy(logits, targets), (logits, aux, updates["batch_stats"])

    (loss, (logits, aux, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state), loss, logits, aux


def train_step(state: TrainState, train_images: jax.Array, key: jax.Array, hparams: HParams | None = None,
               data_key: jax.Array | None = None, *, model: PretextNet, optimizer: optax.GradientTransformation,
               spec: StepSpec, batch_sharding=None):
    """One SGD step on a freshly edited batch; returns the new state and scalar metrics.

    ``hparams`` (default: the paper's SLA) are traced; learned label parameters in ``state.params["sla"]``
    override them and get gradients through the labels. ``data_key``: see :func:`pretext_edit`.
    """
    hparams = HParams() if hparams is None else hparams
    originals, edit = pretext_edit(jax.random.fold_in(key, state.step), train_images, spec=spec,
                                   data_key=None if data_key is None else jax.random.fold_in(data_key, state.step))
    inputs = edit.images
    if batch_sharding is not None:
        inputs = jax.lax.with_sharding_constraint(inputs, batch_sharding)
    new_state, loss, logits, y = apply_gradients(
        state, normalize(inputs), lambda params: label_targets(originals, edit, effective_hparams(params, hparams),
                                                               spec=spec),
        model=model, optimizer=optimizer)
    classes = edit.classes
    transformed = classes > 0
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == classes),
        "mean_label": jnp.sum(jnp.where(transformed, y, 0.0)) / jnp.maximum(jnp.sum(transformed), 1),
        "invalid_fraction": jnp.sum(transformed & (y < 0.5)) / jnp.maximum(jnp.sum(transformed), 1),
    }
    if "sla" in new_state.params:
        learned = effective_hparams(new_state.params, hparams)
        metrics.update({key[len("log_"):]: getattr(learned, key[len("log_"):]) for key in new_state.params["sla"]})
    return new_state, metrics


def compile_train_step(*, model, optimizer, spec: StepSpec, mesh):
    """Jit the step with replicated state/images/hparams and a batch sharded over ``mesh``; donates the state."""
    replicated = NamedSharding(mesh, P())
    step = partial(train_step, model=model, optimizer=optimizer, spec=spec,
                   batch_sharding=NamedSharding(mesh, P("data")))
    return jax.jit(step, in_shardings=replicated, out_shardings=(replicated, replicated), donate_argnums=(0,))


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint of ``step`` was written (when there is a checkpoint manager)."""

    def __init__(self, signum: int, step: int, directory):
        self.signum, self.step, self.directory = signum, step, directory
        where = f"; a checkpoint of step {step} is in {directory}" if directory else ""
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}{where}")


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (disk full, permissions); the earlier checkpoints are intact."""


@contextlib.contextmanager
def stop_requests():
    """While inside, SIGINT and SIGTERM are recorded in the yielded list instead of stopping the process, so
    the training loop can stop at a step boundary; a second signal acts as it did before."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    signums = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signums}

    def handler(signum, frame):
        received.append(signum)
        signal.signal(signum, previous[signum])

    for s in signums:
        signal.signal(s, handler)
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _save(manager: ocp.CheckpointManager, step: int, state: TrainState) -> None:
    """Save ``state`` as checkpoint ``step``; on any write failure (Orbax reports a full disk as a ValueError
    from TensorStore) remove the partial checkpoint and raise :class:`CheckpointWriteError`."""
    try:
        manager.save(step, args=ocp.args.StandardSave(state), force=True)
    except Exception as error:
        for unfinished in Path(manager.directory).glob(f"{step}.orbax-checkpoint-tmp*"):
            shutil.rmtree(unfinished, ignore_errors=True)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        if "No space left on device" in reason:
            reason = "No space left on device"
        kept = manager.latest_step()
        raise CheckpointWriteError(
            f"writing the checkpoint of step {step} into {manager.directory} failed ({reason[:300]}). "
            + (f"The checkpoint of step {kept} is intact: " if kept is not None else "")
            + "free space or fix permissions, then run the same command to resume.") from error


MAX_IN_FLIGHT = 2  # dispatched steps not yet finished: enough to keep the device busy, few enough for an honest bar
AVERAGED_METRICS = ("loss", "accuracy", "mean_label", "invalid_fraction")  # logged as means over the window


def fit(state: TrainState, train_images: jax.Array, key: jax.Array, *, step_fn, total_steps: int,
        images_per_step: int, manager: ocp.CheckpointManager | None, checkpoint_every: int,
        log_every: int, log=None, schedule=None, progress: bool = True, started: float | None = None) -> TrainState:
    """Run ``step_fn`` from ``state.step`` to ``total_steps`` with checkpoints, a JSON-lines ``log`` file
    and a progress bar. A non-finite loss stops the run before it can overwrite a good checkpoint.

    Each log record holds the :data:`AVERAGED_METRICS` averaged over the steps since the previous record
    (other metrics, such as learned label parameters, as of the record's step), the images/s of that window and ``seconds`` since ``started`` (a ``time.perf_counter()`` value; default: now). At most
    :data:`MAX_IN_FLIGHT` steps are dispatched ahead of the last finished one, so the bar counts finished
    steps and its rate and ETA are the device's."""
    with stop_requests() as received:
        return _fit_loop(state, train_images, key, step_fn=step_fn, total_steps=total_steps,
                         images_per_step=images_per_step, manager=manager, checkpoint_every=checkpoint_every,
                         log_every=log_every, log=log, schedule=schedule, progress=progress, stop=received,
                         started=time.perf_counter() if started is None else started)


def _fit_loop(state, train_images, key, *, step_fn, total_steps, images_per_step, manager, checkpoint_every,
              log_every, log, schedule, progress, stop, started) -> TrainState:
    start = int(state.step)
    bar = tqdm(total=total_steps, initial=start, desc="train", unit="step", disable=not progress,
               dynamic_ncols=True, file=sys.stdout)
    window_start, window_steps, window_sum = time.perf_counter(), 0, None
    in_flight: collections.deque = collections.deque()
    for step in range(start, total_steps):
        state, metrics = step_fn(state, train_images, key)
        in_flight.append(metrics["loss"])
        averaged = {k: v for k, v in metrics.items() if k in AVERAGED_METRICS}
        window_sum = averaged if window_sum is None else jax.tree_util.tree_map(jnp.add, window_sum, averaged)
        window_steps += 1
        while len(in_flight) > MAX_IN_FLIGHT:
            jax.block_until_ready(in_flight.popleft())
            bar.update(1)
        done = step + 1
        stopping = bool(stop)  # read once: a signal arriving later in this step is handled after the next one
        logging_now = done % log_every == 0 or done == total_steps
        saving_now = manager is not None and (done % checkpoint_every == 0 or done == total_steps or stopping)
        if logging_now or saving_now:
            means = {k: np.asarray(v).tolist() for k, v in jax.device_get(metrics).items()}  # ensemble: lists
            means.update({k: (np.asarray(v) / window_steps).tolist() for k, v in jax.device_get(window_sum).items()})
            bar.update(len(in_flight))  # device_get waited for every dispatched step
            in_flight.clear()
            if not np.all(np.isfinite(means["loss"])):
                kept = manager.latest_step() if manager is not None else None
                raise FloatingPointError(
                    f"loss is {means['loss']} at step {done}; stopped. "
                    + (f"The last good checkpoint (step {kept}) is kept in {manager.directory}; lower "
                       "--config.train.learning_rate and run the same command to resume from it."
                       if kept is not None else "No checkpoint was written yet."))
        if logging_now:
            now = time.perf_counter()
            rate = window_steps * images_per_step / max(now - window_start, 1e-9)
            record = {"step": done, **means, "images_per_s": rate,
                      "learning_rate": float(schedule(step)) if schedule else None, "seconds": now - started}
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            bar.set_postfix(loss=f"{np.mean(means['loss']):.3f}", acc=f"{np.mean(means['accuracy']):.2f}",
                            y=f"{np.mean(means['mean_label']):.2f}", img_s=f"{rate:.0f}")
            window_steps, window_sum = 0, None
        if saving_now:
            _save(manager, done, state)
        if logging_now:
            window_start = time.perf_counter()  # the rate is the training's: checkpoint writes are left out
        if stopping:
            bar.close()
            raise Interrupted(stop[0], done, manager.directory if manager is not None else None)
    bar.update(len(in_flight))
    bar.close()
    return state


# ----------------------------------------------------------------------------- entry point

def spec_from_config(config: ml_collections.ConfigDict) -> StepSpec:
    """The step's static options. Scars are sized for the whole image (``transform.scar_size``), also when
    the network sees patches of it."""
    return StepSpec(batch_size=config.train.batch_size, transform=config.transform.name,
                    pairing=config.transform.pairing, cutout_fill=config.transform.cutout_fill,
                    patch_size=int(config.localization.patch_size),
                    scar_scale=transforms_lib.scar_scale(config.data.image_size, rule=config.transform.scar_size),
                    global_jitter=float(config.transform.global_jitter), jitter_order=config.transform.jitter_order)


def initial_backbone(state: TrainState, config: ml_collections.ConfigDict, *, optimizer) -> TrainState:
    """``state`` with the backbone of ``config.model.init`` loaded, if one is named (head stays fresh)."""
    freeze = config.train.freeze_steps if config.model.init and config.train.steps else 0
    print(f"backbone: {config.model.init or 'random initialisation'}"
          + (f", frozen for the first {freeze} steps" if freeze else "")
          + ("; train.steps=0: no pretext training, the GDE is fitted on these features" if not config.train.steps
             else ""))
    if not config.model.init:
        return state
    return pretrained.with_backbone(state, pretrained.load_backbone(config.model.init), optimizer=optimizer)


def hparams_from_config(config: ml_collections.ConfigDict) -> HParams:
    mode = config.labels.mode
    return HParams.create(alpha=config.labels.alpha, epsilon=config.labels.epsilon,
                          tau=config.labels.tau if mode == "smooth" else 0.0, hard=float(mode == "hard"))


def run(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> dict:
    """Train (resuming from ``workdir`` when it holds a checkpoint), then evaluate; returns the results.

    Holds the workdir's lock throughout; ``results.json`` holds only what the seed determines (the
    timings go to ``timing.json``). A config with an ``ensemble`` section trains all its members in one
    program (:mod:`sla_jax.ensemble`)."""
    if "ensemble" in config:
        from sla_jax import ensemble

        ensemble.validate_ensemble(config)
        with workdir_lib.claimed(workdir):
            return ensemble.run(config, workdir, progress=progress)
    validate(config)
    # In a multi-process run the primary process holds the lock (the workdir is shared by all).
    lock = workdir_lib.claimed(workdir) if distributed.is_primary() else contextlib.nullcontext()
    with lock:
        return _run(config, workdir, progress=progress)


def _run(config: ml_collections.ConfigDict, workdir: str, *, progress: bool) -> dict:
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
    optimizer = evaluate.optimizer_from_config(config)
    root = jax.random.key(config.seed)
    replicated = NamedSharding(mesh, P())
    hparams = hparams_from_config(config)
    state = jax.jit(partial(init_state, model=model, optimizer=optimizer, image_size=evaluate.model_input_size(config)),
                    out_shardings=replicated)(jax.random.fold_in(root, KEY_INIT))
    started_from = with_label_params(initial_backbone(state, config, optimizer=optimizer), hparams,
                                     learn=tuple(config.labels.learn), optimizer=optimizer)
    if started_from is not state:  # loaded weights or label parameters: place the new leaves like the rest
        state = jax.tree_util.tree_map(lambda x: distributed.replicated_array(np.asarray(x), replicated),
                                       started_from)
    workdir_lib.check_free_space(workdir, needed_bytes=(config.train.keep_checkpoints + 1) * tree_bytes(state))
    manager = checkpoint_manager(workdir, keep=config.train.keep_checkpoints)
    state = restore_latest(manager, state)  # a checkpoint takes precedence over model.init
    resumed_from = int(state.step)
    if resumed_from:
        print(f"resuming from the checkpoint at step {resumed_from} in {manager.directory}")
    train_images = distributed.replicated_array(dataset.train.images, replicated)
    compiled = compile_train_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh)
    step_fn = lambda s, images, key: compiled(s, images, key, hparams)  # noqa: E731
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
                        progress=progress and primary, started=started)
    finally:
        manager.close()
    train_seconds = time.perf_counter() - started
    variables = {"params": network_params(state.params), "batch_stats": state.batch_stats}
    results = evaluate.evaluate(variables, dataset, model=model, config=config, workdir=workdir if primary else None,
                                mesh=mesh)
    if "sla" in state.params:
        learned = effective_hparams(state.params, hparams)
        results["learned_labels"] = {k[len("log_"):]: float(getattr(learned, k[len("log_"):]))
                                     for k in state.params["sla"]}
    results.update(steps=total, init=config.model.init or "random", processes=jax.process_count())
    if primary:
        evaluate.write_results(results, workdir)
        evaluate.write_timing({"resumed_from_step": resumed_from, "train_seconds": train_seconds,
                               "seconds": time.perf_counter() - started}, workdir)
        report.write_run_report(workdir)
    return results


def main(argv):
    logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every file operation at INFO
    runtime.enable_compilation_cache()
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
    try:
        results = run(FLAGS.config, FLAGS.workdir)
    except Interrupted as stop:
        print(f"\n{stop}. Run the same command to resume.", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except (ConfigError, DataError, workdir_lib.WorkdirError, CheckpointWriteError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2 if isinstance(error, ConfigError) else 1)
    if distributed.is_primary():
        print(f"image AUROC: {results['image_auroc']:.4f}")
        print(f"results: {os.path.join(os.path.abspath(FLAGS.workdir), 'results.json')}")
        print(f"report: {os.path.join(os.path.abspath(FLAGS.workdir), report.REPORT)}")


FLAGS = flags.FLAGS

if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, results.")
    flags.DEFINE_string("coordinator_address", None, "Multi-process run: host:port of process 0 (docs/multihost.md).")
    flags.DEFINE_integer("num_processes", None, "Multi-process run: number of processes.")
    flags.DEFINE_integer("process_id", None, "Multi-process run: this process's index in [0, num_processes).")
    app.run(main)
