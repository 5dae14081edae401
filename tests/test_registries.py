"""What users extend is a registry: a new transform or density works by adding its entry alone (nothing else
in sla_jax changes), through training, evaluation, the saved files and scoring new images."""

from __future__ import annotations

import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sla_jax import density, experiment, transforms
from sla_jax.experiment import validation
from sla_jax.experiment.validation import ConfigError
from tests.tiny import tiny_config


def noise_box(key, image, **_):
    """A CutPaste-sized rectangle filled with uniform noise (class 1)."""
    k_size, k_top, k_left, k_noise = jax.random.split(key, 4)
    height, width = image.shape[:2]
    box_h, box_w = transforms.sample_box_size(k_size, height=height, width=width)
    top = jnp.floor(jax.random.uniform(k_top) * (height - box_h + 1))
    left = jnp.floor(jax.random.uniform(k_left) * (width - box_w + 1))
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    edited = jnp.where(inside[..., None], jax.random.uniform(k_noise, image.shape), image)
    return transforms.Edit(edited, inside.astype(jnp.float32), jnp.int32(1))


class Centroid(NamedTuple):
    mean: jax.Array  # (D,)


CENTROID = density.Density(
    fit=lambda feats: Centroid(jnp.mean(feats.astype(jnp.float32), axis=0)),
    score=lambda fitted, feats, *, chunk=None: jnp.sum((feats.astype(jnp.float32) - fitted.mean) ** 2, axis=1),
    fitted=Centroid,
    summary=lambda fitted: {"centroid_norm": float(jnp.linalg.norm(fitted.mean))},
    score_name="squared distance to the mean feature",
)


@pytest.fixture
def registered():
    transforms.register("noisebox", transforms.Transform(noise_box))
    density.register("centroid", CENTROID)
    yield
    transforms.TRANSFORMS.pop("noisebox")
    density.DENSITIES.pop("centroid")


def test_an_unregistered_name_is_refused_with_the_registered_ones(tmp_path):
    config = tiny_config(tmp_path, {"transform.name": "noisebox"})
    with pytest.raises(ConfigError, match="transform.name='noisebox' is not valid; choose one of .*'cpf'"):
        validation.validate(config)


def test_a_new_transform_and_density_work_by_their_entries_alone(tmp_path, registered):
    edit = jax.jit(lambda k: transforms.edit_one(k, jnp.full((32, 32, 3), 0.5), name="noisebox"))(jax.random.key(0))
    assert 0 < float(edit.masks.sum()) < 32 * 32 and int(edit.classes) == 1 and transforms.num_classes("noisebox") == 2

    config = tiny_config(tmp_path, {"transform.name": "noisebox", "eval.density": "centroid", "train.steps": 2})
    workdir = tmp_path / "run"
    results = experiment.train_and_evaluate(config, str(workdir), progress=False)
    assert results["density"] == "centroid" and results["centroid_norm"] > 0 and 0 <= results["image_auroc"] <= 1
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert lines and lines[-1]["mean_label"] > 0  # soft labels of the new edits
    assert (workdir / "centroid.npz").is_file() and json.loads((workdir / "results.json").read_text())["steps"] == 2

    detector = experiment.load_detector(str(workdir))
    assert isinstance(detector.fitted, Centroid)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    scores, maps = detector.score(images)
    assert scores.shape == (3,) and np.all(np.isfinite(scores)) and maps is None
