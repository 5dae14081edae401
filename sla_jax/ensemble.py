"""K models in one program: a vmapped train step over stacked states, label hyper-parameters and seeds.

Each member is :func:`sla_jax.train.train_step` with its own :class:`~sla_jax.train.HParams` (α, ε, τ,
hard) and its own seed; parameters, optimizer state and BatchNorm statistics carry a leading member
axis K, the step counter is shared. Members share the data stream: every step all of them see the same
source images (indices drawn from the ensemble's ``config.seed``), and each draws its own edits (and its
own initialisation) from its seed. So member k equals the single run ``train_step(state_k, images,
step_key(seed_k), hparams_k, data_key)``, and a member whose seed is ``config.seed`` equals the plain
``python -m sla_jax.train`` run with the same settings.

Evaluation is vmapped too: K embeddings per batch, K Gaussians, K image AUROCs in one pass.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from sla_jax import density, evaluate, metrics  # noqa: E402
from sla_jax import report as report_lib  # noqa: E402
from sla_jax import train as train_lib  # noqa: E402
from sla_jax.models import PretextNet  # noqa: E402
from sla_jax.state import (TrainState, checkpoint_manager, data_mesh, init_state, lr_schedule,  # noqa: E402
                           restore_latest)
from sla_jax.validation import ConfigError, validate  # noqa: E402

# The paper's Table 4 (MVTec AD mean image AUROC %, CPS-SLA, 256 px): drawn for reference only.
PAPER_TABLE4 = {1: 67.9, 2: 79.5, 5: 91.2, 7: 92.7, 10: 94.2, 15: 94.1}
MEMBER_AXES = TrainState(step=None, params=0, batch_stats=0, opt_state=0)


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


def members_from_config(config: ml_collections.ConfigDict) -> list[Member]:
    """The grid ``ensemble.alphas × ensemble.epsilons × ensemble.seeds`` in ``labels.mode``, plus one
    hard-label member per seed when ``ensemble.hard``."""
    ens = config.ensemble
    mode = config.labels.mode
    tau = float(config.labels.tau) if mode == "smooth" else 0.0
    epsilons = tuple(ens.epsilons) or (config.labels.epsilon,)
    members = [Member(seed=int(s), alpha=float(a), epsilon=float(e), mode=mode, tau=tau)
               for a in ens.alphas for e in epsilons for s in ens.seeds]
    if ens.hard:
        members += [Member(seed=int(s), alpha=float(config.labels.alpha), epsilon=float(config.labels.epsilon),
                           mode="hard") for s in ens.seeds]
    return members


def validate_ensemble(config: ml_collections.ConfigDict) -> None:
    """:func:`sla_jax.validation.validate` plus the ``ensemble`` section's own checks."""
    validate(config)
    ens = config.ensemble
    if config.labels.mode == "hard":
        raise ConfigError("config.labels.mode='hard' with an ensemble: α members need soft or smooth labels; "
                          "hard-label members come from config.ensemble.hard=True")
    if config.model.init:
        raise ConfigError("config.model.init is not supported with an ensemble yet: members start from random init")
    if not ens.seeds:
        raise ConfigError("config.ensemble.seeds is empty: give at least one seed, e.g. (0, 1)")
    if not ens.alphas and not ens.hard:
        raise ConfigError("config.ensemble has no members: set ensemble.alphas or ensemble.hard=True")
    for a in ens.alphas:
        if not a >= 0:
            raise ConfigError(f"config.ensemble.alphas contains {a}: every α must be >= 0")
    for e in ens.epsilons:
        if not 0 < e < 3:
            raise ConfigError(f"config.ensemble.epsilons contains {e}: every ε must lie in (0, 3)")
    if config.localization.patch_size:
        raise ConfigError("config.localization.patch_size > 0 with an ensemble: patch models are not vmapped; "
                          "set --config.localization.patch_size=0")


def stack_hparams(members: list[Member]) -> train_lib.HParams:
    """Member hyper-parameters stacked on a leading axis (traced: a new grid does not recompile)."""
    return train_lib.HParams.create(alpha=[m.alpha for m in members], epsilon=[m.epsilon for m in members],
                                    tau=[m.tau for m in members], hard=[float(m.mode == "hard") for m in members])


