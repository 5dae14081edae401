"""ResNet-18 (torchvision layout) with the CutPaste projection head and classifier, in Flax Linen.

Module and parameter names follow torchvision's state-dict keys (``conv1``, ``bn1``, ``layer1_0.conv1``,
``layer2_0.downsample_0`` …) so that ImageNet weights map one to one. Paddings are explicit, as in
PyTorch (Flax's ``SAME`` would pad stride-2 layers asymmetrically).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sla_jax.common.runtime import IM2COL_MAX_PIXELS, platform_defaults
from sla_jax.common.settings import Section, choice, setting

STAGE_SIZES = (2, 2, 2, 2)
STAGE_WIDTHS = (64, 128, 256, 512)
CONV_IMPLS = ("auto", "xla", "im2col")
STEMS = ("imagenet", "small")


@dataclasses.dataclass(frozen=True)
class ModelSettings(Section):
    """``config.model``: the network (ResNet-18 backbone, projection head) and where its backbone starts."""

    SECTION = "model"
    head: tuple = setting((512, 512, 512, 512, 512, 512, 512, 512, 128), "CutPaste's projection head")
    stem: str = setting("imagenet", "imagenet (7×7/2 + max-pool) | small (3×3/1, no pool)")
    conv_impl: str = setting("auto", "auto | xla | im2col")
    dtype: str = setting("float32", "compute dtype of the backbone: float32 | bfloat16 (parameters stay float32)")
    init: str = setting(
        "", '"" = random init; else a backbone from python -m sla_jax.convert_weights (.npz/.safetensors)'
    )

    def check(self) -> None:
        choice("model.stem", self.stem, STEMS)
        choice("model.conv_impl", self.conv_impl, CONV_IMPLS)
        choice("model.dtype", self.dtype, ("float32", "bfloat16"))
        if not self.head or min(self.head) < 1:
            raise ValueError(
                f"config.model.head={tuple(self.head)!r} must be one or more positive widths, e.g. (512, 128)"
            )


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") for convolutions.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Linear default: U(−1/√fan_in, 1/√fan_in) for weight and bias.
dense_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def im2col_conv(x_NHWC: jax.Array, kernel_HWIO: jax.Array, *, strides: int, padding: int) -> jax.Array:
    """Convolution as k² strided slices concatenated on channels, then one matmul.

    Slices (not ``conv_general_dilated_patches``, whose gradient is itself a slow convolution) keep the
    backward pass to pads and adds.
    """
    k = kernel_HWIO.shape[0]
    _, height, width, _ = x_NHWC.shape
    xp = jnp.pad(x_NHWC, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out_h = (height + 2 * padding - k) // strides + 1
    out_w = (width + 2 * padding - k) // strides + 1
    cols = [
        xp[:, i : i + strides * (out_h - 1) + 1 : strides, j : j + strides * (out_w - 1) + 1 : strides, :]
        for i in range(k)
        for j in range(k)
    ]
    return jnp.concatenate(cols, axis=-1) @ kernel_HWIO.reshape(-1, kernel_HWIO.shape[-1])


class Conv(nn.Module):
    """Bias-free 2-D convolution, HWIO kernel, symmetric explicit padding.

    ``impl='im2col'`` computes it as patch extraction + one matmul, which XLA:CPU runs far faster than
    its direct convolution on tiny feature maps; ``'auto'`` picks im2col on CPU for a k > 1 convolution
    whose output map has at most ``im2col_max_pixels`` pixels (layer 4 at 64 px, layers 3-4 at 32-64 px),
    XLA's convolution otherwise (im2col's 9× copy of the input costs more than it saves on larger maps)
    and on every other platform (``sla_jax.common.runtime.platform_defaults``).
    Measured on a 2-core CPU (fwd+bwd, batch 32, ``bench/conv_layers.py``): the 3×3 512-channel
    convolution on a 2×2 map takes 621 ms in XLA and 10 ms as im2col; on a 32×32 map with 64 channels
    39 ms in XLA and 120 ms as im2col. Both give the same numbers (tests).
    """

    features: int
    kernel_size: int
    strides: int = 1
    padding: int = 0
    impl: str = "auto"
    im2col_max_pixels: int = IM2COL_MAX_PIXELS
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param("kernel", conv_init, (k, k, x.shape[-1], self.features), jnp.float32)
        kernel = kernel.astype(self.dtype)
        x = x.astype(self.dtype)
        pad = ((self.padding, self.padding), (self.padding, self.padding))
        out_h = (x.shape[1] + 2 * self.padding - k) // self.strides + 1
        out_w = (x.shape[2] + 2 * self.padding - k) // self.strides + 1
        impl = self.impl
        if impl == "auto":
            small = out_h * out_w <= self.im2col_max_pixels
            impl = platform_defaults(jax.default_backend()).small_map_conv if (small and k > 1) else "xla"
        if impl == "im2col":
            return im2col_conv(x, kernel, strides=self.strides, padding=self.padding)
        if impl != "xla":
            raise ValueError(f"conv impl must be one of {CONV_IMPLS}, got {impl!r}")
        return jax.lax.conv_general_dilated(
            x, kernel, (self.strides, self.strides), pad, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )


def _pool_taps(x_padded, out_h: int, out_w: int) -> list[jax.Array]:
    """The 9 strided (out_h, out_w) views of a 3×3/2 window, in row-major tap order."""
    return [
        x_padded[:, i : i + 2 * (out_h - 1) + 1 : 2, j : j + 2 * (out_w - 1) + 1 : 2, :]
        for i in range(3)
        for j in range(3)
    ]


@functools.lru_cache(maxsize=None)
def _max_pool_for(height: int, width: int):
    """The custom-VJP max-pool for inputs of this spatial size (the size shapes the backward padding)."""
    out_h, out_w = (height - 1) // 2 + 1, (width - 1) // 2 + 1

    def forward(x_NHWC):
        xp = jnp.pad(x_NHWC, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
        taps = _pool_taps(xp, out_h, out_w)
        best, arg = taps[0], jnp.zeros(taps[0].shape, jnp.int8)
        for k, tap in enumerate(taps[1:], 1):
            better = tap > best  # strict: the first maximum wins, as in torch and XLA's select-and-scatter
            best, arg = jnp.where(better, tap, best), jnp.where(better, jnp.int8(k), arg)
        return best, arg

    def backward(arg, grad_NhwC):
        zero = jnp.zeros((), grad_NhwC.dtype)
        total = 0.0
        for k in range(9):
            i, j = divmod(k, 3)
            routed = jnp.where(arg == k, grad_NhwC, zero)
            total = total + jax.lax.pad(
                routed,
                zero,
                (
                    (0, 0, 0),
                    (i, height + 2 - i - (2 * out_h - 1), 1),
                    (j, width + 2 - j - (2 * out_w - 1), 1),
                    (0, 0, 0),
                ),
            )
        return (total[:, 1 : height + 1, 1 : width + 1, :],)

    pool = jax.custom_vjp(lambda x: forward(x)[0])
    pool.defvjp(forward, backward)
    return pool


def max_pool_3x3_s2(x_NHWC: jax.Array) -> jax.Array:
    """3×3/2 max-pool with padding 1 (torchvision's stem): the values and gradient of ``nn.max_pool``.

    The gradient goes to the first maximum of each window, routed back by a stored tap index (int8)
    through 9 interior-padded selects. XLA:CPU's own gradient of ``reduce_window`` (select-and-scatter,
    expanded with index tracking) cost about a sixth of a whole ResNet-18 training step at 128 px
    (``bench/train_step.py --profile``).
    """
    return _max_pool_for(int(x_NHWC.shape[1]), int(x_NHWC.shape[2]))(x_NHWC)


POOL_IMPLS = ("custom_vjp", "reduce_window")


def max_pool_reduce_window(x_NHWC: jax.Array) -> jax.Array:
    """The stem's 3×3/2 max-pool as a −inf pad and XLA's ``reduce_window``: the values of
    :func:`max_pool_3x3_s2`, in the plain form that converters (ONNX ``MaxPool``) understand."""
    padded = jnp.pad(x_NHWC, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    return nn.max_pool(padded, window_shape=(3, 3), strides=(2, 2), padding="VALID")


def batch_norm(train: bool, name: str, dtype=jnp.float32) -> nn.BatchNorm:
    """BatchNorm with torchvision's defaults (momentum 0.1 ⇔ Flax 0.9, eps 1e-5)."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name)


