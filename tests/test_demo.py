"""The embedded synthetic demo dataset (``sla_jax.demo``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sla_jax import data, demo
from sla_jax.data import synthetic

SMALL = dict(n_train=3, n_test_good=2, n_test_defect=4, size=64)


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != synthetic.MARKER
    }


@pytest.fixture(scope="module")
def default_root(tmp_path_factory) -> Path:
    """The default demo set, written through the command line."""
    out = tmp_path_factory.mktemp("demo") / "set"
    demo.main([str(out)])
    return out


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = _files(Path(synthetic.write_demo_dataset(tmp_path / "a", seed=3, **SMALL)))
    again = _files(Path(synthetic.write_demo_dataset(tmp_path / "b", seed=3, **SMALL)))
    other = _files(Path(synthetic.write_demo_dataset(tmp_path / "c", seed=4, **SMALL)))
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[k] != other[k] for k in first if not k.endswith("_mask.png"))


def test_layout_and_formats(default_root):
    expected = {"weave": {"scratch", "spot"}, "tile": {"crack", "stain"}, "washer": {"missing", "scratch"}}
    for category, defects in expected.items():
        cat = default_root / category
        assert len(list((cat / "train" / "good").iterdir())) == 60
        assert {p.name for p in (cat / "test").iterdir()} == defects | {"good"}
        assert {p.name for p in (cat / "ground_truth").iterdir()} == defects
        assert sum(len(list((cat / "test" / d).iterdir())) for d in defects) == 30
    modes = {c: Image.open(next((default_root / c / "train" / "good").iterdir())) for c in expected}
    assert (modes["weave"].format, modes["weave"].mode) == ("PNG", "RGB")
    assert (modes["tile"].format, modes["tile"].mode) == ("PNG", "L")
    assert (modes["washer"].format, modes["washer"].mode) == ("JPEG", "RGB")
    mask = Image.open(next((default_root / "tile" / "ground_truth" / "crack").iterdir()))
    assert mask.mode == "L" and set(np.unique(np.asarray(mask))) == {0, 255}


def test_complete_set_is_reused(tmp_path):
    root = Path(synthetic.write_demo_dataset(tmp_path / "d", **SMALL))
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    synthetic.write_demo_dataset(tmp_path / "d", **SMALL)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    synthetic.write_demo_dataset(tmp_path / "d", **{**SMALL, "n_train": 2})
    assert len(list((root / "weave" / "train" / "good").iterdir())) == 2


@pytest.mark.parametrize("category", ["weave", "tile", "washer"])
def test_loads_with_masks_on_defects_only(default_root, category, tmp_path):
    test = data.load_split(default_root, category=category, split="test", image_size=128, cache_dir=tmp_path)
    train = data.load_split(default_root, category=category, split="train", image_size=64, cache_dir=tmp_path)
    assert len(train.labels) == 60 and not train.labels.any() and not train.masks.any()
    assert test.labels.tolist() == [0 if t == "good" else 1 for t in test.defect_types]
    per_image = test.masks.reshape(len(test.labels), -1).mean(axis=1)
    assert (per_image[test.labels == 0] == 0).all()
    assert ((per_image[test.labels == 1] >= 0.01) & (per_image[test.labels == 1] <= 0.08)).all()
    small = data.load_split(default_root, category=category, split="test", image_size=64, cache_dir=tmp_path)
    assert small.masks[small.labels == 1].reshape(-1, 64 * 64).max(axis=1).all(), "visible at 64 px"

    goods = test.images[test.labels == 0].astype(float)
    for image, mask in zip(test.images[test.labels == 1], test.masks[test.labels == 1]):
        change = np.abs(image.astype(float) - _good_reference(category, image, goods)).sum(-1)
        assert change[mask == 1].mean() > 1.5 * change[mask == 0].mean()


def _good_reference(category: str, image: np.ndarray, goods: np.ndarray) -> np.ndarray:
    """What a good image looks like here: the object's median good image, or
    for textures (random phase) the image's own median colour."""
    if category == "washer":
        return np.median(goods, axis=0)
    return np.median(image.reshape(-1, image.shape[-1]), axis=0)


@pytest.mark.parametrize(
    "category, defect",
    [(c, d) for c, spec in synthetic.CATEGORIES.items() for d in spec.defects],
)
def test_mask_covers_exactly_the_drawn_change(category, defect):
    for seed in range(4):
        good, edited, mask = synthetic.make_example(category, defect, rng=np.random.default_rng(seed), size=128)
        changed = np.abs(good.astype(int) - edited.astype(int)).max(axis=-1)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
        assert not changed[mask == 0].any(), "nothing changes outside the mask"
        assert (changed[mask == 1] > 0).mean() > 0.9
        assert changed[mask == 1].mean() > 20


def test_good_examples_differ(tmp_path):
    for category in synthetic.CATEGORIES:
        a, _, _ = synthetic.make_example(category, "good", rng=np.random.default_rng(0), size=64)
        b, _, mask = synthetic.make_example(category, "good", rng=np.random.default_rng(1), size=64)
        assert not mask.any()
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 2


@pytest.mark.slow
def test_readme_command_1_category_has_edits_that_change_nothing(tmp_path):
    """README command 1's demo (configs/demo_patch.py, the washer on a flat black belt) is where soft labels
    act: its first training steps log a mean soft label below 1 and invalid edits, as its README says."""
    import json

    from configs import demo_patch
    from sla_jax import experiment

    config = demo_patch.get_config()
    config.data.cache_dir = str(tmp_path / "tfds")
    config.update_from_flattened_dict(
        {
            "train.steps": 3,
            "train.log_every": 1,
            "model.head": (32,),
            "localization.stride": 32,
            "localization.train_stride": 32,
            "eval.threshold_images": 5,
            "train.tensorboard": False,
        }
    )
    experiment.train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3
    assert np.mean([r["mean_label"] for r in records]) < 0.95, records  # about 0.8 over 500 steps
    assert np.mean([r["invalid_fraction"] for r in records]) > 0.05, records  # about 0.2 over 500 steps
