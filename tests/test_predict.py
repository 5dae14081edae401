"""Scoring new images with a trained run: saved GDE and threshold, no refit; bad files reported and skipped."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sla_jax import experiment
from tests.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("image_run")
    config = tiny_config(workdir, {"eval.threshold_images": 8})
    results = experiment.train_and_evaluate(config, str(workdir), progress=False)
    return workdir, results


def predict_cli(workdir, *paths, out):
    return subprocess.run([sys.executable, "-m", "sla_jax.predict", f"--workdir={workdir}", f"--out={out}",
                           *map(str, paths)], cwd=REPO, capture_output=True, text=True, timeout=600)


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
    proc = predict_cli(workdir, test_root, broken.parent, tmp_path / "missing.png", out=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    scored = [r for r in records if "score" in r]
    assert len(scored) == len(expected) == results["n_test"]
    for r in scored:
        assert r["score"] == pytest.approx(expected[Path(r["path"]).resolve()], rel=1e-4)
        assert r["threshold"] == results["threshold"]
        assert r["decision"] == ("defective" if r["score"] > r["threshold"] else "good")
    errors = {Path(r["path"]).name: r["error"] for r in records if "error" in r}
    assert set(errors) == {"broken.png", "missing.png"}
    assert "Cannot decode image file" in errors["broken.png"] and errors["missing.png"] == "no such file or folder"
    assert f"skipped {broken}" in proc.stderr and "Traceback" not in proc.stderr
    assert f"scored {len(scored)} image(s)" in proc.stdout
    rows = list(csv.DictReader((out / "predictions.csv").open(encoding="utf-8")))
    assert len(rows) == len(records)


def test_predict_without_a_run_says_what_to_do(tmp_path):
    proc = predict_cli(tmp_path, tmp_path, out=tmp_path / "out")
    assert proc.returncode != 0 and "config.json not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_patch_model_prediction_writes_overlays(tmp_path):
    workdir = tmp_path / "patch_run"
    config = tiny_config(tmp_path, {"data.image_size": 48, "eval.threshold_images": 8, "localization.patch_size": 16,
                                    "localization.stride": 8, "localization.train_stride": 8,
                                    "localization.batch_size": 256, "localization.heatmaps": 4})
    results = experiment.train_and_evaluate(config, str(workdir), progress=False)
    test_dir = workdir / "demo_data" / "washer" / "test"
    images = sorted((test_dir / "good").iterdir())[:1] + sorted(next(p for p in test_dir.iterdir()
                                                                     if p.name != "good").iterdir())[:1]
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