class BasicBlock(nn.Module):
    features: int
    strides: int
    conv_impl: str = "auto"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        def conv(f, k, s, p, name):
            return Conv(f, k, s, p, impl=self.conv_impl, dtype=self.dtype, name=name)

        y = conv(self.features, 3, self.strides, 1, "conv1")(x)
        y = nn.relu(batch_norm(train, "bn1", self.dtype)(y))
        y = conv(self.features, 3, 1, 1, "conv2")(y)
        y = batch_norm(train, "bn2", self.dtype)(y)
        if x.shape[-1] != self.features or self.strides != 1:
            x = conv(self.features, 1, self.strides, 0, "downsample_0")(x)
            x = batch_norm(train, "downsample_1", self.dtype)(x)
        return nn.relu(y + x)


class ResNet18(nn.Module):
    """ResNet-18 backbone returning global-average-pooled 512-d features.

    ``stem='imagenet'``: torchvision's 7×7/2 convolution and 3×3/2 max-pool. ``stem='small'``: a 3×3/1
    convolution and no max-pool, for 32 px patches (the ImageNet stem leaves a 1×1 map there).
    """

    stem: str = "imagenet"
    conv_impl: str = "auto"
    dtype: jnp.dtype = jnp.float32
    pool_impl: str = "custom_vjp"  # the stem's max-pool: custom_vjp (fast CPU gradient) | reduce_window (export)

    @nn.compact
    def __call__(self, x, *, train: bool):
        if self.stem == "imagenet":
            x = Conv(64, 7, 2, 3, impl=self.conv_impl, dtype=self.dtype, name="conv1")(x)
        elif self.stem == "small":
            x = Conv(64, 3, 1, 1, impl=self.conv_impl, dtype=self.dtype, name="conv1")(x)
        else:
            raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
        x = nn.relu(batch_norm(train, "bn1", self.dtype)(x))
        if self.stem == "imagenet":
            if self.pool_impl not in POOL_IMPLS:
                raise ValueError(f"pool impl must be one of {POOL_IMPLS}, got {self.pool_impl!r}")
            x = max_pool_3x3_s2(x) if self.pool_impl == "custom_vjp" else max_pool_reduce_window(x)
        for stage, (blocks, width) in enumerate(zip(STAGE_SIZES, STAGE_WIDTHS)):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(
                    width, strides, conv_impl=self.conv_impl, dtype=self.dtype, name=f"layer{stage + 1}_{block}"
                )(x, train=train)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


