import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sla_jax import transforms as T

TRANSFORMS = {"co": T.cutout, "cp": T.cutpaste, "cps": T.cutpaste_scar}


def random_image(seed, size=48, channels=3):
    return jax.random.uniform(jax.random.key(seed), (size, size, channels))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    size=st.sampled_from([32, 48, 64]),
    name=st.sampled_from(sorted(TRANSFORMS)),
    channels=st.sampled_from([1, 3]),
)
def test_pixels_outside_mask_unchanged(seed, size, name, channels):
    image = random_image(seed, size, channels)
    edited, mask = jax.jit(TRANSFORMS[name])(jax.random.key(seed + 1), image)
    assert edited.shape == image.shape and mask.shape == (size, size)
    assert set(np.unique(np.asarray(mask))) <= {0.0, 1.0}
    assert mask.sum() > 0
    outside = np.asarray(mask) == 0
    np.testing.assert_array_equal(np.asarray(edited)[outside], np.asarray(image)[outside])
    assert float(edited.min()) >= 0.0 and float(edited.max()) <= 1.0


def test_box_area_and_aspect_follow_cutpaste_distributions():
    """Cutout masks over 4000 keys at 256 px: area U(0.02, 0.15)·HW, aspect from (0.3,1) or (1,3.3) w.p. ½."""
    size = 256
    keys = jax.random.split(jax.random.key(0), 4000)
    _, masks = jax.jit(jax.vmap(lambda k: T.cutout(k, jnp.zeros((size, size, 3)))))(keys)
    masks = np.asarray(masks)
    rows = masks.any(axis=2).sum(axis=1)
    cols = masks.any(axis=1).sum(axis=1)
    np.testing.assert_array_equal(masks.sum(axis=(1, 2)), rows * cols)  # axis-aligned rectangles
    area = rows * cols / size**2
    # Rounding the sides moves the area by at most ~1.5% relative at these sizes.
    assert area.min() > 0.02 * 0.97 and area.max() < 0.15 * 1.03
    assert stats.kstest(area, stats.uniform(0.02, 0.13).cdf).statistic < 0.03
    aspect = cols / rows
    assert aspect.min() > 0.3 * 0.9 and aspect.max() < 3.3 * 1.1
    assert abs(np.mean(aspect < 1.0) - 0.5) < 0.04
    tall = aspect[aspect < 0.97]
    assert stats.kstest(tall, stats.uniform(0.3, 0.7).cdf).statistic < 0.06
    wide = aspect[aspect > 1.03]
    assert stats.kstest(wide, stats.uniform(1.0, 2.3).cdf).statistic < 0.06


def _principal_angle_deg(mask):
    """Angle of a blob's long axis from the vertical, in degrees, positive towards +columns."""
    r, c = np.nonzero(mask)
    cov = np.cov(np.stack([r - r.mean(), c - c.mean()]))
    evals, evecs = np.linalg.eigh(cov)
    dr, dc = evecs[:, 1]
    if dr < 0:
        dr, dc = -dr, -dc
    return np.degrees(np.arctan2(dc, dr)), evals[1] / max(evals[0], 1e-9)


def test_scar_size_and_rotation_range():
    size = 256
    keys = jax.random.split(jax.random.key(1), 600)
    _, masks = jax.jit(jax.vmap(lambda k: T.cutpaste_scar(k, jnp.zeros((size, size, 3)))))(keys)
    masks = np.asarray(masks)
    areas = masks.sum(axis=(1, 2))
    (w_lo, w_hi), (l_lo, l_hi) = T.scar_size_range(size)
    assert areas.min() >= 0.6 * w_lo * l_lo and areas.max() <= 1.2 * w_hi * l_hi
    angles, elongation = np.array([_principal_angle_deg(m) for m in masks]).T
    angles = angles[elongation > 4]  # near-square scars have no defined long axis
    assert len(angles) > 150
    assert np.max(np.abs(angles)) <= 45 + 5  # pixelisation of thin scars
    assert np.mean(angles > 15) > 0.2 and np.mean(angles < -15) > 0.2


def test_scar_scales_with_image_size():
    keys = jax.random.split(jax.random.key(2), 300)
    areas = {}
    for size in (64, 256):
        _, masks = jax.jit(jax.vmap(lambda k: T.cutpaste_scar(k, jnp.zeros((size, size, 3)))))(keys)
        areas[size] = float(np.asarray(masks).sum(axis=(1, 2)).mean()) / size**2
    assert areas[64] == pytest.approx(areas[256], rel=0.15)


