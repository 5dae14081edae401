"""Scoring new images with a trained run: saved GDE and threshold, no refit; bad files reported and skipped."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sla_jax import experiment
from sla_jax.common.errors import DataError, UsageError
from sla_jax.scoring import inspection
from tests.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("image_run")
    config = tiny_config(workdir, {"eval.threshold_images": 8})
    results = experiment.train_and_evaluate(config, str(workdir), progress=False)
    return workdir, results


def predict_cli(workdir, *paths, out):
    return subprocess.run(
        [sys.executable, "-m", "sla_jax.predict", f"--workdir={workdir}", f"--out={out}", *map(str, paths)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_threshold_is_stored_and_reported(image_run):
    workdir, results = image_run
    saved = np.load(workdir / "gde.npz", allow_pickle=False)
    assert float(saved["threshold"]) == results["threshold"] > 0
    assert results["threshold_quantile"] == 0.99
    assert 0.0 <= results["test_false_positive_rate"] <= 1.0 and 0.0 <= results["test_true_positive_rate"] <= 1.0


def test_predict_matches_the_run_scores_and_skips_bad_files(image_run, tmp_path):
    workdir, results = image_run
    test_root = workdir / "demo_data" / "washer" / "test"
    with open(workdir / "scores.csv", encoding="utf-8") as f:
        expected = {Path(row["path"]).resolve(): float(row["score"]) for row in csv.DictReader(f)}
    broken = tmp_path / "new images" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (broken.parent / "Thumbs.db").write_bytes(b"\x00")
    out = tmp_path / "out"
    proc = predict_cli(workdir, test_root, broken.parent, out=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    scored = [r for r in records if "score" in r]
    assert len(scored) == len(expected) == results["n_test"]
    for r in scored:
        assert r["score"] == pytest.approx(expected[Path(r["path"]).resolve()], rel=1e-4)
        assert r["threshold"] == results["threshold"]
        assert r["decision"] == ("defective" if r["score"] > r["threshold"] else "good")
    errors = {Path(r["path"]).name: r["error"] for r in records if "error" in r}
    assert set(errors) == {"broken.png"}
    assert "Cannot decode image file" in errors["broken.png"]
    assert f"skipped {broken}" in proc.stderr and "Traceback" not in proc.stderr
    assert f"scored {len(scored)} image(s)" in proc.stdout
    rows = list(csv.DictReader((out / "predictions.csv").open(encoding="utf-8")))
    assert len(rows) == len(records)


def test_predict_without_a_run_says_what_to_do(tmp_path):
    proc = predict_cli(tmp_path, tmp_path, out=tmp_path / "out")
    assert proc.returncode != 0 and "config.json not found" in proc.stderr and "Traceback" not in proc.stderr


def files_of(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_predict_refuses_what_it_cannot_score_and_never_replaces_earlier_predictions(image_run, tmp_path):
    workdir, _ = image_run
    detector = experiment.load_detector(str(workdir))
    good = workdir / "demo_data" / "washer" / "test" / "good"
    out = tmp_path / "out"
    assert inspection.inspect(detector, [str(good)], out_dir=str(out), log=lambda _: None) == 0
    before = files_of(out)
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png at all")
    for paths, error, text, overwrite in [
        ([tmp_path / "empty"], DataError, "no image file .* in .*empty", True),
        ([good, tmp_path / "typo"], FileNotFoundError, "typo: no such file or folder", True),
        ([tmp_path / "broken"], DataError, "none of the 1 image file", True),  # even when asked to replace
        ([good], UsageError, "holds the predictions of an earlier scoring: pass --overwrite", False),
    ]:
        with pytest.raises(error, match=text):
            inspection.inspect(
                detector, [str(p) for p in paths], out_dir=str(out), overwrite=overwrite, log=lambda _: None
            )
        assert files_of(out) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="holds other files"):
        inspection.inspect(detector, [str(good)], out_dir=str(tmp_path / "mine"), log=lambda _: None)
    assert (
        inspection.inspect(
            detector, [str(sorted(good.iterdir())[0])], out_dir=str(out), overwrite=True, log=lambda _: None
        )
        == 0
    )
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 1
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")], "a temporary folder was left"


def test_any_file_name_the_operating_system_allows_is_scored(image_run, tmp_path):
    workdir, _ = image_run
    image = sorted((workdir / "demo_data" / "washer" / "test" / "good").iterdir())[0].read_bytes()
    folder = tmp_path / "odd names"
    folder.mkdir()
    names = [os.fsdecode(b"not-utf8-\xff\xfe.png"), "x" * 251 + ".png", "spaces and \u00fcn\u00efcode.png"]
    for name in names:
        (folder / name).write_bytes(image)
    out = tmp_path / "out"
    inspection.inspect(experiment.load_detector(str(workdir)), [str(folder)], out_dir=str(out), log=lambda _: None)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 3 and all("score" in r for r in records)
    assert {Path(r["path"]).name for r in records} == {
        "not-utf8-\\xff\\xfe.png",
        "x" * 251 + ".png",
        "spaces and \u00fcn\u00efcode.png",
    }
    assert len(list(csv.DictReader((out / "predictions.csv").open(encoding="utf-8")))) == 3
    assert len({r["score"] for r in records}) == 1  # the same image under three names


def test_predict_on_an_empty_folder_is_one_error_line_and_keeps_earlier_predictions(image_run, tmp_path):
    workdir, _ = image_run
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.jsonl").write_text('{"path": "earlier.png", "score": 1.0}\n')
    (tmp_path / "empty").mkdir()
    proc = predict_cli(workdir, tmp_path / "empty", out=out)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("error: no image file"), proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert os.listdir(out) == ["predictions.jsonl"] and "earlier.png" in (out / "predictions.jsonl").read_text()


@pytest.mark.slow
def test_patch_model_prediction_writes_overlays(tmp_path):
    workdir = tmp_path / "patch_run"
    config = tiny_config(
        tmp_path,
        {
            "data.image_size": 48,
            "eval.threshold_images": 8,
            "localization.patch_size": 16,
            "localization.stride": 8,
            "localization.train_stride": 8,
            "localization.batch_size": 256,
            "localization.heatmaps": 4,
        },
    )
    results = experiment.train_and_evaluate(config, str(workdir), progress=False)
    test_dir = workdir / "demo_data" / "washer" / "test"
    images = (
        sorted((test_dir / "good").iterdir())[:1]
        + sorted(next(p for p in test_dir.iterdir() if p.name != "good").iterdir())[:1]
    )
    proc = predict_cli(workdir, *images, out=tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 2
    with np.load(workdir / "maps.npz", allow_pickle=False) as maps:
        by_path = {Path(p).resolve(): float(m.max()) for p, m in zip(maps["paths"], maps["maps"])}
    for r in records:
        assert r["threshold"] == results["threshold"]
        assert r["score"] == pytest.approx(by_path[Path(r["path"]).resolve()], rel=1e-4)
        assert Path(r["heatmap"]).stat().st_size > 5_000
