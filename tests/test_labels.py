import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sla_jax import labels as L
from sla_jax import transforms as T


def test_no_change_gives_zero():
    image = jnp.full((16, 16, 3), 0.5)
    mask = jnp.zeros((16, 16)).at[4:8, 4:8].set(1)
    assert float(L.soft_label(image, image, mask)) == 0.0


def test_full_change_of_region_gives_tanh_half_alpha():
    image = jnp.zeros((16, 16, 3))
    mask = jnp.zeros((16, 16)).at[2:10, 3:7].set(1)
    edited = jnp.where(mask[..., None] > 0, 1.0, image)
    for alpha in (1.0, 2.0, 10.0, 15.0):
        y = float(L.soft_label(image, edited, mask, alpha=alpha))
        assert y == pytest.approx(np.tanh(alpha / 2), rel=1e-6)
        assert y == pytest.approx(2 / (1 + np.exp(-alpha)) - 1, rel=1e-6)


def test_half_changed_region_and_epsilon_threshold():
    image = jnp.zeros((10, 10, 3))
    mask = jnp.zeros((10, 10)).at[0:4, 0:5].set(1)  # area 20
    edited = image.at[0:2, 0:5].set(0.01)  # 10 pixels, Δ = 0.03 > 0.02
    assert float(L.soft_label(image, edited, mask)) == pytest.approx(np.tanh(10 * 0.5 / 2), rel=1e-6)
    edited_small = image.at[0:2, 0:5].set(0.006)  # Δ = 0.018 < 0.02: imperceptible
    assert float(L.soft_label(image, edited_small, mask)) == 0.0


def test_grayscale_counts_as_three_channels():
    gray = jnp.zeros((10, 10, 1))
    mask = jnp.zeros((10, 10)).at[0:4, 0:4].set(1)
    edited = gray.at[0:2, 0:4, 0].set(0.01)  # 0.01 per channel × 3 = 0.03 > 0.02
    rgb = jnp.repeat(gray, 3, axis=-1)
    y_gray = float(L.soft_label(gray, edited, mask))
    y_rgb = float(L.soft_label(rgb, jnp.repeat(edited, 3, axis=-1), mask))
    assert y_gray == pytest.approx(y_rgb) and y_gray > 0
    assert float(L.soft_label(gray[..., 0], edited[..., 0], mask)) == pytest.approx(y_gray)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), alpha=st.floats(0.1, 15.0))  # float32 tanh rounds to 1 past α≈16