class ProjectionHead(nn.Module):
    """CutPaste's head: ``Linear → BatchNorm → ReLU`` per width in ``widths``, then the classifier."""

    widths: Sequence[int]
    num_classes: int

    @nn.compact
    def __call__(self, features, *, train: bool):
        x = features
        for i, width in enumerate(self.widths):
            x = nn.Dense(width, kernel_init=dense_init, bias_init=_torch_bias_init(x.shape[-1]), name=f"dense{i}")(x)
            x = nn.relu(batch_norm(train, f"bn{i}")(x))
        return nn.Dense(
            self.num_classes, kernel_init=dense_init, bias_init=_torch_bias_init(x.shape[-1]), name="classifier"
        )(x)


class PretextNet(nn.Module):
    """Backbone ``f`` plus head/classifier ``g``; returns ``(logits, pooled_features)``."""

    num_classes: int = 2
    head: Sequence[int] = (512, 128)
    stem: str = "imagenet"
    conv_impl: str = "auto"
    dtype: jnp.dtype = jnp.float32
    pool_impl: str = "custom_vjp"

    @nn.compact
    def __call__(self, images_BxHxWxC, *, train: bool):
        features = ResNet18(
            stem=self.stem, conv_impl=self.conv_impl, dtype=self.dtype, pool_impl=self.pool_impl, name="backbone"
        )(images_BxHxWxC, train=train)
        logits = ProjectionHead(tuple(self.head), self.num_classes, name="head")(features, train=train)
        return logits, features


def normalize(images_01: jax.Array) -> jax.Array:
    """ImageNet mean/std normalisation of images in [0, 1] (applied after transforms and labels)."""
    return (images_01 - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def count_params(tree) -> int:
    """Number of scalars in a parameter pytree."""
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(tree))