def test_cutpaste_pastes_a_translated_copy_without_jitter():
    size = 40
    rows, cols = np.mgrid[:size, :size]
    code = (rows * size + cols) / (size * size)
    image = jnp.asarray(np.stack([code, code, code], axis=-1), jnp.float32)
    for seed in range(10):
        edited, mask = T.cutpaste(jax.random.key(seed), image, jitter=0.0)
        inside = np.asarray(mask) > 0
        src = np.round(np.asarray(edited)[..., 0][inside] * size * size).astype(int)
        src_r, src_c = src // size, src % size
        offsets = set(zip(src_r - rows[inside], src_c - cols[inside]))
        assert len(offsets) == 1


def test_same_key_same_output_and_vmap_equals_loop():
    images = jax.random.uniform(jax.random.key(3), (6, 32, 32, 3))
    keys = jax.random.split(jax.random.key(4), 6)
    for name, fn in TRANSFORMS.items():
        a = fn(keys[0], images[0])
        b = fn(keys[0], images[0])
        np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
        batched = jax.jit(jax.vmap(fn))(keys, images)
        for i in range(6):
            single = fn(keys[i], images[i])
            np.testing.assert_allclose(np.asarray(batched[0][i]), np.asarray(single[0]), atol=1e-6)
            np.testing.assert_array_equal(np.asarray(batched[1][i]), np.asarray(single[1]))


def test_hsv_round_trip_matches_colorsys():
    rgb = np.asarray(jax.random.uniform(jax.random.key(5), (200, 3)))
    hsv = np.asarray(T.rgb_to_hsv(jnp.asarray(rgb)))
    ref = np.array([colorsys.rgb_to_hsv(*p) for p in rgb])
    np.testing.assert_allclose(hsv, ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(T.hsv_to_rgb(jnp.asarray(hsv))), rgb, atol=1e-5)


def test_color_jitter_stays_close_and_in_range():
    image = jax.random.uniform(jax.random.key(6), (32, 32, 3))
    out = T.color_jitter(jax.random.key(7), image, strength=0.1)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert 0 < float(jnp.mean(jnp.abs(out - image))) < 0.2
    np.testing.assert_allclose(
        np.asarray(T.color_jitter(jax.random.key(7), image, strength=0.0)), np.asarray(image), atol=1e-5
    )


def test_fusion_classes_and_bernoulli_assembly():
    images = jax.random.uniform(jax.random.key(8), (256, 32, 32, 3))
    edit = jax.jit(lambda k: T.assemble_batch(k, images, name="cpf"))(jax.random.key(9))
    classes = np.asarray(edit.classes)
    assert set(classes) == {0, 1, 2}
    counts = np.bincount(classes, minlength=3) / len(classes)
    assert abs(counts[0] - 0.5) < 0.1 and abs(counts[1] - 0.25) < 0.08 and abs(counts[2] - 0.25) < 0.08
    originals = classes == 0
    np.testing.assert_array_equal(np.asarray(edit.images)[originals], np.asarray(images)[originals])
    assert np.asarray(edit.masks)[originals].sum() == 0
    assert np.all(np.asarray(edit.masks)[~originals].sum(axis=(1, 2)) > 0)


def test_paired_assembly_has_each_source_twice():
    images = jax.random.uniform(jax.random.key(10), (4, 32, 32, 3))
    edit = T.assemble_batch(jax.random.key(11), images, name="cps", pairing="paired")
    assert edit.images.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(np.asarray(edit.classes), [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(np.asarray(edit.images[:4]), np.asarray(images))


def test_unknown_names_raise():
    image = jnp.zeros((32, 32, 3))
    with pytest.raises(ValueError, match="unknown transform"):
        T.edit_one(jax.random.key(0), image, name="mixup")
    with pytest.raises(ValueError, match="pairing"):
        T.assemble_batch(jax.random.key(0), image[None], name="co", pairing="triplet")


def test_scar_scale_override_for_patches():
    """A 32 px patch of a 256 px image takes scale=1: scars keep their 256 px size (clipped to the patch)."""
    keys = jax.random.split(jax.random.key(12), 200)
    patch = jnp.zeros((32, 32, 3))
    _, default = jax.vmap(lambda k: T.cutpaste_scar(k, patch))(keys)
    _, scaled = jax.vmap(lambda k: T.cutpaste_scar(k, patch, scale=1.0))(keys)
    assert float(scaled.sum(axis=(1, 2)).mean()) > 20 * float(default.sum(axis=(1, 2)).mean())
