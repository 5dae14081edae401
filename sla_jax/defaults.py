"""The base experiment configuration (paper §3.1), generated from the module-owned settings: each section
is the frozen dataclass of the module that uses it (:mod:`sla_jax.common.settings`), where its keys, defaults,
meanings and own checks are written once. The files in ``configs/`` start from :func:`base_config`."""

from __future__ import annotations

import ml_collections

from sla_jax.common import settings
from sla_jax.data.layouts import DataSettings
from sla_jax.labels import LabelSettings
from sla_jax.scoring.detection import EvalSettings, PatchSettings
from sla_jax.training.ensemble import EnsembleSettings
from sla_jax.training.loop import TrainSettings
from sla_jax.training.models import ModelSettings
from sla_jax.transforms import TransformSettings

# The config's sections in order (config.json keeps it); ``ensemble`` is optional: a config has it or not.
SECTIONS: tuple[type[settings.Section], ...] = (
    DataSettings,
    TransformSettings,
    LabelSettings,
    ModelSettings,
    TrainSettings,
    PatchSettings,
    EvalSettings,
)
OPTIONAL_SECTIONS: tuple[type[settings.Section], ...] = (EnsembleSettings,)
SEED_MEANING = "the root of every random key (initialisation, data, edits); an ensemble member's own seed wins"


def base_config() -> ml_collections.ConfigDict:
    """CPS-SLA on 256 px images: SGD 0.03, momentum 0.9, wd 3e-5, batch 64, 256 epochs × 256 steps."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    for section in SECTIONS:
        config[section.SECTION] = ml_collections.ConfigDict(settings.defaults(section))
    return config


def key_comments() -> dict[str, str]:
    """``{"train.steps": "256 epochs of 256 steps (CutPaste's epoch)", ...}``: the meaning of each key that
    states one, from the settings dataclasses."""
    meanings = {"seed": SEED_MEANING}
    for section in (*SECTIONS, *OPTIONAL_SECTIONS):
        meanings.update(settings.meanings(section))
    return meanings


def read_sections(config: ml_collections.ConfigDict) -> dict[str, settings.Section]:
    """Each section of ``config`` as its settings dataclass (``ensemble`` when the config has one)."""
    present = [s for s in (*SECTIONS, *OPTIONAL_SECTIONS) if s.SECTION in config]
    return {s.SECTION: s.from_mapping(config[s.SECTION]) for s in present}
