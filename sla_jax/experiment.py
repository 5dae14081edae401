"""An experiment from its config: the one module (besides ``validation`` and the command lines) that reads a
``ConfigDict``.

It turns a config into the things the library takes (a dataset, a model, an optimizer, the pretext step's
:class:`~sla_jax.pretext.StepSpec` and :class:`~sla_jax.pretext.HParams`, the main task's
:class:`~sla_jax.detection.EvalSpec`, ensemble members, a restored model) and runs what the command
lines ask for: train then evaluate (:func:`train_and_evaluate`), re-evaluate a workdir
(:func:`evaluate_workdir`), load a trained detector (:func:`load_detector`) and export it to ONNX
(:func:`export_workdir`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
import time
from functools import partial

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sla_jax import data as data_lib
from sla_jax import detection, distributed, ensemble, identity, loop, pretext, pretrained, timing
from sla_jax import state as state_lib
from sla_jax import transforms as transforms_lib
from sla_jax import workdir as workdir_lib
from sla_jax.data.synthetic import write_demo_dataset
from sla_jax.models import PretextNet
from sla_jax.outputs import atomic, board, files, plots, report
from sla_jax.validation import ConfigError, validate, validate_ensemble

# ----------------------------------------------------------------------------- config → objects


def model_from_config(config: ml_collections.ConfigDict) -> PretextNet:
    return PretextNet(
        num_classes=transforms_lib.num_classes(config.transform.name),
        head=tuple(config.model.head),
        stem=config.model.stem,
        conv_impl=config.model.conv_impl,
        dtype=jnp.dtype(config.model.dtype),
    )


def optimizer_from_config(config: ml_collections.ConfigDict):
    """The training optimizer; the backbone freeze applies only to a loaded backbone (``model.init``)."""
    return state_lib.make_optimizer(
        learning_rate=config.train.learning_rate,
        momentum=config.train.momentum,
        weight_decay=config.train.weight_decay,
        total_steps=config.train.steps,
        freeze_backbone_steps=config.train.freeze_steps if config.model.init else 0,
        decay_all=config.train.weight_decay_on == "all",
    )


def model_input_size(config: ml_collections.ConfigDict) -> int:
    """Side of the network's input: the patch size for patch models, else the image size."""
    return config.localization.patch_size or config.data.image_size


def dataset_from_config(config: ml_collections.ConfigDict, workdir: str) -> data_lib.Dataset:
    """Train and test splits named by ``config.data`` (the demo set is generated into WORKDIR/demo_data)."""
    root = config.data.root
    if config.data.demo:
        root = root or write_demo_dataset(
            os.path.join(workdir, "demo_data"), seed=config.seed, log=lambda line: print(line, flush=True)
        )
    return data_lib.load_dataset(
        root,
        category=config.data.category,
        image_size=config.data.image_size,
        cache_dir=config.data.cache_dir or None,
        require_masks=config.data.require_masks,
        skip_bad_files=config.data.skip_bad_files,
        resample=config.data.resize,
    )


def train_folder(dataset: data_lib.Dataset) -> str:
    return os.path.join(os.path.abspath(dataset.root), dataset.category, "train", "good")


def check_data_folder(config: ml_collections.ConfigDict) -> None:
    """Scan the data folder (not the generated demo data) before anything is written: a missing root or
    category, an empty training folder or missing masks raise DataError with the workdir not yet made."""
    if config.data.root:
        data_lib.scan_category(
            config.data.root,
            category=config.data.category,
            require_masks=config.data.require_masks,
            skip_bad_files=config.data.skip_bad_files,
        )


def spec_from_config(config: ml_collections.ConfigDict) -> pretext.StepSpec:
    """The step's static options. Scars are sized for the whole image (``transform.scar_size``), also when
    the network sees patches of it."""
    return pretext.StepSpec(
        batch_size=config.train.batch_size,
        transform=config.transform.name,
        pairing=config.transform.pairing,
        cutout_fill=config.transform.cutout_fill,
        patch_size=int(config.localization.patch_size),
        scar_scale=transforms_lib.scar_scale(config.data.image_size, rule=config.transform.scar_size),
        global_jitter=float(config.transform.global_jitter),
        jitter_order=config.transform.jitter_order,
    )


