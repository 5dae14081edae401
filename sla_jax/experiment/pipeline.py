"""The one run pipeline: prepare the data, init or restore, fit, evaluate, write. A plain run and an ensemble
(K members in one program) go through the same steps; :mod:`sla_jax.experiment.members` holds where they
differ, and every member is evaluated by the same code as a plain run (:func:`evaluate_and_write`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import sla_jax.experiment.configured as configured
import sla_jax.experiment.evaluation as evaluation
import sla_jax.experiment.identity as identity
import sla_jax.experiment.members as members_lib
import sla_jax.experiment.saved as saved
from sla_jax import data as data_lib
from sla_jax.common import timing
from sla_jax.common import workdir as workdir_lib
from sla_jax.experiment.validation import validate_any
from sla_jax.outputs import atomic, board, files, report
from sla_jax.scoring import detection
from sla_jax.training import distributed, ensemble, loop
from sla_jax.training import state as state_lib


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True, startup_seconds: float | None = None
) -> dict:
    """Train (resuming from ``workdir`` when it holds a checkpoint of the same run), then evaluate; returns the
    results.

    Paths in the config are made absolute first (a run's paths are its own). Holds the workdir's lock
    throughout; before anything is written, a workdir that holds another run is refused
    (:func:`sla_jax.experiment.identity.check_resume`). ``results.json`` holds only what the seed determines (the
    timings go to ``timing.json``). A config with an ``ensemble`` section trains all its members in one
    program and evaluates each."""
    config = configured.with_absolute_paths(config)
    validate_any(config)
    configured.check_data_folder(config)
    # In a multi-process run the primary process holds the lock (the workdir is shared by all).
    primary = distributed.is_primary()
    lock = workdir_lib.claimed(workdir) if primary else contextlib.nullcontext()
    with lock:
        lineage = claim_run(config, workdir) if primary else []
        return run(config, workdir, progress=progress, lineage=lineage, startup_seconds=startup_seconds)


def claim_run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    """Check that ``workdir`` is new or holds this run, then write its ``config.json`` (and ``lineage.json``
    when ``train.steps`` changed); returns the run's training segments (empty for one schedule). Raises
    before writing anything when the workdir holds another run."""
    stored = identity.read_saved_config(workdir)
    steps = identity.checkpoint_steps(workdir)
    newest = steps[-1] if steps else None
    finished = os.path.isfile(os.path.join(workdir, "results.json"))
    if stored is None and (newest is not None or finished):
        raise workdir_lib.WorkdirError(
            f"the workdir {workdir} holds checkpoints or results but no config.json, so "
            "nothing tells which run they are of: use another --workdir."
        )
    lineage = identity.read_lineage(workdir)
    if stored is not None and (newest is not None or finished):
        saved.config_of_saved(stored, path=os.path.join(workdir, identity.CONFIG))  # a cut or edited file is named
        note = identity.check_resume(stored, config.to_dict(), workdir=workdir, newest=newest)
        if note:
            print(note)
            lineage = identity.extend_lineage(
                workdir,
                old_steps=int(stored["train"]["steps"]),
                new_steps=int(config.train.steps),
                newest=int(newest or 0),
            )
            atomic.write_json(os.path.join(workdir, identity.LINEAGE), {"segments": lineage})
    atomic.write_text(os.path.join(workdir, identity.CONFIG), config.to_json_best_effort(indent=2) + "\n")
    return lineage


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    progress: bool,
    lineage: list[dict],
    startup_seconds: float | None = None,
) -> dict:
    """Prepare, init or restore, fit, evaluate every member, write; returns the results."""
    primary = distributed.is_primary()
    run_specs = configured.read(config)
    members = run_specs.members
    os.makedirs(workdir, exist_ok=True)
    phases = timing.Phases()
    with phases("data"):
        dataset = distributed.primary_first(lambda: configured.dataset_from_config(config, workdir))
    detection.check_train_size(
        len(dataset.train.images),
        run_specs.evaluation,
        where=configured.train_folder(dataset, layout=config.data.layout),
    )
    with phases("setup"):
        mesh = state_lib.data_mesh()
        spec, model, optimizer = run_specs.step, run_specs.model, run_specs.optimizer
        total = int(config.train.steps)
        replicated = NamedSharding(mesh, P())
        training = members_lib.initial_state(config, run_specs, replicated=replicated)
        state = training.state
        workdir_lib.check_free_space(
            workdir, needed_bytes=(config.train.keep_checkpoints + 1) * state_lib.tree_bytes(state)
        )
        manager = state_lib.checkpoint_manager(workdir, keep=config.train.keep_checkpoints)
        state = state_lib.restore_latest(manager, state)  # a checkpoint takes precedence over model.init
        resumed_from = int(state.step)
        if resumed_from:
            print(f"resuming from the checkpoint at step {resumed_from} in {manager.directory}")
        train_images = distributed.replicated_array(dataset.train.images, replicated)
    print(training_line(config, dataset, spec, members, total=total, strategy=training.strategy))
    training = members_lib.training_step(
        dataclasses.replace(training, state=state),
        train_images,
        members,
        config=config,
        model=model,
        optimizer=optimizer,
        spec=spec,
        mesh=mesh,
        remaining=total - resumed_from,
        compile_ahead=lambda jitted, args: compile_ahead(
            jitted, args, needed=resumed_from < total, phases=phases, progress=progress and primary
        ),
    )
    names = [m.name for m in members] if members else []
    log_name = "metrics.jsonl" if primary else f"metrics.process{jax.process_index()}.jsonl"
    writers = (
        board.open_writers(workdir, members=names, resumed_from=resumed_from)
        if config.train.tensorboard and primary
        else []
    )
    rates: list[float] = []
    try:
        with files.run_log(workdir, name=log_name, resumed_from=resumed_from, writers=writers) as log, phases("train"):
            state = loop.fit(
                state,
                train_images,
                training.keys,
                step_fn=training.step_fn,
                total_steps=total,
                images_per_step=spec.batch_size * (len(members) if members else 1),
                manager=manager,
                checkpoint_every=config.train.checkpoint_every,
                log_every=config.train.log_every,
                log=lambda record: rates.append(record["images_per_s"]) or log(record),
                schedule=run_specs.schedule,
                progress=progress and primary,
                started=phases.started,
                steps_per_call=int(config.train.steps_per_call),
                chunk_fn=training.chunk_fn,
            )
        if not total and manager.latest_step() is None:  # train.steps=0: the features as loaded are the model
            loop.save_checkpoint(manager, 0, state)
    finally:
        manager.close()
    step = int(state.step)
    found = []
    for k, member in enumerate(members or [None]):
        out_dir = workdir if member is None else os.path.join(workdir, "members", member.name)
        results = evaluation.evaluate_and_write(
            members_lib.member_variables(state, None if member is None else k),
            dataset,
            model=model,
            spec=run_specs.evaluation,
            config=config,
            mesh=mesh,
            out_dir=out_dir if primary else None,
            step=step,
            progress=progress and primary,
            phases=phases,
            member=member,
            which=f"member {k + 1}/{len(members)} ({member.name}): " if member else "",
        )
        learned = members_lib.learned_labels(state, training.hparams, None if member is None else k)
        found.append(results if member is None else member_entry(member, results, learned))
        if member is None and learned:
            results["learned_labels"] = learned
    if members:
        results = ensemble_results(config, dataset, members, found)
        results.update(steps=step, checkpoint_step=step)
    else:
        results = found[0]
        results.update(steps=step, init=config.model.init or "random", processes=jax.process_count())
    results.update({"lineage": list(lineage)} if lineage else {})
    with phases("files"):
        if primary:
            if members:
                title, note = sweep_heading(config, dataset, members)
                files.write_sweep(results["table"], workdir, title=title, note=note)
            files.write_results(results, workdir)
            report.write_run_report(workdir)
        settings = [configured.board_settings(config, m) for m in members or [None]]
        finish_board(writers, workdir, settings, found, step=step)
    if primary:
        record = timing_record(phases, resumed_from=resumed_from, rates=rates, startup_seconds=startup_seconds)
        files.write_timing(record, workdir)
    return results


STRATEGY_WORDS = {"vmap": "members batched", "map": "members one after another", "devices": "members split over"}


def training_line(config, dataset: data_lib.Dataset, spec, members, *, total: int, strategy: str | None = None) -> str:
    """What is about to train, in one line (an ensemble: how its members share the devices)."""
    patches = f", {spec.patch_size} px patches" if spec.patch_size else ""
    what = (
        f"{len(members)} members in one program ({config.transform.name.upper()}"
        if members
        else f"{config.transform.name.upper()} ({config.labels.mode} labels)"
    )
    size = f"{len(dataset.train.images)} images of {config.data.image_size} px{patches}"
    line = (
        f"training {what}{', ' if members else ' on '}{size}, {total} steps of {spec.batch_size}"
        f"{' per member' if members else ''}, {jax.device_count()} device(s)"
    )
    if members:
        how = STRATEGY_WORDS[strategy] + (f" {jax.device_count()} devices" if strategy == "devices" else "")
        line += f", {how})"
    if jax.process_count() > 1:
        line += f" in {jax.process_count()} processes (this is process {jax.process_index()})"
    return line


MEMBER_DROPS = (  # run-wide facts: in the ensemble's results, not in each member's
    "category",
    "data_root",
    "transform",
    "labels",
    "image_size",
    "n_train",
    "skipped_files",
    "nonbinary_masks",
    "checkpoint_step",
)


def member_entry(member: ensemble.Member, results: dict, learned: dict) -> dict:
    """An ensemble member's results: its name and settings, then its evaluation (the run-wide facts left to
    the ensemble's results) and its learned label parameters."""
    entry = {"name": member.name, **dataclasses.asdict(member)}
    entry.update({k: v for k, v in results.items() if k not in MEMBER_DROPS and k not in entry})
    entry.update({f"learned_{name}": value for name, value in learned.items()})
    return entry


def ensemble_results(config, dataset: data_lib.Dataset, members: list, found: list[dict]) -> dict:
    """The ensemble's results.json: the run-wide facts, each member's results, the table over seeds, and the
    headline metrics as the mean over the members with the config's α (soft labels)."""
    rows = ensemble.sweep_table(members, found)
    reference = [m for m in found if m["mode"] != "hard" and m["alpha"] == float(config.labels.alpha)]
    chosen = reference or found
    results = {
        "category": dataset.category,
        "data_root": os.path.abspath(dataset.root),
        "transform": config.transform.name,
        "image_size": int(config.data.image_size),
        "n_train": int(len(dataset.train.images)),
        "n_test": int(len(dataset.test.labels)),
        "skipped_files": list(dataset.train.skipped + dataset.test.skipped),
        "nonbinary_masks": len(dataset.test.nonbinary_masks),
        "members": found,
        "table": rows,
    }
    for metric in ensemble.SWEEP_METRICS:
        values = [m.get(metric) for m in chosen if metric in m]
        if values:
            results[metric] = None if None in values else float(np.mean(values))
            if results[metric] is None:
                results[f"{metric}_undefined"] = "undefined for at least one of the members it averages"
    results["image_auroc_of"] = (
        f"mean over the members with alpha={config.labels.alpha:g}" if reference else "mean over all members"
    )
    return results


def sweep_heading(config, dataset: data_lib.Dataset, members: list) -> tuple[str, str]:
    """The title and the note of the ensemble's table (alpha_sweep.md, .json, .png)."""
    metrics = "image and pixel metrics" if config.localization.patch_size else "image AUROC"
    title = f"{dataset.category}: {config.transform.name.upper()} {metrics} against α"
    note = (
        f"{len(members)} members trained in one program: {config.train.steps} steps of batch "
        f"{config.train.batch_size}, {config.data.image_size} px, head {tuple(config.model.head)}, stem "
        f"{config.model.stem}; seeds {tuple(config.ensemble.seeds)}; std is the sample standard deviation over seeds."
    )
    return title, note


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


def finish_board(writers, workdir: str, settings: list[dict], results: list[dict], *, step: int) -> None:
    """The run's figures (into the first writer) and each run's settings with its final metrics, then close."""
    try:
        if writers:
            board.log_figures(writers[0], workdir, step=step)
        for writer, these, found in zip(writers, settings, results):
            board.log_hparams(writer, these, found, step=step)
    finally:
        board.close(writers)
