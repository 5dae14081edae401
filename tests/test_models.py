import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sla_jax.training.models import (
    Conv,
    PretextNet,
    ResNet18,
    count_params,
    im2col_conv,
    max_pool_3x3_s2,
    max_pool_reduce_window,
)


def test_backbone_parameter_count_matches_torchvision_minus_fc():
    variables = jax.eval_shape(lambda k: ResNet18().init(k, jnp.zeros((1, 64, 64, 3)), train=False), jax.random.key(0))
    assert count_params(variables["params"]) == 11_689_512 - (512 * 1000 + 1000)
    assert "layer4_1" in variables["params"] and "downsample_0" in variables["params"]["layer2_0"]


@pytest.mark.parametrize("stem,size", [("imagenet", 64), ("small", 32)])
def test_output_shapes(stem, size):
    model = PretextNet(num_classes=3, head=(64, 32), stem=stem)
    variables = model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)
    logits, feats = model.apply(variables, jnp.zeros((5, size, size, 3)), train=False)
    assert logits.shape == (5, 3) and feats.shape == (5, 512)


def test_batchnorm_train_vs_eval():
    model = PretextNet(num_classes=2, head=(16,))
    x = jax.random.normal(jax.random.key(1), (8, 32, 32, 3)) * 3 + 1
    variables = jax.jit(lambda k: model.init(k, x[:1], train=False))(jax.random.key(0))
    train_fn = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    eval_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
    (_, f_train), updates = train_fn(variables, x)
    stem_stats = updates["batch_stats"]["backbone"]["bn1"]
    assert not np.allclose(np.asarray(stem_stats["mean"]), 0)  # running statistics moved
    old = variables["batch_stats"]["backbone"]["bn1"]["mean"]
    assert np.all(np.asarray(old) == 0)
    # Eval mode uses running statistics: each sample's output does not depend on the rest of the batch.
    _, f_eval_all = eval_fn(variables, x)
    _, f_eval_one = eval_fn(variables, x[:2])
    np.testing.assert_allclose(np.asarray(f_eval_all[:2]), np.asarray(f_eval_one), rtol=1e-5, atol=1e-4)
    _, f_train_two = train_fn(variables, x[:2])[0]
    assert not np.allclose(np.asarray(f_train[:2]), np.asarray(f_train_two), atol=1e-4)


@settings(max_examples=8, deadline=None)
@given(
    size=st.integers(2, 12),
    channels=st.integers(1, 8),
    k_s_p=st.sampled_from([(3, 1, 1), (3, 2, 1), (1, 2, 0), (7, 2, 3)]),
)
def test_im2col_equals_xla_convolution(size, channels, k_s_p):
    k, s, p = k_s_p
    x = jax.random.normal(jax.random.key(size), (2, size, size, channels))
    w = jax.random.normal(jax.random.key(channels), (k, k, channels, 5))
    ref = jax.lax.conv_general_dilated(x, w, (s, s), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(
        np.asarray(im2col_conv(x, w, strides=s, padding=p)), np.asarray(ref), rtol=1e-4, atol=1e-4
    )


def test_conv_module_impls_agree_in_gradient():
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 16))
    a, b = Conv(8, 3, 1, 1, impl="xla"), Conv(8, 3, 1, 1, impl="im2col")
    params = a.init(jax.random.key(1), x)
    ga = jax.grad(lambda p: jnp.sum(a.apply(p, x) ** 2))(params)
    gb = jax.grad(lambda p: jnp.sum(b.apply(p, x) ** 2))(params)
    np.testing.assert_allclose(
        np.asarray(ga["params"]["kernel"]), np.asarray(gb["params"]["kernel"]), rtol=1e-4, atol=1e-4
    )


@pytest.mark.slow
@settings(max_examples=10, deadline=None)
@given(height=st.integers(1, 19), width=st.integers(1, 19), channels=st.integers(1, 4), ties=st.booleans())
def test_max_pool_equals_flax_in_values_and_gradient(height, width, channels, ties):
    """The custom-VJP stem max-pool against nn.max_pool (reduce_window and its select-and-scatter
    gradient), odd sizes included; ``ties``: integer-valued inputs after a ReLU, full of equal maxima."""
    x = jax.random.normal(jax.random.key(height * 31 + width), (2, height, width, channels)) * 2
    if ties:
        x = jnp.round(jax.nn.relu(x))

    def ref(v):
        return nn.max_pool(v, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    np.testing.assert_array_equal(np.asarray(max_pool_3x3_s2(x)), np.asarray(ref(x)))
    np.testing.assert_array_equal(np.asarray(max_pool_reduce_window(x)), np.asarray(ref(x)))
    g = jax.random.normal(jax.random.key(7), ref(x).shape)
    ours = jax.jit(lambda v: jax.vjp(max_pool_3x3_s2, v)[1](g)[0])(x)
    theirs = jax.vjp(ref, x)[1](g)[0]
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6, atol=1e-6)


def test_auto_conv_policy_on_cpu():
    """``auto`` takes im2col on CPU only for a k > 1 convolution whose output has at most 16 pixels
    (the 2×2 and 4×4 maps where XLA:CPU's direct convolution is slow), XLA's convolution otherwise."""

    def jaxpr(size, k):
        return str(
            jax.make_jaxpr(lambda x: Conv(4, k, 1, k // 2).init_with_output(jax.random.key(0), x))(
                jnp.zeros((1, size, size, 2))
            )
        )

    assert "conv_general_dilated" not in jaxpr(4, 3) and "conv_general_dilated" in jaxpr(5, 3)
    assert "conv_general_dilated" in jaxpr(2, 1)