def hparams_from_config(config: ml_collections.ConfigDict) -> pretext.HParams:
    mode = config.labels.mode
    return pretext.HParams.create(
        alpha=config.labels.alpha,
        epsilon=config.labels.epsilon,
        tau=config.labels.tau if mode == "smooth" else 0.0,
        hard=float(mode == "hard"),
    )


def eval_spec_from_config(config: ml_collections.ConfigDict) -> detection.EvalSpec:
    loc = config.localization
    patches = None
    if loc.patch_size:
        patches = detection.PatchSpec(
            size=int(loc.patch_size),
            stride=int(loc.stride),
            train_stride=int(loc.train_stride),
            sigma=float(loc.sigma),
            normalize=bool(loc.normalize),
            gde=loc.gde,
            batch_size=int(loc.batch_size),
            threshold_images=int(config.eval.threshold_images),
        )
    return detection.EvalSpec(
        batch_size=int(config.eval.batch_size),
        l2_normalize=bool(config.eval.l2_normalize),
        density=config.eval.density,
        threshold_quantile=float(config.eval.threshold_quantile),
        threshold_folds=int(config.eval.threshold_folds),
        patches=patches,
    )


def members_from_config(config: ml_collections.ConfigDict) -> list[ensemble.Member]:
    """The grid ``ensemble.alphas × ensemble.epsilons × ensemble.seeds`` in ``labels.mode``, plus one
    hard-label member per seed when ``ensemble.hard``."""
    ens = config.ensemble
    mode = config.labels.mode
    tau = float(config.labels.tau) if mode == "smooth" else 0.0
    epsilons = tuple(ens.epsilons) or (config.labels.epsilon,)
    members = [
        ensemble.Member(seed=int(s), alpha=float(a), epsilon=float(e), mode=mode, tau=tau)
        for a in ens.alphas
        for e in epsilons
        for s in ens.seeds
    ]
    if ens.hard:
        members += [
            ensemble.Member(
                seed=int(s), alpha=float(config.labels.alpha), epsilon=float(config.labels.epsilon), mode="hard"
            )
            for s in ens.seeds
        ]
    return members


def initial_backbone(
    state: state_lib.TrainState, config: ml_collections.ConfigDict, *, optimizer
) -> state_lib.TrainState:
    """``state`` with the backbone of ``config.model.init`` loaded, if one is named (head stays fresh)."""
    freeze = config.train.freeze_steps if config.model.init and config.train.steps else 0
    print(
        f"backbone: {config.model.init or 'random initialisation'}"
        + (f", frozen for the first {freeze} steps" if freeze else "")
        + (
            "; train.steps=0: no pretext training, the GDE is fitted on these features"
            if not config.train.steps
            else ""
        )
    )
    if not config.model.init:
        return state
    return pretrained.with_backbone(state, pretrained.load_backbone(config.model.init), optimizer=optimizer)


def run_title(config: ml_collections.ConfigDict, category: str) -> str:
    return f"{category}: {config.transform.name.upper()}-{'hard' if config.labels.mode == 'hard' else 'SLA'}"


# ----------------------------------------------------------------------------- train, then evaluate


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True, startup_seconds: float | None = None
) -> dict:
    """Train (resuming from ``workdir`` when it holds a checkpoint of the same run), then evaluate; returns the
    results.

    Paths in the config are made absolute first (a run's paths are its own). Holds the workdir's lock
    throughout; before anything is written, a workdir that holds another run is refused
    (:func:`sla_jax.identity.check_resume`). ``results.json`` holds only what the seed determines (the
    timings go to ``timing.json``). A config with an ``ensemble`` section trains all its members in one
    program (:func:`train_ensemble`)."""
    config = with_absolute_paths(config)
    validate_ensemble(config) if "ensemble" in config else validate(config)
    check_data_folder(config)
    # In a multi-process run the primary process holds the lock (the workdir is shared by all).
    primary = distributed.is_primary()
    lock = workdir_lib.claimed(workdir) if primary else contextlib.nullcontext()
    with lock:
        lineage = claim_run(config, workdir) if primary else []
        if "ensemble" in config:
            return train_ensemble(config, workdir, progress=progress, lineage=lineage, startup_seconds=startup_seconds)
        return _train_and_evaluate(config, workdir, progress=progress, lineage=lineage, startup_seconds=startup_seconds)


def with_absolute_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``data.root``, ``data.cache_dir`` and ``model.init`` absolute, so that the
    run's ``config.json`` means the same files from any working directory."""
    config = copy.deepcopy(config)
    for key in identity.PATH_KEYS:
        section, name = key.split(".")
        value = config[section][name]
        if value:
            config[section][name] = os.path.abspath(os.path.expanduser(value))
    return config


