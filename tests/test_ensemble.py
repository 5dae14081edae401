"""Vmapped ensembles: member k equals the single run with its hyper-parameters and seed; the sweep CLI."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from sla_jax import experiment
from sla_jax.experiment import validation
from sla_jax.experiment.validation import ConfigError
from sla_jax.outputs import files
from sla_jax.training import ensemble, pretext
from sla_jax.training import state as state_lib
from sla_jax.training.models import PretextNet
from tests.chromium import check_page
from tests.tiny import demo_config

REPO = Path(__file__).resolve().parents[1]
MEMBERS = [
    ensemble.Member(seed=3, alpha=2.0, epsilon=0.02, mode="soft"),
    ensemble.Member(seed=0, alpha=10.0, epsilon=0.05, mode="smooth", tau=0.01),
    ensemble.Member(seed=5, alpha=10.0, epsilon=0.02, mode="hard"),
]


def member(tree, k):
    return jax.tree_util.tree_map(lambda x: x[k], tree)


def keys_of(members):
    return tuple(jnp.stack(k) for k in zip(*(ensemble.member_keys(m.seed) for m in members)))


def test_member_batches_are_the_single_runs_batches():
    """Under vmap each member draws the batch of a single run with its key and hparams (masks, classes and
    source indices exactly; pixel values and labels to float32 rounding of differently fused code), the
    source images of all members are the same, and the member whose seed is the data seed draws the
    plain single run's batch."""
    spec = pretext.StepSpec(batch_size=8, transform="co")
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8))
    hparams = ensemble.stack_hparams(MEMBERS)
    _, step_keys = keys_of(MEMBERS)
    data_key = jax.random.fold_in(ensemble.member_keys(0)[1], 4)
    keys = jax.vmap(lambda k: jax.random.fold_in(k, 4))(step_keys)

    def draw(key, hp, data_key):
        originals, edit = pretext.pretext_edit(key, images, spec=spec, data_key=data_key)
        return (originals, edit) + pretext.label_targets(originals, edit, hp, spec=spec)

    stacked = jax.jit(jax.vmap(draw, in_axes=(0, 0, None)))(keys, hparams, data_key)
    single = jax.jit(draw)
    for k in range(len(MEMBERS)):
        expected = single(keys[k], member(hparams, k), data_key)
        for a, b in zip(
            jax.tree_util.tree_leaves(member(stacked, k)), jax.tree_util.tree_leaves(expected), strict=True
        ):
            if jnp.issubdtype(a.dtype, jnp.floating):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
            else:
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(stacked[0][0]), np.asarray(stacked[0][1]))  # same sources
    assert not np.array_equal(np.asarray(stacked[1].masks[0]), np.asarray(stacked[1].masks[1]))  # own edits
    y, classes = np.asarray(stacked[3]), np.asarray(stacked[1].classes)
    assert np.all(y[2][classes[2] > 0] == 1.0) and np.any(y[0][classes[0] > 0] < 1.0)  # hard vs soft α=2
    plain = single(keys[1], member(hparams, 1), None)
    own = single(keys[1], member(hparams, 1), keys[1])
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(own)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_members_sharing_the_data_key_share_the_global_jitter():
    """The whole-source jitter of ``pretext_edit`` depends on the data key alone: every member of a vmapped
    ensemble gets the single run's jittered sources (to float32 rounding: under vmap the contrast's mean and
    the hue's channel maximum are batched reductions) and the single run's edits for its own key."""
    spec = pretext.StepSpec(batch_size=8, transform="co", global_jitter=0.1)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8))
    keys = jnp.stack([jax.random.key(s) for s in (3, 0, 5)])
    data_key = jax.random.key(11)
    edit = jax.jit(lambda k, dk: pretext.pretext_edit(k, images, spec=spec, data_key=dk))
    stacked_originals, stacked_edit = jax.jit(
        jax.vmap(lambda k: pretext.pretext_edit(k, images, spec=spec, data_key=data_key))
    )(keys)
    no_jitter = pretext.pretext_edit(
        keys[0], images, spec=dataclasses.replace(spec, global_jitter=0.0), data_key=data_key
    )[0]
    for k in range(3):
        originals, single_edit = edit(keys[k], data_key)
        np.testing.assert_allclose(stacked_originals[k], originals, atol=1e-6)
        np.testing.assert_allclose(stacked_edit.images[k], single_edit.images, atol=1e-6)
        np.testing.assert_array_equal(stacked_edit.masks[k], single_edit.masks)
        assert np.abs(np.asarray(originals) - np.asarray(no_jitter)).max() > 0.01  # the jitter is there
    assert np.array_equal(stacked_originals[0], stacked_originals[1])  # shared sources, shared jitter


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ensemble.STRATEGIES)
def test_member_k_equals_single_run_with_its_hparams_and_seed(strategy):
    """Three steps of a 3-member ensemble (soft α=2, smooth ε=0.05 τ=0.01, hard; seeds 3, 0, 5; 32 px,
    batch 8, one device; ``devices``: one member on each of 3 devices) against three single runs of
    ``pretext.train_step`` (one device) with each member's hparams,
    keys and the shared data key. Tolerance: all parameters (and all BatchNorm statistics), as one
    vector, within 1e-5 of its norm and within 1e-3 of what training changed (a member given another's
    seed or α would be off by O(1) of the change); metrics within 1e-5 relative.

    At lr 1e-3: with the default lr 0.03, batch-8 BatchNorm amplifies float32 summation-order differences
    about 100× per step (measured: a 3e-8 relative perturbation of the initial weights alone moves the
    parameters by 8% of their change after 3 steps), which vmap's reordered matmuls also produce. On one
    device: split over the 4 test devices the ensemble and the single runs differ by 9e-5 of the norm
    (measured), each sharded path reducing in its own order (the 1-vs-4-device test is in test_train).
    Every convolution as im2col + matmul: vmapped, XLA's direct convolution becomes a grouped convolution
    that sums in another order than the single run's (measured: 1.2e-4 of the norm after 3 steps, the
    member logic unchanged); the batched matmul sums as the single one does. No whole-source jitter: under
    vmap its reductions round differently (1.3e-4 of the norm after 3 steps, measured), and
    ``test_members_sharing_the_data_key_share_the_global_jitter`` checks that members share it."""
    model = PretextNet(num_classes=2, head=(32,), stem="imagenet", conv_impl="im2col")
    optimizer = state_lib.make_optimizer(learning_rate=1e-3, momentum=0.9, weight_decay=3e-5, total_steps=10)
    spec = pretext.StepSpec(batch_size=8, transform="co", global_jitter=0.0)
    one = Mesh(np.array(jax.devices()[:1]), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    mesh = one if strategy != "devices" else Mesh(np.array(jax.devices()[:3]), ("data",))  # a member per device
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8))
    along = ensemble.member_axis_sharding(mesh, strategy=strategy)
    hparams = ensemble.stack_hparams(MEMBERS)  # as the single runs take them; the ensemble's placed by strategy
    init_keys, step_keys = keys_of(MEMBERS)
    data_key = ensemble.member_keys(0)[1]
    states = ensemble.init_ensemble(init_keys, hparams, model=model, optimizer=optimizer, image_size=32)
    states = jax.device_put(states, ensemble.member_shardings(mesh, strategy=strategy))
    placed_keys, placed_hparams = jax.device_put(step_keys, along), jax.device_put(hparams, along)
    initial = jax.device_get(states.params)
    assert states.step.shape == () and states.params["head"]["classifier"]["kernel"].shape[0] == 3
    step = ensemble.compile_ensemble_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh, strategy=strategy)
    for _ in range(3):
        states, metrics = step(states, images, placed_keys, placed_hparams, data_key)
    assert int(states.step) == 3 and metrics["loss"].shape == (3,)
    if strategy == "devices":  # member k's state lives on device k only
        kernel = states.params["head"]["classifier"]["kernel"]
        assert [s.index[0] for s in kernel.addressable_shards] == [slice(k, k + 1) for k in range(3)]
        assert [s.device for s in kernel.addressable_shards] == jax.devices()[:3]

    single = pretext.compile_train_step(model=model, optimizer=optimizer, spec=spec, mesh=one)
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])  # noqa: E731
    for k, m in enumerate(MEMBERS):
        state = state_lib.init_state(init_keys[k], model=model, optimizer=optimizer, image_size=32)
        for _ in range(3):
            state, single_metrics = single(state, images, step_keys[k], member(hparams, k), data_key)
        params, batch_stats = flat(member(states.params, k)), flat(member(states.batch_stats, k))
        assert np.linalg.norm(params - flat(state.params)) <= 1e-5 * np.linalg.norm(flat(state.params)), m
        assert np.linalg.norm(batch_stats - flat(state.batch_stats)) <= 1e-5 * np.linalg.norm(flat(state.batch_stats))
        change = np.linalg.norm(flat(state.params) - flat(member(initial, k)))
        assert np.linalg.norm(params - flat(state.params)) <= 1e-3 * change, m
        for name in single_metrics:
            assert float(metrics[name][k]) == pytest.approx(float(single_metrics[name]), rel=1e-5, abs=1e-6), (m, name)
    other = np.linalg.norm(flat(member(states.params, 0)) - flat(member(states.params, 2)))
    assert other > 1.0  # the members really are different models


