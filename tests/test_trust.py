"""A run never loses or mislabels a result, and degenerate data gets an answer, not a number
(``docs/reliability.md``, "Results and re-runs"): files whole or absent, strict JSON, a workdir that holds
exactly one run, paths stored absolute, undefined AUROCs said in words, too-small training sets refused,
every image mode decoded faithfully or refused."""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launch import benchmark
from sla_jax import experiment
from sla_jax.common.errors import ConfigError, DataError, WorkdirError
from sla_jax.data import decode, synthetic
from sla_jax.experiment import identity
from sla_jax.outputs import atomic, files
from sla_jax.scoring import detection
from tests.tiny import tiny_config


def strict_load(path: Path):
    """json.load that fails on the NaN / Infinity tokens JSON does not have."""

    def refuse(token):
        raise AssertionError(f"{path} holds the non-JSON token {token}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its size and modification time (nanoseconds)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# ----------------------------------------------------------------------------- files: whole or absent, strict JSON


def test_strict_json_writes_null_with_its_reason_never_a_nan_token(tmp_path):
    value = {
        "image_auroc": float("nan"),
        "inner": {"x": np.float32("inf"), "ok": np.float64(0.5)},
        "list": [1.0, float("-inf")],
        "given": None,
        "given_undefined": "kept as written",
    }
    path = Path(atomic.write_json(tmp_path / "r.json", value))
    loaded = strict_load(path)
    assert loaded["image_auroc"] is None and loaded["image_auroc_undefined"] == "not a finite number (nan)"
    assert loaded["inner"] == {"x": None, "x_undefined": "not a finite number (inf)", "ok": 0.5}
    assert loaded["list"] == [1.0, None] and loaded["given_undefined"] == "kept as written"
    assert json.loads(atomic.dumps({"a": float("nan")})) == {"a": None, "a_undefined": "not a finite number (nan)"}


def test_a_write_that_fails_leaves_the_earlier_file_whole_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    atomic.write_json(path, {"image_auroc": 0.9})
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic.replacing(path, "w", encoding="utf-8") as f:
            f.write('{"image_auroc": 0.')
            raise RuntimeError("killed half-way")
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["results.json"]


def test_a_folder_is_replaced_only_once_the_new_one_is_whole(tmp_path):
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "old.txt").write_text("earlier")
    with pytest.raises(RuntimeError):
        with atomic.replacing_folder(out) as new:
            Path(new, "half.txt").write_text("x")
            raise RuntimeError("stopped")
    assert sorted(os.listdir(tmp_path)) == ["predictions"] and (out / "old.txt").read_text() == "earlier"
    with atomic.replacing_folder(out) as new:
        Path(new, "new.txt").write_text("y")
    assert os.listdir(out) == ["new.txt"] and sorted(os.listdir(tmp_path)) == ["predictions"]


def test_a_resumed_run_logs_each_step_once(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": k, "loss": 1.0 / k}) + "\n" for k in range(1, 6)) + '{"step": 6, "lo')
    files.trim_log(str(log), up_to_step=3)  # resuming from the checkpoint of step 3 after a kill at step 6
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3]


# ----------------------------------------------------------------------------- a run's identity


def demo_root(tmp_path: Path, *, drop=(), keep_train: int | None = None) -> Path:
    """The demo's washer category at 32 px, with the test folders in ``drop`` (and their masks) removed and
    only the first ``keep_train`` training images kept."""
    root = Path(
        synthetic.write_demo_dataset(
            tmp_path / "data", categories=("washer",), n_train=12, n_test_good=6, n_test_defect=6, size=32
        )
    )
    for name in drop:
        shutil.rmtree(root / "washer" / "test" / name)
        shutil.rmtree(root / "washer" / "ground_truth" / name, ignore_errors=True)
    if keep_train is not None:
        for extra in sorted((root / "washer" / "train" / "good").iterdir())[keep_train:]:
            extra.unlink()
    return root


