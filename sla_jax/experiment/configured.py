"""A config's sections turned into what the library takes: a dataset, a model, an optimizer, the pretext
step's :class:`~sla_jax.training.pretext.StepSpec` and :class:`~sla_jax.training.pretext.HParams`, the main task's
:class:`~sla_jax.scoring.detection.EvalSpec`, the members of a run."""

from __future__ import annotations

import copy
import os
from typing import NamedTuple

import jax.numpy as jnp
import ml_collections
import optax

import sla_jax.experiment.identity as identity
from sla_jax import data as data_lib
from sla_jax import labels
from sla_jax import transforms as transforms_lib
from sla_jax.data import layouts
from sla_jax.data.synthetic import write_demo_dataset
from sla_jax.defaults import read_sections
from sla_jax.scoring import detection
from sla_jax.training import ensemble, pretext
from sla_jax.training import state as state_lib
from sla_jax.training.models import PretextNet


class Configured(NamedTuple):
    """Everything the library takes for one run, read from its config in one place (:func:`read`)."""

    sections: dict  # section name -> its settings dataclass (sla_jax.defaults.read_sections)
    model: PretextNet
    optimizer: optax.GradientTransformation  # the backbone freeze applies only to a loaded backbone
    schedule: optax.Schedule  # the learning rate against the step, as the optimizer applies it (logged)
    step: pretext.StepSpec  # the pretext step's static options
    hparams: pretext.HParams  # the label hyper-parameters (traced)
    evaluation: detection.EvalSpec  # the main task's options
    input_size: int  # side of the network's input: the patch size for patch models, else the image size
    members: list | None  # an ensemble's members; None for a plain run


def read(config: ml_collections.ConfigDict) -> Configured:
    """The config's sections as settings dataclasses, and what the library builds from them."""
    sections = read_sections(config)
    data, transform, label, net, train = (sections[k] for k in ("data", "transform", "labels", "model", "train"))
    loc, ev = sections["localization"], sections["eval"]
    tau, hard = labels.mode_params(label.mode, tau=label.tau)
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
            threshold_images=int(ev.threshold_images),
        )
    return Configured(
        sections=sections,
        model=PretextNet(
            num_classes=transforms_lib.num_classes(transform.name),
            head=tuple(net.head),
            stem=net.stem,
            conv_impl=net.conv_impl,
            dtype=jnp.dtype(net.dtype),
        ),
        optimizer=state_lib.make_optimizer(
            learning_rate=train.learning_rate,
            momentum=train.momentum,
            weight_decay=train.weight_decay,
            total_steps=train.steps,
            freeze_backbone_steps=train.freeze_steps if net.init else 0,
            decay_all=train.weight_decay_on == "all",
        ),
        schedule=state_lib.lr_schedule(learning_rate=train.learning_rate, total_steps=int(train.steps)),
        # Scars are sized for the whole image (transform.scar_size), also when the network sees patches of it.
        step=pretext.StepSpec(
            batch_size=train.batch_size,
            transform=transform.name,
            pairing=transform.pairing,
            cutout_fill=transform.cutout_fill,
            patch_size=int(loc.patch_size),
            scar_scale=transforms_lib.scar_scale(data.image_size, rule=transform.scar_size),
            global_jitter=float(transform.global_jitter),
            jitter_order=transform.jitter_order,
        ),
        hparams=pretext.HParams.create(alpha=label.alpha, epsilon=label.epsilon, tau=tau, hard=hard),
        evaluation=detection.EvalSpec(
            batch_size=int(ev.batch_size),
            l2_normalize=bool(ev.l2_normalize),
            density=ev.density,
            threshold_quantile=float(ev.threshold_quantile),
            threshold_folds=int(ev.threshold_folds),
            patches=patches,
        ),
        input_size=loc.patch_size or data.image_size,
        members=sections["ensemble"].members(label) if "ensemble" in sections else None,
    )


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
        layout=config.data.layout,
        test_fraction=float(config.data.test_fraction),
    )


def train_folder(dataset: data_lib.Dataset, *, layout: str = "mvtec") -> str:
    """The folder of the defect-free training images (for messages)."""
    return os.path.join(os.path.abspath(dataset.root), dataset.category, layouts.LAYOUTS[layout].good)


def check_data_folder(config: ml_collections.ConfigDict) -> None:
    """Scan the data folder (not the generated demo data) before anything is written: a missing root or
    category, an empty training folder or missing masks raise DataError with the workdir not yet made."""
    if config.data.root:
        layouts.scan(
            config.data.root,
            category=config.data.category,
            layout=config.data.layout,
            require_masks=config.data.require_masks,
            skip_bad_files=config.data.skip_bad_files,
            test_fraction=float(config.data.test_fraction),
        )


def run_title(config: ml_collections.ConfigDict, category: str) -> str:
    return f"{category}: {config.transform.name.upper()}-{'hard' if config.labels.mode == 'hard' else 'SLA'}"


def member_title(config: ml_collections.ConfigDict, category: str, member: ensemble.Member | None) -> str:
    """The run's title, or an ensemble member's (its label mode, α, ε and seed)."""
    if member is None:
        return run_title(config, category)
    return f"{category}: {config.transform.name.upper()} {member.name}"


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
