"""torchvision weight import (parity with a plain torch.nn ResNet-18), backbone freezing, baseline mode."""

import json
import os
import runpy
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

# PyTorch is the reference these tests compare with; the torch extra is installed on Python 3.11 (a CPU
# wheel); CI's Python 3.12 tier, where PyPI offers only multi-GB CUDA builds, runs without it.
torch = pytest.importorskip(
    "torch",
    reason="the torch extra is not installed (pip install -e '.[torch]'): the "
    "torchvision weight-import tests compare with PyTorch",
)

from torch_resnet18 import random_resnet18  # noqa: E402

from sla_jax import experiment
from sla_jax.defaults import base_config
from sla_jax.experiment.validation import ConfigError, validate
from sla_jax.training import pretext, pretrained
from sla_jax.training import state as state_lib
from sla_jax.training.models import PretextNet, ResNet18
from sla_jax.training.pretrained import convert

REPO = Path(__file__).resolve().parents[1]
STAGES = {f"layer{i}_1": f"layer{i}" for i in range(1, 5)}  # last block of each stage = the stage's output


@pytest.fixture(scope="module")
def torch_model():
    return random_resnet18(seed=0)


@pytest.fixture(scope="module")
def state_dict(torch_model):
    return {k: v.numpy() for k, v in torch_model.state_dict().items()}


def relative_max_error(a, b):
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def test_converted_weights_reproduce_torch_stages_and_pooled_features(torch_model, tmp_path):
    """.pth (torch.save of the state dict) → convert → .npz → load_backbone: eval-mode activations of every
    stage and the pooled features equal torch's at 224 and 256 px, with the default conv path (on CPU: im2col
    for the stem and the small late maps, XLA elsewhere). Measured: ≤ 1e-4 absolute on activations up to 14."""
    pth = tmp_path / "resnet18.pth"
    torch.save(torch_model.state_dict(), pth)
    report = convert(str(pth), str(tmp_path / "resnet18.npz"))
    assert report["arrays"] == 100 and report["scalars"] == 11_176_512 + 9_600  # + BatchNorm running statistics
    variables = pretrained.load_backbone(str(tmp_path / "resnet18.npz"))
    forward = jax.jit(
        lambda v, x: ResNet18().apply(
            v,
            x,
            train=False,
            mutable=["intermediates"],
            capture_intermediates=lambda module, method: module.name in STAGES and method == "__call__",
        )
    )
    for size in (224, 256):
        x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype(np.float32)
        pooled, captured = forward(variables, x)
        with torch.no_grad():
            ref = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2)))
        assert relative_max_error(np.asarray(pooled), ref["pooled"].numpy()) <= 1e-4
        for name, stage in STAGES.items():
            ours = np.asarray(captured["intermediates"][name]["__call__"][0])
            theirs = ref[stage].numpy().transpose(0, 2, 3, 1)
            assert ours.shape == theirs.shape
            assert relative_max_error(ours, theirs) <= 1e-4, (size, stage)


