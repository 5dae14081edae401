"""Multi-process data parallelism: which environment asks for a job (fast), that each device builds only
its slice of a batch (compile only), and two real processes on localhost against one process."""

import json
import os
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sla_jax import experiment
from sla_jax.training import distributed, pretext
from sla_jax.training import state as state_lib
from sla_jax.training.models import PretextNet

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "kwargs,environ,expected",
    [
        ({}, {}, None),
        ({}, {"SLURM_NTASKS": "1", "SLURM_STEP_NODELIST": "n1"}, None),
        ({}, {"SLURM_NTASKS": "4", "SLURM_STEP_NODELIST": "n[1-2]"}, {}),
        ({}, {"SLURM_NTASKS": "4"}, None),  # an allocation, not inside srun: one process
        (
            {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1},
            {},
            {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1},
        ),
        (
            {},
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "3", "JAX_PROCESS_ID": "0"},
            {"coordinator_address": "h:1", "num_processes": 3, "process_id": 0},
        ),
        (
            {"process_id": 2},
            {
                "JAX_COORDINATOR_ADDRESS": "h:1",
                "JAX_NUM_PROCESSES": "3",
                "JAX_PROCESS_ID": "0",
                "SLURM_NTASKS": "8",
                "SLURM_STEP_NODELIST": "n1",
            },
            {"coordinator_address": "h:1", "num_processes": 3, "process_id": 2},
        ),
        ({"coordinator_address": "h:1", "num_processes": 1, "process_id": 0}, {}, None),
    ],
)
def test_requested_job(kwargs, environ, expected):
    assert distributed.requested_job(**kwargs, environ=environ) == expected


@pytest.mark.parametrize(
    "kwargs,environ,match",
    [
        ({"coordinator_address": "h:1"}, {}, "missing: num_processes, process_id"),
        ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, {}, "process_id=2, num_processes=2"),
        ({}, {"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' is not an integer"),
    ],
)
def test_incomplete_job_request_says_what_is_missing(kwargs, environ, match):
    with pytest.raises(ValueError, match=match):
        distributed.requested_job(**kwargs, environ=environ)


def test_each_device_builds_only_its_slice_of_the_batch():
    """With the batch constrained to P('data'), the partitioner pushes the sharding back through the
    edits and labels: the per-device program holds images of batch/devices, never the global batch."""
    model = PretextNet(num_classes=2, head=(16,), stem="small")
    optimizer = state_lib.make_optimizer(learning_rate=0.03, momentum=0.9, weight_decay=3e-5, total_steps=4)
    step = pretext.compile_train_step(
        model=model,
        optimizer=optimizer,
        spec=pretext.StepSpec(batch_size=8, transform="co"),
        mesh=state_lib.data_mesh(),
    )
    state = jax.eval_shape(
        partial(state_lib.init_state, model=model, optimizer=optimizer, image_size=32), jax.random.key(0)
    )
    hlo = step.lower(state, jax.ShapeDtypeStruct((20, 32, 32, 3), jnp.uint8), jax.random.key(1)).compile().as_text()
    assert jax.device_count() == 4
    assert "f32[2,32,32,3]" in hlo
    assert "f32[8,32,32,3]" not in hlo and "f32[4,32,32,3]" not in hlo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def train_args(workdir: Path, cache: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sla_jax.train",
        "--config=configs/demo.py",
        f"--workdir={workdir}",
        "--config.data.image_size=32",
        "--config.model.stem=small",
        "--config.model.head=(32,)",
        "--config.train.batch_size=8",
        "--config.train.steps=2",
        "--config.train.log_every=1",
        "--config.eval.batch_size=64",
        f"--config.data.cache_dir={cache}",
    ]


def start(args: list[str], *, devices: int, log: Path) -> subprocess.Popen:
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONUNBUFFERED="1",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def restore(workdir: Path):
    """The final train state of a run, restored onto one device of this (4-device) process."""
    config = experiment.load_run_config(str(workdir))
    model = experiment.read(config).model
    optimizer = state_lib.make_optimizer(
        learning_rate=config.train.learning_rate,
        momentum=config.train.momentum,
        weight_decay=config.train.weight_decay,
        total_steps=config.train.steps,
    )
    init = jax.jit(
        partial(state_lib.init_state, model=model, optimizer=optimizer, image_size=experiment.read(config).input_size)
    )
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), jax.eval_shape(init, jax.random.key(0))
    )
    manager = state_lib.checkpoint_manager(str(workdir), keep=2)
    state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract))
    manager.close()
    initial = init(jax.random.fold_in(jax.random.key(config.seed), pretext.KEY_INIT))
    return state, initial


