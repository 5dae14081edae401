"""Deploying a detector without JAX: python -m sla_jax.export writes one ONNX graph (density inside, maps for
patch models), python -m sla_jax.run_onnx scores with onnxruntime, numpy and PIL alone — here in a process
where importing JAX or flax fails — and gives the run's own scores (scores.csv) and maps (maps.npz)."""

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
from tests.tiny import tiny_config

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
pytest.importorskip(
    "jax2onnx",
    reason="jax2onnx is not installed: pip install -e '.[onnx]' installs it on Python "
    "3.11 (on 3.12 and jax 0.11 no version fits; see pyproject.toml)",
)

REPO = Path(__file__).resolve().parents[1]


def run(module: str, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
    )


def without_jax(tmp: Path) -> dict:
    """An environment in which ``import jax`` and ``import flax`` raise ImportError."""
    blocked = tmp / "no_jax"
    for name in ("jax", "jaxlib", "flax"):
        (blocked / name).mkdir(parents=True, exist_ok=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is not available here')\n")
    return {"PYTHONPATH": os.pathsep.join([str(blocked), str(REPO)])}


def exported(tmp: Path, name: str, **localization):
    workdir = tmp / name
    changes = {"eval.threshold_images": 4, **{f"localization.{k}": v for k, v in localization.items()}}
    if localization:
        changes["data.image_size"] = 64
    experiment.train_and_evaluate(tiny_config(tmp, changes), str(workdir), progress=False)
    model = tmp / f"{name}.onnx"
    proc = run("sla_jax.export", f"--workdir={workdir}", f"--out={model}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote" in proc.stdout and model.stat().st_size > 1_000_000
    return workdir, model


def onnx_scores(tmp: Path, model: Path, images: Path, out: Path) -> dict:
    """run_onnx's records by path, one folder of good images and one broken file (reported, skipped)."""
    broken = tmp / "broken" / "broken.png"
    broken.parent.mkdir(exist_ok=True)
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    proc = run("sla_jax.run_onnx", model, images, broken, f"--out={out}", env=without_jax(tmp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"skipped {broken}" in proc.stderr and "1 skipped" in proc.stdout
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert "error" in records[-1] and records[-1]["path"] == str(broken)
    records = records[:-1]
    assert all(r["decision"] == ("defective" if r["score"] > r["threshold"] else "good") for r in records)
    return {Path(r["path"]).resolve(): r for r in records}


def run_scores(workdir: Path) -> dict:
    with open(workdir / "scores.csv", encoding="utf-8") as f:
        return {Path(row["path"]).resolve(): float(row["score"]) for row in csv.DictReader(f)}


@pytest.mark.slow
def test_image_model_scores_equal_the_run_without_jax(tmp_path):
    workdir, model = exported(tmp_path, "image")
    import onnxruntime as ort

    meta = ort.InferenceSession(str(model)).get_modelmeta().custom_metadata_map
    results = json.loads((workdir / "results.json").read_text())
    assert float(meta["threshold"]) == pytest.approx(results["threshold"])
    assert meta["image_size"] == "32" and meta["category"] == "washer" and meta["density"] == "gde"
    assert meta["sla_jax_version"] and meta["sla_jax_commit"] and meta["resize"] == "bilinear"
    got = onnx_scores(tmp_path, model, workdir / "demo_data" / "washer" / "test", tmp_path / "pred")
    expected = run_scores(workdir)
    assert set(got) == set(expected)
    for path, score in expected.items():
        assert got[path]["score"] == pytest.approx(score, rel=1e-4)


@pytest.mark.slow
def test_patch_model_scores_and_maps_equal_the_run_without_jax(tmp_path):
    workdir, model = exported(tmp_path, "patch", patch_size=32, stride=8, train_stride=16, batch_size=64)
    maps = np.load(workdir / "maps.npz", allow_pickle=False)
    got = onnx_scores(tmp_path, model, workdir / "demo_data" / "washer" / "test", tmp_path / "pred")
    expected = run_scores(workdir)
    for path, score in expected.items():
        assert got[path]["score"] == pytest.approx(score, rel=1e-4)
    assert all(Path(r["heatmap"]).is_file() for r in got.values())
    import onnxruntime as ort
    from PIL import Image

    session = ort.InferenceSession(str(model))
    paths = [str(p) for p in maps["paths"][:5]]
    images = np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)) for p in paths]
    )
    _, onnx_maps = session.run(None, {"images": images})
    np.testing.assert_allclose(onnx_maps, maps["maps"][:5], rtol=1e-4, atol=1e-4 * float(np.abs(maps["maps"]).max()))


def test_run_onnx_reports_bad_files_and_refuses_what_is_no_model(tmp_path):
    bad = tmp_path / "images" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not a model")
    proc = run("sla_jax.run_onnx", fake, bad.parent, env=without_jax(tmp_path))
    assert proc.returncode == 1 and proc.stderr.startswith("error:") and "fake.onnx" in proc.stderr
    assert "Traceback" not in proc.stderr
