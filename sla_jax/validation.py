"""Checks of an experiment config before any compilation or data loading: name the key and the valid range."""

from __future__ import annotations

import difflib
import os

import jax
import ml_collections

from sla_jax.data.decode import RESAMPLING
from sla_jax.data.layouts import LAYOUTS
from sla_jax.density import DENSITIES
from sla_jax.ensemble import STRATEGIES as ENSEMBLE_STRATEGIES
from sla_jax.errors import ConfigError
from sla_jax.labels import LABEL_MODES
from sla_jax.models import CONV_IMPLS, STEMS
from sla_jax.pretrained import CONVERTED_SUFFIXES
from sla_jax.transforms import JITTER_ORDERS, SCAR_SIZE_RULES, TRANSFORMS


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"config.{key}={value!r} is not valid; choose one of {tuple(allowed)}")


def _check_keys_and_types(config, defaults, prefix: str = "") -> None:
    """Every key of ``config`` must exist in the defaults, with a value of the same kind."""
    for key in config.keys():
        name = f"{prefix}{key}"
        if not prefix and key == "ensemble":  # checked by validate_ensemble
            continue
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults.keys()), n=1)
            hint = f' Did you mean "{prefix}{close[0]}"?' if close else ""
            raise ConfigError(
                f"config.{name} is not a known key.{hint} The known keys of "
                f"config.{prefix or '.'} are {sorted(defaults.keys())}"
            )
        value, default = config[key], defaults[key]
        if value is None:  # a required placeholder left unset: the range checks below name it
            continue
        if isinstance(default, ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict):
                raise ConfigError(f"config.{name} must be a section (ConfigDict), got {value!r}")
            _check_keys_and_types(value, default, f"{name}.")
            continue
        kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), tuple: (tuple, list)}
        allowed = kinds.get(type(default), (type(default),))
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ConfigError(
                f"config.{name}={value!r} has type {type(value).__name__}; it must be "
                f"{type(default).__name__} (default {default!r})"
            )
        if isinstance(default, tuple) and default:
            kind = type(default[0])
            if any(
                not isinstance(v, kinds.get(kind, (kind,))) or isinstance(v, bool) is not (kind is bool) for v in value
            ):
                raise ConfigError(
                    f"config.{name}={tuple(value)!r} must hold {kind.__name__} values (default {default!r})"
                )


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise :class:`ConfigError` for the first invalid value of ``config``: unknown keys, wrong types,
    values out of range."""
    from sla_jax.defaults import base_config

    _check_keys_and_types(config, base_config())
    if not config.data.demo and not (config.data.root and config.data.category):
        raise ConfigError(
            "no dataset given: set --config.data.root=/path/to/mvtec_anomaly_detection (or any folder in MVTec AD "
            "layout) and --config.data.category=bottle (a sub-folder of root), or train on the embedded demo "
            "data with --config=configs/demo.py"
        )
    if config.data.demo and not config.data.category:
        raise ConfigError("config.data.category is empty: the demo data has categories weave, tile, washer")
    _choice("transform.name", config.transform.name, tuple(TRANSFORMS))
    _choice("transform.pairing", config.transform.pairing, ("bernoulli", "paired"))
    _choice("transform.cutout_fill", config.transform.cutout_fill, ("random", "zero"))
    _choice("data.resize", config.data.resize, tuple(RESAMPLING))
    _choice("data.layout", config.data.layout, tuple(LAYOUTS))
    if config.data.demo and config.data.layout != "mvtec" and not config.data.root:
        raise ConfigError("config.data.demo=True writes the demo data in the MVTec layout: set data.layout='mvtec'")
    if not 0 < config.data.test_fraction < 1:
        raise ConfigError(
            f"config.data.test_fraction={config.data.test_fraction} must lie in (0, 1): the share of the good "
            "images held out for testing (data.layout='folders')"
        )
    _choice("train.weight_decay_on", config.train.weight_decay_on, ("weights", "all"))
    _choice("eval.density", config.eval.density, tuple(DENSITIES))
    if config.eval.density == "kde" and config.localization.patch_size and config.localization.gde != "shared":
        raise ConfigError(
            "config.eval.density='kde' with patches needs config.localization.gde='shared' (one KDE "
            "on all training patches)"
        )
    _choice("transform.scar_size", config.transform.scar_size, SCAR_SIZE_RULES)
    _choice("transform.jitter_order", config.transform.jitter_order, JITTER_ORDERS)
    if not 0 <= config.transform.global_jitter < 1:
        raise ConfigError(
            f"config.transform.global_jitter={config.transform.global_jitter} must lie in [0, 1) "
            "(CutPaste: 0.1; 0 turns it off)"
        )
    _choice("labels.mode", config.labels.mode, LABEL_MODES)
    _choice("model.stem", config.model.stem, STEMS)
    _choice("model.conv_impl", config.model.conv_impl, CONV_IMPLS)
    _choice("model.dtype", config.model.dtype, ("float32", "bfloat16"))
    if not config.labels.alpha >= 0:
        raise ConfigError(f"config.labels.alpha={config.labels.alpha} must be >= 0 (the paper uses 10)")
    if not 0 < config.labels.epsilon < 3:
        raise ConfigError(
            f"config.labels.epsilon={config.labels.epsilon} must lie in (0, 3): Δ sums 3 channels "
            "of [0, 1] values (the paper uses 0.02)"
        )
    if config.labels.mode == "smooth" and not config.labels.tau > 0:
        raise ConfigError(
            f"config.labels.tau={config.labels.tau} must be > 0 for labels.mode='smooth' "
            "(e.g. 0.005; smaller is closer to the paper's step)"
        )
    for name in config.labels.learn:
        _choice("labels.learn", name, ("alpha", "epsilon"))
    if "epsilon" in config.labels.learn and config.labels.mode != "smooth":
        raise ConfigError(
            "config.labels.learn contains 'epsilon' but labels.mode is not 'smooth': the step "
            "1{Δ > ε} has no gradient in ε; set --config.labels.mode=smooth"
        )
    if config.labels.learn and config.labels.mode == "hard":
        raise ConfigError("config.labels.learn is set but labels.mode='hard': hard labels do not depend on α or ε")
    if not config.model.head or min(config.model.head) < 1:
        raise ConfigError(
            f"config.model.head={tuple(config.model.head)!r} must be one or more positive widths, e.g. (512, 128)"
        )
    if config.data.image_size < 32:
        raise ConfigError(f"config.data.image_size={config.data.image_size} must be >= 32")
    if config.train.steps < 0:
        raise ConfigError(f"config.train.steps={config.train.steps} must be >= 0")
    n_dev = jax.device_count()
    per = 2 * n_dev if config.transform.pairing == "paired" else n_dev
    if config.train.batch_size <= 0 or config.train.batch_size % per:
        raise ConfigError(
            f"config.train.batch_size={config.train.batch_size} must be a positive multiple of {per} "
            f"({n_dev} device(s){', paired: originals and edits' if per > n_dev else ''})"
        )
    for key in ("learning_rate", "checkpoint_every", "log_every", "keep_checkpoints"):
        if not config.train[key] > 0:
            raise ConfigError(f"config.train.{key}={config.train[key]} must be > 0")
    per_call = config.train.get("steps_per_call", 1)
    if not (isinstance(per_call, int) and per_call >= 1):
        raise ConfigError(f"config.train.steps_per_call={per_call!r} must be an integer >= 1")
    for key in ("log_every", "checkpoint_every"):
        if config.train[key] % per_call:
            raise ConfigError(
                f"config.train.{key}={config.train[key]} is not a multiple of config.train.steps_per_call="
                f"{per_call}: a run of steps cut short there compiles a program of its own; choose "
                f"a multiple of {per_call}"
            )
    loc = config.localization
    _choice("localization.gde", loc.gde, ("shared", "per_position"))
    if loc.patch_size:
        if not 0 < loc.patch_size <= config.data.image_size:
            raise ConfigError(
                f"config.localization.patch_size={loc.patch_size} must lie in (0, data.image_size="
                f"{config.data.image_size}]"
            )
        for key in ("stride", "train_stride", "batch_size"):
            if not loc[key] > 0:
                raise ConfigError(f"config.localization.{key}={loc[key]} must be > 0")
        if (config.data.image_size - loc.patch_size) % loc.stride:
            raise ConfigError(
                f"config.data.image_size - config.localization.patch_size = "
                f"{config.data.image_size - loc.patch_size} must be a multiple of "
                f"config.localization.stride={loc.stride}, so the upsampled map covers the image"
            )
        if loc.gde == "per_position" and loc.train_stride != loc.stride:
            raise ConfigError("config.localization.gde='per_position' needs localization.train_stride == stride")
        if loc.sigma <= 0:
            raise ConfigError(f"config.localization.sigma={loc.sigma} must be > 0")
    _validate_init(config)
    if config.eval.batch_size <= 0:
        raise ConfigError(f"config.eval.batch_size={config.eval.batch_size} must be > 0")
    if not 0 < config.eval.threshold_quantile <= 1:
        raise ConfigError(f"config.eval.threshold_quantile={config.eval.threshold_quantile} must lie in (0, 1]")
    for key in ("threshold_folds", "threshold_images"):
        if config.eval[key] < 2:
            raise ConfigError(f"config.eval.{key}={config.eval[key]} must be >= 2")


def _validate_init(config: ml_collections.ConfigDict) -> None:
    """``model.init``: a converted weights file for the ImageNet stem; ``train.freeze_steps`` >= 0."""
    init = config.model.init
    if init is None:
        raise ConfigError(
            "this config needs --config.model.init=/path/to/resnet18.npz: backbone weights converted by "
            "python -m sla_jax.convert_weights (README, 'Pretrained weights')"
        )
    if config.train.freeze_steps < 0:
        raise ConfigError(f"config.train.freeze_steps={config.train.freeze_steps} must be >= 0")
    if not init:
        return
    if init.endswith((".pth", ".pt")):
        raise ConfigError(
            f"config.model.init={init!r} is a PyTorch file: convert it once with "
            f"python -m sla_jax.convert_weights {init} resnet18.npz and pass the .npz"
        )
    if not init.endswith(CONVERTED_SUFFIXES):
        raise ConfigError(
            f"config.model.init={init!r} must be a {' or '.join(CONVERTED_SUFFIXES)} file written by "
            "python -m sla_jax.convert_weights"
        )
    if not os.path.isfile(init):
        raise ConfigError(f"config.model.init={init!r}: no such file")
    if config.model.stem != "imagenet":
        raise ConfigError(
            f"config.model.init needs config.model.stem='imagenet' (torchvision's 7×7/2 stem), got "
            f"{config.model.stem!r}"
        )


def validate_ensemble(config: ml_collections.ConfigDict) -> None:
    """:func:`sla_jax.validation.validate` plus the ``ensemble`` section's own checks."""
    validate(config)
    ens = config.ensemble
    if config.labels.mode == "hard":
        raise ConfigError(
            "config.labels.mode='hard' with an ensemble: α members need soft or smooth labels; "
            "hard-label members come from config.ensemble.hard=True"
        )
    _choice("train.ensemble_strategy", config.train.get("ensemble_strategy", "auto"), ("auto", *ENSEMBLE_STRATEGIES))
    if config.train.get("steps_per_call", 1) != 1:
        raise ConfigError("config.train.steps_per_call > 1 is not supported with an ensemble yet: set it to 1")
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


def validate_any(config: ml_collections.ConfigDict) -> None:
    """:func:`validate_ensemble` for a config with an ``ensemble`` section, else :func:`validate`."""
    if "ensemble" in config:
        validate_ensemble(config)
    else:
        validate(config)
