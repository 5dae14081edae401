"""Training step, sharding, optimizer, configs, and the command line end to end (CPU, tiny sizes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import Mesh

from sla_jax.defaults import base_config
from sla_jax.experiment.validation import ConfigError, validate
from sla_jax.scoring import detection, features
from sla_jax.training import loop, pretext
from sla_jax.training import state as state_lib
from sla_jax.training.models import PretextNet
from tests.chromium import check_page

REPO = Path(__file__).resolve().parents[1]


def tiny_setup(*, devices, transform="cps", pairing="bernoulli", image_size=64):
    model = PretextNet(num_classes=3 if transform == "cpf" else 2, head=(32,), stem="imagenet")
    optimizer = state_lib.make_optimizer(learning_rate=0.03, momentum=0.9, weight_decay=3e-5, total_steps=10)
    spec = pretext.StepSpec(batch_size=8, transform=transform, pairing=pairing)
    mesh = Mesh(np.array(devices), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    step = pretext.compile_train_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh)
    state = state_lib.init_state(jax.random.key(0), model=model, optimizer=optimizer, image_size=image_size)
    return step, state, mesh


def test_sharded_step_equals_single_device_step():
    """Two steps on 1 vs 4 devices. 64 px so that layer4's BatchNorm sees 2×2×8 values per channel: at
    32 px (1×1 maps) the per-channel batch variance is tiny and amplifies summation-order noise."""
    assert jax.device_count() == 4, "conftest sets 4 fake CPU devices"
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (12, 64, 64, 3), dtype=np.uint8))
    key = jax.random.key(7)
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        step, state, mesh = tiny_setup(devices=devices, transform="cpf")
        initial = jax.device_get(state)
        state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        for _ in range(2):
            state, metrics = step(state, images, key)
        results.append((jax.device_get(state), jax.device_get(metrics)))
    (s1, m1), (s4, m4) = results
    for name in m1:
        assert m1[name] == pytest.approx(m4[name], rel=1e-4, abs=1e-5), name
    assert int(s4.step) == 2
    # Compare what the two steps changed, leaf by leaf, relative to the size of the change: seen 1e-5 after
    # one step and 1e-3 after two (batch-8 BatchNorm amplifies summation order); per-device BatchNorm
    # statistics or different random edits would differ at O(1). (A dense bias
    # followed by BatchNorm has a mathematically zero gradient: its "update" is rounding noise, hence + 1e-7.)
    for tree in ("params", "batch_stats"):
        flat0 = jax.tree_util.tree_leaves(getattr(initial, tree))
        flat1 = jax.tree_util.tree_leaves(getattr(s1, tree))
        flat4 = jax.tree_util.tree_leaves(getattr(s4, tree))
        for p0, a, b in zip(flat0, flat1, flat4):
            change = np.linalg.norm(a - p0)
            assert np.linalg.norm(a - b) <= 1e-2 * change + 1e-7, (tree, a.shape, np.linalg.norm(a - b), change)


def test_weight_decay_skips_batchnorm_and_biases():
    model = PretextNet(num_classes=2, head=(16,))
    params = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False), jax.random.key(0))[
        "params"
    ]
    mask = state_lib.weight_decay_mask(params)
    assert mask["backbone"]["conv1"]["kernel"] is True
    assert mask["backbone"]["bn1"]["scale"] is False and mask["backbone"]["bn1"]["bias"] is False
    assert mask["head"]["dense0"]["kernel"] is True and mask["head"]["dense0"]["bias"] is False
    assert mask["head"]["classifier"]["kernel"] is True and mask["head"]["classifier"]["bias"] is False


def test_optimizer_matches_torch_sgd_semantics():
    """g ← g + wd·p; v ← μv + g; p ← p − lr_t·v, with lr_t one cosine cycle."""
    opt = state_lib.make_optimizer(learning_rate=0.1, momentum=0.9, weight_decay=0.01, total_steps=4)
    p = {"w": jnp.ones((2, 2))}
    s = opt.init(p)
    g = {"w": jnp.full((2, 2), 0.5)}
    v = np.zeros((2, 2))
    w = np.ones((2, 2))
    for t in range(4):
        u, s = opt.update(g, s, p)
        p = jax.tree_util.tree_map(lambda a, b: a + b, p, u)
        v = 0.9 * v + (0.5 + 0.01 * w)
        w = w - 0.1 * 0.5 * (1 + np.cos(np.pi * t / 4)) * v
        np.testing.assert_allclose(np.asarray(p["w"]), w, rtol=1e-6)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("labels.alpha", -1.0, "labels.alpha"),
        ("labels.epsilon", 3.5, "labels.epsilon"),
        ("train.batch_size", 6, "train.batch_size"),
        ("train.steps", -5, "train.steps"),
        ("transform.name", "mixup", "transform.name"),
        ("labels.mode", "fuzzy", "labels.mode"),
        ("data.image_size", 16, "data.image_size"),
        ("data.resize", "lanczos", "data.resize"),
        ("train.weight_decay_on", "bn", "train.weight_decay_on"),
        ("eval.density", "knn", "eval.density"),
        ("transform.scar_size", "absolute", "transform.scar_size"),
        ("transform.jitter_order", "sorted", "transform.jitter_order"),
        ("transform.global_jitter", 1.5, "transform.global_jitter"),
    ],
)
def test_config_validation_names_the_key(key, value, match):
    config = base_config()
    config.data.root, config.data.category = "/data", "bottle"
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError, match=match):
        validate(config)


def test_paper_config_without_data_says_how_to_point_it():
    with pytest.raises(ConfigError, match="--config.data.root=.*configs/demo.py"):
        validate(base_config())


def run_cli(*args, timeout=600):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "sla_jax.train", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_rejects_misspelt_key_with_suggestion(tmp_path):
    proc = run_cli("--config=configs/cps.py", f"--workdir={tmp_path}", "--config.labels.alpah=5")
    assert proc.returncode != 0
    assert "--config.labels.alpah" in proc.stderr and 'Did you mean "--config.labels.alpha"' in proc.stderr


def test_cli_without_dataset_explains(tmp_path):
    proc = run_cli("--config=configs/cps.py", f"--workdir={tmp_path}")
    assert proc.returncode != 0
    assert "--config.data.root" in proc.stderr and "configs/demo.py" in proc.stderr


@pytest.mark.slow
def test_demo_end_to_end_checkpoint_results_and_resume(tmp_path):
    """A few steps at 32 px on the demo data: checkpoint, results.json, ROC PNG; then resume to more steps."""
    workdir = tmp_path / "run dir"  # a space in the path on purpose
    common = [
        "--config=configs/demo.py",
        f"--workdir={workdir}",
        "--config.data.image_size=32",
        "--config.train.batch_size=8",
        "--config.train.checkpoint_every=2",
        "--config.train.log_every=1",
        "--config.model.head=(32,)",
        f"--config.data.cache_dir={tmp_path / 'tfds'}",
    ]
    proc = run_cli(*common, "--config.train.steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "image AUROC:" in proc.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert 0.0 <= results["image_auroc"] <= 1.0
    assert results["steps"] == 2 and results["n_test"] > 0 and results["per_defect_type_auroc"]
    assert (workdir / "roc.png").stat().st_size > 1000
    assert (workdir / "checkpoints" / "2").is_dir()
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    assert {"loss", "accuracy", "mean_label", "images_per_s", "learning_rate"} <= set(lines[0])

    proc = run_cli(*common, "--config.train.steps=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from the checkpoint at step 2" in proc.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["steps"] == 4
    timing = json.loads((workdir / "timing.json").read_text())
    assert timing["resumed_from_step"] == 2 and timing["train_seconds"] > 0

    proc = subprocess.run(
        [sys.executable, "-m", "sla_jax.evaluate", f"--workdir={workdir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((workdir / "results.json").read_text())
    assert again["image_auroc"] == pytest.approx(results["image_auroc"], abs=1e-6)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """A step function whose loss turns NaN at step 5: the run stops at the next log or checkpoint step
    (6), naming it, before saving; the checkpoint of step 4 is what a restart restores."""

    def step_fn(state, images, key):
        step = state.step + 1
        loss = jnp.where(step >= 5, jnp.nan, 1.0 / step)
        new = state.replace(step=step, params={"w": state.params["w"] + loss})
        return new, {"loss": loss, "accuracy": 0.5, "mean_label": 0.9}

    manager = state_lib.checkpoint_manager(str(tmp_path), keep=3)
    state = state_lib.TrainState(step=jnp.int32(0), params={"w": jnp.zeros(3)}, batch_stats={}, opt_state={})
    with pytest.raises(FloatingPointError, match=r"at step 6.*last good checkpoint \(step 4\)"):
        loop.fit(
            state,
            None,
            None,
            step_fn=step_fn,
            total_steps=10,
            images_per_step=1,
            manager=manager,
            checkpoint_every=2,
            log_every=100,
            log=[].append,
            progress=False,
        )
    assert manager.latest_step() == 4
    restored = state_lib.restore_latest(manager, state)
    assert int(restored.step) == 4 and np.all(np.isfinite(np.asarray(restored.params["w"])))
    manager.close()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    """SIGKILL a real training process at a random point after its step-k checkpoint (k drawn at random), run
    the same command again: the final parameters and results equal those of an uninterrupted run."""
    import random
    import signal
    import time

    import orbax.checkpoint as ocp

    def command(workdir):
        return [
            sys.executable,
            "-m",
            "sla_jax.train",
            "--config=configs/demo.py",
            f"--workdir={workdir}",
            "--config.data.image_size=32",
            "--config.train.batch_size=8",
            "--config.train.steps=8",
            "--config.train.checkpoint_every=1",
            "--config.model.head=(32,)",
            f"--config.data.cache_dir={tmp_path / 'tfds'}",
        ]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    k, delay = random.randint(1, 5), random.uniform(0.0, 0.5)
    while not (killed / "checkpoints" / str(k)).is_dir():
        assert proc.poll() is None, f"training ended before it could be killed (k={k})"
        assert time.time() < deadline
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists()
    resumed = subprocess.run(command(killed), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from the checkpoint at step" in resumed.stdout

    straight = tmp_path / "straight"
    proc = subprocess.run(command(straight), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    timing = [json.loads((d / "timing.json").read_text()) for d in (killed, straight)]
    assert timing[0]["resumed_from_step"] >= k and timing[1]["resumed_from_step"] == 0, (k, delay)
    results = [json.loads((d / "results.json").read_text()) for d in (killed, straight)]
    assert results[0].pop("data_root") != results[1].pop("data_root")  # demo data generated into each workdir
    assert results[0] == results[1], (k, delay)
    params = [
        ocp.StandardCheckpointer().restore((d / "checkpoints" / "8" / "default").resolve()) for d in (killed, straight)
    ]
    for a, b in zip(jax.tree_util.tree_leaves(params[0]), jax.tree_util.tree_leaves(params[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_patch_localization_end_to_end(tmp_path):
    """Patch model on the demo data at 64 px: results gain pixel metrics, maps.npz and heatmaps.png."""
    workdir = tmp_path / "patch"
    proc = run_cli(
        "--config=configs/demo_patch.py",
        f"--workdir={workdir}",
        "--config.data.image_size=64",
        "--config.train.batch_size=8",
        "--config.train.steps=2",
        "--config.model.head=(32,)",
        "--config.localization.stride=8",
        "--config.localization.train_stride=16",
        f"--config.data.cache_dir={tmp_path / 'tfds'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert 0 <= results["pixel_auroc"] <= 1 and 0 <= results["pixel_aupro"] <= 1
    assert 0 <= results["image_auroc"] <= 1 and results["image_score"] == "maximum of the defect map"
    assert f"pixel AUROC: {results['pixel_auroc']:.4f}, AUPRO (FPR <= 0.3): {results['pixel_aupro']:.4f}" in proc.stdout
    assert results["patches_per_test_image"] == 5 * 5 and results["map_shape"] == [64, 64]
    with np.load(workdir / "maps.npz") as saved:
        assert saved["maps"].shape == (results["n_test"], 64, 64) == saved["masks"].shape
        assert saved["scores_low"].shape == (results["n_test"], 5, 5)
    assert (workdir / "heatmaps.png").stat().st_size > 10_000
    page = (workdir / "report.html").read_text()
    assert "Defect maps" in page and f"{100 * results['pixel_auroc']:.1f}" in page
    check = check_page(workdir / "report.html")  # ROC, scores, training, defect maps
    assert check["broken"] == [] and check["images"] == 4 and check["external"] == []

    # One GDE per patch position (aligned objects), from the same checkpoint via the evaluate CLI.
    config = json.loads((workdir / "config.json").read_text())
    config["localization"].update(gde="per_position", train_stride=8)
    (workdir / "config.json").write_text(json.dumps(config))
    proc = subprocess.run(
        [sys.executable, "-m", "sla_jax.evaluate", f"--workdir={workdir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_position = json.loads((workdir / "results.json").read_text())
    assert 0 <= per_position["pixel_auroc"] <= 1 and per_position["pixel_auroc"] != results["pixel_auroc"]
    with np.load(workdir / "maps.npz") as saved:
        assert saved["scores_low"].shape == (results["n_test"], 5, 5)


def test_localization_config_checks():
    config = base_config()
    config.data.root, config.data.category = "/data", "bottle"
    config.localization.patch_size = 32
    config.data.image_size = 66
    with pytest.raises(ConfigError, match="multiple of config.localization.stride"):
        validate(config)
    config.data.image_size = 64
    config.localization.gde = "per_position"
    config.localization.train_stride = 8
    with pytest.raises(ConfigError, match="train_stride == stride"):
        validate(config)


def test_patch_features_are_the_embeddings_of_the_patches_whatever_the_chunking():

    model = PretextNet(num_classes=3, head=(16,))
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(jax.random.key(0))
    images = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    mesh = state_lib.data_mesh()
    options = dict(model=model, patch_size=32, stride=8, mesh=mesh)
    chunked = detection.patch_features(variables, images, batch_size=3, **options)  # 3 patches per pass
    whole = detection.patch_features(variables, images, batch_size=64, **options)
    assert chunked.shape == (3, 3, 3, 512)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    direct = detection.embed(variables, images[1:2, 8:40, 0:32], model=model, batch_size=4, mesh=mesh)
    np.testing.assert_allclose(chunked[1, 1, 0], direct[0], atol=1e-5)


@given(n=st.integers(1, 300), n_dev=st.sampled_from([1, 2, 4, 8]), batches=st.integers(1, 64))
def test_padded_batch_holds_the_chunk_in_few_shapes(n, n_dev, batches):
    batch_size = n_dev * batches
    chunk = min(n, batch_size)
    padded = features.padded_batch(chunk, batch_size=batch_size, n_dev=n_dev)
    assert chunk <= padded <= batch_size and padded % n_dev == 0
    assert padded == batch_size or (padded // n_dev) & (padded // n_dev - 1) == 0  # a power of two times n_dev
    assert padded < 2 * max(chunk, n_dev)  # never more than twice the work


def test_embedding_does_not_depend_on_the_padding():
    model = PretextNet(num_classes=2, head=(16,))
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(jax.random.key(0))
    images = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    mesh = state_lib.data_mesh()
    whole = detection.embed(variables, images, model=model, batch_size=64, mesh=mesh)  # padded to 8
    singles = np.concatenate(
        [detection.embed(variables, images[i : i + 1], model=model, batch_size=64, mesh=mesh) for i in range(5)]
    )  # padded to the device count
    assert whole.shape == singles.shape == (5, 512)
    np.testing.assert_allclose(whole, singles, atol=1e-5)


# ----------------------------------------------------------------------------- several steps per dispatch


def _tiny_problem(total_steps: int, *, batch: int = 4, learning_rate: float = 0.03):
    from functools import partial

    model = PretextNet(num_classes=2, head=(8,))
    optimizer = state_lib.make_optimizer(
        learning_rate=learning_rate, momentum=0.9, weight_decay=3e-5, total_steps=total_steps
    )
    spec = pretext.StepSpec(batch_size=batch, transform="cps")
    mesh = state_lib.data_mesh()
    init = jax.jit(partial(state_lib.init_state, model=model, optimizer=optimizer, image_size=32))
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    hparams, key = pretext.HParams.create(), jax.random.key(3)
    single = pretext.compile_train_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh)
    programs = {}

    def chunk_fn(k):
        if k not in programs:
            programs[k] = pretext.compile_train_steps(
                model=model, optimizer=optimizer, spec=spec, mesh=mesh, steps=k, summed=loop.AVERAGED_METRICS
            )
        return lambda s, x, r: programs[k](s, x, r, hparams)

    def run(state, *, total, per_call, manager=None, records=None, log_every=4):
        return loop.fit(
            state,
            images,
            key,
            step_fn=lambda s, x, r: single(s, x, r, hparams),
            total_steps=total,
            images_per_step=batch,
            manager=manager,
            checkpoint_every=4,
            log_every=log_every,
            log=None if records is None else records.append,
            progress=False,
            steps_per_call=per_call,
            chunk_fn=chunk_fn,
        )

    return init, run, programs


@pytest.mark.slow
def test_several_steps_per_call_train_as_one_step_per_call():
    """train.steps_per_call=2 (2 steps in one lax.scan program) gives the one-step run's parameters and log
    records (same steps, same numbers to float32 rounding), and a chunk stops at the end. Like any change of
    floating-point order, the difference then grows with the steps on this tiny problem (measured at batch 16:
    3e-7 after 4 steps, 2e-4 after 10), so the check stops at 3."""
    init, run, programs = _tiny_problem(3, batch=16)
    one, two = [], []
    a = run(init(jax.random.key(0)), total=3, per_call=1, records=one, log_every=2)
    b = run(init(jax.random.key(0)), total=3, per_call=2, records=two, log_every=2)
    assert [r["step"] for r in one] == [r["step"] for r in two] == [2, 3]
    assert sorted(programs) == [1, 2]  # 0→2 and the last 2→3
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
    for r, s in zip(one, two):
        for name in loop.AVERAGED_METRICS:
            np.testing.assert_allclose(r[name], s[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert (
        loop.chunk_end(5, total_steps=10, every=(4, 4, 4)) == 8 and loop.chunk_end(8, total_steps=10, every=(4,)) == 10
    )


@pytest.mark.slow
def test_a_resumed_run_with_several_steps_per_call_is_bit_identical(tmp_path):
    """Stopped at its step-4 checkpoint and resumed, a steps_per_call=4 run ends with exactly the parameters of
    the uninterrupted one: chunks end at the same absolute steps in both."""
    init, run, _ = _tiny_problem(8)
    whole = run(init(jax.random.key(0)), total=8, per_call=4)
    manager = state_lib.checkpoint_manager(str(tmp_path), keep=2)
    run(init(jax.random.key(0)), total=4, per_call=4, manager=manager)
    restored = state_lib.restore_latest(manager, init(jax.random.key(0)))
    assert int(restored.step) == 4
    resumed = run(restored, total=8, per_call=4, manager=manager)
    manager.close()
    for x, y in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_steps_per_call_config_checks():
    config = base_config()
    config.data.root, config.data.category = "/tmp", "x"
    config.train.steps_per_call = 8
    config.train.log_every = 12
    with pytest.raises(ConfigError, match=r"train.log_every=12 is not a multiple of config.train.steps_per_call=8"):
        validate(config)
    config.train.log_every, config.train.checkpoint_every = 16, 1024
    validate(config)
    config.train.steps_per_call = 0
    with pytest.raises(ConfigError, match="steps_per_call=0 must be an integer >= 1"):
        validate(config)