def _split(labels):
    from sla_jax.data import Split

    n = len(labels)
    return Split(
        images=np.zeros((n, 4, 4, 3), np.uint8),
        labels=labels,
        masks=np.zeros((n, 4, 4), np.uint8),
        defect_types=["good" if y == 0 else "crack" for y in labels],
        paths=[str(i) for i in range(n)],
    )


def sweep_config():
    import ml_collections

    config = demo_config()
    config.ensemble = ml_collections.ConfigDict(dict(alphas=(1.0, 10.0), epsilons=(), seeds=(0, 1), hard=True))
    return config


def test_members_from_config_and_checks():
    config = sweep_config()
    members = experiment.read(config).members
    assert [m.name for m in members] == [
        "soft/alpha1/eps0.02/seed0",
        "soft/alpha1/eps0.02/seed1",
        "soft/alpha10/eps0.02/seed0",
        "soft/alpha10/eps0.02/seed1",
        "hard/seed0",
        "hard/seed1",
    ]
    hp = ensemble.stack_hparams(members)
    np.testing.assert_array_equal(np.asarray(hp.hard), [0, 0, 0, 0, 1, 1])
    config.labels.mode, config.labels.tau = "smooth", 0.01
    assert {m.tau for m in experiment.read(config).members if m.mode == "smooth"} == {0.01}
    for key, value, match in [
        ("seeds", (), "ensemble.seeds"),
        ("alphas", (-1.0,), "ensemble.alphas"),
        ("epsilons", (5.0,), "ensemble.epsilons"),
    ]:
        bad = sweep_config()
        bad.ensemble[key] = value
        with pytest.raises(ConfigError, match=match):
            validation.validate_ensemble(bad)
    for key, value, match in [
        ("ensemble_strategy", "pmap", "train.ensemble_strategy='pmap' is not valid"),
        ("steps_per_call", 2, "steps_per_call > 1 is not supported with an ensemble"),
        ("ensemble_strategy", "devices", "places the 6 members over 4 devices, which does not divide evenly"),
    ]:
        bad = sweep_config()
        bad.train[key] = value
        with pytest.raises(ConfigError, match=match):
            validation.validate_ensemble(bad)
    assert len(members) == 6
    assert ensemble.platform_strategy("cpu") == ensemble.PLATFORM_STRATEGY["cpu"]
    assert ensemble.platform_strategy("gpu") == "vmap"  # not measured there yet: the batched program
    # several devices and members that divide evenly over them: split over the devices (measured on the CPU)
    assert ensemble.platform_strategy("cpu", devices=4, members=8) == ensemble.MULTI_DEVICE_STRATEGY["cpu"]
    assert ensemble.platform_strategy("cpu", devices=4, members=6) == ensemble.PLATFORM_STRATEGY["cpu"]