def claim_run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    """Check that ``workdir`` is new or holds this run, then write its ``config.json`` (and ``lineage.json``
    when ``train.steps`` changed); returns the run's training segments (empty for one schedule). Raises
    before writing anything when the workdir holds another run."""
    saved = identity.read_saved_config(workdir)
    steps = identity.checkpoint_steps(workdir)
    newest = steps[-1] if steps else None
    finished = os.path.isfile(os.path.join(workdir, "results.json"))
    if saved is None and (newest is not None or finished):
        raise workdir_lib.WorkdirError(
            f"the workdir {workdir} holds checkpoints or results but no config.json, so "
            "nothing tells which run they are of: use another --workdir."
        )
    lineage = identity.read_lineage(workdir)
    if saved is not None and (newest is not None or finished):
        config_of_saved(saved, path=os.path.join(workdir, identity.CONFIG))  # a cut or edited file is named
        note = identity.check_resume(saved, config.to_dict(), workdir=workdir, newest=newest)
        if note:
            print(note)
            lineage = identity.extend_lineage(
                workdir,
                old_steps=int(saved["train"]["steps"]),
                new_steps=int(config.train.steps),
                newest=int(newest or 0),
            )
            atomic.write_json(os.path.join(workdir, identity.LINEAGE), {"segments": lineage})
    atomic.write_text(os.path.join(workdir, identity.CONFIG), config.to_json_best_effort(indent=2) + "\n")
    return lineage