def test_safetensors_cli_keeps_fc_on_request_and_checks_the_hash_prefix(state_dict, tmp_path):
    """The CLI without torch in the loop: safetensors in, safetensors out, sha256 printed and checked."""
    plain = tmp_path / "resnet18.safetensors"
    save_file(state_dict, str(plain))
    digest = pretrained.sha256_file(str(plain))
    named = tmp_path / f"resnet18-{digest[:8]}.safetensors"
    plain.rename(named)
    out = tmp_path / "converted.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "sla_jax.convert_weights", str(named), str(out), "--keep_fc"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert digest in proc.stdout and f"matches the hash prefix {digest[:8]}" in proc.stdout
    from safetensors.numpy import load_file

    flat = load_file(str(out))
    np.testing.assert_array_equal(flat["fc/kernel"], state_dict["fc.weight"].T)
    np.testing.assert_array_equal(
        flat["params/layer2_0/downsample_0/kernel"], state_dict["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(flat["batch_stats/layer3_1/bn2/var"], state_dict["layer3.1.bn2.running_var"])
    loaded = pretrained.load_backbone(str(out))  # fc ignored
    assert "fc" not in loaded["params"] and set(loaded) == {"params", "batch_stats"}

    wrong = tmp_path / "resnet18-deadbeef.safetensors"
    named.rename(wrong)
    kept = out.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "sla_jax.convert_weights", str(wrong), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "exists: pass --overwrite" in proc.stderr  # an earlier result is never replaced
    proc = subprocess.run(
        [sys.executable, "-m", "sla_jax.convert_weights", str(wrong), str(out), "--overwrite"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "does not start with deadbeef" in proc.stderr
    assert out.read_bytes() == kept


def test_mismatched_state_dict_lists_every_missing_unknown_and_misshapen_key(state_dict):
    bad = dict(state_dict)
    del bad["layer3.1.bn2.running_var"]
    bad["layer4.2.conv1.weight"] = np.zeros((512, 512, 3, 3), np.float32)
    bad["layer2.0.downsample.0.weight"] = np.zeros((128, 64, 3, 3), np.float32)
    with pytest.raises(pretrained.WeightsError) as info:
        pretrained.from_torch_state_dict(bad, source="bad.pth")
    message = str(info.value)
    assert "bad.pth" in message and "1 missing keys: layer3.1.bn2.running_var" in message
    assert "1 unknown keys: layer4.2.conv1.weight" in message
    assert "layer2.0.downsample.0.weight: (128, 64, 3, 3) (expected (128, 64, 1, 1))" in message
    with pytest.raises(pretrained.WeightsError, match="missing keys: fc.bias, fc.weight"):
        pretrained.from_torch_state_dict({k: v for k, v in state_dict.items() if not k.startswith("fc.")}, keep_fc=True)


def test_loading_never_unpickles(state_dict, tmp_path):
    flat = pretrained.from_torch_state_dict(state_dict)
    path = tmp_path / "w.npz"
    np.savez(path, **flat, extra=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        pretrained.load_backbone(str(path))


def test_optimizer_freeze_equals_torch_sgd_with_requires_grad_off():
    """Backbone frozen for 2 of 5 steps: bitwise unchanged (no decay, no momentum) while frozen; then the
    same trajectory as torch SGD whose backbone had ``grad=None`` for those steps (global cosine lr)."""
    total, freeze, lr, mu, wd = 5, 2, 0.1, 0.9, 0.01
    opt = state_lib.make_optimizer(
        learning_rate=lr, momentum=mu, weight_decay=wd, total_steps=total, freeze_backbone_steps=freeze
    )
    rng = np.random.default_rng(0)
    init = {
        "backbone": {"conv": {"kernel": rng.normal(size=(3, 3, 2, 4))}, "bn": {"scale": rng.normal(size=4)}},
        "head": {"dense": {"kernel": rng.normal(size=(4, 2)), "bias": rng.normal(size=2)}},
    }
    init = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), init)
    grads = [jax.tree_util.tree_map(lambda a: rng.normal(size=a.shape).astype(np.float32), init) for _ in range(total)]

    tp = {
        k: torch.tensor(v, requires_grad=True)
        for k, v in {
            "bk": init["backbone"]["conv"]["kernel"],
            "bs": init["backbone"]["bn"]["scale"],
            "hk": init["head"]["dense"]["kernel"],
            "hb": init["head"]["dense"]["bias"],
        }.items()
    }
    torch_opt = torch.optim.SGD(
        [{"params": [tp["bk"], tp["hk"]], "weight_decay": wd}, {"params": [tp["bs"], tp["hb"]], "weight_decay": 0.0}],
        lr=lr,
        momentum=mu,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(torch_opt, lambda t: 0.5 * (1 + np.cos(np.pi * min(t, total) / total)))

    params, opt_state = init, opt.init(init)
    update = jax.jit(opt.update)
    for t in range(total):
        updates, opt_state = update(grads[t], opt_state, params)
        params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
        g = grads[t]
        tp["hk"].grad, tp["hb"].grad = (
            torch.tensor(g["head"]["dense"]["kernel"]),
            torch.tensor(g["head"]["dense"]["bias"]),
        )
        frozen = t < freeze
        tp["bk"].grad = None if frozen else torch.tensor(g["backbone"]["conv"]["kernel"])
        tp["bs"].grad = None if frozen else torch.tensor(g["backbone"]["bn"]["scale"])
        torch_opt.step()
        sched.step()
        backbone_same = all(
            np.array_equal(a, b)
            for a, b in zip(jax.tree_util.tree_leaves(params["backbone"]), jax.tree_util.tree_leaves(init["backbone"]))
        )
        assert backbone_same == frozen, t
        for ours, key in (
            (params["backbone"]["conv"]["kernel"], "bk"),
            (params["backbone"]["bn"]["scale"], "bs"),
            (params["head"]["dense"]["kernel"], "hk"),
            (params["head"]["dense"]["bias"], "hb"),
        ):
            np.testing.assert_allclose(np.asarray(ours), tp[key].detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_train_step_with_loaded_backbone_frozen_then_trained(state_dict):
    """The real jitted step at 32 px: for step < N the loaded backbone parameters stay bitwise equal to the
    file's (BatchNorm running statistics do update, as in torch's model.train()); the head trains; at step N
    the backbone moves."""
    model = PretextNet(num_classes=2, head=(16,))
    optimizer = state_lib.make_optimizer(
        learning_rate=0.03, momentum=0.9, weight_decay=3e-5, total_steps=4, freeze_backbone_steps=1
    )
    flat = pretrained.from_torch_state_dict(state_dict)
    from flax import traverse_util

    backbone = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()}, sep="/")
    state = state_lib.init_state(jax.random.key(0), model=model, optimizer=optimizer, image_size=32)
    head0 = state.params["head"]
    state = pretrained.with_backbone(state, backbone, optimizer=optimizer)
    assert state.params["head"] is head0
    step = jax.jit(
        partial(
            pretext.train_step, model=model, optimizer=optimizer, spec=pretext.StepSpec(batch_size=4, transform="co")
        )
    )
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))

    def leaves(tree):
        return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]

    def moved(a, b):
        return [not np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b))]

    s1, _ = step(state, images, jax.random.key(1))
    assert not any(moved(s1.params["backbone"], backbone["params"]))
    assert all(moved(s1.batch_stats["backbone"], backbone["batch_stats"]))
    assert any(moved(s1.params["head"], head0))
    s2, _ = step(s1, images, jax.random.key(1))
    assert all(moved(s2.params["backbone"], backbone["params"]))


