"""Dataset layouts: the ``folders`` layout (a folder of good images beside one folder per defect type, masks
optional) scans, splits by file name, refuses what is missing by name, and trains and scores end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sla_jax import experiment
from sla_jax.common.errors import DataError
from sla_jax.data import layouts, synthetic
from sla_jax.experiment import validation
from sla_jax.experiment.validation import ConfigError
from tests.tiny import tiny_config


def folders_dataset(tmp_path: Path, *, masks: bool = True) -> Path:
    """The demo washer (64 px) rearranged into ROOT/washer/{good, missing, scratch, masks/TYPE}."""
    mvtec = Path(
        synthetic.write_demo_dataset(
            tmp_path / "mvtec", categories=("washer",), n_train=12, n_test_good=6, n_test_defect=6, size=64
        )
    )
    src, dst = mvtec / "washer", tmp_path / "folders" / "washer"
    (dst / "good").mkdir(parents=True)
    for i, image in enumerate(sorted((src / "train" / "good").iterdir()) + sorted((src / "test" / "good").iterdir())):
        shutil.copy(image, dst / "good" / f"{i:03d}{image.suffix}")
    for kind in ("missing", "scratch"):
        shutil.copytree(src / "test" / kind, dst / kind)
        if masks:
            shutil.copytree(src / "ground_truth" / kind, dst / "masks" / kind)
    return tmp_path / "folders"


def test_the_folders_layout_splits_the_good_images_by_name(tmp_path):
    root = folders_dataset(tmp_path)
    scan = layouts.scan(root, category="washer", layout="folders", test_fraction=0.3)
    train, test = scan.splits["train"], scan.splits["test"]
    good = sorted(p.name for p in (root / "washer" / "good").iterdir())
    held = [name for name in good if layouts.held_out(name, fraction=0.3)]
    assert sorted(e.image for e in train) == [f"good/{n}" for n in good if n not in held]
    assert [e.image for e in test if e.label == 0] == [f"good/{n}" for n in held]
    defective = [e for e in test if e.label == 1]
    assert len(defective) == 6 and {e.defect_type for e in defective} == {"missing", "scratch"}
    assert all(e.mask == f"masks/{e.defect_type}/{Path(e.image).stem}_mask.png" for e in defective)
    # adding good images moves none of the others between the splits
    shutil.copy(root / "washer" / "good" / good[0], root / "washer" / "good" / "new.png")
    again = layouts.scan(root, category="washer", layout="folders", test_fraction=0.3)
    assert set(again.splits["test"]) - set(test) <= {layouts.Entry("good/new.png", "", 0, "good")}


def test_the_folders_layout_names_what_is_missing(tmp_path):
    root = folders_dataset(tmp_path, masks=False)
    with pytest.raises(DataError, match=r"Mask file for image .*missing.*masks.*require_masks=False"):
        layouts.scan(root, category="washer", layout="folders")
    scan = layouts.scan(root, category="washer", layout="folders", require_masks=False)
    assert all(e.mask == "" for e in scan.splits["test"])
    shutil.rmtree(root / "washer" / "good")
    with pytest.raises(DataError, match=r"Folder of good images .*good does not exist"):
        layouts.scan(root, category="washer", layout="folders", require_masks=False)
    config = tiny_config(tmp_path, {"data.layout": "voc"})
    with pytest.raises(ConfigError, match="data.layout='voc' is not valid; choose one of \\('mvtec', 'folders'"):
        validation.validate(config)


@pytest.mark.slow
def test_a_folders_dataset_trains_and_scores_end_to_end(tmp_path):
    root = folders_dataset(tmp_path)
    config = tiny_config(tmp_path, {"data.demo": False, "data.root": str(root), "data.layout": "folders"})
    results = experiment.train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    n_good = len(list((root / "washer" / "good").iterdir()))
    assert results["n_train"] + results["n_test_good"] == n_good and results["n_test_defective"] == 6
    assert set(results["per_defect_type_auroc"]) == {"missing", "scratch"} and 0 <= results["image_auroc"] <= 1
    detector = experiment.load_detector(str(tmp_path / "run"))
    assert detector.score(np.zeros((1, 32, 32, 3), np.uint8))[0].shape == (1,)