def test_label_in_unit_interval_and_monotone(seed, alpha):
    image = jax.random.uniform(jax.random.key(seed), (24, 24, 3))
    edited, mask = T.cutpaste(jax.random.key(seed + 1), image)
    y = float(L.soft_label(image, edited, mask, alpha=alpha))
    assert 0.0 <= y < 1.0
    # Undoing part of the edit can only lower the label.
    changed = np.argwhere(np.asarray(mask) > 0)
    keep = jnp.zeros((24, 24)).at[tuple(changed[: len(changed) // 2].T)].set(1)
    partial = jnp.where(keep[..., None] > 0, edited, image)
    assert float(L.soft_label(image, partial, mask, alpha=alpha)) <= y + 1e-7


def test_targets_and_batch_labels():
    classes = jnp.array([0, 1, 2, 1])
    y = jnp.array([0.7, 0.8, 0.6, 0.0])
    t = L.targets(classes, y, num_classes=3)
    np.testing.assert_allclose(np.asarray(t), [[1, 0, 0], [0.2, 0.8, 0], [0.4, 0, 0.6], [1, 0, 0]], atol=1e-6)
    t2 = L.targets(jnp.array([0, 1]), jnp.array([0.3, 0.9]), num_classes=2)
    np.testing.assert_allclose(np.asarray(t2), [[1, 0], [0.1, 0.9]], atol=1e-6)
    images = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
    hard = L.batch_labels(images, images, jnp.ones((4, 16, 16)), classes, mode="hard")
    np.testing.assert_array_equal(np.asarray(hard), [0, 1, 1, 1])
    soft = L.batch_labels(images, images, jnp.ones((4, 16, 16)), classes, mode="soft")
    np.testing.assert_array_equal(np.asarray(soft), [0, 0, 0, 0])  # unchanged images: invalid edits


def test_soft_cross_entropy_matches_formula():
    logits = jnp.array([[2.0, -1.0], [0.5, 0.5]])
    targets = jnp.array([[0.25, 0.75], [1.0, 0.0]])
    logp = jax.nn.log_softmax(logits)
    expected = -np.mean(np.sum(np.asarray(targets * logp), axis=1))
    assert float(L.soft_cross_entropy(logits, targets)) == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- differentiable labels


def _cutout_pair():
    """An image and a Cutout-like edit whose Δ values sit well away from ε = 0.02 (0, 0.009 or ≥ 0.3)."""
    image = jax.random.uniform(jax.random.key(0), (24, 24, 3), minval=0.2, maxval=0.8)
    mask = jnp.zeros((24, 24)).at[4:14, 6:16].set(1.0)
    rows = jnp.arange(24)[:, None, None]
    edited = jnp.where(mask[..., None] > 0, jnp.where(rows < 9, 0.95, image + 0.003), image)  # rows 9-13: Δ=0.009
    return image, edited, mask


def test_smooth_label_tends_to_the_paper_label_as_tau_shrinks():
    image, edited, mask = _cutout_pair()
    delta = np.asarray(L.pixel_difference(image, edited))
    assert np.min(np.abs(delta[delta > 0] - 0.02)) > 0.005  # no Δ near ε
    for alpha in (1.0, 5.0, 10.0):
        exact = float(L.soft_label(image, edited, mask, alpha=alpha))
        assert 0 < exact < 1
        errors = [
            abs(float(L.smooth_soft_label(image, edited, mask, alpha=alpha, tau=tau)) - exact)
            for tau in (1e-2, 1e-3, 1e-4)
        ]
        assert errors[0] > errors[1] > errors[2] or errors[2] < 1e-6
        assert errors[2] < 1e-6 and errors[0] > 1e-4
    # Unchanged pixels count 0, not sigmoid(−ε/τ): an untouched image has label 0 for any τ.
    assert float(L.smooth_soft_label(image, image, mask, tau=0.1)) == 0.0


def test_label_gradient_in_alpha_matches_finite_differences_and_vmaps():
    image, edited, mask = _cutout_pair()
    logits = jnp.array([[0.3, 0.9]])

    def loss(alpha, *, tau):
        y = (
            L.smooth_soft_label(image, edited, mask, alpha=alpha, tau=tau)
            if tau
            else L.soft_label(image, edited, mask, alpha=alpha)
        )
        return L.soft_cross_entropy(logits, L.targets(jnp.array([1]), y[None], num_classes=2))

    for tau in (0.0, 0.005):
        g = jax.grad(loss)(5.0, tau=tau)
        h = 1e-2
        fd = (loss(5.0 + h, tau=tau) - loss(5.0 - h, tau=tau)) / (2 * h)
        assert np.isfinite(float(g)) and float(g) != 0.0
        assert float(g) == pytest.approx(float(fd), rel=1e-3)
    alphas = jnp.array([1.0, 2.0, 5.0, 7.0, 10.0, 15.0])
    grads = jax.vmap(jax.grad(lambda a: loss(a, tau=0.005)))(alphas)
    assert grads.shape == (6,) and np.all(np.isfinite(np.asarray(grads)))
    for a, g in zip(alphas, grads):
        assert float(g) == pytest.approx(float(jax.grad(lambda x: loss(x, tau=0.005))(a)), rel=1e-6)


def test_smooth_label_is_differentiable_in_epsilon_and_the_images():
    image, edited, mask = _cutout_pair()
    g_eps = jax.grad(lambda e: L.smooth_soft_label(image, edited, mask, epsilon=e, tau=0.005))(0.01)
    assert float(g_eps) < 0  # a higher threshold counts fewer changed pixels
    h = 1e-4
    fd = (
        L.smooth_soft_label(image, edited, mask, epsilon=0.01 + h, tau=0.005)
        - L.smooth_soft_label(image, edited, mask, epsilon=0.01 - h, tau=0.005)
    ) / (2 * h)
    assert float(g_eps) == pytest.approx(float(fd), rel=1e-2)
    g_img = jax.grad(lambda x: L.smooth_soft_label(image, x, mask, tau=0.005))(edited)
    assert np.all(np.isfinite(np.asarray(g_img))) and float(jnp.sum(jnp.abs(g_img))) > 0
    assert float(jnp.sum(jnp.abs(g_img * (1 - mask[..., None])))) == 0.0  # only changed pixels matter


def test_traced_label_modes_equal_the_named_ones():
    image, edited, mask = _cutout_pair()
    for alpha, eps in ((2.0, 0.02), (10.0, 0.05)):
        assert float(L.label_strength(image, edited, mask, alpha=alpha, epsilon=eps)) == float(
            L.soft_label(image, edited, mask, alpha=alpha, epsilon=eps)
        )
        assert float(L.label_strength(image, edited, mask, alpha=alpha, epsilon=eps, tau=0.01)) == pytest.approx(
            float(L.smooth_soft_label(image, edited, mask, alpha=alpha, epsilon=eps, tau=0.01)), rel=1e-6
        )
        assert float(L.label_strength(image, edited, mask, alpha=alpha, epsilon=eps, hard=1.0)) == 1.0
    originals = jnp.stack([image, image])
    batch = dict(
        originals=originals,
        edited=jnp.stack([edited, edited]),
        masks=jnp.stack([mask, mask]),
        classes=jnp.array([0, 1]),
    )
    smooth = L.batch_labels(**batch, mode="smooth", tau=0.01)
    assert float(smooth[0]) == 0.0 and float(smooth[1]) == pytest.approx(
        float(L.smooth_soft_label(image, edited, mask, tau=0.01)), rel=1e-6
    )
    # The gradient through the unselected smooth branch stays finite at τ = 0.
    g = jax.grad(lambda a: L.label_strength(image, edited, mask, alpha=a, tau=0.0))(3.0)
    assert np.isfinite(float(g))
