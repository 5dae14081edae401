import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import windows
from sklearn.metrics import roc_auc_score

from sla_jax import localization as L
from sla_jax import metrics


def fcdd_gkern(k, std):
    """FCDD's gkern, written as in its source (scipy.signal.gaussian, np.insert, outer)."""
    if k % 2 == 0:
        gkern1d = windows.gaussian(k - 1, std=std).reshape(k - 1, 1)
        gkern1d = np.insert(gkern1d, (k - 1) // 2, gkern1d[(k - 1) // 2]) / 2
    else:
        gkern1d = windows.gaussian(k, std=std).reshape(k, 1)
    return np.outer(gkern1d, gkern1d)


def stamp_loop(scores_Bxhxw, kernel, stride):
    b, h, w = scores_Bxhxw.shape
    k = kernel.shape[0]
    out = np.zeros((b, (h - 1) * stride + k, (w - 1) * stride + k))
    for i in range(h):
        for j in range(w):
            out[:, i * stride : i * stride + k, j * stride : j * stride + k] += (
                scores_Bxhxw[:, i, j, None, None] * kernel
            )
    return out


# --- kernel and receptive-field upsampling ---------------------------------------------------------------------


@pytest.mark.parametrize("field,sigma", [(32, 10.0), (16, 4.0), (7, 2.0), (2, 1.0), (1, 3.0)])
def test_gaussian_kernel_is_fcdd_gkern(field, sigma):
    kernel = np.asarray(L.gaussian_kernel(field, sigma))
    np.testing.assert_allclose(kernel, fcdd_gkern(field, sigma), rtol=1e-6, atol=1e-7)


def test_even_kernel_has_four_equal_centre_taps_and_is_not_normalised():
    kernel = np.asarray(L.gaussian_kernel())
    assert kernel.shape == (32, 32)
    np.testing.assert_allclose(kernel[15:17, 15:17], 0.25, rtol=1e-7)
    assert kernel.max() == pytest.approx(0.25) and kernel.sum() > 10.0
    np.testing.assert_array_equal(kernel, kernel.T)
    np.testing.assert_array_equal(kernel, kernel[::-1, ::-1])


@pytest.mark.parametrize("h,w,k,stride", [(3, 5, 4, 2), (4, 4, 3, 3), (2, 3, 3, 5)])
def test_stamp_sum_places_the_kernel_unflipped(h, w, k, stride):
    rng = np.random.default_rng(h * w + k)
    scores = rng.normal(size=(2, h, w)).astype(np.float32)
    kernel = rng.normal(size=(k, k)).astype(np.float32)
    got = np.asarray(jax.jit(L.stamp_sum, static_argnames="stride")(scores, kernel, stride=stride))
    np.testing.assert_allclose(got, stamp_loop(scores, kernel, stride), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "h,w,field,stride,sigma", [(5, 5, 8, 2, 3.0), (4, 7, 6, 3, 2.0), (6, 3, 5, 1, 1.5), (57, 57, 32, 4, 10.0)]
)
def test_rfu_matches_explicit_stamping(h, w, field, stride, sigma):
    rng = np.random.default_rng(h + 10 * w)
    scores = rng.random((2, h, w)).astype(np.float32) * 100
    rfu = jax.jit(L.receptive_field_upsample, static_argnames=("field", "stride", "normalize"))
    got = np.asarray(rfu(scores, field=field, stride=stride, sigma=sigma))
    assert got.shape == (2, (h - 1) * stride + field, (w - 1) * stride + field)
    expected = stamp_loop(scores.astype(np.float64), fcdd_gkern(field, sigma), stride)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_rfu_maps_57_to_256_and_summed_stamps_fade_at_the_border():
    maps = np.asarray(L.receptive_field_upsample(jnp.ones((1, 57, 57))))
    assert maps.shape == (1, 256, 256)
    assert L.upsampled_size(57) == 256 and L.num_patches(256) == 57
    kernel = np.asarray(L.gaussian_kernel())
    assert maps[0, 0, 0] == pytest.approx(kernel[0, 0], rel=1e-6)
    assert maps[0, 128, 128] > 30 * maps[0, 0, 0]


@pytest.mark.parametrize("h,w,field,stride", [(57, 57, 32, 4), (3, 6, 8, 2), (4, 4, 5, 5)])
def test_normalised_rfu_of_a_constant_is_that_constant(h, w, field, stride):
    maps = np.asarray(L.receptive_field_upsample(jnp.full((2, h, w), 3.7), field=field, stride=stride, normalize=True))
    np.testing.assert_allclose(maps, 3.7, rtol=1e-5)


def test_normalised_rfu_is_a_weighted_average_and_gaps_are_zero():
    rng = np.random.default_rng(0)
    scores = rng.random((1, 6, 5)).astype(np.float32)
    maps = np.asarray(L.receptive_field_upsample(scores, field=8, stride=3, normalize=True))
    assert scores.min() - 1e-6 <= maps.min() and maps.max() <= scores.max() + 1e-6
    gappy = np.asarray(L.receptive_field_upsample(jnp.ones((1, 2, 2)), field=3, stride=5, normalize=True))
    np.testing.assert_array_equal(gappy[0, :, 3:5], 0.0)
    np.testing.assert_allclose(gappy[0, :3, :3], 1.0, rtol=1e-6)


def test_rfu_batches_vmaps_and_accepts_a_single_map():
    rng = np.random.default_rng(1)
    scores = jnp.asarray(rng.random((3, 2, 5, 4)), jnp.float32)
    batched = L.receptive_field_upsample(scores.reshape(6, 5, 4), field=6, stride=2)
    vmapped = jax.jit(jax.vmap(lambda s: L.receptive_field_upsample(s, field=6, stride=2)))(scores)
    np.testing.assert_allclose(np.asarray(vmapped).reshape(6, 14, 12), np.asarray(batched), rtol=1e-6)
    single = L.receptive_field_upsample(scores[0, 0], field=6, stride=2)
    np.testing.assert_allclose(np.asarray(single), np.asarray(batched[0]), rtol=1e-6)
    sigmas = jnp.array([2.0, 5.0])
    per_sigma = jax.vmap(lambda s: L.receptive_field_upsample(scores[0], field=6, stride=2, sigma=s))(sigmas)
    np.testing.assert_allclose(
        np.asarray(per_sigma[1]),
        np.asarray(L.receptive_field_upsample(scores[0], field=6, stride=2, sigma=5.0)),
        rtol=1e-6,
    )


# --- patches ----------------------------------------------------------------------------------------------------


def test_extract_patches_matches_slicing():
    rng = np.random.default_rng(2)
    images = rng.random((2, 48, 40, 3)).astype(np.float32)
    patches = np.asarray(jax.jit(L.extract_patches, static_argnames=("size", "stride"))(images, size=16, stride=8))
    assert patches.shape == (2, 5, 4, 16, 16, 3)
    for i in range(5):
        for j in range(4):
            np.testing.assert_array_equal(patches[:, i, j], images[:, 8 * i : 8 * i + 16, 8 * j : 8 * j + 16])
    vmapped = jax.vmap(lambda im: L.extract_patches(im, size=16, stride=8))(images[:, None])
    np.testing.assert_array_equal(np.asarray(vmapped)[:, 0], patches)
    np.testing.assert_array_equal(np.asarray(L.extract_patches(images[0], size=16, stride=8)), patches[0])


def test_extract_patches_of_256_gives_57x57():
    shape = jax.eval_shape(L.extract_patches, jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)).shape
    assert shape == (2, 57, 57, 32, 32, 3)


