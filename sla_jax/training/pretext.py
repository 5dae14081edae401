"""The pretext task as pure functions: draw sources → edit → label → loss → update, in one jitted step.

No config and no files: :class:`StepSpec` holds the static options (changing them recompiles),
:class:`HParams` the label hyper-parameters as traced values (so ``jax.vmap`` runs an ensemble and
``jax.grad`` reaches α and ε). The training images sit on the device; each step draws its batch indices
and edits from ``fold_in(key, step)``, so a resumed run repeats exactly the stream of an uninterrupted
one. Data parallelism: :func:`compile_train_step` shards the batch over a 1-D ``('data',)`` mesh.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sla_jax import labels as labels_lib
from sla_jax import localization
from sla_jax import transforms as transforms_lib
from sla_jax.training.models import PretextNet, normalize
from sla_jax.training.state import TrainState

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


def with_label_params(
    state: TrainState, hparams: HParams, *, learn: tuple[str, ...], optimizer: optax.GradientTransformation
) -> TrainState:
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
    return hparams.replace(**{key[len("log_") :]: jnp.exp(value) for key, value in learned.items()})


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
        sources = transforms_lib.jitter_images(
            jax.random.fold_in(k_idx, 1), sources, strength=spec.global_jitter, order=spec.jitter_order
        )
    edit = transforms_lib.assemble_batch(
        k_edit,
        sources,
        name=spec.transform,
        pairing=spec.pairing,
        cutout_fill=spec.cutout_fill,
        scar_scale=spec.scar_scale,
        jitter_order=spec.jitter_order,
    )
    originals = jnp.concatenate([sources, sources]) if spec.pairing == "paired" else sources
    return originals, edit


def label_targets(originals: jax.Array, edit: transforms_lib.Edit, hparams: HParams, *, spec: StepSpec):
    """(soft target distributions, label strengths y) of an edited batch."""
    y = labels_lib.traced_batch_labels(
        originals,
        edit.images,
        edit.masks,
        edit.classes,
        alpha=hparams.alpha,
        epsilon=hparams.epsilon,
        tau=hparams.tau,
        hard=hparams.hard,
    )
    return labels_lib.targets(edit.classes, y, num_classes=transforms_lib.num_classes(spec.transform)), y


def pretext_batch(
    key: jax.Array,
    train_images: jax.Array,
    *,
    spec: StepSpec,
    hparams: HParams | None = None,
    data_key: jax.Array | None = None,
):
    """Draw sources, edit them and label them: returns (network inputs in [0,1], targets, classes, y)."""
    originals, edit = pretext_edit(key, train_images, spec=spec, data_key=data_key)
    targets, y = label_targets(originals, edit, HParams() if hparams is None else hparams, spec=spec)
    return edit.images, targets, edit.classes, y


def apply_gradients(
    state: TrainState, inputs: jax.Array, target_fn, *, model: PretextNet, optimizer: optax.GradientTransformation
):
    """Forward, backward and optimizer update of the network on normalised ``inputs``.

    ``target_fn(params) -> (soft targets, aux)`` is called inside the differentiated function, so learned
    label parameters in ``params`` get their gradient through the labels. Returns (new state, loss,
    logits, aux).
    """

    def loss_fn(params):
        targets, aux = target_fn(params)
        (logits, _), updates = model.apply(
            {"params": network_params(params), "batch_stats": state.batch_stats},
            inputs,
            train=True,
            mutable=["batch_stats"],
        )
        return labels_lib.soft_cross_entropy(logits, targets), (logits, aux, updates["batch_stats"])

    (loss, (logits, aux, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return (
        TrainState(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state),
        loss,
        logits,
        aux,
    )


def train_step(
    state: TrainState,
    train_images: jax.Array,
    key: jax.Array,
    hparams: HParams | None = None,
    data_key: jax.Array | None = None,
    *,
    model: PretextNet,
    optimizer: optax.GradientTransformation,
    spec: StepSpec,
    batch_sharding=None,
):
    """One SGD step on a freshly edited batch; returns the new state and scalar metrics.

    ``hparams`` (default: the paper's SLA) are traced; learned label parameters in ``state.params["sla"]``
    override them and get gradients through the labels. ``data_key``: see :func:`pretext_edit`.
    """
    hparams = HParams() if hparams is None else hparams
    originals, edit = pretext_edit(
        jax.random.fold_in(key, state.step),
        train_images,
        spec=spec,
        data_key=None if data_key is None else jax.random.fold_in(data_key, state.step),
    )
    inputs = edit.images
    if batch_sharding is not None:
        inputs = jax.lax.with_sharding_constraint(inputs, batch_sharding)
    new_state, loss, logits, y = apply_gradients(
        state,
        normalize(inputs),
        lambda params: label_targets(originals, edit, effective_hparams(params, hparams), spec=spec),
        model=model,
        optimizer=optimizer,
    )
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
        metrics.update({key[len("log_") :]: getattr(learned, key[len("log_") :]) for key in new_state.params["sla"]})
    return new_state, metrics


def train_steps(
    state: TrainState,
    train_images: jax.Array,
    key: jax.Array,
    hparams: HParams | None = None,
    data_key: jax.Array | None = None,
    *,
    steps: int,
    summed: tuple[str, ...] = (),
    **step_options,
):
    """``steps`` consecutive :func:`train_step` s in one program (a ``lax.scan``): one dispatch from the host
    instead of ``steps``. Returns the new state and ``{"last": the last step's metrics, "sum": the sum over
    the steps of the metrics named in summed}``."""

    def body(current, _):
        return train_step(current, train_images, key, hparams, data_key, **step_options)

    state, stacked = jax.lax.scan(body, state, length=steps)
    return state, {
        "last": jax.tree_util.tree_map(lambda x: x[-1], stacked),
        "sum": {name: jnp.sum(stacked[name], axis=0) for name in summed},
    }


def compile_train_steps(*, model, optimizer, spec: StepSpec, mesh, steps: int, summed: tuple[str, ...] = ()):
    """:func:`train_steps` jitted like :func:`compile_train_step` (replicated state, sharded batch, donated
    state)."""
    replicated = NamedSharding(mesh, P())
    run = partial(
        train_steps,
        model=model,
        optimizer=optimizer,
        spec=spec,
        steps=steps,
        summed=tuple(summed),
        batch_sharding=NamedSharding(mesh, P("data")),
    )
    return jax.jit(run, in_shardings=replicated, out_shardings=(replicated, replicated), donate_argnums=(0,))


def compile_train_step(*, model, optimizer, spec: StepSpec, mesh):
    """Jit the step with replicated state/images/hparams and a batch sharded over ``mesh``; donates the state."""
    replicated = NamedSharding(mesh, P())
    step = partial(
        train_step, model=model, optimizer=optimizer, spec=spec, batch_sharding=NamedSharding(mesh, P("data"))
    )
    return jax.jit(step, in_shardings=replicated, out_shardings=(replicated, replicated), donate_argnums=(0,))