def test_init_config_checks(state_dict, tmp_path):
    config = base_config()
    config.data.root, config.data.category = "/data", "bottle"
    flat = pretrained.from_torch_state_dict(state_dict)
    np.savez(tmp_path / "ok.npz", **flat)
    config.model.init = str(tmp_path / "ok.npz")
    validate(config)
    for key, value, match in [
        ("model.init", str(tmp_path / "missing.npz"), "no such file"),
        ("model.init", "resnet18-f37072fd.pth", "python -m sla_jax.convert_weights"),
        ("model.init", str(tmp_path), "must be a .npz or .safetensors"),
        ("model.stem", "small", "stem='imagenet'"),
        ("train.freeze_steps", -1, "freeze_steps"),
    ]:
        bad = config.copy_and_resolve_references()
        section, name = key.split(".")
        bad[section][name] = value
        with pytest.raises(ConfigError, match=match):
            validate(bad)
    baseline = runpy.run_path(str(REPO / "configs" / "imagenet_gde.py"))["get_config"]()
    baseline.data.root, baseline.data.category = "/data", "bottle"
    with pytest.raises(ConfigError, match="needs --config.model.init"):
        validate(baseline)


def run_train(*args):
    return subprocess.run(
        [sys.executable, "-m", "sla_jax.train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


@pytest.mark.slow
def test_baseline_mode_equals_torch_features_with_sklearn_gaussian(torch_model, tmp_path):
    """configs/imagenet_gde.py (no training) on the demo data at 64 px scores every test image as torch's
    eval-mode features of the same images + scikit-learn's Ledoit–Wolf Mahalanobis distance do."""
    from sklearn.covariance import LedoitWolf

    torch.save(torch_model.state_dict(), tmp_path / "resnet18.pth")
    convert(str(tmp_path / "resnet18.pth"), str(tmp_path / "resnet18.npz"))
    workdir = tmp_path / "run"
    proc = run_train(
        "--config=configs/imagenet_gde.py",
        f"--workdir={workdir}",
        "--config.data.demo=True",
        "--config.data.category=weave",
        "--config.data.image_size=64",
        f"--config.model.init={tmp_path / 'resnet18.npz'}",
        f"--config.data.cache_dir={tmp_path / 'tfds'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["steps"] == 0 and results["init"] == str(tmp_path / "resnet18.npz")

    dataset = experiment.dataset_from_config(experiment.load_run_config(str(workdir)), str(workdir))

    def torch_features(images):
        x = (images.astype(np.float32) / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
        with torch.no_grad():
            f = torch_model(torch.from_numpy(x.astype(np.float32).transpose(0, 3, 1, 2)))["pooled"].numpy()
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    gaussian = LedoitWolf().fit(torch_features(dataset.train.images).astype(np.float64))
    expected = gaussian.mahalanobis(torch_features(dataset.test.images).astype(np.float64))
    ours = np.loadtxt(workdir / "scores.csv", delimiter=",", skiprows=1, usecols=3)
    np.testing.assert_allclose(ours, expected, rtol=2e-3)


@pytest.mark.slow
def test_fine_tuning_freezes_the_loaded_backbone_and_a_checkpoint_wins_over_init(state_dict, tmp_path):
    """Pretrained run, freeze 2 of 3 steps: checkpoint 2 holds the file's backbone unchanged, checkpoint 3 a
    trained one. Run again with more steps: it resumes from the checkpoint (not from the init file); with
    another init file it is refused, since the workdir's checkpoints grew from the first one."""
    from flax import traverse_util

    flat = pretrained.from_torch_state_dict(state_dict)
    np.savez(tmp_path / "a.npz", **flat)
    np.savez(tmp_path / "b.npz", **{k: v + 1 for k, v in flat.items()})
    workdir = tmp_path / "run"
    common = [
        "--config=configs/demo.py",
        f"--workdir={workdir}",
        "--config.data.image_size=32",
        "--config.train.batch_size=8",
        "--config.train.checkpoint_every=1",
        "--config.train.keep_checkpoints=5",
        "--config.model.head=(32,)",
        "--config.train.freeze_steps=2",
        f"--config.data.cache_dir={tmp_path / 'tfds'}",
    ]
    proc = run_train(*common, f"--config.model.init={tmp_path / 'a.npz'}", "--config.train.steps=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "frozen for the first 2 steps" in proc.stdout

    config = experiment.load_run_config(str(workdir))
    optimizer = experiment.read(config).optimizer
    abstract = state_lib.init_state(
        jax.random.key(0), model=experiment.read(config).model, optimizer=optimizer, image_size=32
    )
    manager = state_lib.checkpoint_manager(str(workdir), keep=5)
    import orbax.checkpoint as ocp

    def restore(step):
        return manager.restore(
            step, args=ocp.args.StandardRestore(jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract))
        )

    file_params = traverse_util.unflatten_dict(flat, sep="/")["params"]
    for step, frozen in ((1, True), (2, True), (3, False)):
        restored = restore(step).params["backbone"]
        same = [
            np.array_equal(a, b)
            for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(file_params))
        ]
        assert all(same) if frozen else not any(same), step
    manager.close()

    proc = run_train(*common, f"--config.model.init={tmp_path / 'b.npz'}", "--config.train.steps=4")
    assert proc.returncode == 2 and "model.init: " in proc.stderr and "b.npz" in proc.stderr, proc.stderr[-3000:]
    proc = run_train(*common, f"--config.model.init={tmp_path / 'a.npz'}", "--config.train.steps=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from the checkpoint at step 3" in proc.stdout
    assert json.loads((workdir / "timing.json").read_text())["resumed_from_step"] == 3
