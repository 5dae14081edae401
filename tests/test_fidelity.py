"""The options that make sla_jax's edits match the CutPaste ports (docs/design.md, "Fidelity to the ports"):
scar sizes in pixels or relative to the image, colour jitter of the whole image before the edit, the
jitter's operation order; and the KDE, the paper's other density."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from sla_jax import density, experiment
from sla_jax import jitter as J
from sla_jax import transforms as T
from sla_jax.defaults import base_config
from sla_jax.training import pretext
from tests.tiny import tiny_config


def scar_areas(size: int, *, rule: str, n: int = 400) -> np.ndarray:
    keys = jax.random.split(jax.random.key(0), n)
    scale = T.scar_scale(size, rule=rule)
    _, masks = jax.jit(jax.vmap(lambda k: T.cutpaste_scar(k, jnp.zeros((size, size, 3)), scale=scale)))(keys)
    return np.asarray(masks).sum(axis=(1, 2))


def test_scar_size_rules_in_pixels():
    """At 128 px the ports' rule keeps the 256 px scar (2-16 × 10-25 px), the relative rule halves both sides;
    at 256 px the two agree exactly (the paper's setting)."""
    pixels, relative = scar_areas(128, rule="pixels"), scar_areas(128, rule="relative")
    (w_lo, w_hi), (l_lo, l_hi) = T.scar_size_range(128, rule="pixels")
    assert (w_lo, w_hi, l_lo, l_hi) == (2.0, 16.0, 10.0, 25.0)
    assert T.scar_size_range(128, rule="relative") == ((1.0, 8.0), (5.0, 12.5))
    assert pixels.min() >= 0.6 * w_lo * l_lo and pixels.max() <= 1.2 * w_hi * l_hi
    # E[w·l] = 9 · 17.5 = 157.5 px² in pixels, a quarter of that relative.
    assert pixels.mean() == pytest.approx(157.5, rel=0.1)
    assert relative.mean() == pytest.approx(157.5 / 4, rel=0.15)
    np.testing.assert_array_equal(scar_areas(256, rule="pixels"), scar_areas(256, rule="relative"))
    assert T.scar_scale(256, rule="pixels") == T.scar_scale(256, rule="relative") == 1.0


def test_config_scar_size_reaches_the_step():
    config = base_config()
    config.data.image_size = 128
    config.transform.scar_size = "pixels"
    assert experiment.read(config).step.scar_scale == 1.0
    config.transform.scar_size = "relative"
    assert experiment.read(config).step.scar_scale == 0.5


def _fixed_order_candidates(key, image, strength):
    """The outputs of the four jitter operations applied in each of the 24 orders, with the factors that
    ``color_jitter(..., order='random')`` draws from ``key``."""
    _, key = jax.random.split(key)
    k_b, k_c, k_s, k_h = jax.random.split(key, 4)
    lo, hi = 1 - strength, 1 + strength
    factors = [
        jax.random.uniform(k_b, minval=lo, maxval=hi),
        jax.random.uniform(k_c, minval=lo, maxval=hi),
        jax.random.uniform(k_s, minval=lo, maxval=hi),
        jax.random.uniform(k_h, minval=-strength, maxval=strength),
    ]
    ops = [J._brightness, J._contrast, J._saturation, J._hue]
    region = jnp.ones(image.shape[:2])
    outs = []
    for order in itertools.permutations(range(4)):
        out = image
        for i in order:
            out = ops[i](out, factors[i], region)
        outs.append(np.asarray(out))
    return outs


def test_random_jitter_order_is_one_of_the_24_orders_and_varies():
    image = jax.random.uniform(jax.random.key(1), (24, 24, 3))
    seen = set()
    for seed in range(12):
        key = jax.random.key(100 + seed)
        out = np.asarray(jax.jit(lambda k: T.color_jitter(k, image, strength=0.3, order="random"))(key))
        candidates = _fixed_order_candidates(key, image, 0.3)
        matches = [i for i, c in enumerate(candidates) if np.allclose(out, c, atol=1e-5)]
        assert matches, "the random-order jitter is not any order of the four operations"
        seen.add(min(matches))
    assert len(seen) > 3  # several orders drawn
    with pytest.raises(ValueError, match="jitter order"):
        T.color_jitter(jax.random.key(0), image, order="sorted")


def test_global_jitter_is_shared_by_original_and_edit():
    """With global jitter the originals are jittered sources; each edit differs from its original only
    inside its mask, so the soft label measures the edit alone; without it, originals are the sources."""
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (6, 48, 48, 3), dtype=np.uint8))
    sources_in_01 = np.asarray(images, np.float32) / 255.0
    for jitter in (0.0, 0.1):
        spec = pretext.StepSpec(batch_size=8, transform="cps", pairing="paired", global_jitter=jitter, scar_scale=1.0)
        originals, edit = jax.jit(lambda k: pretext.pretext_edit(k, images, spec=spec))(jax.random.key(3))
        originals, edited, masks = map(np.asarray, (originals, edit.images, edit.masks))
        np.testing.assert_array_equal(edited[:4], originals[:4])  # paired: the originals come first
        outside = masks[4:] == 0
        np.testing.assert_array_equal(edited[4:][outside], originals[4:][outside])
        np.testing.assert_array_equal(originals[:4], originals[4:])
        differs_from_every_source = [np.min([np.abs(o - s).max() for s in sources_in_01]) for o in originals[:4]]
        if jitter:
            assert min(differs_from_every_source) > 1e-3
        else:
            assert max(differs_from_every_source) < 1e-6  # /255 inside jit: float32 rounding
        _, y = pretext.label_targets(jnp.asarray(originals), edit, pretext.HParams.create(), spec=spec)
        y = np.asarray(y)
        assert np.all(y[:4] == 0) and np.all(y[4:] > 0.5)


