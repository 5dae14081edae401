"""Runs that are stopped, locked out, or cannot write: clear errors, clean exits, nothing lost; the same
command gives the same bytes, without the network."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from sla_jax import experiment
from sla_jax.common import workdir as workdir_lib
from sla_jax.data import synthetic
from sla_jax.training import loop
from sla_jax.training import state as state_lib
from tests.tiny import demo_config

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--config=configs/demo.py",
    "--config.data.image_size=32",
    "--config.train.batch_size=8",
    "--config.model.head=(32,)",
]


def tiny_state() -> state_lib.TrainState:
    return state_lib.TrainState(step=jnp.int32(0), params={"w": jnp.zeros(3)}, batch_stats={}, opt_state={})


def counting_step(state, images, key):
    step = state.step + 1
    return state.replace(step=step, params={"w": state.params["w"] + 1}), {
        "loss": 1.0 / step,
        "accuracy": 0.5,
        "mean_label": 0.9,
    }


def fit(state, step_fn, manager, *, checkpoint_every: int, total_steps: int = 100):
    return loop.fit(
        state,
        None,
        None,
        step_fn=step_fn,
        total_steps=total_steps,
        images_per_step=1,
        manager=manager,
        checkpoint_every=checkpoint_every,
        log_every=1000,
        progress=False,
    )


@contextlib.contextmanager
def immutable(path: Path):
    """``chattr +i``: not even root may create files in ``path`` until the block ends."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip(f"chattr +i is not supported on the file system of {path}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def cli(*args, workdir, cache):
    return [
        sys.executable,
        "-m",
        "sla_jax.train",
        *TINY,
        f"--workdir={workdir}",
        f"--config.data.cache_dir={cache}",
        *args,
    ]


# ----------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_at_a_step_boundary_with_a_checkpoint(signum, tmp_path):
    before = signal.getsignal(signum)

    def step_fn(state, images, key):
        if int(state.step) == 2:
            os.kill(os.getpid(), signum)
        return counting_step(state, images, key)

    manager = state_lib.checkpoint_manager(str(tmp_path), keep=2)
    with pytest.raises(loop.Interrupted, match=rf"stopped by {signum.name} after step 3; a checkpoint") as info:
        fit(tiny_state(), step_fn, manager, checkpoint_every=50)
    assert info.value.step == 3 and info.value.signum == signum
    assert manager.latest_step() == 3
    restored = state_lib.restore_latest(manager, tiny_state())
    assert int(restored.step) == 3 and np.all(np.asarray(restored.params["w"]) == 3)
    assert signal.getsignal(signum) is before
    manager.close()