def test_sweep_table_statistics_and_files(tmp_path):
    members = experiment.read(sweep_config()).members
    aurocs = [0.6, 0.7, 0.9, 0.95, 0.8, 0.82]
    rows = ensemble.sweep_table(members, [{"image_auroc": a} for a in aurocs])
    assert [(r["labels"], r["alpha"]) for r in rows] == [("soft", 1.0), ("soft", 10.0), ("hard", None)]
    assert rows[1]["mean"] == pytest.approx(0.925) and rows[1]["std"] == pytest.approx(np.std([0.9, 0.95], ddof=1))
    assert rows[2]["seeds"] == [0, 1] and rows[2]["min"] == pytest.approx(0.8)
    assert "pixel_auroc" not in rows[0]  # image models: the image AUROC only
    files.write_sweep(rows, str(tmp_path), title="t", note="n")
    assert json.loads((tmp_path / "alpha_sweep.json").read_text())["rows"] == rows
    table = (tmp_path / "alpha_sweep.md").read_text().splitlines()
    assert sum(line.startswith("| soft") or line.startswith("| hard") for line in table) == 3
    assert (tmp_path / "alpha_sweep.png").stat().st_size > 10_000


def test_sweep_table_of_patch_models_spreads_the_pixel_metrics(tmp_path):
    members = experiment.read(sweep_config()).members
    found = [
        {"image_auroc": 0.6 + 0.05 * k, "pixel_auroc": 0.9 + 0.01 * k, "pixel_aupro": 0.5 + 0.1 * k} for k in range(6)
    ]
    found[5]["pixel_aupro"] = None  # undefined for one member: its group's spread is undefined, not a number
    rows = ensemble.sweep_table(members, found)
    assert rows[0]["pixel_auroc"] == [0.9, 0.91] and rows[0]["pixel_auroc_mean"] == pytest.approx(0.905)
    assert rows[1]["pixel_aupro_std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert rows[2]["pixel_aupro_mean"] is None and rows[2]["pixel_auroc_max"] == pytest.approx(0.95)
    files.write_sweep(rows, str(tmp_path), title="t", note="n")
    table = (tmp_path / "alpha_sweep.md").read_text()
    assert "pixel AUROC mean ± std | AUPRO mean ± std |" in table
    assert "| 0.9050 ± 0.0071 |" in table and "undefined ± undefined" in table


def small_patch_ensemble(tmp_path, **changes):
    """A CPF patch-model ensemble at 48 px (32 px patches every 8 px): α ∈ {1, 10} × seeds {0, 1}."""
    config = sweep_config()
    config.data.cache_dir = str(tmp_path / "tfds")
    config.data.category = "washer"
    config.transform.name = "cpf"
    config.update_from_flattened_dict(
        {
            "data.image_size": 48,
            "model.head": (32,),
            "train.batch_size": 8,
            "train.steps": 3,
            "localization.patch_size": 32,
            "localization.stride": 8,
            "localization.train_stride": 8,
            "localization.heatmaps": 4,
            "eval.threshold_images": 8,
            "ensemble.hard": False,
            **changes,
        }
    )
    return config


@pytest.mark.slow
def test_an_ensemble_of_patch_models_evaluates_each_member_as_the_single_run(tmp_path):
    """α × seed grid of CPF patch models in one program: every member gets its image and pixel AUROC and
    AUPRO, its own scores, density, maps and figures; the member with the config's α and seed scores as the
    plain run with those settings does (the same evaluation code, the member's training equal to float32
    rounding)."""
    config = small_patch_ensemble(tmp_path)
    workdir = tmp_path / "ensemble"
    results = experiment.train_and_evaluate(config, str(workdir), progress=False)
    names = [m["name"] for m in results["members"]]
    assert names == [f"soft/alpha{a}/eps0.02/seed{s}" for a in (1, 10) for s in (0, 1)]
    for m in results["members"]:
        assert 0 <= m["pixel_auroc"] <= 1 and 0 <= m["pixel_aupro"] <= 1 and m["threshold"] > 0
        folder = workdir / "members" / m["name"]
        for name in ("gde.npz", "scores.csv", "roc.png", "maps.npz", "heatmaps.png"):
            assert (folder / name).stat().st_size > 100, (m["name"], name)
    chosen = [m for m in results["members"] if m["alpha"] == 10.0]
    for metric in ("image_auroc", "pixel_auroc", "pixel_aupro"):
        assert results[metric] == pytest.approx(np.mean([m[metric] for m in chosen]))
    assert [r["pixel_auroc"] for r in results["table"]] == [
        [m["pixel_auroc"] for m in results["members"][:2]],
        [m["pixel_auroc"] for m in results["members"][2:]],
    ]
    assert "pixel AUROC mean" in (workdir / "alpha_sweep.md").read_text()

    plain = small_patch_ensemble(tmp_path)
    del plain.ensemble
    plain.labels.alpha = 10.0
    alone = experiment.train_and_evaluate(plain, str(tmp_path / "single"), progress=False)
    member = results["members"][names.index("soft/alpha10/eps0.02/seed0")]
    # The member's weights equal the plain run's to about 1e-4 of their norm after 3 steps on the 4 test
    # devices (test_member_k_equals_single_run_with_its_hparams_and_seed); a 512-d Mahalanobis distance with
    # little shrinkage magnifies that to a few percent of a score (measured: 6.6 % at most, 2 of 600
    # good/defective pairs swapped), so the numbers agree to that, not bit for bit (the KDE test below,
    # with no steps, checks the evaluation path exactly).
    mine, _, _ = files.read_scores(str(workdir / "members" / member["name"] / "scores.csv"))
    theirs, _, _ = files.read_scores(str(tmp_path / "single" / "scores.csv"))
    np.testing.assert_allclose(mine, theirs, rtol=0.15)
    for metric in ("image_auroc", "pixel_auroc", "pixel_aupro"):
        assert member[metric] == pytest.approx(alone[metric], abs=0.02), metric


def random_backbone_file(path) -> str:
    """A converted-weights file of a random ResNet-18 backbone (what ``model.init`` loads)."""
    from sla_jax.training import pretrained

    rng = np.random.default_rng(0)
    flat = {
        k: (np.ones(shape) if k.endswith("/var") else rng.normal(scale=0.05, size=shape)).astype(np.float32)
        for k, shape in pretrained.backbone_layout().items()
    }
    pretrained.save_converted(str(path), flat)
    return str(path)


@pytest.mark.slow
def test_kde_and_loaded_backbone_ensembles_run(tmp_path):
    """An image-level ensemble scored by KDE, its members started from ``model.init``: with no pretext steps
    every member is the loaded backbone, so every member scores as the plain run from that file does."""
    init = random_backbone_file(tmp_path / "backbone.npz")
    shared = {
        "data.cache_dir": str(tmp_path / "tfds"),
        "data.image_size": 32,
        "model.head": (32,),
        "model.init": init,
        "train.steps": 0,
        "eval.density": "kde",
    }
    config = sweep_config()
    config.update_from_flattened_dict(
        {**shared, "ensemble.alphas": (2.0, 10.0), "ensemble.seeds": (0,), "ensemble.hard": True}
    )
    results = experiment.train_and_evaluate(config, str(tmp_path / "ensemble"), progress=False)
    assert len(results["members"]) == 3 and all(m["density"] == "kde" for m in results["members"])
    plain = demo_config()
    plain.update_from_flattened_dict(shared)
    alone = experiment.train_and_evaluate(plain, str(tmp_path / "single"), progress=False)
    for m in results["members"]:
        assert m["image_auroc"] == pytest.approx(alone["image_auroc"], abs=1e-6)
        assert m["kde_gamma"] == pytest.approx(alone["kde_gamma"], rel=1e-5)


def sweep_cli(workdir, *extra, cache):
    """``python -m sla_jax.train --config=configs/alpha_sweep.py`` at 32 px: α ∈ {2, 10}, batch 8, head (32,),
    a checkpoint every 2 steps, a log record every step, TFDS's cache in ``cache``; the finished process."""
    small = [
        "--config.data.image_size=32",
        "--config.train.batch_size=8",
        "--config.model.head=(32,)",
        "--config.train.checkpoint_every=2",
        "--config.train.log_every=1",
        "--config.ensemble.alphas=(2.0, 10.0)",
        f"--config.data.cache_dir={cache}",
    ]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sla_jax.train",
            "--config=configs/alpha_sweep.py",
            f"--workdir={workdir}",
            *small,
            *extra,
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_alpha_sweep_cli_end_to_end_and_resume(tmp_path):
    """configs/alpha_sweep.py through the train CLI at 32 px, 2 α × 2 seeds + hard × 2 = 6 members:
    results.json per member and table, alpha_sweep.{md,json,png}; then resumed to more steps."""
    workdir = tmp_path / "sweep"

    def run(*extra):
        return sweep_cli(workdir, *extra, cache=tmp_path / "tfds")

    proc = run("--config.train.steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training 6 members in one program" in proc.stdout and "image AUROC:" in proc.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert len(results["members"]) == 6 and len(results["table"]) == 3
    assert all(0 <= m["image_auroc"] <= 1 for m in results["members"])
    assert results["image_auroc"] == pytest.approx(
        np.mean([m["image_auroc"] for m in results["members"] if m["alpha"] == 10.0 and m["mode"] == "soft"])
    )
    for name in ("alpha_sweep.md", "alpha_sweep.json", "alpha_sweep.png"):
        assert (workdir / name).stat().st_size > 100, name
    page = check_page(workdir / "report.html")  # the sweep plot and the training curves, every member
    assert page["broken"] == [] and page["images"] == 2 and page["external"] == []
    assert all(m["name"] in (workdir / "report.html").read_text() for m in results["members"])
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and len(lines[0]["loss"]) == 6

    proc = run("--config.train.steps=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from the checkpoint at step 2" in proc.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["steps"] == 4
    # TensorBoard: one run folder per member, its own losses, settings and final AUROC (the HParams view)
    from tests.test_board import read_events

    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    for k, member in enumerate(results["members"]):
        scalars, _, hparams, _ = read_events(workdir / "tensorboard" / member["name"])
        assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4]
        np.testing.assert_allclose([v for _, v in scalars["train/loss"]], [r["loss"][k] for r in lines], rtol=1e-6)
        assert (hparams["labels.alpha"], hparams["labels.mode"], hparams["seed"]) == (
            member["alpha"],
            member["mode"],
            member["seed"],
        )
        assert scalars["final/image_auroc"][-1][1] == pytest.approx(member["image_auroc"], rel=1e-6)


@pytest.mark.slow
def test_members_split_over_the_devices_train_resume_and_match_the_batched_ensemble(tmp_path):
    """The train CLI with ``train.ensemble_strategy=auto``, which splits 4 members over the 4 test devices
    (one each, whole batches), for 2 steps, then resumed to 4 (the checkpoint restored onto the split
    states), against ``vmap`` (every member's batch split over the 4 devices) run to 4 steps at once: the
    same members, the first step's losses within 1e-4 (the two only reduce in another order), image AUROCs
    within 0.05."""

    def run(workdir, *extra):
        proc = sweep_cli(workdir, "--config.ensemble.hard=False", *extra, cache=tmp_path / "tfds")
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    split, batched = tmp_path / "split", tmp_path / "batched"
    assert "members split over 4 devices" in run(split, "--config.train.steps=2")
    assert "resuming from the checkpoint at step 2" in run(split, "--config.train.steps=4")
    run(batched, "--config.train.steps=4", "--config.train.ensemble_strategy=vmap")
    found = {w: json.loads((w / "results.json").read_text()) for w in (split, batched)}
    assert [m["name"] for m in found[split]["members"]] == [m["name"] for m in found[batched]["members"]]
    assert found[split]["steps"] == 4 and len(found[split]["members"]) == 4
    logs = {w: [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()] for w in (split, batched)}
    assert [r["step"] for r in logs[split]] == [1, 2, 3, 4]
    np.testing.assert_allclose(logs[split][0]["loss"], logs[batched][0]["loss"], rtol=1e-4)
    for a, b in zip(found[split]["members"], found[batched]["members"]):
        assert a["image_auroc"] == pytest.approx(b["image_auroc"], abs=0.05), a["name"]


# ----------------------------------------------------------------------------- learned label parameters


def test_learned_alpha_gets_the_chain_rule_gradient_and_config_checks():
    """log α in params["sla"]: effective_hparams reads it back, and d(loss)/d(log α) = α · d(loss)/dα."""
    spec = pretext.StepSpec(batch_size=8, transform="co")
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8))
    originals, edit = jax.jit(lambda k: pretext.pretext_edit(k, images, spec=spec))(jax.random.key(1))
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(8, 2)), jnp.float32)
    hp = pretext.HParams.create(alpha=3.0, epsilon=0.02, tau=0.005)
    optimizer = state_lib.make_optimizer(learning_rate=0.1, momentum=0.9, weight_decay=1e-2, total_steps=4)
    state = state_lib.TrainState(
        step=jnp.int32(0),
        params={"w": jnp.ones((2, 2))},
        batch_stats={},
        opt_state=optimizer.init({"w": jnp.ones((2, 2))}),
    )
    state = pretext.with_label_params(state, hp, learn=("alpha", "epsilon"), optimizer=optimizer)
    assert float(pretext.effective_hparams(state.params, hp).alpha) == pytest.approx(3.0)
    assert float(pretext.effective_hparams(state.params, hp).tau) == pytest.approx(0.005)

    def loss_of(hparams):
        from sla_jax import labels

        return labels.soft_cross_entropy(logits, pretext.label_targets(originals, edit, hparams, spec=spec)[0])

    g_params = jax.jit(jax.grad(lambda p: loss_of(pretext.effective_hparams(p, hp))))(state.params)
    g_hp = jax.jit(jax.grad(loss_of))(hp)
    assert float(g_params["sla"]["log_alpha"]) == pytest.approx(3.0 * float(g_hp.alpha), rel=1e-5)
    assert float(g_params["sla"]["log_epsilon"]) == pytest.approx(0.02 * float(g_hp.epsilon), rel=1e-5)
    assert float(g_hp.alpha) != 0.0
    updates, _ = optimizer.update(g_params, state.opt_state, state.params)  # no weight decay on the scalars
    assert float(updates["sla"]["log_alpha"]) == pytest.approx(-0.1 * float(g_params["sla"]["log_alpha"]), rel=1e-5)
    assert pretext.with_label_params(state, hp, learn=(), optimizer=optimizer) is state

    from sla_jax.experiment.validation import validate

    config = demo_config()
    config.labels.learn = ("epsilon",)
    with pytest.raises(ConfigError, match="labels.mode=smooth"):
        validate(config)
    config.labels.learn = ("beta",)
    with pytest.raises(ConfigError, match="labels.learn"):
        validate(config)
    config.labels.learn, config.labels.mode, config.labels.tau = (), "smooth", 0.0
    with pytest.raises(ConfigError, match="labels.tau"):
        validate(config)