def member_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(init key, step key) of a member: those of a single run with ``config.seed = seed``."""
    root = jax.random.key(seed)
    return jax.random.fold_in(root, train_lib.KEY_INIT), jax.random.fold_in(root, train_lib.KEY_STEP)


def init_ensemble(init_keys: jax.Array, hparams: train_lib.HParams, *, model: PretextNet,
                  optimizer: optax.GradientTransformation, image_size: int, learn: tuple[str, ...] = ()) -> TrainState:
    """Stacked states, member k initialised exactly as a single run from ``init_keys[k]``; one shared step."""
    def one(key, hp):
        state = init_state(key, model=model, optimizer=optimizer, image_size=image_size)
        return train_lib.with_label_params(state, hp, learn=learn, optimizer=optimizer)

    states = jax.jit(jax.vmap(one))(init_keys, hparams)
    return states.replace(step=jnp.int32(0))


def ensemble_train_step(states: TrainState, train_images: jax.Array, keys: jax.Array, hparams: train_lib.HParams,
                        data_key: jax.Array, *, model: PretextNet, optimizer: optax.GradientTransformation,
                        spec: train_lib.StepSpec, batch_sharding=None):
    """:func:`sla_jax.train.train_step` vmapped over members (state, step key, hparams); images and the
    data key are shared. Metrics come back with a leading member axis."""
    step = partial(train_lib.train_step, model=model, optimizer=optimizer, spec=spec, batch_sharding=batch_sharding)
    return jax.vmap(step, in_axes=(MEMBER_AXES, None, 0, 0, None), out_axes=(MEMBER_AXES, 0))(
        states, train_images, keys, hparams, data_key)


def compile_ensemble_step(*, model, optimizer, spec: train_lib.StepSpec, mesh):
    """Jit the ensemble step: everything replicated, each member's batch sharded over ``mesh``."""
    replicated = NamedSharding(mesh, P())
    step = partial(ensemble_train_step, model=model, optimizer=optimizer, spec=spec,
                   batch_sharding=NamedSharding(mesh, P("data")))
    return jax.jit(step, in_shardings=replicated, out_shardings=(replicated, replicated), donate_argnums=(0,))


def network_variables(states: TrainState) -> dict:
    """Flax variables (params without the learned label parameters, batch_stats), member axis kept."""
    return {"params": train_lib.network_params(states.params), "batch_stats": states.batch_stats}


@jax.jit
def ensemble_scores(train_feats_KxNxD: jax.Array, test_feats_KxMxD: jax.Array, test_labels_M: jax.Array):
    """K GDEs fitted, K score vectors and K image AUROCs, vmapped over the member axis."""
    gaussians = jax.vmap(density.fit_gaussian)(train_feats_KxNxD)
    scores = jax.vmap(density.mahalanobis)(gaussians, test_feats_KxMxD)
    return gaussians, scores, jax.vmap(metrics.auroc, in_axes=(0, None))(scores, test_labels_M)


