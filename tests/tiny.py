"""Configs the tests share: the embedded demo data, and a tiny run of it that trains in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

from sla_jax.defaults import base_config


def demo_config(*, category: str = "weave"):
    """The base config on one embedded demo category (nothing else changed)."""
    config = base_config()
    config.data.demo, config.data.category = True, category
    return config


def tiny_config(tmp: Path, changes: dict | None = None, *, category: str = "washer"):
    """Cutout at 32 px, head (32,), 3 steps of 8, the TFDS cache under ``tmp``; ``changes`` maps dotted keys
    (``"train.steps"``, ``"localization.patch_size"``) to values."""
    config = demo_config(category=category)
    config.data.image_size, config.data.cache_dir = 32, str(tmp / "tfds")
    config.transform.name = "co"
    config.model.head = (32,)
    config.train.batch_size, config.train.steps = 8, 3
    config.update_from_flattened_dict(changes or {})
    return config