def _train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    progress: bool,
    lineage: list[dict],
    startup_seconds: float | None = None,
) -> dict:
    primary = distributed.is_primary()
    os.makedirs(workdir, exist_ok=True)
    phases = timing.Phases()
    with phases("data"):
        dataset = distributed.primary_first(lambda: dataset_from_config(config, workdir))
    detection.check_train_size(len(dataset.train.images), eval_spec_from_config(config), where=train_folder(dataset))
    with phases("setup"):
        mesh = state_lib.data_mesh()
        spec = spec_from_config(config)
        model = model_from_config(config)
        total = int(config.train.steps)
        optimizer = optimizer_from_config(config)
        root = jax.random.key(config.seed)
        replicated = NamedSharding(mesh, P())
        hparams = hparams_from_config(config)
        init = partial(state_lib.init_state, model=model, optimizer=optimizer, image_size=model_input_size(config))
        state = jax.jit(init, out_shardings=replicated)(jax.random.fold_in(root, pretext.KEY_INIT))
        started_from = pretext.with_label_params(
            initial_backbone(state, config, optimizer=optimizer),
            hparams,
            learn=tuple(config.labels.learn),
            optimizer=optimizer,
        )
        if started_from is not state:  # loaded weights or label parameters: place the new leaves like the rest
            state = jax.tree_util.tree_map(
                lambda x: distributed.replicated_array(np.asarray(x), replicated), started_from
            )
        workdir_lib.check_free_space(
            workdir, needed_bytes=(config.train.keep_checkpoints + 1) * state_lib.tree_bytes(state)
        )
        manager = state_lib.checkpoint_manager(workdir, keep=config.train.keep_checkpoints)
        state = state_lib.restore_latest(manager, state)  # a checkpoint takes precedence over model.init
        resumed_from = int(state.step)
        if resumed_from:
            print(f"resuming from the checkpoint at step {resumed_from} in {manager.directory}")
        train_images = distributed.replicated_array(dataset.train.images, replicated)
        step_key = jax.random.fold_in(root, pretext.KEY_STEP)
    n_train = len(dataset.train.images)
    patches = f", {spec.patch_size} px patches" if spec.patch_size else ""
    print(
        f"training {config.transform.name.upper()} ({config.labels.mode} labels) on {n_train} images of "
        f"{config.data.image_size} px{patches}, {total} steps of {spec.batch_size}, {jax.device_count()} device(s)"
        + (
            f" in {jax.process_count()} processes (this is process {jax.process_index()})"
            if jax.process_count() > 1
            else ""
        )
    )
    per_call = int(config.train.steps_per_call)  # > 1: chunks of steps in one program each (loop.fit)
    chunks = functools.cache(
        lambda k: pretext.compile_train_steps(
            model=model, optimizer=optimizer, spec=spec, mesh=mesh, steps=k, summed=loop.AVERAGED_METRICS
        )
    )
    first_k = min(per_call, max(total - resumed_from, 1))
    first = (
        pretext.compile_train_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh)
        if per_call == 1
        else chunks(first_k)
    )
    compiled = compile_ahead(
        first,
        (state, train_images, step_key, hparams),
        needed=resumed_from < total,
        phases=phases,
        progress=progress and primary,
    )
    step_fn = lambda s, images, key: compiled(s, images, key, hparams)  # noqa: E731

    def chunk_fn(k):  # a function running k steps (the first chunk's length compiled ahead, others when reached)
        program = compiled if k == first_k else chunks(k)
        return lambda s, images, key: program(s, images, key, hparams)

    log_name = "metrics.jsonl" if primary else f"metrics.process{jax.process_index()}.jsonl"
    writers = board.open_writers(workdir, resumed_from=resumed_from) if config.train.tensorboard and primary else []
    rates: list[float] = []
    try:
        with files.run_log(workdir, name=log_name, resumed_from=resumed_from, writers=writers) as log, phases("train"):
            state = loop.fit(
                state,
                train_images,
                step_key,
                step_fn=step_fn,
                total_steps=total,
                images_per_step=spec.batch_size,
                manager=manager,
                checkpoint_every=config.train.checkpoint_every,
                log_every=config.train.log_every,
                log=lambda record: rates.append(record["images_per_s"]) or log(record),
                schedule=state_lib.lr_schedule(learning_rate=config.train.learning_rate, total_steps=total),
                progress=progress and primary,
                started=phases.started,
                steps_per_call=per_call,
                chunk_fn=chunk_fn,
            )
        if not total and manager.latest_step() is None:  # train.steps=0: the features as loaded are the model
            loop.save_checkpoint(manager, 0, state)
    finally:
        manager.close()
    variables = {"params": pretext.network_params(state.params), "batch_stats": state.batch_stats}
    step = int(state.step)
    results = _evaluate(
        variables,
        dataset,
        model=model,
        config=config,
        mesh=mesh,
        out_dir=workdir if primary else None,
        step=step,
        progress=progress and primary,
        phases=phases,
    )
    if "sla" in state.params:
        learned = pretext.effective_hparams(state.params, hparams)
        results["learned_labels"] = {
            k[len("log_") :]: float(getattr(learned, k[len("log_") :])) for k in state.params["sla"]
        }
    results.update(
        steps=step,
        init=config.model.init or "random",
        processes=jax.process_count(),
        **({"lineage": lineage} if lineage else {}),
    )
    with phases("files"):
        if primary:
            files.write_results(results, workdir)
            report.write_run_report(workdir)
        finish_board(writers, workdir, [board_settings(config)], [results], step=step)
    if primary:
        files.write_timing(
            timing_record(phases, resumed_from=resumed_from, rates=rates, startup_seconds=startup_seconds), workdir
        )
    return results


def compile_ahead(jitted, args: tuple, *, needed: bool, phases: timing.Phases, progress: bool):
    """``jitted`` compiled for ``args`` now, as the "compile" phase (said when ``progress``), so that compiling
    is timed apart from training; ``jitted`` itself when no step is left to run."""
    if not needed:
        return jitted
    with phases("compile"):
        if progress:
            print("compiling the training step", flush=True)
        return jitted.lower(*args).compile()


def timing_record(
    phases: timing.Phases, *, resumed_from: int, rates: list[float], startup_seconds: float | None
) -> dict:
    """``timing.json``: seconds per phase (``startup``: interpreter start and imports, then data, setup,
    compile, train, evaluate, files), the steady training rate (median images/s of the logged windows after
    the first) and the step a run resumed from."""
    record = phases.record()
    if startup_seconds is not None:
        record["phases"] = {"startup": startup_seconds, **record["phases"]}
    steady = rates[1:] or rates
    return {
        **record,
        "resumed_from_step": resumed_from,
        "train_seconds": record["phases"].get("train", 0.0),
        "images_per_s": float(np.median(steady)) if steady else None,
    }


