"""K models in one program: a vmapped train step over stacked states, label hyper-parameters and seeds.

Each member is :func:`sla_jax.training.pretext.train_step` with its own
:class:`~sla_jax.training.pretext.HParams` (α, ε, τ, hard) and its own seed; parameters, optimizer state
and BatchNorm statistics carry a leading member axis K, the step counter is shared. Members share the data
stream: every step all of them see the same source images (indices drawn from the ensemble's data key), and
each draws its own edits (and its own initialisation) from its seed. So member k equals the single run
``train_step(state_k, images, step_key(seed_k), hparams_k, data_key)``, and a member whose seed is
``config.seed`` equals the plain ``python -m sla_jax.train`` run with the same settings. No config:
:mod:`sla_jax.experiment` builds the members from ``config.ensemble``.

Each member is then evaluated as a single run is (:func:`member_variables`), so every model kind runs as an
ensemble: image or patch models, GDE or KDE, random or loaded backbones.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sla_jax import labels
from sla_jax.common.settings import Section, setting
from sla_jax.training import pretext, pretrained
from sla_jax.training.models import PretextNet
from sla_jax.training.state import TrainState, init_state

MEMBER_AXES = TrainState(step=None, params=0, batch_stats=0, opt_state=0)


@dataclasses.dataclass(frozen=True)
class EnsembleSettings(Section):
    """``config.ensemble`` (a config has it or not): the members, ``alphas × epsilons × seeds`` in
    ``labels.mode`` plus one hard-label member per seed when ``hard``."""

    SECTION = "ensemble"
    alphas: tuple = setting((), "the α of the soft (or smooth) members")
    epsilons: tuple = setting((), "() = (labels.epsilon,)")
    seeds: tuple = setting((0,), "every grid point once per seed; the first is also the data seed")
    hard: bool = setting(False, 'plus one hard-label ("w/o SLA") member per seed')

    def check(self) -> None:
        if not self.seeds:
            raise ValueError("config.ensemble.seeds is empty: give at least one seed, e.g. (0, 1)")
        if not self.alphas and not self.hard:
            raise ValueError("config.ensemble has no members: set ensemble.alphas or ensemble.hard=True")
        for a in self.alphas:
            if not a >= 0:
                raise ValueError(f"config.ensemble.alphas contains {a}: every α must be >= 0")
        for e in self.epsilons:
            if not 0 < e < 3:
                raise ValueError(f"config.ensemble.epsilons contains {e}: every ε must lie in (0, 3)")

    def members(self, label: labels.LabelSettings) -> list[Member]:
        """The grid ``alphas × epsilons × seeds`` in ``label.mode`` (``epsilons`` empty: ``label.epsilon``),
        plus one hard-label member per seed when ``hard``."""
        tau, _ = labels.mode_params(label.mode, tau=float(label.tau))
        epsilons = tuple(self.epsilons) or (label.epsilon,)
        grid = [
            Member(seed=int(s), alpha=float(a), epsilon=float(e), mode=label.mode, tau=tau)
            for a in self.alphas
            for e in epsilons
            for s in self.seeds
        ]
        hard = [
            Member(seed=int(s), alpha=float(label.alpha), epsilon=float(label.epsilon), mode="hard") for s in self.seeds
        ]
        return grid + (hard if self.hard else [])


@dataclasses.dataclass(frozen=True)
class Member:
    """One ensemble member's settings."""

    seed: int
    alpha: float
    epsilon: float
    mode: str  # soft | smooth | hard
    tau: float = 0.0

    @property
    def name(self) -> str:
        if self.mode == "hard":
            return f"hard/seed{self.seed}"
        return f"{self.mode}/alpha{self.alpha:g}/eps{self.epsilon:g}/seed{self.seed}"


def stack_hparams(members: list[Member]) -> pretext.HParams:
    """Member hyper-parameters stacked on a leading axis (traced: a new grid does not recompile)."""
    return pretext.HParams.create(
        alpha=[m.alpha for m in members],
        epsilon=[m.epsilon for m in members],
        tau=[labels.mode_params(m.mode, tau=m.tau)[0] for m in members],
        hard=[labels.mode_params(m.mode, tau=m.tau)[1] for m in members],
    )


