"""A trained model evaluated and its evaluation written: the main task (:func:`sla_jax.scoring.detection.evaluate`)
with the run's options, then its density, scores, ROC curve and defect maps as files. The same code
evaluates a plain run, each ensemble member and a finished run's checkpoint (``python -m sla_jax.evaluate``)."""

from __future__ import annotations

import os

import ml_collections

import sla_jax.experiment.configured as configured
from sla_jax import data as data_lib
from sla_jax.common import timing
from sla_jax.outputs import atomic, files, plots
from sla_jax.scoring import detection
from sla_jax.training import ensemble


def evaluate_and_write(
    variables,
    dataset: data_lib.Dataset,
    *,
    model,
    spec: detection.EvalSpec,
    config: ml_collections.ConfigDict,
    mesh,
    out_dir: str | None,
    step: int,
    progress: bool = False,
    phases: timing.Phases | None = None,
    member: ensemble.Member | None = None,
    which: str = "",
) -> dict:
    """:func:`sla_jax.scoring.detection.evaluate` with the run's options ``spec``; writes gde.npz, scores.csv,
    roc.png (and, for patch models, maps.npz and heatmaps.png) into ``out_dir`` (nothing when None: the other processes
    of a multi-process run); returns the results with the config's facts and the checkpoint ``step`` added."""
    if out_dir:
        print(
            f"evaluating {which}the checkpoint of step {step}: {len(dataset.train.images)} training and "
            f"{len(dataset.test.images)} test images" + (", defect maps" if spec.patches else ""),
            flush=True,
        )
    phases = phases or timing.Phases()
    with phases("evaluate"):
        found = detection.evaluate(variables, dataset, model=model, spec=spec, mesh=mesh, progress=progress)
    with phases("files"):
        title = configured.member_title(config, dataset.category, member)
        heading = dataset.category if member is None else title
        write_evaluation(
            found, dataset, config=config, spec=spec, out_dir=out_dir, step=step, title=title, heading=heading
        )
    return {
        "transform": config.transform.name,
        "labels": config.labels.mode,
        "alpha": float(config.labels.alpha),
        "image_size": int(config.data.image_size),
        **found.results,
        "checkpoint_step": step,
    }


def write_evaluation(
    found: detection.Evaluation,
    dataset: data_lib.Dataset,
    *,
    config,
    spec,
    out_dir: str | None,
    step: int,
    title: str,
    heading: str,
) -> None:
    """gde.npz (kde.npz), scores.csv, roc.png and, for patch models, maps.npz and heatmaps.png."""
    if not out_dir:  # the other processes of a multi-process run
        return
    print(f"writing scores, figures{' and defect maps' if found.maps is not None else ''} into {out_dir}", flush=True)
    os.makedirs(out_dir, exist_ok=True)
    files.write_density(out_dir, found.fitted, kind=spec.density, threshold=found.threshold, checkpoint_step=step)
    files.write_scores_csv(found.scores, dataset.test, os.path.join(out_dir, "scores.csv"), checkpoint_step=step)
    plots.plot_roc(found.scores, dataset.test, os.path.join(out_dir, "roc.png"), title=title)
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
            title=f"{heading}: defect maps (outline: ground truth)",
            threshold=found.threshold,
            score_label=plots.map_label(spec.density, patch_size=spec.patches.size),
        )