def board_settings(config: ml_collections.ConfigDict, member: ensemble.Member | None = None) -> dict:
    """The run's settings for TensorBoard's HParams view: every key that tells runs apart (not the free ones,
    not the data paths), with an ensemble member's own seed and label settings."""
    flat = identity.flatten(config.to_dict())
    settings = {
        k: v
        for k, v in flat.items()
        if not identity.is_free(k) and k not in ("data.root", "data.cache_dir") and not k.startswith("ensemble.")
    }
    if member is not None:
        settings.update(
            {
                "seed": member.seed,
                "labels.alpha": member.alpha,
                "labels.epsilon": member.epsilon,
                "labels.mode": member.mode,
                "labels.tau": member.tau,
            }
        )
    return settings


def finish_board(writers, workdir: str, settings: list[dict], results: list[dict], *, step: int) -> None:
    """The run's figures (into the first writer) and each run's settings with its final metrics, then close."""
    try:
        if writers:
            board.log_figures(writers[0], workdir, step=step)
        for writer, these, found in zip(writers, settings, results):
            board.log_hparams(writer, these, found, step=step)
    finally:
        board.close(writers)


def _evaluate(
    variables,
    dataset: data_lib.Dataset,
    *,
    model: PretextNet,
    config: ml_collections.ConfigDict,
    mesh,
    out_dir: str | None,
    step: int,
    progress: bool = False,
    phases: timing.Phases | None = None,
) -> dict:
    """:func:`sla_jax.detection.evaluate` with the run's options; writes gde.npz, scores.csv, roc.png (and,
    for patch models, maps.npz and heatmaps.png) into ``out_dir`` (nothing when None: the other processes
    of a multi-process run); returns the results with the config's facts and the checkpoint ``step`` added."""
    spec = eval_spec_from_config(config)
    if out_dir:
        print(
            f"evaluating the checkpoint of step {step}: {len(dataset.train.images)} training and "
            f"{len(dataset.test.images)} test images" + (", defect maps" if spec.patches else ""),
            flush=True,
        )
    phases = phases or timing.Phases()
    with phases("evaluate"):
        found = detection.evaluate(variables, dataset, model=model, spec=spec, mesh=mesh, progress=progress)
    with phases("files"):
        _write_evaluation(found, dataset, config=config, spec=spec, out_dir=out_dir, step=step)
    return {
        "transform": config.transform.name,
        "labels": config.labels.mode,
        "alpha": float(config.labels.alpha),
        "image_size": int(config.data.image_size),
        **found.results,
        "checkpoint_step": step,
    }


def _write_evaluation(
    found: detection.Evaluation, dataset: data_lib.Dataset, *, config, spec, out_dir: str | None, step: int
) -> None:
    """gde.npz (kde.npz), scores.csv, roc.png and, for patch models, maps.npz and heatmaps.png."""
    if not out_dir:  # the other processes of a multi-process run
        return
    print(f"writing scores, figures{' and defect maps' if found.maps is not None else ''} into {out_dir}", flush=True)
    files.write_density(out_dir, found.fitted, kind=spec.density, threshold=found.threshold, checkpoint_step=step)
    files.write_scores_csv(found.scores, dataset.test, os.path.join(out_dir, "scores.csv"), checkpoint_step=step)
    plots.plot_roc(
        found.scores, dataset.test, os.path.join(out_dir, "roc.png"), title=run_title(config, dataset.category)
    )
    if found.maps is not None:
        test = dataset.test
        files.write_maps(
            os.path.join(out_dir, "maps.npz"),
            maps=found.maps,
            scores_low=found.scores_low,
            masks=found.masks,
            paths=test.paths,
        )
        titles = [
            f"{t}/{atomic.printable(os.path.basename(p))}: {plots.number(v)}"
            for t, p, v in zip(test.defect_types, test.paths, found.scores)
        ]
        plots.plot_heatmap_grid(
            test.images[:, : found.maps.shape[1], : found.maps.shape[2]],
            found.masks,
            found.maps,
            path=os.path.join(out_dir, "heatmaps.png"),
            titles=titles,
            max_images=config.localization.heatmaps,
            title=f"{dataset.category}: defect maps (outline: ground truth)",
            threshold=found.threshold,
            score_label=plots.map_label(spec.density, patch_size=spec.patches.size),
        )


# ----------------------------------------------------------------------------- an ensemble in one program


