"""Checks of an experiment config before any compilation or data loading: name the key and the valid range."""

from __future__ import annotations

import difflib
import os

import jax
import ml_collections

from sla_jax.common.errors import ConfigError
from sla_jax.common.settings import choice
from sla_jax.labels import LabelSettings
from sla_jax.training.ensemble import STRATEGIES as ENSEMBLE_STRATEGIES
from sla_jax.training.ensemble import EnsembleSettings
from sla_jax.training.pretrained import CONVERTED_SUFFIXES


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
    values out of range (each section's own checks, then the rules that span sections)."""
    from sla_jax.defaults import SECTIONS, base_config

    _check_keys_and_types(config, base_config())
    for section in SECTIONS:
        _checked(section.from_mapping(config[section.SECTION]).check)
    if config.eval.density == "kde" and config.localization.patch_size and config.localization.gde != "shared":
        raise ConfigError(
            "config.eval.density='kde' with patches needs config.localization.gde='shared' (one KDE "
            "on all training patches)"
        )
    n_dev = jax.device_count()
    per = 2 * n_dev if config.transform.pairing == "paired" else n_dev
    if config.train.batch_size <= 0 or config.train.batch_size % per:
        raise ConfigError(
            f"config.train.batch_size={config.train.batch_size} must be a positive multiple of {per} "
            f"({n_dev} device(s){', paired: originals and edits' if per > n_dev else ''})"
        )
    loc = config.localization
    if loc.patch_size:
        if not 0 < loc.patch_size <= config.data.image_size:
            raise ConfigError(
                f"config.localization.patch_size={loc.patch_size} must lie in (0, data.image_size="
                f"{config.data.image_size}]"
            )
        if (config.data.image_size - loc.patch_size) % loc.stride:
            raise ConfigError(
                f"config.data.image_size - config.localization.patch_size = "
                f"{config.data.image_size - loc.patch_size} must be a multiple of "
                f"config.localization.stride={loc.stride}, so the upsampled map covers the image"
            )
    _validate_init(config)


def _checked(check, *args) -> None:
    """``check(*args)`` (a section's :meth:`~sla_jax.common.settings.Section.check`,
    :func:`sla_jax.common.settings.choice`),
    its ValueError a ConfigError."""
    try:
        check(*args)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _validate_init(config: ml_collections.ConfigDict) -> None:
    """``model.init``: a converted weights file for the ImageNet stem; ``train.freeze_steps`` >= 0."""
    init = config.model.init
    if init is None:
        raise ConfigError(
            "this config needs --config.model.init=/path/to/resnet18.npz: backbone weights converted by "
            "python -m sla_jax.convert_weights (README, 'Pretrained weights')"
        )
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
    """:func:`sla_jax.experiment.validation.validate` plus the ``ensemble`` section's own checks."""
    validate(config)
    if config.labels.mode == "hard":
        raise ConfigError(
            "config.labels.mode='hard' with an ensemble: α members need soft or smooth labels; "
            "hard-label members come from config.ensemble.hard=True"
        )
    _checked(choice, "train.ensemble_strategy", config.train.ensemble_strategy, ("auto", *ENSEMBLE_STRATEGIES))
    if config.train.steps_per_call != 1:
        raise ConfigError("config.train.steps_per_call > 1 is not supported with an ensemble yet: set it to 1")
    try:
        ensemble = EnsembleSettings.from_mapping(config.ensemble)
    except KeyError as error:
        raise ConfigError(f"config.ensemble has no key {error.args[0]!r}: it needs alphas, epsilons, seeds, hard")
    _checked(ensemble.check)
    if config.train.ensemble_strategy == "devices" and jax.process_count() > 1:
        raise ConfigError(
            "config.train.ensemble_strategy='devices' runs in one process only (each process evaluates every "
            "member): use 'vmap' or 'auto' with several processes"
        )
    count = len(ensemble.members(LabelSettings.from_mapping(config.labels)))
    if config.train.ensemble_strategy == "devices" and count % jax.device_count():
        raise ConfigError(
            f"config.train.ensemble_strategy='devices' places the {count} members over "
            f"{jax.device_count()} devices, which does not divide evenly: choose a member count that is a "
            "multiple of the devices, or ensemble_strategy='vmap'"
        )


def validate_any(config: ml_collections.ConfigDict) -> None:
    """:func:`validate_ensemble` for a config with an ``ensemble`` section, else :func:`validate`."""
    if "ensemble" in config:
        validate_ensemble(config)
    else:
        validate(config)