@pytest.mark.slow
def test_sigterm_on_the_command_line_checkpoints_exits_cleanly_and_resumes(tmp_path):
    workdir, cache = tmp_path / "run", tmp_path / "tfds"
    command = cli(
        "--config.train.steps=400",
        "--config.train.checkpoint_every=1000",
        "--config.train.log_every=1",
        workdir=workdir,
        cache=cache,
    )
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics, deadline = workdir / "metrics.jsonl", time.time() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    stopped = re.search(
        r"stopped by SIGTERM after step (\d+); a checkpoint of step \1 is in (\S+)\. Run the same "
        r"command to resume\.",
        err,
    )
    assert stopped, err[-3000:]
    assert "Traceback" not in err
    step = int(stopped[1])
    assert (workdir / "checkpoints" / str(step)).is_dir() and not (workdir / "results.json").exists()

    resumed = subprocess.run(
        cli(f"--config.train.steps={step + 1}", workdir=workdir, cache=cache),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from the checkpoint at step {step}" in resumed.stdout
    assert json.loads((workdir / "timing.json").read_text())["resumed_from_step"] == step


# ----------------------------------------------------------------------------- the workdir

HOLD = textwrap.dedent("""
    import sys, time
    from sla_jax.common.workdir import claimed
    with claimed(sys.argv[1]):
        print("held", flush=True)
        time.sleep(300)
""")


def test_second_run_in_a_workdir_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(workdir_lib.WorkdirError, match=rf"in use by another run \(pid {holder.pid} on "):
            with workdir_lib.claimed(tmp_path):
                pass
        proc = subprocess.run(
            cli(workdir=tmp_path, cache=tmp_path / "tfds"), cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 1 and "in use by another run" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        holder.kill()
        holder.wait()
    notices = []
    with workdir_lib.claimed(tmp_path, log=notices.append):
        pass
    assert len(notices) == 1 and f"pid {holder.pid}" in notices[0] and "stale" in notices[0]
    with workdir_lib.claimed(tmp_path, log=notices.append):
        pass
    assert len(notices) == 1, "a cleanly released lock is not stale"


def test_unwritable_workdir_fails_at_start_naming_it(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(workdir_lib.WorkdirError, match=re.escape(str(tmp_path / "a_file" / "run"))):
        experiment.train_and_evaluate(demo_config(), str(tmp_path / "a_file" / "run"))
    locked = tmp_path / "read_only"
    locked.mkdir()
    with immutable(locked):
        with pytest.raises(workdir_lib.WorkdirError, match=rf"cannot write to the workdir {re.escape(str(locked))}"):
            experiment.train_and_evaluate(demo_config(), str(locked))
    assert list(locked.iterdir()) == []


def test_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    manager = state_lib.checkpoint_manager(str(tmp_path), keep=3)

    with contextlib.ExitStack() as stack:

        def step_fn(state, images, key):
            if int(state.step) == 3:
                stack.enter_context(immutable(Path(manager.directory)))
            return counting_step(state, images, key)

        with pytest.raises(
            loop.CheckpointWriteError,
            match=r"checkpoint of step 4 .* failed .* checkpoint of "
            r"step 2 is intact",
        ):
            fit(tiny_state(), step_fn, manager, checkpoint_every=2)
    assert manager.latest_step() == 2
    assert int(state_lib.restore_latest(manager, tiny_state()).step) == 2
    manager.close()


FULL_DISK = textwrap.dedent("""
    import sys
    import jax
    import jax.numpy as jnp
    from sla_jax.training import loop, state as state_lib
    from sla_jax.common import workdir as workdir_lib
    workdir = sys.argv[1]
    noise = jax.random.normal(jax.random.key(0), (400_000,))  # incompressible, 1.6 MB
    state = state_lib.TrainState(step=jnp.int32(0), params={"w": noise}, batch_stats={}, opt_state={})
    try:
        workdir_lib.check_free_space(workdir, needed_bytes=4 * state_lib.tree_bytes(state))
    except workdir_lib.WorkdirError as error:
        print("START:", error)
    manager = state_lib.checkpoint_manager(workdir, keep=5)
    def step_fn(state, images, key):
        return (state.replace(step=state.step + 1, params={"w": state.params["w"] + 1}),
                {"loss": 1.0, "accuracy": 0.5, "mean_label": 0.9})
    try:
        loop.fit(state, None, None, step_fn=step_fn, total_steps=10, images_per_step=1, manager=manager,
                  checkpoint_every=1, log_every=100, progress=False)
    except loop.CheckpointWriteError as error:
        print("WRITE:", error)
    print("LATEST:", manager.latest_step())
    restored = state_lib.restore_latest(manager, state)
    expected = noise
    for _ in range(int(restored.step)):
        expected = expected + 1
    print("RESTORED:", int(restored.step), bool(jnp.all(restored.params["w"] == expected)))
""")


def test_full_disk_is_named_at_start_and_at_the_failing_write(tmp_path):
    """A real 4 MiB tmpfs (in a user and mount namespace): 1.6 MB checkpoints fill it after two."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) not installed")
    mount = tmp_path / "small_disk"
    mount.mkdir()
    script = f'mount -t tmpfs -o size=4m tmpfs "{mount}" && exec "{sys.executable}" -c "$0" "{mount}"'
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, FULL_DISK], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    if "mount" in proc.stderr and proc.returncode and "START" not in proc.stdout:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"START: the workdir {mount} has 4 MiB free, but this run needs about 6 MiB" in out
    write = re.search(
        r"WRITE: writing the checkpoint of step (\d+) .* failed \(No space left on device\)\. The "
        r"checkpoint of step (\d+) is intact",
        out,
    )
    assert write, out
    failed, kept = int(write[1]), int(write[2])
    assert kept == failed - 1 >= 1
    assert f"LATEST: {kept}" in out and f"RESTORED: {kept} True" in out


# ----------------------------------------------------------------------------- determinism, no network


@pytest.mark.slow
def test_same_command_gives_identical_results_json_without_network(tmp_path):
    """The same command and seed twice (the second with Python sockets refused and, where the kernel allows,
    in an empty network namespace) give byte-identical results.json; the two bad files of the folder are
    skipped and listed."""
    root = tmp_path / "data"
    synthetic.write_demo_dataset(
        root, seed=0, categories=("weave",), n_train=24, n_test_good=8, n_test_defect=8, size=64
    )
    good = root / "weave" / "train" / "good"
    (good / "zz_empty.png").write_bytes(b"")
    (good / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    workdir = tmp_path / "run"
    args = [
        "--config.data.demo=False",
        f"--config.data.root={root}",
        "--config.data.category=weave",
        "--config.data.skip_bad_files=True",
        "--config.train.steps=3",
    ]

    first = subprocess.run(
        cli(*args, workdir=workdir, cache=tmp_path / "tfds1"), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert first.returncode == 0, first.stderr[-3000:]
    expected = (workdir / "results.json").read_bytes()
    shutil.rmtree(workdir)

    attempts = tmp_path / "network_attempts.log"
    command = cli(*args, workdir=workdir, cache=tmp_path / "tfds2")
    command[1:3] = [str(REPO / "tests" / "no_network.py"), str(attempts), "-m", "sla_jax.train"]
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        command = ["unshare", "-rn", *command]
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert not attempts.exists(), attempts.read_text()
    assert (workdir / "results.json").read_bytes() == expected

    results = json.loads(expected)
    skipped = sorted(results["skipped_files"])
    assert len(skipped) == 2 and skipped[0].startswith(f"{good / 'zz_broken.png'}: Cannot decode image file")
    assert skipped[1] == f"{good / 'zz_empty.png'}: empty (0 bytes)" and results["n_train"] == 24


def test_no_pickle_anywhere_in_the_package():
    """User-supplied files are read only as images, npz (allow_pickle=False), safetensors or Orbax."""
    for path in sorted((REPO / "sla_jax").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib|shelve)\b", text, re.M), path
        assert "allow_pickle=True" not in text, path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)


@pytest.mark.slow
def test_sigint_in_any_phase_exits_130_and_the_same_command_finishes(tmp_path):
    """Ctrl-C while the data are prepared, while programs compile, while the run evaluates: exit 130, one
    line, no traceback, the lock released; the same command then finishes the run."""
    workdir, cache = tmp_path / "run", tmp_path / "tfds"
    command = cli(
        "--config.train.steps=3",
        "--config.train.log_every=1",
        "--config.data.category=washer",
        workdir=workdir,
        cache=cache,
    )
    metrics = workdir / "metrics.jsonl"
    phases = [
        ("preparing the data", lambda out: "preparing washer" in out),
        ("compiling", lambda out: "training CO" in out),
        ("evaluating", lambda out: metrics.exists() and '"step": 3' in metrics.read_text()),
    ]
    stopped = []
    for phase, ready in phases:
        out_path = tmp_path / f"{phase}.out"
        with open(out_path, "w") as out:
            proc = subprocess.Popen(
                command,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            deadline = time.time() + 300
            while not ready(out_path.read_text()) and proc.poll() is None:
                assert time.time() < deadline, phase
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=300)
        assert "Traceback" not in err and "Exception ignored" not in err, (phase, err[-3000:])
        if proc.returncode == 0:  # the phase ended before the signal could land: nothing more to check there
            continue
        stopped.append(phase)
        assert proc.returncode == 128 + signal.SIGINT, (phase, err[-3000:])
        assert "stopped by SIGINT" in err and "run the same command" in err.lower(), err
        for path in workdir.rglob("*.json"):
            json.loads(path.read_text())  # every JSON file there is whole
    assert stopped, "no phase was interrupted"
    final = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "image AUROC" in final.stdout and json.loads((workdir / "results.json").read_text())["steps"] == 3