def train_ensemble(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    progress: bool = True,
    lineage: list[dict] = (),
    startup_seconds: float | None = None,
) -> dict:
    """Train every member in one program (resuming from ``workdir``), evaluate all, write the sweep table."""
    validate_ensemble(config)
    phases = timing.Phases()
    members = members_from_config(config)
    with phases("data"):
        dataset = dataset_from_config(config, workdir)
    detection.check_train_size(len(dataset.train.images), eval_spec_from_config(config), where=train_folder(dataset))
    mesh = state_lib.data_mesh()
    replicated = NamedSharding(mesh, P())
    spec = spec_from_config(config)
    model = model_from_config(config)
    total = int(config.train.steps)
    optimizer = optimizer_from_config(config)
    hparams = jax.device_put(ensemble.stack_hparams(members), replicated)
    init_keys, step_keys = (jnp.stack(k) for k in zip(*(ensemble.member_keys(m.seed) for m in members)))
    data_key = ensemble.member_keys(config.seed)[1]
    learn = tuple(config.labels.learn)
    states = jax.device_put(
        ensemble.init_ensemble(
            init_keys, hparams, model=model, optimizer=optimizer, image_size=model_input_size(config), learn=learn
        ),
        replicated,
    )
    manager = state_lib.checkpoint_manager(workdir, keep=config.train.keep_checkpoints)
    states = state_lib.restore_latest(manager, states)
    resumed_from = int(states.step)
    if resumed_from:
        print(f"resuming from the checkpoint at step {resumed_from} in {manager.directory}")
    train_images = jax.device_put(dataset.train.images, replicated)
    print(
        f"training {len(members)} members in one program ({config.transform.name.upper()}, "
        f"{len(dataset.train.images)} images of {config.data.image_size} px, {total} steps of {spec.batch_size} "
        f"per member, {jax.device_count()} device(s))"
    )
    strategy = config.train.get("ensemble_strategy", "auto")
    strategy = ensemble.platform_strategy(jax.default_backend()) if strategy == "auto" else strategy
    compiled = compile_ahead(
        ensemble.compile_ensemble_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh, strategy=strategy),
        (states, train_images, step_keys, hparams, data_key),
        needed=resumed_from < total,
        phases=phases,
        progress=progress,
    )
    step_fn = lambda s, images, keys: compiled(s, images, keys[0], hparams, keys[1])  # noqa: E731
    writers = (
        board.open_writers(workdir, members=[m.name for m in members], resumed_from=resumed_from)
        if config.train.tensorboard
        else []
    )
    rates: list[float] = []
    try:
        with files.run_log(workdir, resumed_from=resumed_from, writers=writers) as log, phases("train"):
            states = loop.fit(
                states,
                train_images,
                (step_keys, data_key),
                step_fn=step_fn,
                total_steps=total,
                images_per_step=spec.batch_size * len(members),
                manager=manager,
                checkpoint_every=config.train.checkpoint_every,
                log_every=config.train.log_every,
                log=lambda record: rates.append(record["images_per_s"]) or log(record),
                schedule=state_lib.lr_schedule(learning_rate=config.train.learning_rate, total_steps=total),
                progress=progress,
                started=phases.started,
            )
    finally:
        manager.close()

    eval_spec = eval_spec_from_config(config)
    options = dict(
        model=model, batch_size=eval_spec.batch_size, mesh=mesh, l2_normalize=eval_spec.l2_normalize, stacked=True
    )
    variables = ensemble.network_variables(states)
    with phases("evaluate"):
        train_feats = detection.embed(
            variables, dataset.train.images, **options, progress="embed train" if progress else ""
        )
        test_feats = detection.embed(
            variables, dataset.test.images, **options, progress="embed test" if progress else ""
        )
        gaussians, scores, aurocs = jax.device_get(
            ensemble.ensemble_scores(train_feats, test_feats, dataset.test.labels)
        )
    learned = pretext.effective_hparams(jax.device_get(states.params), ensemble.stack_hparams(members))
    member_results = []
    for k, member in enumerate(members):
        found = detection.detection_report(np.asarray(scores[k]), dataset.test)
        entry = {
            "name": member.name,
            **dataclasses.asdict(member),
            **found,
            "image_auroc": float(aurocs[k]),
            "gde_shrinkage": float(gaussians.shrinkage[k]),
        }
        for name in learn:
            entry[f"learned_{name}"] = float(getattr(learned, name)[k])
        member_results.append(entry)
    rows = ensemble.sweep_table(members, aurocs)
    title = f"{dataset.category}: {config.transform.name.upper()} image AUROC against α"
    note = (
        f"{len(members)} members trained in one program: {total} steps of batch {spec.batch_size}, "
        f"{config.data.image_size} px, head {tuple(config.model.head)}, stem {config.model.stem}; "
        f"seeds {tuple(config.ensemble.seeds)}; std is the sample standard deviation over seeds."
    )
    with phases("files"):
        files.write_sweep(rows, workdir, title=title, note=note)
    reference = [
        m["image_auroc"] for m in member_results if m["mode"] != "hard" and m["alpha"] == float(config.labels.alpha)
    ]
    results = {
        "category": dataset.category,
        "data_root": os.path.abspath(dataset.root),
        "transform": config.transform.name,
        "image_size": int(config.data.image_size),
        "n_train": int(len(dataset.train.images)),
        "n_test": int(len(dataset.test.labels)),
        "members": member_results,
        "table": rows,
        "image_auroc": float(np.mean(reference or [m["image_auroc"] for m in member_results])),
        "image_auroc_of": (
            f"mean over the members with alpha={config.labels.alpha:g}" if reference else "mean over all members"
        ),
        "steps": int(states.step),
        "checkpoint_step": int(states.step),
        **({"lineage": list(lineage)} if lineage else {}),
    }
    with phases("files"):
        files.write_results(results, workdir)
        report.write_run_report(workdir)
        finish_board(
            writers, workdir, [board_settings(config, m) for m in members], member_results, step=int(states.step)
        )
    files.write_timing(
        timing_record(phases, resumed_from=resumed_from, rates=rates, startup_seconds=startup_seconds), workdir
    )
    return results