def test_random_patches_are_inside_and_equal_the_slice():
    b, h, w, c, size = 64, 11, 13, 2, 9
    images = jnp.arange(b * h * w * c, dtype=jnp.float32).reshape(b, h, w, c)
    key = jax.random.key(0)
    patches = np.asarray(jax.jit(L.random_patches, static_argnames="size")(key, images, size=size))
    assert patches.shape == (b, size, size, c)
    first = patches[:, 0, 0, 0].astype(np.int64) // c
    rows, cols = (first % (h * w)) // w, first % w
    assert np.all(first // (h * w) == np.arange(b))
    assert rows.min() == 0 and rows.max() == h - size and cols.min() == 0 and cols.max() == w - size
    for k in range(b):
        np.testing.assert_array_equal(
            patches[k], np.asarray(images[k, rows[k] : rows[k] + size, cols[k] : cols[k] + size])
        )
    corners = np.asarray(L.random_corners(key, num=b, height=h, width=w, size=size))
    np.testing.assert_array_equal(corners, np.stack([rows, cols], axis=1))
    other = np.asarray(L.random_patches(jax.random.key(1), images, size=size))
    assert not np.array_equal(other, patches)


def test_random_patches_vmap_over_keys():
    images = jnp.asarray(np.random.default_rng(3).random((2, 10, 10, 3)), jnp.float32)
    keys = jax.random.split(jax.random.key(4), 3)
    out = jax.vmap(lambda k: L.random_patches(k, images, size=4))(keys)
    assert out.shape == (3, 2, 4, 4, 3)
    np.testing.assert_array_equal(np.asarray(out[2]), np.asarray(L.random_patches(keys[2], images, size=4)))
    with pytest.raises(ValueError):
        L.random_patches(keys[0], images, size=11)


def test_image_scores_are_map_maxima():
    maps = np.random.default_rng(5).random((3, 2, 7, 6)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(L.image_scores_from_maps(maps[0])), maps[0].max(axis=(1, 2)))
    vmapped = jax.vmap(L.image_scores_from_maps)(maps)
    np.testing.assert_array_equal(np.asarray(vmapped), maps.max(axis=(2, 3)))


# --- pixel metrics ----------------------------------------------------------------------------------------------


def test_pixel_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(6)
    masks = (rng.random((4, 30, 30)) < 0.2).astype(np.uint8) * 255
    maps = np.round(rng.random((4, 30, 30)) + 0.3 * (masks > 0), 1).astype(np.float32)
    expected = roc_auc_score(masks.ravel() > 0, maps.ravel())
    assert L.pixel_auroc(maps, masks) == pytest.approx(expected, abs=1e-12)
    assert L.pixel_auroc(maps, masks) == pytest.approx(float(metrics.auroc(maps, masks > 0)), abs=1e-5)
    assert np.isnan(L.pixel_auroc(maps, np.zeros_like(masks)))


def separated_rectangles(rng, num_images, cells=3, cell=8):
    """Masks of rectangles kept ≥ 2 pixels apart, so their regions are known without labelling."""
    masks = np.zeros((num_images, cells * cell, cells * cell), bool)
    regions = []
    for n in range(num_images):
        for i in range(cells):
            for j in range(cells):
                if rng.random() < 0.5:
                    continue
                top, left = rng.integers(1, cell - 2, size=2)
                bottom, right = rng.integers(top + 1, cell, size=1)[0], rng.integers(left + 1, cell, size=1)[0]
                region = np.zeros(masks.shape[1:], bool)
                region[i * cell + top : i * cell + bottom, j * cell + left : j * cell + right] = True
                masks[n] |= region
                regions.append((n, region))
    return masks, regions


def reference_aupro(maps, masks, regions, max_fpr):
    """Threshold loop with explicit per-region overlaps and np.trapezoid."""
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        flagged = maps >= t
        fprs.append(flagged[~masks].mean())
        pros.append(np.mean([flagged[n][region].mean() for n, region in regions]))
    fprs, pros = np.array(fprs), np.array(pros)
    kept = int(np.sum(fprs <= max_fpr))
    x, y = fprs[:kept], pros[:kept]
    if kept < fprs.size and x[-1] < max_fpr:
        y = np.append(y, np.interp(max_fpr, fprs[kept - 1 : kept + 1], pros[kept - 1 : kept + 1]))
        x = np.append(x, max_fpr)
    return np.trapezoid(y, x) / max_fpr


def two_squares():
    masks = np.zeros((1, 12, 12), bool)
    masks[0, 1:4, 1:4] = masks[0, 7:10, 7:10] = True
    return masks


def test_aupro_perfect_and_inverted():
    masks = two_squares()
    assert L.aupro(masks.astype(np.float32), masks) == 1.0
    assert L.aupro(1.0 - masks, masks) == 0.0


def test_aupro_half_the_regions_found_is_one_half():
    masks = two_squares()
    maps = np.full(masks.shape, 0.5)
    maps[0, 1:4, 1:4], maps[0, 7:10, 7:10] = 1.0, 0.0
    assert L.aupro(maps, masks) == pytest.approx(0.5, abs=1e-15)
    assert L.aupro(maps, masks, max_fpr=1.0) == pytest.approx(0.5, abs=1e-15)


def test_aupro_interpolates_linearly_across_tied_scores():
    masks = two_squares()
    maps = np.zeros(masks.shape)
    maps[0, 1:4, 1:4] = 1.0
    fpr, pro = L.pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0, 0, 1, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 1, 1])
    assert L.aupro(maps, masks) == pytest.approx((0.5 + 0.65) / 2, abs=1e-15)


