"""Training state, its optimizer, the device mesh, and Orbax checkpoints of the state."""

from __future__ import annotations

import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp

from sla_jax.common.errors import WorkdirError
from sla_jax.training.models import PretextNet


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def data_mesh() -> jax.sharding.Mesh:
    """1-D ``('data',)`` mesh over every device of every process."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def weight_decay_mask(params) -> Any:
    """True for convolution and dense kernels; BatchNorm scales/biases and dense biases get no decay."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def lr_schedule(*, learning_rate: float, total_steps: int) -> optax.Schedule:
    """One cosine cycle from ``learning_rate`` to 0 over all steps."""
    return optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))


def make_optimizer(
    *,
    learning_rate: float,
    momentum: float,
    weight_decay: float,
    total_steps: int,
    freeze_backbone_steps: int = 0,
    decay_all: bool = False,
) -> optax.GradientTransformation:
    """SGD with momentum, l2 decay added to the gradient (PyTorch semantics), one cosine cycle.

    The decay applies to convolution and dense kernels (:func:`weight_decay_mask`), or, with ``decay_all``,
    to every parameter as torch's ``SGD(weight_decay=...)`` does in the CutPaste ports.

    ``freeze_backbone_steps > 0``: the ``backbone`` parameters get no update at all during the first
    that many steps — no gradient, no weight decay, no momentum — as a torch parameter with
    ``requires_grad=False`` (CutPaste's fine-tuning schedule); their momentum starts from zero when
    they unfreeze, and the learning-rate schedule stays that of the global step.
    """
    schedule = lr_schedule(learning_rate=learning_rate, total_steps=total_steps)

    def sgd(schedule):
        return optax.chain(
            optax.add_decayed_weights(weight_decay, mask=None if decay_all else weight_decay_mask),
            optax.sgd(schedule, momentum=momentum),
        )

    if freeze_backbone_steps <= 0:
        return sgd(schedule)

    def late(count):
        return schedule(count + freeze_backbone_steps)  # the inner count starts when unfrozen

    frozen = optax.conditionally_mask(sgd(late), lambda step: step >= freeze_backbone_steps)

    def labels(params):
        return {
            name: jax.tree_util.tree_map(lambda _: "backbone" if name == "backbone" else "rest", sub)
            for name, sub in params.items()
        }

    return optax.multi_transform({"backbone": frozen, "rest": sgd(schedule)}, labels)


def init_state(
    key: jax.Array, *, model: PretextNet, optimizer: optax.GradientTransformation, image_size: int
) -> TrainState:
    variables = model.init(key, jnp.zeros((1, image_size, image_size, 3)), train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.int32(0), params=params, batch_stats=variables["batch_stats"], opt_state=optimizer.init(params)
    )


def checkpoint_manager(workdir: str, *, keep: int) -> ocp.CheckpointManager:
    """Checkpoints in ``WORKDIR/checkpoints``, written synchronously: a failed write raises at the save that
    failed (and leaves the previous checkpoints intact) instead of in a background thread later."""
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False),
    )


def tree_bytes(tree) -> int:
    return sum(int(x.nbytes) for x in jax.tree_util.tree_leaves(tree))


def restore_latest(manager: ocp.CheckpointManager, state: TrainState, *, step: int | None = None) -> TrainState:
    """The newest checkpoint (or the one of ``step``) restored onto ``state``'s shapes and shardings, or
    ``state`` when there is none."""
    step = manager.latest_step() if step is None else step
    if step is None:
        return state
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except (ValueError, KeyError, TypeError) as error:  # Orbax refuses a tree that does not match
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise WorkdirError(
            f"the checkpoint of step {step} in {manager.directory} does not fit this run's model "
            f"({first}): it was written by another configuration; use another --workdir."
        ) from None