# ----------------------------------------------------------------------------- a finished run's workdir


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was started with (``WORKDIR/config.json``), over the current defaults, checked. A file
    that is missing, cut short, edited into an unknown key or value, or records a relative path is a
    :class:`~sla_jax.errors.WorkdirError` naming it."""
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
    unknown key or a value out of range is a :class:`~sla_jax.errors.WorkdirError` naming the file."""
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
        validate_ensemble(config) if "ensemble" in saved else validate(config)
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
    model = model_from_config(config)
    optimizer = optimizer_from_config(config)
    state = state_lib.init_state(
        jax.random.key(0), model=model, optimizer=optimizer, image_size=model_input_size(config)
    )
    state = pretext.with_label_params(
        state, hparams_from_config(config), learn=tuple(config.labels.learn), optimizer=optimizer
    )
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
        dataset = dataset_from_config(config, workdir)
        out_dir = workdir if step is None else os.path.join(workdir, "steps", str(step))
        os.makedirs(out_dir, exist_ok=True)
        earlier = files.read_json(os.path.join(workdir, "results.json"))
        results = _evaluate(
            variables, dataset, model=model, config=config, mesh=mesh, out_dir=out_dir, step=restored, progress=progress
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


def load_detector(workdir: str) -> detection.Detector:
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
    kinds = {"gde": detection.density.Gaussian, "kde": detection.density.KDE}
    arrays, threshold, fitted_on = files.read_density(workdir, kind=kind, fields=kinds[kind]._fields)
    kept = identity.checkpoint_steps(workdir)
    newest = kept[-1] if kept else None
    if newest is not None and fitted_on != newest:  # refused before the checkpoint is restored
        raise workdir_lib.WorkdirError(
            f"{os.path.join(workdir, files.DENSITY_FILES[kind])} was fitted on "
            + ("an unrecorded checkpoint" if fitted_on is None else f"the checkpoint of step {fitted_on}")
            + f", but the newest checkpoint is of step {newest}: run `python -m sla_jax.evaluate --workdir={workdir}` "
            "to refit it on that checkpoint, then score again."
        )
    model, variables, step = restore_model(config, workdir)
    fitted = kinds[kind](*(jnp.asarray(arrays[k]) for k in kinds[kind]._fields))
    return detection.Detector(
        model=model,
        variables=variables,
        fitted=fitted,
        threshold=threshold,
        spec=eval_spec_from_config(config),
        image_size=int(config.data.image_size),
        step=step,
        mesh=state_lib.data_mesh(),
        resample=config.data.resize,
    )


def export_workdir(workdir: str, out: str) -> dict:
    """The run's detector as one ONNX file at ``out`` (:mod:`sla_jax.deploy`); returns what was written."""
    from sla_jax import deploy

    config = load_run_config(workdir)
    detector = load_detector(workdir)
    return deploy.export_detector(
        detector, out, category=config.data.category, transform=config.transform.name, labels=config.labels.mode
    )
