"""The error contract of every command line (sla_jax/cli.py, launch/arguments.py): a misspelt flag or config
key (naming the nearest valid one), a wrong type, a missing or unreadable path, an empty folder, a workdir
that holds no run, a file of the wrong kind: at most three lines on stderr, the first starting with
``error:``, no traceback, exit status 2 for usage and config mistakes and 1 for data and run failures, and
nothing created on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
USAGE, FAILURE = 2, 1

# (entry point, case, arguments with {T} for the test's folder, exit status, text the message must hold)
CASES = [
    ("sla_jax.train", "misspelt flag", ["--config=configs/demo.py", "--wokdir={T}/w"], USAGE, "--workdir"),
    (
        "sla_jax.train",
        "misspelt key",
        ["--config=configs/demo.py", "--workdir={T}/w", "--config.train.stepz=3"],
        USAGE,
        '"--config.train.steps"',
    ),
    (
        "sla_jax.train",
        "misspelt section",
        ["--config=configs/demo.py", "--workdir={T}/w", "--config.trian.steps=3"],
        USAGE,
        '"--config.train.steps"',
    ),
    (
        "sla_jax.train",
        "wrong type",
        ["--config=configs/demo.py", "--workdir={T}/w", "--config.train.steps=abc"],
        USAGE,
        "train.steps",
    ),
    (
        "sla_jax.train",
        "wrong tuple",
        ["--config=configs/demo.py", "--workdir={T}/w", "--config.model.head=abc"],
        USAGE,
        "model.head",
    ),
    (
        "sla_jax.train",
        "missing path",
        ["--config=configs/cps.py", "--workdir={T}/w", "--config.data.root=/missing/data", "--config.data.category=x"],
        FAILURE,
        "/missing/data",
    ),
    (
        "sla_jax.train",
        "empty folder",
        ["--config=configs/cps.py", "--workdir={T}/w", "--config.data.root={T}", "--config.data.category=empty"],
        FAILURE,
        "empty",
    ),
    ("sla_jax.train", "missing config", ["--config={T}/absent.py", "--workdir={T}/w"], USAGE, "absent.py"),
    ("sla_jax.train", "wrong kind", ["--config={T}/notes.txt", "--workdir={T}/w"], USAGE, "get_config"),
    ("sla_jax.evaluate", "misspelt flag", ["--workdri={T}/empty"], USAGE, "--workdir"),
    ("sla_jax.evaluate", "wrong type", ["--workdir={T}/empty", "--step=abc"], USAGE, "--step"),
    ("sla_jax.evaluate", "missing path", ["--workdir=/missing/run"], FAILURE, "/missing/run"),
    ("sla_jax.evaluate", "no run", ["--workdir={T}/empty"], FAILURE, "config.json"),
    ("sla_jax.evaluate", "wrong kind", ["--workdir={T}/notes.txt"], FAILURE, "not a folder"),
    ("sla_jax.predict", "misspelt flag", ["--workdri={T}/empty", "{T}/a.png"], USAGE, "--workdir"),
    ("sla_jax.predict", "missing path", ["--workdir=/missing/run", "{T}/a.png"], FAILURE, "/missing/run"),
    ("sla_jax.predict", "no run", ["--workdir={T}/empty", "{T}/a.png", "--out={T}/p"], FAILURE, "config.json"),
    ("sla_jax.predict", "wrong kind", ["--workdir={T}/notes.txt", "{T}/a.png"], FAILURE, "not a folder"),
    ("sla_jax.analyze", "misspelt flag", ["--datset={T}/empty"], USAGE, "--dataset"),
    ("sla_jax.analyze", "wrong type", ["--dataset={T}/empty", "--trials=abc", "--out={T}/a"], USAGE, "--trials"),
    ("sla_jax.analyze", "missing path", ["--dataset=/missing/data/cat", "--out={T}/a"], FAILURE, "/missing/data"),
    ("sla_jax.analyze", "empty folder", ["--dataset={T}/empty", "--out={T}/a"], FAILURE, "empty"),
    ("sla_jax.convert_weights", "misspelt flag", ["--keepfc", "{T}/a.pth", "{T}/b.npz"], USAGE, "--keep_fc"),
    ("sla_jax.convert_weights", "missing path", ["/missing/weights.pth", "{T}/b.npz"], FAILURE, "/missing/weights.pth"),
    ("sla_jax.convert_weights", "wrong kind", ["{T}/notes.txt", "{T}/b.npz"], FAILURE, "notes.txt"),
    ("sla_jax.convert_weights", "wrong output", ["{T}/notes.txt", "{T}/b.txt"], FAILURE, ".npz"),
    ("sla_jax.report", "misspelt flag", ["--bogus", "{T}/empty"], USAGE, "--bogus"),
    ("sla_jax.report", "missing path", ["/missing/run"], FAILURE, "/missing/run"),
    ("sla_jax.report", "no run", ["{T}/empty"], FAILURE, "results.json"),
    ("sla_jax.export", "misspelt flag", ["--workdri={T}/empty", "--out={T}/m.onnx"], USAGE, "--workdir"),
    ("sla_jax.export", "missing path", ["--workdir=/missing/run", "--out={T}/m.onnx"], FAILURE, "/missing/run"),
    ("sla_jax.export", "no run", ["--workdir={T}/empty", "--out={T}/m.onnx"], FAILURE, "config.json"),
    ("sla_jax.export", "wrong kind", ["--workdir={T}/empty", "--out={T}/m.txt"], USAGE, ".onnx"),
    ("sla_jax.run_onnx", "misspelt flag", ["--ot={T}/p", "{T}/m.onnx", "{T}/empty"], USAGE, "--out"),
    ("sla_jax.run_onnx", "missing path", ["/missing/model.onnx", "{T}/empty"], FAILURE, "/missing/model.onnx"),
    ("sla_jax.run_onnx", "wrong kind", ["{T}/notes.txt", "{T}/empty"], USAGE, ".onnx"),
    ("launch.sweep", "misspelt flag", ["--swep=configs/demo_sweep.py", "--sweep_dir={T}/s"], USAGE, "--sweep?"),
    (
        "launch.sweep",
        "misspelt key",
        ["--sweep=configs/demo_sweep.py", "--sweep_dir={T}/s", "--set=train.stepz=3"],
        USAGE,
        "train.steps",
    ),
    (
        "launch.sweep",
        "wrong type",
        ["--sweep=configs/demo_sweep.py", "--sweep_dir={T}/s", "--jobs=abc"],
        USAGE,
        "--jobs",
    ),
    ("launch.sweep", "missing path", ["--sweep=/missing/sweep.py", "--sweep_dir={T}/s"], USAGE, "/missing/sweep.py"),
    ("launch.sweep", "wrong kind", ["--sweep={T}/notes.txt", "--sweep_dir={T}/s"], USAGE, "notes.txt"),
    ("launch.collect", "misspelt flag", ["--sweepdir={T}/empty"], USAGE, "--sweep_dir"),
    ("launch.collect", "missing path", ["--sweep_dir=/missing/sweep"], FAILURE, "/missing/sweep"),
    ("launch.collect", "no run", ["--sweep_dir={T}/empty"], FAILURE, "sweep.json"),
    (
        "launch.benchmark",
        "misspelt flag",
        ["--confg=configs/cps.py", "--root={T}/empty", "--out={T}/b"],
        USAGE,
        "--config",
    ),
    (
        "launch.benchmark",
        "misspelt key",
        ["--config=configs/cps.py", "--root={T}/empty", "--out={T}/b", "--set=train.stepz=3"],
        USAGE,
        "train.steps",
    ),
    (
        "launch.benchmark",
        "wrong type",
        ["--config=configs/cps.py", "--root={T}/empty", "--out={T}/b", "--jobs=x"],
        USAGE,
        "--jobs",
    ),
    (
        "launch.benchmark",
        "missing path",
        ["--config=configs/cps.py", "--root=/missing/data", "--out={T}/b"],
        FAILURE,
        "/missing/data",
    ),
    (
        "launch.benchmark",
        "empty folder",
        ["--config=configs/cps.py", "--root={T}/empty", "--out={T}/b"],
        FAILURE,
        "no category",
    ),
    ("launch.benchmark", "no run", ["--tables_only", "--out={T}/empty"], FAILURE, "benchmark.json"),
    (
        "launch.benchmark",
        "out on a file",
        ["--config=configs/demo.py", "--root={T}/data", "--out={T}/notes.txt"],
        USAGE,
        "is a file, not a folder",
    ),
    (
        "launch.benchmark",
        "value out of range",
        ["--config=configs/demo.py", "--root={T}/data", "--out={T}/b", "--set=train.steps=-1"],
        USAGE,
        "train.steps=-1 must be >= 0",
    ),
    (
        "launch.sweep",
        "value out of range",
        ["--sweep=configs/demo_sweep.py", "--sweep_dir={T}/s", "--set=train.steps=-1"],
        USAGE,
        "train.steps=-1 must be >= 0",
    ),
    (
        "launch.sweep",
        "set of a varied key",
        ["--sweep=configs/demo_sweep.py", "--sweep_dir={T}/s", "--set=labels.alpha=5.0"],
        USAGE,
        "varies it per point",
    ),
    ("sla_jax.analyze", "existing out", ["--dataset={T}/empty", "--out={T}/analysis"], USAGE, "pass --overwrite"),
    ("sla_jax.export", "existing out", ["--workdir={T}/empty", "--out={T}/kept.onnx"], USAGE, "pass --overwrite"),
    ("sla_jax.convert_weights", "existing out", ["{T}/notes.txt", "{T}/kept.npz"], USAGE, "pass --overwrite"),
    (
        "sla_jax.train",
        "config fails to import",
        ["--config={T}/imports.py", "--workdir={T}/w"],
        USAGE,
        "imports.py failed at line 1 (ModuleNotFoundError",
    ),
    (
        "sla_jax.train",
        "get_config raises",
        ["--config={T}/raises.py", "--workdir={T}/w"],
        USAGE,
        "raises.py failed at line 3 (RuntimeError: no data here",
    ),
    (
        "sla_jax.train",
        "get_config returns None",
        ["--config={T}/none.py", "--workdir={T}/w"],
        USAGE,
        "get_config() returned None",
    ),
]

CONFIG_FILES = {
    "imports.py": "import not_a_module_anywhere\ndef get_config():\n    return None\n",
    "raises.py": "def get_config():\n    x = 1\n    raise RuntimeError('no data here')\n",
    "none.py": "def get_config():\n    return None\n",
}


def snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("module,case,args,status,hint", CASES, ids=[f"{m}: {c}" for m, c, *_ in CASES])
def test_every_entry_point_fails_with_one_clear_line(tmp_path, module, case, args, status, hint):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "data" / "c" / "train" / "good").mkdir(parents=True)
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "analysis.json").write_text("{}")
    for name in ("kept.onnx", "kept.npz"):
        (tmp_path / name).write_bytes(b"an earlier result")
    for name, text in CONFIG_FILES.items():
        (tmp_path / name).write_text(text)
    before = snapshot(tmp_path)
    args = [a.replace("{T}", str(tmp_path)) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SLA_JAX_COMPILATION_CACHE": "0"},
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == status, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert 1 <= len(lines) <= 3 and lines[0].startswith("error:"), proc.stderr
    assert hint.replace("{T}", str(tmp_path)) in proc.stderr, proc.stderr
    assert snapshot(tmp_path) == before, "the failed command created files"


ENTRY_POINTS = [
    "sla_jax.train",
    "sla_jax.evaluate",
    "sla_jax.predict",
    "sla_jax.analyze",
    "sla_jax.convert_weights",
    "sla_jax.report",
    "sla_jax.export",
    "sla_jax.run_onnx",
    "launch.sweep",
    "launch.collect",
    "launch.benchmark",
]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_exits_0_on_every_command(module):
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SLA_JAX_COMPILATION_CACHE": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stdout.strip()


def test_train_help_lists_every_config_key_with_its_value_and_meaning():
    proc = subprocess.run(
        [sys.executable, "-m", "sla_jax.train", "--config=configs/demo.py", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "values of configs/demo.py" in proc.stdout
    assert "  train.steps = 300 (default 65536)  # 256 epochs of 256 steps" in proc.stdout
    assert "  labels.alpha = 10.0" in proc.stdout and "  data.demo = True (default False)" in proc.stdout