def sweep_table(members: list[Member], aurocs: np.ndarray) -> list[dict]:
    """One row per (mode, α, ε): mean, sample standard deviation, min, max of the AUROC over seeds."""
    groups: dict[tuple, list] = {}
    for member, auc in zip(members, aurocs):
        key = ("hard", None, None) if member.mode == "hard" else (member.mode, member.alpha, member.epsilon)
        groups.setdefault(key, []).append((member.seed, float(auc)))
    rows = []
    for (mode, alpha, epsilon), runs in groups.items():
        values = np.array([v for _, v in runs])
        rows.append({"labels": mode, "alpha": alpha, "epsilon": epsilon, "seeds": [s for s, _ in runs],
                     "image_auroc": [float(v) for v in values], "mean": float(values.mean()),
                     "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                     "min": float(values.min()), "max": float(values.max())})
    return rows


def write_sweep(rows: list[dict], workdir: str, *, title: str, note: str) -> None:
    """alpha_sweep.json, alpha_sweep.md (table) and alpha_sweep.png (AUROC against α, seed spread)."""
    with open(os.path.join(workdir, "alpha_sweep.json"), "w", encoding="utf-8") as f:
        json.dump({"title": title, "note": note, "rows": rows}, f, indent=2)
    lines = [f"# {title}", "", note, "",
             "| labels | α | ε | seeds | image AUROC mean | std | min | max | per seed |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        alpha = "–" if r["alpha"] is None else f"{r['alpha']:g}"
        eps = "–" if r["epsilon"] is None else f"{r['epsilon']:g}"
        per_seed = ", ".join(f"{v:.4f}" for v in r["image_auroc"])
        lines.append(f"| {r['labels']} | {alpha} | {eps} | {len(r['seeds'])} | {r['mean']:.4f} | {r['std']:.4f} "
                     f"| {r['min']:.4f} | {r['max']:.4f} | {per_seed} |")
    with open(os.path.join(workdir, "alpha_sweep.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    by_curve: dict[tuple, list] = {}
    for r in rows:
        if r["alpha"] is not None:
            by_curve.setdefault((r["labels"], r["epsilon"]), []).append(r)
    for (mode, eps), curve in by_curve.items():
        curve = sorted(curve, key=lambda r: r["alpha"])
        alphas = [r["alpha"] for r in curve]
        line = ax.errorbar(alphas, [r["mean"] for r in curve], yerr=[r["std"] for r in curve], marker="o",
                           capsize=3, label=f"{mode} labels, ε={eps:g} (mean ± std over seeds)")
        for r in curve:
            ax.scatter([r["alpha"]] * len(r["image_auroc"]), r["image_auroc"], s=10, alpha=0.5,
                       color=line[0].get_color())
    for r in rows:
        if r["labels"] == "hard":
            ax.axhline(r["mean"], color="black", ls="--", lw=1, label=f"hard labels (mean {r['mean']:.3f})")
            if r["std"]:
                ax.axhspan(r["mean"] - r["std"], r["mean"] + r["std"], color="black", alpha=0.08)
    ax.plot(list(PAPER_TABLE4), [v / 100 for v in PAPER_TABLE4.values()], color="grey", ls=":", marker="x",
            label="paper Table 4 (MVTec AD mean, CPS, 256 px)")
    ax.set(xlabel="α (SLA steepness)", ylabel="image AUROC", title=title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "alpha_sweep.png"))
    plt.close(fig)


def run(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> dict:
    """Train every member in one program (resuming from ``workdir``), evaluate all, write the sweep table."""
    validate_ensemble(config)
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
        f.write(config.to_json_best_effort(indent=2))
    started = time.perf_counter()
    members = members_from_config(config)
    dataset = evaluate.load_dataset(config, workdir)
    mesh = data_mesh()
    replicated = NamedSharding(mesh, P())
    spec = train_lib.spec_from_config(config)
    model = evaluate.model_from_config(config)
    total = int(config.train.steps)
    optimizer = evaluate.optimizer_from_config(config)
    hparams = jax.device_put(stack_hparams(members), replicated)
    init_keys, step_keys = (jnp.stack(k) for k in zip(*(member_keys(m.seed) for m in members)))
    data_key = member_keys(config.seed)[1]
    learn = tuple(config.labels.learn)
    states = jax.device_put(init_ensemble(init_keys, hparams, model=model, optimizer=optimizer,
                                          image_size=evaluate.model_input_size(config), learn=learn), replicated)
    manager = checkpoint_manager(workdir, keep=config.train.keep_checkpoints)
    states = restore_latest(manager, states)
    resumed_from = int(states.step)
    if resumed_from:
        print(f"resuming from the checkpoint at step {resumed_from} in {manager.directory}")
    train_images = jax.device_put(dataset.train.images, replicated)
    compiled = compile_ensemble_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh)
    step_fn = lambda s, images, keys: compiled(s, images, keys[0], hparams, keys[1])  # noqa: E731
    print(f"training {len(members)} members in one program ({config.transform.name.upper()}, "
          f"{len(dataset.train.images)} images of {config.data.image_size} px, {total} steps of {spec.batch_size} "
          f"per member, {jax.device_count()} device(s))")
    try:
        with open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8") as log:
            states = train_lib.fit(states, train_images, (step_keys, data_key), step_fn=step_fn, total_steps=total,
                                   images_per_step=spec.batch_size * len(members), manager=manager,
                                   checkpoint_every=config.train.checkpoint_every, log_every=config.train.log_every,
                                   log=log, schedule=lr_schedule(learning_rate=config.train.learning_rate,
                                                                 total_steps=total), progress=progress)
    finally:
        manager.close()
    train_seconds = time.perf_counter() - started

    options = dict(model=model, batch_size=config.eval.batch_size, mesh=mesh, l2_normalize=config.eval.l2_normalize,
                   stacked=True)
    variables = network_variables(states)
    train_feats = evaluate.embed(variables, dataset.train.images, **options)
    test_feats = evaluate.embed(variables, dataset.test.images, **options)
    gaussians, scores, aurocs = jax.device_get(ensemble_scores(train_feats, test_feats, dataset.test.labels))
    learned = train_lib.effective_hparams(jax.device_get(states.params), stack_hparams(members))
    member_results = []
    for k, member in enumerate(members):
        report = evaluate.detection_report(np.asarray(scores[k]), dataset.test)
        entry = {"name": member.name, **dataclasses.asdict(member), **report, "image_auroc": float(aurocs[k]),
                 "gde_shrinkage": float(gaussians.shrinkage[k])}
        for name in learn:
            entry[f"learned_{name}"] = float(getattr(learned, name)[k])
        member_results.append(entry)
    rows = sweep_table(members, aurocs)
    title = f"{dataset.category}: {config.transform.name.upper()} image AUROC against α"
    note = (f"{len(members)} members trained in one program: {total} steps of batch {spec.batch_size}, "
            f"{config.data.image_size} px, head {tuple(config.model.head)}, stem {config.model.stem}; "
            f"seeds {tuple(config.ensemble.seeds)}; std is the sample standard deviation over seeds.")
    write_sweep(rows, workdir, title=title, note=note)
    reference = [m["image_auroc"] for m in member_results
                 if m["mode"] != "hard" and m["alpha"] == float(config.labels.alpha)]
    results = {"category": dataset.category, "data_root": os.path.abspath(dataset.root),
               "transform": config.transform.name, "image_size": int(config.data.image_size),
               "n_train": int(len(dataset.train.images)), "n_test": int(len(dataset.test.labels)),
               "members": member_results, "table": rows,
               "image_auroc": float(np.mean(reference or [m["image_auroc"] for m in member_results])),
               "image_auroc_of": (f"mean over the members with alpha={config.labels.alpha:g}" if reference
                                  else "mean over all members"),
               "steps": total}
    evaluate.write_results(results, workdir)
    evaluate.write_timing({"resumed_from_step": resumed_from, "train_seconds": train_seconds,
                           "seconds": time.perf_counter() - started}, workdir)
    report_lib.write_run_report(workdir)
    return results