@pytest.mark.slow
def test_learned_alpha_trajectory_is_logged_by_the_cli(tmp_path):
    """--config.labels.learn='("alpha",)' on the demo: metrics.jsonl logs α per step, results the final α."""
    workdir = tmp_path / "learn"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sla_jax.train",
            "--config=configs/demo.py",
            f"--workdir={workdir}",
            "--config.data.image_size=32",
            "--config.train.batch_size=8",
            "--config.train.steps=3",
            "--config.train.log_every=1",
            "--config.model.head=(32,)",
            "--config.labels.learn=('alpha',)",
            f"--config.data.cache_dir={tmp_path / 'tfds'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    alphas = [json.loads(x)["alpha"] for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert len(alphas) == 3 and len(set(alphas)) == 3 and all(a > 0 for a in alphas)
    results = json.loads((workdir / "results.json").read_text())
    assert results["learned_labels"]["alpha"] == pytest.approx(alphas[-1])
    proc = subprocess.run(
        [sys.executable, "-m", "sla_jax.evaluate", f"--workdir={workdir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_docs_dloss_dalpha_example_runs_as_written():
    """The python block of docs/sweeps.md runs and prints one finite row per α."""
    text = (REPO / "docs" / "sweeps.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    proc = subprocess.run([sys.executable, "-"], input=code, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert [float(r[0]) for r in rows] == [1.0, 2.0, 5.0, 7.0, 10.0, 15.0]
    assert all(np.isfinite(float(x)) for r in rows for x in r)