def data_config(tmp_path: Path, root: Path, changes: dict | None = None):
    config = tiny_config(
        tmp_path,
        {"data.demo": False, "data.root": str(root), "data.category": "washer", "train.steps": 1, **(changes or {})},
    )
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny finished run (3 steps); the tests below must leave it as it is."""
    tmp = tmp_path_factory.mktemp("finished")
    workdir = tmp / "run"
    config = data_config(tmp, demo_root(tmp), {"train.steps": 3})
    results = experiment.train_and_evaluate(config, str(workdir), progress=False)
    return workdir, config, results


def test_every_output_names_the_checkpoint_step_it_comes_from(finished):
    workdir, _, results = finished
    assert results["checkpoint_step"] == results["steps"] == 3 == identity.checkpoint_steps(workdir)[-1]
    assert strict_load(workdir / "results.json")["checkpoint_step"] == 3
    with np.load(workdir / "gde.npz", allow_pickle=False) as saved:
        assert int(saved["checkpoint_step"]) == 3
    rows = (workdir / "scores.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].endswith(",checkpoint_step") and all(r.endswith(",3") for r in rows[1:])
    assert "checkpoint of step 3" in (workdir / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"model.head": (16,), "labels.alpha": 5.0}, ["model.head: (32,) → (16,)", "labels.alpha: 10.0 → 5.0"]),
        ({"transform.name": "cp"}, ["transform.name: 'co' → 'cp'"]),
        ({"seed": 1}, ["seed: 0 → 1"]),
    ],
)
def test_a_rerun_with_other_settings_is_refused_naming_each_key_and_writes_nothing(finished, changes, named):
    workdir, config, _ = finished
    before = snapshot(workdir)
    other = copy.deepcopy(config)
    other.update_from_flattened_dict(changes)
    with pytest.raises(ConfigError, match="holds a run with other settings") as error:
        experiment.train_and_evaluate(other, str(workdir), progress=False)
    for text in named:
        assert text in str(error.value)
    assert "another --workdir" in str(error.value)
    assert snapshot(workdir) == before


def test_fewer_steps_than_the_newest_checkpoint_is_refused_with_what_to_run(finished):
    workdir, config, _ = finished
    before = snapshot(workdir)
    fewer = copy.deepcopy(config)
    fewer.train.steps = 2
    with pytest.raises(ConfigError, match=r"train.steps=2 is below the newest checkpoint .* \(step 3\)") as error:
        experiment.train_and_evaluate(fewer, str(workdir), progress=False)
    assert "sla_jax.evaluate" in str(error.value) and "--step=N" in str(error.value)
    assert snapshot(workdir) == before


def test_identity_rules_on_plain_dicts():
    saved = {
        "seed": 0,
        "train": {"steps": 6, "log_every": 1},
        "model": {"head": [32]},
        "eval": {"density": "gde"},
        "localization": {"patch_size": 0, "sigma": 10.0},
    }
    same = {
        **saved,
        "train": {"steps": 8, "log_every": 5},
        "eval": {"density": "kde"},
        "localization": {"patch_size": 0, "sigma": 4.0},
        "model": {"head": (32,)},
    }
    assert identity.differences(saved, same) == []
    note = identity.check_resume(saved, same, workdir="W", newest=6)
    assert "train.steps 6 → 8" in note and "continues from the checkpoint of step 6" in note
    assert identity.check_resume(saved, saved, workdir="W", newest=6) is None
    patches = {**saved, "localization": {"patch_size": 32, "sigma": 10.0}}
    assert identity.differences(saved, patches) == [("localization.patch_size", 0, 32)]
    ensemble = {**saved, "ensemble": {"seeds": [0, 1]}}  # an ensemble's checkpoints are not a single run's
    assert identity.differences(saved, ensemble) == [("ensemble.seeds", "(absent)", (0, 1))]
    with pytest.raises(ConfigError, match=r"ensemble.seeds: \(0, 1\) → \(absent\)"):
        identity.check_resume(ensemble, saved, workdir="W", newest=6)


@pytest.mark.slow
def test_more_steps_continue_and_a_density_of_another_checkpoint_is_never_used(tmp_path, capsys):
    workdir = tmp_path / "run"
    config = data_config(tmp_path, demo_root(tmp_path), {"train.steps": 2})
    experiment.train_and_evaluate(config, str(workdir), progress=False)
    stale = (workdir / "gde.npz").read_bytes()
    config.train.steps = 4
    results = experiment.train_and_evaluate(config, str(workdir), progress=False)
    assert "train.steps 2 → 4: training continues from the checkpoint of step 2" in capsys.readouterr().out
    segments = [{"from_step": 0, "train_steps": 2}, {"from_step": 2, "train_steps": 4}]
    assert results["steps"] == results["checkpoint_step"] == 4 and results["lineage"] == segments
    assert strict_load(workdir / "lineage.json") == {"segments": segments}
    assert experiment.load_detector(str(workdir)).step == 4

    (workdir / "gde.npz").write_bytes(stale)  # as after a continuation stopped before its evaluation
    with pytest.raises(
        WorkdirError,
        match=r"fitted on the checkpoint of step 2, but the newest checkpoint is of "
        r"step 4: run `python -m sla_jax.evaluate",
    ):
        experiment.load_detector(str(workdir))
    evaluated = experiment.evaluate_workdir(str(workdir))
    assert experiment.load_detector(str(workdir)).step == 4
    for key in ("init", "processes", "lineage"):  # evaluate keeps the facts of training
        assert evaluated[key] == results[key]


def test_zero_steps_saves_the_loaded_features_as_a_checkpoint_that_predict_uses(tmp_path):
    workdir = tmp_path / "run"
    config = data_config(tmp_path, demo_root(tmp_path), {"train.steps": 0})
    results = experiment.train_and_evaluate(config, str(workdir), progress=False)
    assert results["steps"] == results["checkpoint_step"] == 0 and identity.checkpoint_steps(workdir) == [0]
    detector = experiment.load_detector(str(workdir))
    assert detector.step == 0 and detector.threshold == results["threshold"]


def test_paths_are_stored_absolute_and_a_relative_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(tmp_path)
    config.data.cache_dir = "relative_tfds"
    with_paths = experiment.with_absolute_paths(config)
    assert with_paths.data.cache_dir == str(tmp_path / "relative_tfds") and config.data.cache_dir == "relative_tfds"
    workdir = tmp_path / "run"
    workdir.mkdir()
    saved = json.loads(with_paths.to_json_best_effort())
    saved["data"]["root"] = "data/elsewhere"
    (workdir / "config.json").write_text(json.dumps(saved), encoding="utf-8")
    with pytest.raises(WorkdirError, match=r"records data.root='data/elsewhere', a relative path"):
        experiment.load_run_config(str(workdir))
    (workdir / "checkpoints" / "3").mkdir(parents=True)  # train in that workdir: the same answer, nothing written
    with pytest.raises(WorkdirError, match=r"records data.root='data/elsewhere', a relative path"):
        experiment.train_and_evaluate(config, str(workdir), progress=False)
    assert json.loads((workdir / "config.json").read_text())["data"]["root"] == "data/elsewhere"


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"seed": 0, "data": {"root": ', r"cannot be read: Expecting value at line 1"),
        ("[1, 2]", "holds a JSON list, not a config"),
        ('{"train": {"stesp": 3}}', "does not hold a config this sla_jax can use"),
        ('{"train": {"steps": -4}}', "does not hold a config this sla_jax can use"),
    ],
)
def test_a_cut_short_or_hand_edited_config_json_is_named(tmp_path, text, message):
    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "3").mkdir(parents=True)
    (workdir / "config.json").write_text(text, encoding="utf-8")
    with pytest.raises(WorkdirError, match=message) as error:
        experiment.load_run_config(str(workdir))
    assert str(workdir / "config.json") in str(error.value)
    with pytest.raises((WorkdirError, ConfigError)):
        experiment.train_and_evaluate(tiny_config(tmp_path), str(workdir), progress=False)
    assert (workdir / "config.json").read_text(encoding="utf-8") == text


def test_checkpoints_without_a_config_json_are_refused(tmp_path):
    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "3").mkdir(parents=True)
    with pytest.raises(WorkdirError, match="no config.json, so nothing tells which run"):
        experiment.train_and_evaluate(tiny_config(tmp_path), str(workdir), progress=False)
    assert not (workdir / "config.json").exists()


# ----------------------------------------------------------------------------- degenerate data


@pytest.mark.parametrize("drop, missing", [(("missing", "scratch"), "defective"), (("good",), "good")])
def test_a_test_set_of_one_class_trains_scores_and_says_why_the_auroc_is_undefined(tmp_path, drop, missing):
    workdir = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = experiment.train_and_evaluate(
            data_config(tmp_path, demo_root(tmp_path, drop=drop)), str(workdir), progress=False
        )
    assert not [w for w in caught if "No artists with labels" in str(w.message)]  # roc.png says why it is empty
    saved = strict_load(workdir / "results.json")
    reason = f"undefined: the test set has no {missing} images, and an AUROC compares the two"
    assert saved["image_auroc"] is None and saved["image_auroc_undefined"] == reason == results["image_auroc_undefined"]
    assert all(v is None for v in saved["per_defect_type_auroc"].values())
    assert files.summary_lines(saved)[0] == f"image AUROC: {reason}"
    assert len((workdir / "scores.csv").read_text().splitlines()) == 1 + saved["n_test"]


def test_benchmark_means_are_over_the_categories_where_the_auroc_is_defined_and_name_the_others():
    rows = [
        {"name": "a", "category": "a", "status": "done", "image_auroc": 0.8},
        {"name": "b", "category": "b", "status": "done", "image_auroc": 0.6},
        {
            "name": "c",
            "category": "c",
            "status": "done",
            "image_auroc": None,
            "image_auroc_undefined": "undefined: the test set has no defective images, and an AUROC compares the two",
        },
    ]
    summary = benchmark.summarize(rows)
    mean = summary["table"]["mean over categories"]["image AUROC"]
    assert mean["mean"] == pytest.approx(0.7) and mean["n_categories"] == 2
    meta = {
        "config": "/x/cps.py",
        "source": "/x/cps.py",
        "fixed": {},
        "grid": {},
        "commit": "abc",
        "commits": ["abc"],
        "date": "today",
        "command": "python -m launch.benchmark",
    }
    text = benchmark.markdown(meta, rows, summary, None)
    assert "Left out of the means (their AUROC is undefined): c (undefined: the test set has no defective" in text
    assert "nan" not in text.lower()


@pytest.mark.parametrize(
    "n_train, changes, needed",
    [
        (1, {}, detection.MIN_TRAIN_IMAGES),
        (3, {}, detection.MIN_TRAIN_IMAGES),
        (
            1,
            {
                "localization.patch_size": 16,
                "localization.stride": 8,
                "localization.train_stride": 8,
                "localization.batch_size": 64,
            },
            detection.MIN_TRAIN_IMAGES_PATCHES,
        ),
    ],
)
def test_a_training_set_too_small_for_the_threshold_is_an_error_naming_the_count(tmp_path, n_train, changes, needed):
    root = demo_root(tmp_path, keep_train=n_train)
    with pytest.raises(
        DataError,
        match=rf"holds {n_train} usable training image\(s\), but .* needs at least "
        rf"{needed}",
    ) as error:
        experiment.train_and_evaluate(data_config(tmp_path, root, changes), str(tmp_path / "run"), progress=False)
    assert str(root / "washer" / "train" / "good") in str(error.value)
    assert not identity.checkpoint_steps(tmp_path / "run")


def test_five_training_images_of_any_name_give_a_finite_threshold(tmp_path):
    """Also: names the file system allows but that are not UTF-8, of 255 bytes, with spaces, train and score."""
    root = demo_root(tmp_path, keep_train=5)
    train, test = root / "washer" / "train" / "good", root / "washer" / "test" / "good"
    os.rename(sorted(train.iterdir())[0], os.path.join(os.fsencode(train), b"not-utf8-\xff.png"))
    os.rename(sorted(test.iterdir())[0], test / ("y" * 251 + ".png"))
    os.rename(sorted(test.iterdir())[0], test / "with space.png")
    workdir = tmp_path / "run"
    results = experiment.train_and_evaluate(data_config(tmp_path, root), str(workdir), progress=False)
    assert np.isfinite(results["threshold"]) and results["n_train"] == 5
    assert results["test_false_positive_rate"] < 1.0
    strict_load(workdir / "results.json")
    scored = (workdir / "scores.csv").read_text(encoding="utf-8")
    assert "y" * 251 + ".png" in scored and "with space.png" in scored and (workdir / "report.html").is_file()


# ----------------------------------------------------------------------------- image modes


def encoded(image: Image.Image, fmt: str = "TIFF") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


GRAY = np.arange(16 * 16, dtype=np.float64).reshape(16, 16) % 256  # 0..255


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray((GRAY / 255.0).astype(np.float32), "F"),  # float in [0, 1]
        Image.fromarray(GRAY.astype(np.float32), "F"),  # float in [0, 255]
        Image.fromarray((GRAY * 257).astype(np.int32), "I"),  # 32-bit integers holding 16-bit values
        Image.fromarray((GRAY * 257).astype(np.uint16)),  # Pillow picks I;16
    ],
    ids=["F-unit", "F-255", "I", "I;16"],
)
def test_wide_gray_images_decode_to_the_8_bit_image_they_hold(image):
    decoded = decode.decode_image(encoded(image), size=16, name="wide.tif")
    assert decoded.dtype == np.uint8 and decoded.shape == (16, 16, 3)
    assert np.abs(decoded[..., 0].astype(int) - GRAY.astype(int)).max() <= 1


@pytest.mark.parametrize("values", [GRAY * 1000.0 - 5.0, np.full((16, 16), np.nan)], ids=["out-of-range", "nan"])
def test_a_float_image_of_no_known_range_is_refused_naming_the_file(values):
    with pytest.raises(DataError, match=r"odd.tif \(mode F\) has .*Re-save it as 8- or 16-bit PNG"):
        decode.decode_image(encoded(Image.fromarray(values.astype(np.float32), "F")), size=16, name="odd.tif")


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB"])
def test_every_8_bit_mode_decodes_to_rgb(mode):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB").convert(mode)
    decoded = decode.decode_image(encoded(image), size=16, name=f"{mode}.tif")
    assert decoded.shape == (16, 16, 3) and decoded.dtype == np.uint8 and decoded.std() > 10


def test_an_unwritable_cache_dir_is_named(tmp_path):
    from sla_jax import data as data_lib

    root = demo_root(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(DataError, match=r"cannot write the prepared-data cache .*a_file/tfds .*data.cache_dir"):
        data_lib.load_dataset(root, category="washer", image_size=32, cache_dir=blocker / "tfds")