def member_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(init key, step key) of a member: those of a single run with ``config.seed = seed``."""
    root = jax.random.key(seed)
    return jax.random.fold_in(root, pretext.KEY_INIT), jax.random.fold_in(root, pretext.KEY_STEP)


def init_ensemble(
    init_keys: jax.Array,
    hparams: pretext.HParams,
    *,
    model: PretextNet,
    optimizer: optax.GradientTransformation,
    image_size: int,
    learn: tuple[str, ...] = (),
) -> TrainState:
    """Stacked states, member k initialised exactly as a single run from ``init_keys[k]``; one shared step."""

    def one(key, hp):
        state = init_state(key, model=model, optimizer=optimizer, image_size=image_size)
        return pretext.with_label_params(state, hp, learn=learn, optimizer=optimizer)

    states = jax.jit(jax.vmap(one))(init_keys, hparams)
    return states.replace(step=jnp.int32(0))


STRATEGIES = ("vmap", "map", "devices")  # how one program runs the members' steps (bench/ensemble_strategy.py)
PLATFORM_STRATEGY = {"cpu": "vmap"}  # measured; a platform not listed (GPU, TPU: not yet measured) gets vmap
MULTI_DEVICE_STRATEGY = {"cpu": "devices"}  # measured with several devices and members a multiple of them


def platform_strategy(platform: str, *, devices: int = 1, members: int = 1) -> str:
    """The strategy ``train.ensemble_strategy=auto`` picks on ``platform`` with ``devices`` devices for
    ``members`` members: :data:`MULTI_DEVICE_STRATEGY` where the members divide evenly over several
    devices, else :data:`PLATFORM_STRATEGY` (``bench/ensemble_strategy.py`` measures both)."""
    if devices > 1 and members % devices == 0:
        return MULTI_DEVICE_STRATEGY.get(platform, "devices")
    return PLATFORM_STRATEGY.get(platform, "vmap")


def member_axis_sharding(mesh, *, strategy: str) -> NamedSharding:
    """Where an array with a leading member axis lives: ``devices`` splits that axis over ``mesh``'s data
    axis (member k on device k // (K / devices)); the other strategies replicate it."""
    return NamedSharding(mesh, P("data") if strategy == "devices" else P())


def member_shardings(mesh, *, strategy: str) -> TrainState:
    """Where the stacked states live (:func:`member_axis_sharding`; the shared step counter replicated)."""
    members = member_axis_sharding(mesh, strategy=strategy)
    return TrainState(step=NamedSharding(mesh, P()), params=members, batch_stats=members, opt_state=members)


def ensemble_train_step(
    states: TrainState,
    train_images: jax.Array,
    keys: jax.Array,
    hparams: pretext.HParams,
    data_key: jax.Array,
    *,
    model: PretextNet,
    optimizer: optax.GradientTransformation,
    spec: pretext.StepSpec,
    batch_sharding=None,
    strategy: str = "vmap",
):
    """:func:`sla_jax.training.pretext.train_step` of every member (state, step key, hparams); images and the data key
    are shared. Metrics come back with a leading member axis. ``strategy``: ``vmap`` batches the members into
    one wider program; ``map`` runs them one after another inside the program (``lax.map``), each exactly
    the single run's step; ``devices`` (inside :func:`compile_ensemble_step`'s ``shard_map``) is ``vmap``
    over the members of one device."""
    step = partial(pretext.train_step, model=model, optimizer=optimizer, spec=spec, batch_sharding=batch_sharding)
    if strategy in ("vmap", "devices"):
        return jax.vmap(step, in_axes=(MEMBER_AXES, None, 0, 0, None), out_axes=(MEMBER_AXES, 0))(
            states, train_images, keys, hparams, data_key
        )
    if strategy != "map":
        raise ValueError(f"ensemble strategy must be one of {STRATEGIES}, got {strategy!r}")

    def one(member):
        state, key, hp = member
        return step(state, train_images, key, hp, data_key)

    count = keys.shape[0]
    per_member = states.replace(step=jnp.broadcast_to(states.step, (count,)))
    new, metrics_ = jax.lax.map(one, (per_member, keys, hparams))
    return new.replace(step=new.step[0]), metrics_


def compile_ensemble_step(*, model, optimizer, spec: pretext.StepSpec, mesh, strategy: str = "vmap"):
    """Jit the ensemble step. ``vmap``/``map``: everything replicated, each member's batch sharded over
    ``mesh``. ``devices``: the members split over ``mesh``'s devices (:func:`member_shardings`), each device
    stepping its own members on whole batches; no gradient crosses devices."""
    replicated = NamedSharding(mesh, P())
    if strategy == "devices":
        step = partial(ensemble_train_step, model=model, optimizer=optimizer, spec=spec, strategy="devices")
        placed, by_member = member_shardings(mesh, strategy=strategy), member_axis_sharding(mesh, strategy=strategy)
        states, members = jax.tree_util.tree_map(lambda s: s.spec, placed), by_member.spec
        local = jax.shard_map(
            step,
            mesh=mesh,
            in_specs=(states, P(), members, members, P()),
            out_specs=(states, members),
            check_vma=False,  # no collectives inside; the edits' lax.cond mixes per-member and shared values
        )
        return jax.jit(
            local,
            in_shardings=(placed, replicated, by_member, by_member, replicated),
            out_shardings=(placed, by_member),
            donate_argnums=(0,),
        )
    step = partial(
        ensemble_train_step,
        model=model,
        optimizer=optimizer,
        spec=spec,
        strategy=strategy,
        batch_sharding=NamedSharding(mesh, P("data")),
    )
    return jax.jit(step, in_shardings=replicated, out_shardings=(replicated, replicated), donate_argnums=(0,))


def member_variables(states: TrainState, k: int) -> dict:
    """Flax variables of member ``k`` (its network params without the learned label parameters, its
    BatchNorm statistics): what a single run's evaluation takes."""
    variables = {"params": pretext.network_params(states.params), "batch_stats": states.batch_stats}
    return jax.tree_util.tree_map(lambda x: x[k], variables)


def with_backbone(states: TrainState, backbone: dict, *, optimizer: optax.GradientTransformation) -> TrainState:
    """Every member's backbone replaced by ``backbone`` (``model.init``; heads stay their own), each member's
    optimizer state re-initialised, as :func:`sla_jax.training.pretrained.with_backbone` does for a single run."""

    def one(state):
        return pretrained.with_backbone(state, backbone, optimizer=optimizer)

    return jax.vmap(one, in_axes=(MEMBER_AXES,), out_axes=MEMBER_AXES)(states)


SWEEP_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")  # tabled over seeds when the members have them


def _spread(values: list) -> dict:
    """Mean, sample standard deviation, min and max; all None when a value is undefined (None)."""
    if any(v is None for v in values):
        return {"mean": None, "std": None, "min": None, "max": None}
    array = np.asarray(values, np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "min": float(array.min()), "max": float(array.max())}


def sweep_table(members: list[Member], results: list[dict]) -> list[dict]:
    """One row per (mode, α, ε) over seeds: the image AUROCs with their mean, sample standard deviation, min
    and max (``mean``, ``std``, ``min``, ``max``), and the same for the pixel AUROC and AUPRO of patch models
    (``pixel_auroc_mean``, ...)."""
    groups: dict[tuple, list] = {}
    for member, found in zip(members, results):
        key = ("hard", None, None) if member.mode == "hard" else (member.mode, member.alpha, member.epsilon)
        groups.setdefault(key, []).append((member.seed, found))
    present = [m for m in SWEEP_METRICS if any(m in found for found in results)]
    rows = []
    for (mode, alpha, epsilon), runs in groups.items():
        row = {"labels": mode, "alpha": alpha, "epsilon": epsilon, "seeds": [s for s, _ in runs]}
        for metric in present:
            values = [None if found.get(metric) is None else float(found[metric]) for _, found in runs]
            spread = _spread(values)
            row[metric] = values
            row.update(spread if metric == "image_auroc" else {f"{metric}_{k}": v for k, v in spread.items()})
        rows.append(row)
    return rows
