"""FLOPs counted from the jaxpr (sla_jax.training.flops) against ResNet-18's formula written out by hand."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import pytest

from sla_jax.training import flops, pretext
from sla_jax.training.models import PretextNet
from sla_jax.training.state import data_mesh, init_state, make_optimizer


def resnet18_macs(size: int) -> int:
    """Multiply-adds of torchvision's ResNet-18 backbone (ImageNet stem, no classifier) on one size×size image:
    7×7/2 stem, then per stage two basic blocks of two 3×3 convolutions, the first of stages 2–4 with stride 2
    and a 1×1/2 projection."""
    side = size // 2
    macs = side * side * 7 * 7 * 3 * 64  # stem; the max-pool halves the side again
    side //= 2
    channels = 64
    for stage, width in enumerate((64, 128, 256, 512)):
        if stage:
            side //= 2
            macs += side * side * (9 * channels * width + 9 * width * width + channels * width)  # block 1 + 1×1
        else:
            macs += side * side * 2 * 9 * channels * width
        macs += side * side * 2 * 9 * width * width  # block 2
        channels = width
    return macs


def test_hand_formula_is_the_known_resnet18_count():
    """1.82 G multiply-adds at 224 px (torchvision's table), 2.37 G at 256 px (the paper's size)."""
    assert resnet18_macs(224) == pytest.approx(1.814e9, rel=2e-3)
    assert resnet18_macs(256) == pytest.approx(2.37e9, rel=2e-3)


@pytest.mark.parametrize("conv_impl", ["xla", "im2col"])
@pytest.mark.parametrize("size", [64, 224])
def test_counted_forward_flops_equal_the_formula(size, conv_impl):
    """The forward pass of the backbone and a head: 2 FLOPs per multiply-add, convolutions as XLA
    convolutions or as im2col matrix products (the CPU path) alike."""
    head = (512, 128)
    model = PretextNet(num_classes=2, head=head, conv_impl=conv_impl)
    images = jax.ShapeDtypeStruct((3, size, size, 3), jnp.float32)
    variables = jax.eval_shape(partial(model.init, train=False), jax.random.key(0), images)
    counted = flops.count(partial(model.apply, train=False), variables, images)
    head_macs = 512 * 512 + 512 * 128 + 128 * 2
    assert counted == 2 * 3 * (resnet18_macs(size) + head_macs)


def test_a_training_step_costs_three_forward_passes_less_the_stem_input_gradient():
    """The real step (edit, labels, forward, backward, update): the backward pass computes the gradient of each
    layer's weights and input, the same multiply-adds as its forward, except the input gradient of the stem,
    which nothing needs. Strided convolutions' input gradients count their real taps only."""
    size, batch = 64, 8
    model = PretextNet(num_classes=2, head=(32,))
    optimizer = make_optimizer(learning_rate=0.03, momentum=0.9, weight_decay=3e-5, total_steps=10)
    state = jax.eval_shape(partial(init_state, model=model, optimizer=optimizer, image_size=size), jax.random.key(0))
    step = pretext.compile_train_step(
        model=model, optimizer=optimizer, mesh=data_mesh(), spec=pretext.StepSpec(batch_size=batch, transform="cps")
    )
    images = jax.ShapeDtypeStruct((16, size, size, 3), jnp.uint8)
    counted = flops.count(step, state, images, jax.random.key(1), pretext.HParams.create())
    forward = 2 * batch * (resnet18_macs(size) + 512 * 32 + 32 * 2)
    stem = 2 * batch * (size // 2) ** 2 * 7 * 7 * 3 * 64
    assert counted == 3 * forward - stem
