"""How a run trains its members: one model (the plain run), or an ensemble of K members in one program
(stacked states, :mod:`sla_jax.training.ensemble`). The pipeline (:mod:`sla_jax.experiment.pipeline`) is the same for
both; these functions are where they differ: the initial state, the compiled step and its keys, and
member k's variables and learned label parameters for the evaluation."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import sla_jax.experiment.configured as configured
from sla_jax.training import distributed, ensemble, loop, pretext, pretrained
from sla_jax.training import state as state_lib


@dataclasses.dataclass(frozen=True)
class Training:
    """What the loop runs: the initial (or restored) state, the keys it threads, the step, and how to make
    a step of k steps (``steps_per_call`` > 1; single runs only)."""

    state: state_lib.TrainState
    keys: object
    hparams: pretext.HParams
    strategy: str | None = None  # an ensemble's (ensemble.STRATEGIES), resolved for this machine
    step_fn: object = None
    chunk_fn: object = None


def ensemble_strategy(config: ml_collections.ConfigDict, members: list, mesh) -> str:
    """``train.ensemble_strategy``, with ``auto`` resolved for this platform, device count and member count
    (:func:`sla_jax.training.ensemble.platform_strategy`; in several processes the members stay whole on every
    process's devices: evaluation reads each member's state on every process)."""
    strategy = config.train.ensemble_strategy
    if strategy != "auto":
        return strategy
    devices = mesh.size if jax.process_count() == 1 else 1
    return ensemble.platform_strategy(jax.default_backend(), devices=devices, members=len(members))


def initial_state(config: ml_collections.ConfigDict, run: configured.Configured, *, replicated) -> Training:
    """The state before training: random initialisation from the seed (each member's own), the backbone of
    ``model.init`` when one is named, and the learned label parameters (``labels.learn``)."""
    learn = tuple(config.labels.learn)
    members, model, optimizer, size = run.members, run.model, run.optimizer, run.input_size
    if members is None:
        root = jax.random.key(config.seed)
        hparams = run.hparams
        init = functools.partial(state_lib.init_state, model=model, optimizer=optimizer, image_size=size)
        state = jax.jit(init, out_shardings=replicated)(jax.random.fold_in(root, pretext.KEY_INIT))
        backbone = initial_backbone(config)
        started_from = state if backbone is None else pretrained.with_backbone(state, backbone, optimizer=optimizer)
        started_from = pretext.with_label_params(started_from, hparams, learn=learn, optimizer=optimizer)
        if started_from is not state:  # loaded weights or label parameters: place the new leaves like the rest
            state = jax.tree_util.tree_map(
                lambda x: distributed.replicated_array(np.asarray(x), replicated), started_from
            )
        return Training(state=state, keys=jax.random.fold_in(root, pretext.KEY_STEP), hparams=hparams)
    strategy = ensemble_strategy(config, members, replicated.mesh)
    along = ensemble.member_axis_sharding(replicated.mesh, strategy=strategy)
    hparams = jax.device_put(ensemble.stack_hparams(members), along)
    init_keys, step_keys = (jnp.stack(k) for k in zip(*(ensemble.member_keys(m.seed) for m in members)))
    step_keys = jax.device_put(step_keys, along)
    data_key = ensemble.member_keys(config.seed)[1]
    states = ensemble.init_ensemble(init_keys, hparams, model=model, optimizer=optimizer, image_size=size, learn=learn)
    backbone = initial_backbone(config)
    if backbone is not None:
        states = ensemble.with_backbone(states, backbone, optimizer=optimizer)
    return Training(
        state=jax.device_put(states, ensemble.member_shardings(replicated.mesh, strategy=strategy)),
        keys=(step_keys, data_key),
        hparams=hparams,
        strategy=strategy,
    )


def initial_backbone(config: ml_collections.ConfigDict) -> dict | None:
    """The backbone of ``config.model.init`` (None for a random initialisation); says which on the console."""
    freeze = config.train.freeze_steps if config.model.init and config.train.steps else 0
    print(
        f"backbone: {config.model.init or 'random initialisation'}"
        + (f", frozen for the first {freeze} steps" if freeze else "")
        + (
            "; train.steps=0: no pretext training, the density is fitted on these features"
            if not config.train.steps
            else ""
        )
    )
    return pretrained.load_backbone(config.model.init) if config.model.init else None


def training_step(
    training: Training,
    train_images,
    members: list[ensemble.Member] | None,
    *,
    config: ml_collections.ConfigDict,
    model,
    optimizer,
    spec: pretext.StepSpec,
    mesh,
    compile_ahead,
    remaining: int,
) -> Training:
    """``training`` with its step (compiled ahead by ``compile_ahead(jitted, args)``) and, for
    ``train.steps_per_call`` > 1, the function making a step of k steps."""
    hparams = training.hparams
    if members is not None:
        step = ensemble.compile_ensemble_step(
            model=model, optimizer=optimizer, spec=spec, mesh=mesh, strategy=training.strategy
        )
        step_keys, data_key = training.keys
        compiled = compile_ahead(step, (training.state, train_images, step_keys, hparams, data_key))

        def step_fn(s, images, keys):
            return compiled(s, images, keys[0], hparams, keys[1])

        return dataclasses.replace(training, step_fn=step_fn)
    per_call = int(config.train.steps_per_call)  # > 1: chunks of steps in one program each (loop.fit)
    chunks = functools.cache(
        lambda k: pretext.compile_train_steps(
            model=model, optimizer=optimizer, spec=spec, mesh=mesh, steps=k, summed=loop.AVERAGED_METRICS
        )
    )
    first_k = min(per_call, max(remaining, 1))
    first = (
        pretext.compile_train_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh)
        if per_call == 1
        else chunks(first_k)
    )
    compiled = compile_ahead(first, (training.state, train_images, training.keys, hparams))

    def step_fn(s, images, key):
        return compiled(s, images, key, hparams)

    def chunk_fn(k):  # a function running k steps (the first chunk's length compiled ahead, others when reached)
        program = compiled if k == first_k else chunks(k)
        return lambda s, images, key: program(s, images, key, hparams)

    return dataclasses.replace(training, step_fn=step_fn, chunk_fn=chunk_fn)


def member_variables(state: state_lib.TrainState, k: int | None) -> dict:
    """Flax variables of the run (``k`` None) or of ensemble member ``k``."""
    if k is None:
        return {"params": pretext.network_params(state.params), "batch_stats": state.batch_stats}
    return ensemble.member_variables(state, k)


def learned_labels(state: state_lib.TrainState, hparams: pretext.HParams, k: int | None) -> dict:
    """The label parameters learned with the network (``labels.learn``), by name; empty when none are."""
    if "sla" not in state.params:
        return {}
    sla = jax.device_get(state.params["sla"])  # the label parameters only, not the network's
    learned = pretext.effective_hparams({"sla": sla}, jax.device_get(hparams))
    names = [key[len("log_") :] for key in sla]
    return {name: float(getattr(learned, name) if k is None else getattr(learned, name)[k]) for name in names}