def test_regions_are_eight_connected():
    masks = np.zeros((2, 5, 5), bool)
    masks[0, 0, 0] = masks[0, 0, 1] = masks[0, 1, 2] = True
    masks[1, 3, 3] = True
    labels = L.region_labels(masks)
    assert set(labels[0][masks[0]]) == {1} and set(labels[1][masks[1]]) == {2}
    maps = np.full(masks.shape, 0.5)
    maps[0, 0, 0] = maps[0, 0, 1] = maps[1, 3, 3] = 1.0
    maps[0, 1, 2] = 0.0
    assert L.aupro(maps, masks) == pytest.approx((2 / 3 + 1) / 2, abs=1e-15)


@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 1.0])
@pytest.mark.parametrize("levels", [10, None])
def test_aupro_matches_threshold_loop(max_fpr, levels):
    rng = np.random.default_rng(7)
    masks, regions = separated_rectangles(rng, 3)
    maps = rng.random(masks.shape) + 0.4 * masks * rng.random((len(masks), 1, 1))
    if levels is not None:
        maps = np.round(maps * levels) / levels
    expected = reference_aupro(maps, masks, regions, max_fpr)
    assert L.aupro(maps, masks, max_fpr=max_fpr) == pytest.approx(expected, abs=1e-12)


def test_aupro_on_an_fpr_grid_is_close_to_exact():
    rng = np.random.default_rng(8)
    masks, _ = separated_rectangles(rng, 6)
    maps = rng.random(masks.shape) + 0.5 * masks
    exact = L.aupro(maps, masks)
    for num in (50, 200):
        approx = L.aupro(maps, masks, num_thresholds=num, exact_limit=0)
        assert abs(approx - exact) <= 0.5 / (num - 1)


def test_aupro_is_nan_without_defects():
    maps = np.random.default_rng(9).random((2, 8, 8))
    assert np.isnan(L.aupro(maps, np.zeros((2, 8, 8))))
    assert np.isnan(L.aupro(maps, np.ones((2, 8, 8))))


def test_rfu_as_matrix_products_equals_the_transposed_convolution():
    """The separable form A·S·Bᵀ (for graphs without transposed convolutions) equals FCDD's transposed
    convolution, summed and normalised, on rectangular maps and with a leading batch axis."""
    scores = jax.random.uniform(jax.random.key(0), (3, 9, 7)) * 100
    for normalize in (False, True):
        for stride, field in ((4, 32), (8, 16)):
            conv = L.receptive_field_upsample(scores, field=field, stride=stride, normalize=normalize)
            matmul = L.receptive_field_upsample(
                scores, field=field, stride=stride, normalize=normalize, method="matmul"
            )
            assert matmul.shape == conv.shape == (3, 8 * stride + field, 6 * stride + field)
            np.testing.assert_allclose(np.asarray(matmul), np.asarray(conv), rtol=1e-5, atol=1e-3)