def test_kde_matches_a_float64_reference():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 32)).astype(np.float32)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    test = rng.normal(size=(57, 32)).astype(np.float32)
    test /= np.linalg.norm(test, axis=1, keepdims=True)
    t64, q64 = train.astype(np.float64), test.astype(np.float64)
    gamma = 10.0 / (t64.shape[1] * np.var(t64))
    d2 = ((q64[:, None, :] - t64[None, :, :]) ** 2).sum(-1)
    expected = -logsumexp(-gamma * d2, axis=1) / gamma
    got = np.asarray(jax.jit(density.kde_scores)(jnp.asarray(train), jnp.asarray(test)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert float(density.fit_kde(jnp.asarray(train)).gamma) == pytest.approx(gamma, rel=1e-5)
    chunked = density.kde_score(density.fit_kde(jnp.asarray(train)), jnp.asarray(test), chunk=10)
    np.testing.assert_allclose(np.asarray(chunked), got, rtol=1e-6)
    fixed = np.asarray(density.kde_scores(jnp.asarray(train), jnp.asarray(test), gamma=2.0))
    np.testing.assert_allclose(fixed, -logsumexp(-2.0 * d2, axis=1) / 2.0, rtol=1e-4, atol=1e-5)


def test_kde_scores_the_outlier_highest():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(200, 8)).astype(np.float32) * 0.1
    test = np.concatenate([train[:5] + 0.01, np.full((1, 8), 2.0, np.float32)])
    scores = np.asarray(density.kde_scores(jnp.asarray(train), jnp.asarray(test)))
    assert int(np.argmax(scores)) == 5


def checkpointed_config(tmp, changes: dict | None = None):
    """4 steps with a checkpoint every 2, all kept."""
    return tiny_config(
        tmp, {"train.steps": 4, "train.checkpoint_every": 2, "train.keep_checkpoints": 3, **(changes or {})}
    )


@pytest.mark.slow
def test_kde_run_names_its_density_scores_by_it_and_predict_uses_it(tmp_path):
    """eval.density=kde: results.json names the density and γ, kde.npz holds the training features, the
    scores are the KDE's (recomputed here from the stored features), and predict scores with it."""
    import csv
    import subprocess
    import sys
    from pathlib import Path

    workdir = tmp_path / "kde"
    results = experiment.train_and_evaluate(
        checkpointed_config(tmp_path, {"eval.density": "kde"}), str(workdir), progress=False
    )
    assert results["density"] == "kde" and results["kde_gamma"] > 0 and "gde_shrinkage" not in results
    saved = np.load(workdir / "kde.npz", allow_pickle=False)
    assert saved["features"].shape == (results["n_train"], 512) and not (workdir / "gde.npz").exists()
    assert float(saved["gamma"]) == pytest.approx(results["kde_gamma"])
    with open(workdir / "scores.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    detector = experiment.load_detector(str(workdir))
    assert isinstance(detector.fitted, density.KDE)
    from sla_jax import data

    images = np.stack([data.read_image(Path(r["path"]), size=32) for r in rows[:5]])
    np.testing.assert_allclose(detector.score(images)[0], [float(r["score"]) for r in rows[:5]], rtol=1e-4)
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sla_jax.predict",
            f"--workdir={workdir}",
            rows[0]["path"],
            f"--out={tmp_path / 'pred'}",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 image(s)" in proc.stdout


@pytest.mark.slow
def test_evaluating_an_earlier_checkpoint_keeps_the_run_results(tmp_path):
    """evaluate_workdir(step=2) restores checkpoint 2 and writes WORKDIR/steps/2/; the run's files stay;
    a step without a checkpoint is named with the steps there are."""
    workdir = tmp_path / "run"
    final = experiment.train_and_evaluate(checkpointed_config(tmp_path), str(workdir), progress=False)
    before = (workdir / "results.json").read_bytes()
    early = experiment.evaluate_workdir(str(workdir), step=2)
    assert early["steps"] == 2 and final["steps"] == 4
    assert (workdir / "steps" / "2" / "results.json").is_file() and (workdir / "steps" / "2" / "scores.csv").is_file()
    assert (workdir / "results.json").read_bytes() == before
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 3 .* steps \[2, 4\]"):
        experiment.evaluate_workdir(str(workdir), step=3)


def test_weight_decay_on_all_parameters_reaches_batch_norm():
    """train.weight_decay_on=all decays BatchNorm scales too (torch's SGD in the ports); the default only kernels."""
    from sla_jax.training import state as state_lib

    params = {"bn": {"scale": jnp.ones(3)}, "conv": {"kernel": jnp.ones((2, 2))}}
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    for decay_all, bn_moves in ((False, False), (True, True)):
        opt = state_lib.make_optimizer(
            learning_rate=0.1, momentum=0.0, weight_decay=0.5, total_steps=10, decay_all=decay_all
        )
        updates, _ = opt.update(zero, opt.init(params), params)
        assert bool(jnp.any(updates["bn"]["scale"] != 0)) is bn_moves
        assert bool(jnp.all(updates["conv"]["kernel"] < 0))
    config = base_config()
    config.train.weight_decay_on = "all"
    assert experiment.read(config).optimizer is not None


def test_bicubic_resize_is_pils(tmp_path):
    """data.resize=bicubic resizes as PIL's default filter does (the ports' Image.resize), bilinear otherwise."""
    import io

    from PIL import Image

    from sla_jax import data

    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    bicubic = data.decode_image(buffer.getvalue(), size=32, resample="bicubic")
    np.testing.assert_array_equal(bicubic, np.asarray(picture.resize((32, 32))))
    bilinear = data.decode_image(buffer.getvalue(), size=32)
    np.testing.assert_array_equal(bilinear, np.asarray(picture.resize((32, 32), Image.Resampling.BILINEAR)))
    assert np.any(bicubic != bilinear)
