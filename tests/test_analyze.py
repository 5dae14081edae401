"""The invalid-edit analysis (paper Fig. 1): a closed form on a flat grey image, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sla_jax.data import synthetic
from sla_jax.training import analysis

REPO = Path(__file__).resolve().parents[1]


def test_invalid_counts_are_cumulative():
    y = np.array([0.9, 0.1, 0.2, 0.95, 0.4, 0.99])
    assert analysis.invalid_counts(y, threshold=0.5, every=2) == [1, 2, 3]


def test_cutpaste_on_flat_grey_matches_the_closed_form():
    """On a flat grey g, CutPaste changes a pixel only through the brightness factor b ~ U[0.9, 1.1]
    (contrast pulls to the patch mean, which is the pixel itself; grey has no saturation or hue), so
    Δ = 3 g |b - 1| everywhere in the box: the edit is invalid (y = 0) iff |b - 1| <= ε / (3 g), with
    probability ε / (3 g · 0.1) = 2/15 for g = 0.5, ε = 0.02."""
    trials = 2000
    images = jnp.full((1, 32, 32, 3), 128, jnp.uint8)
    keys = jax.random.split(jax.random.key(0), trials)
    y = np.asarray(analysis.trial_labels(images, keys, name="cp", alpha=10.0, epsilon=0.02))
    grey = 128 / 255
    p = 0.02 / (3 * grey * 0.1)
    assert np.all(np.isclose(y, 0.0) | np.isclose(y, np.tanh(5.0))), "all of the box changes, or none"
    invalid = int(np.sum(y < 0.5))
    assert abs(invalid - trials * p) < 4 * np.sqrt(trials * p * (1 - p)), (invalid, trials * p)


def test_command_line_writes_table_json_and_plot(tmp_path):
    root = tmp_path / "data"
    synthetic.write_demo_dataset(
        root, seed=0, categories=("weave", "tile"), n_train=6, n_test_good=2, n_test_defect=2, size=64
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sla_jax.analyze",
            f"--dataset={root / 'weave'}",
            f"--dataset={root / 'tile'}",
            "--trials=100",
            "--every=50",
            "--image_size=32",
            "--transforms=co,cps",
            f"--out={out}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "weave: invalid edits CO" in proc.stdout
    results = json.loads((out / "analysis.json").read_text())
    assert set(results["datasets"]) == {"weave", "tile"}
    for entry in results["datasets"].values():
        assert set(entry["transforms"]) == {"co", "cps"} and len(entry["images"]) == 4
        for r in entry["transforms"].values():
            assert len(r["cumulative_invalid"]) == 2 and sum(r["histogram"]) == 100
            assert r["cumulative_invalid"][-1] == r["invalid"]
    assert "| weave | CPS |" in (out / "analysis.md").read_text()
    assert (out / "analysis.png").stat().st_size > 10_000