def losses(path: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, path.read_text().splitlines())]


@pytest.mark.slow
def test_two_processes_train_in_lock_step_like_one_process(tmp_path):
    """2 processes × 2 CPU devices (gloo collectives over localhost) against 1 process × 4 devices, same
    global batch of 8, 2 steps. The processes must log identical losses (one replicated computation);
    process 0 alone writes results.json; the checkpoint, restored in this process, matches the
    single-process one to within what XLA:CPU's arithmetic allows (see below)."""
    multi, single = tmp_path / "two_processes", tmp_path / "one_process"
    port = free_port()
    procs = [
        start(
            train_args(multi, tmp_path / "tfds")
            + [f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
            devices=2,
            log=tmp_path / f"process{i}.log",
        )
        for i in range(2)
    ]
    procs.append(start(train_args(single, tmp_path / "tfds_single"), devices=4, log=tmp_path / "single.log"))
    for i, proc in enumerate(procs):
        assert proc.wait(timeout=900) == 0, (tmp_path / ["process0.log", "process1.log", "single.log"][i]).read_text()[
            -3000:
        ]

    for i in range(2):
        assert f"4 device(s) in 2 processes (this is process {i})" in (tmp_path / f"process{i}.log").read_text()
    assert sorted(p.name for p in multi.glob("metrics*.jsonl")) == ["metrics.jsonl", "metrics.process1.jsonl"]
    lockstep = losses(multi / "metrics.jsonl")
    assert [s for s, _ in lockstep] == [1, 2]
    assert losses(multi / "metrics.process1.jsonl") == lockstep  # bitwise: one computation, two copies
    results = json.loads((multi / "results.json").read_text())
    reference = json.loads((single / "results.json").read_text())
    assert results["processes"] == 2 and reference["processes"] == 1
    assert sorted(p.name for p in (multi / "checkpoints").iterdir()) == ["2"]

    # Step 1 sees identical parameters and an identical (bitwise) batch: equal losses to float rounding.
    # Then float32 rounding, amplified by batch-8 BatchNorm, separates the two: on the first step's batch
    # either setup's gradient differs from a float64 one by ~8e-4 (median over leaves), from each other
    # by ~5e-4. Measured after 2 steps: loss 1.4e-4 relative, parameters up to 1.4% of their change,
    # AUROC 0.003. A wrong batch, or a gradient missing the other process's half, differs at O(1).
    single_losses = losses(single / "metrics.jsonl")
    assert lockstep[0][1] == pytest.approx(single_losses[0][1], rel=1e-6)
    assert lockstep[1][1] == pytest.approx(single_losses[1][1], rel=2e-3)
    (s2, p0), (s1, _) = restore(multi), restore(single)
    assert int(s2.step) == int(s1.step) == 2
    for tree in ("params", "batch_stats"):
        for (path, a), b, init in zip(
            jax.tree_util.tree_leaves_with_path(getattr(s2, tree)),
            jax.tree_util.tree_leaves(getattr(s1, tree)),
            jax.tree_util.tree_leaves(getattr(p0, tree)),
        ):
            a, b, init = map(np.asarray, (a, b, init))
            change = np.linalg.norm(b - init)
            assert np.linalg.norm(a - b) <= 5e-2 * change + 1e-6, (tree, jax.tree_util.keystr(path))
    assert results["image_auroc"] == pytest.approx(reference["image_auroc"], abs=0.05)
    scores = [np.loadtxt(run / "scores.csv", delimiter=",", skiprows=1, usecols=3) for run in (multi, single)]
    assert np.corrcoef(*scores)[0, 1] > 0.99


def test_cli_with_half_a_job_request_explains(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sla_jax.train",
            "--config=configs/demo.py",
            f"--workdir={tmp_path}",
            "--coordinator_address=localhost:1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "missing: num_processes, process_id" in proc.stderr and "Traceback" not in proc.stderr
