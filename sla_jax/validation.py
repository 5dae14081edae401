"""Checks of an experiment config before any compilation or data loading: name the key and the valid range."""

from __future__ import annotations

import jax
import ml_collections

from sla_jax.labels import LABEL_MODES
from sla_jax.models import CONV_IMPLS, STEMS
from sla_jax.transforms import TRANSFORM_NAMES


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and what is allowed."""


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"config.{key}={value!r} is not valid; choose one of {tuple(allowed)}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise :class:`ConfigError` for the first invalid value of ``config``."""
    if not config.data.demo and not (config.data.root and config.data.category):
        raise ConfigError(
            "no dataset given: set --config.data.root=/path/to/mvtec_anomaly_detection (or any folder in MVTec AD "
            "layout) and --config.data.category=bottle (a sub-folder of root), or train on the embedded demo "
            "data with --config=configs/demo.py")
    if config.data.demo and not config.data.category:
        raise ConfigError("config.data.category is empty: the demo data has categories weave, tile, washer")
    _choice("transform.name", config.transform.name, TRANSFORM_NAMES)
    _choice("transform.pairing", config.transform.pairing, ("bernoulli", "paired"))
    _choice("transform.cutout_fill", config.transform.cutout_fill, ("random", "zero"))
    _choice("labels.mode", config.labels.mode, LABEL_MODES)
    _choice("model.stem", config.model.stem, STEMS)
    _choice("model.conv_impl", config.model.conv_impl, CONV_IMPLS)
    if not config.labels.alpha >= 0:
        raise ConfigError(f"config.labels.alpha={config.labels.alpha} must be >= 0 (the paper uses 10)")
    if not 0 < config.labels.epsilon < 3:
        raise ConfigError(f"config.labels.epsilon={config.labels.epsilon} must lie in (0, 3): Δ sums 3 channels "
                          "of [0, 1] values (the paper uses 0.02)")
    if config.labels.mode == "smooth" and not config.labels.tau > 0:
        raise ConfigError(f"config.labels.tau={config.labels.tau} must be > 0 for labels.mode='smooth' "
                          "(e.g. 0.005; smaller is closer to the paper's step)")
    for name in config.labels.learn:
        _choice("labels.learn", name, ("alpha", "epsilon"))
    if "epsilon" in config.labels.learn and config.labels.mode != "smooth":
        raise ConfigError("config.labels.learn contains 'epsilon' but labels.mode is not 'smooth': the step "
                          "1{Δ > ε} has no gradient in ε; set --config.labels.mode=smooth")
    if config.labels.learn and config.labels.mode == "hard":
        raise ConfigError("config.labels.learn is set but labels.mode='hard': hard labels do not depend on α or ε")
    if config.data.image_size < 32:
        raise ConfigError(f"config.data.image_size={config.data.image_size} must be >= 32")
    if config.train.steps < 0:
        raise ConfigError(f"config.train.steps={config.train.steps} must be >= 0")
    n_dev = jax.device_count()
    per = 2 * n_dev if config.transform.pairing == "paired" else n_dev
    if config.train.batch_size <= 0 or config.train.batch_size % per:
        raise ConfigError(f"config.train.batch_size={config.train.batch_size} must be a positive multiple of {per} "
                          f"({n_dev} device(s){', paired: originals and edits' if per > n_dev else ''})")
    for key in ("learning_rate", "checkpoint_every", "log_every", "keep_checkpoints"):
        if not config.train[key] > 0:
            raise ConfigError(f"config.train.{key}={config.train[key]} must be > 0")
    loc = config.localization
    _choice("localization.gde", loc.gde, ("shared", "per_position"))
    if loc.patch_size:
        if not 0 < loc.patch_size <= config.data.image_size:
            raise ConfigError(f"config.localization.patch_size={loc.patch_size} must lie in (0, data.image_size="
                              f"{config.data.image_size}]")
        for key in ("stride", "train_stride", "batch_size"):
            if not loc[key] > 0:
                raise ConfigError(f"config.localization.{key}={loc[key]} must be > 0")
        if (config.data.image_size - loc.patch_size) % loc.stride:
            raise ConfigError(f"config.data.image_size - config.localization.patch_size = "
                              f"{config.data.image_size - loc.patch_size} must be a multiple of "
                              f"config.localization.stride={loc.stride}, so the upsampled map covers the image")
        if loc.gde == "per_position" and loc.train_stride != loc.stride:
            raise ConfigError("config.localization.gde='per_position' needs localization.train_stride == stride")
        if loc.sigma <= 0:
            raise ConfigError(f"config.localization.sigma={loc.sigma} must be > 0")
    if config.eval.batch_size <= 0:
        raise ConfigError(f"config.eval.batch_size={config.eval.batch_size} must be > 0")
