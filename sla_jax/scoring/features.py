"""Features of images and of their patches under a trained backbone: eval-mode pooled features, batched,
padded to few shapes and sharded over the mesh, each program compiled once per model and options; a
named progress bar per phase. The main task (:mod:`sla_jax.scoring.detection`) scores these."""

from __future__ import annotations

import functools
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from sla_jax import localization
from sla_jax.training.models import PretextNet, normalize


def pooled_features(variables, images_uint8: jax.Array, *, model: PretextNet, l2_normalize: bool) -> jax.Array:
    """Eval-mode pooled backbone features of uint8 images, optionally L2-normalised (traceable)."""
    _, feats = model.apply(variables, normalize(images_uint8.astype(jnp.float32) / 255.0), train=False)
    return l2_normalized(feats) if l2_normalize else feats


def l2_normalized(feats: jax.Array) -> jax.Array:
    """Each feature vector divided by its L2 norm (a zero vector stays zero)."""
    return feats / jnp.maximum(jnp.linalg.norm(feats, axis=-1, keepdims=True), 1e-12)


def padded_batch(n: int, *, batch_size: int, n_dev: int) -> int:
    """The batch a chunk of ``n`` images is padded to: the device count times the smallest power of two
    that holds them, at most ``batch_size``. Few compiled shapes, and scoring one image does not pay for a
    whole evaluation batch (``sla_jax.predict`` was 8× slower than needed on 8 images with batch 64)."""
    padded = n_dev
    while padded < n:
        padded *= 2
    return min(padded, batch_size)


def phase_bar(total: int, *, progress: str) -> tqdm:
    """A progress bar over the images of one evaluation phase named ``progress``; silent when it is ""."""
    return tqdm(total=total, desc=progress, unit="image", disable=not progress, dynamic_ncols=True, file=sys.stdout)


def embed(
    variables,
    images_uint8,
    *,
    model: PretextNet,
    batch_size: int,
    mesh,
    l2_normalize: bool = True,
    stacked: bool = False,
    progress: str = "",
) -> np.ndarray:
    """Pooled backbone features (N, 512) of uint8 images in eval mode, batched and sharded over ``mesh``;
    a progress bar named ``progress`` when that is given.

    ``stacked``: ``variables`` carry a leading member axis (a vmapped ensemble) and the features are
    (K, N, 512), all members embedded in one pass per batch.
    """
    n_dev = mesh.devices.size
    batch_size = max(n_dev, (batch_size // n_dev) * n_dev)
    batch_sharding = NamedSharding(mesh, P("data"))
    forward = _embedding_program(model, l2_normalize=l2_normalize, stacked=stacked, mesh=mesh)
    variables = jax.device_put(variables, NamedSharding(mesh, P()))

    out = []
    with phase_bar(len(images_uint8), progress=progress) as bar:
        for start in range(0, len(images_uint8), batch_size):
            chunk = np.asarray(images_uint8[start : start + batch_size])
            padded = padded_batch(len(chunk), batch_size=batch_size, n_dev=n_dev)
            pad = padded - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
            feats = forward(variables, jax.device_put(chunk, batch_sharding))
            out.append(np.asarray(feats)[..., : padded - pad, :])
            bar.update(padded - pad)
    if not out:
        return np.zeros((0, 512), np.float32)
    return np.concatenate(out, axis=-2)


def patch_features(
    variables,
    images_uint8,
    *,
    model: PretextNet,
    patch_size: int,
    stride: int,
    batch_size: int,
    mesh,
    l2_normalize: bool = True,
    progress: str = "",
) -> np.ndarray:
    """Features (N, Nh, Nw, 512) of every ``patch_size`` patch at ``stride`` of each image.

    Patches are cut inside jit (``localization.extract_patches``) and embedded in chunks of at most
    ``batch_size`` patches (``lax.map`` inside the same jit), which bounds the memory: a 256 px image has
    3,249 patches. A progress bar named ``progress`` when that is given.
    """
    n, height, width = images_uint8.shape[:3]
    n_h = localization.num_patches(height, size=patch_size, stride=stride)
    n_w = localization.num_patches(width, size=patch_size, stride=stride)
    group = max(1, batch_size // (n_h * n_w))
    replicated = NamedSharding(mesh, P())
    forward = _patch_program(
        model,
        patch_size=patch_size,
        stride=stride,
        n_h=n_h,
        n_w=n_w,
        group=group,
        batch_size=batch_size,
        l2_normalize=l2_normalize,
        mesh=mesh,
    )
    variables = jax.device_put(variables, replicated)
    out = []
    with phase_bar(n, progress=progress) as bar:
        for start in range(0, n, group):
            chunk = np.asarray(images_uint8[start : start + group])
            pad = group - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
            out.append(np.asarray(forward(variables, jax.device_put(chunk, replicated)))[: group - pad])
            bar.update(group - pad)
    return np.concatenate(out)


@functools.lru_cache(maxsize=32)
def _embedding_program(model: PretextNet, *, l2_normalize: bool, stacked: bool, mesh):
    """The jitted embedding of :func:`embed`, made once per model and options (a new jit per call would
    trace again at every call, as for each chunk of ``sla_jax.predict``)."""
    features = partial(pooled_features, model=model, l2_normalize=l2_normalize)
    if stacked:
        features = jax.vmap(features, in_axes=(0, None))
    return jax.jit(features, out_shardings=NamedSharding(mesh, P()))


@functools.lru_cache(maxsize=32)
def _patch_program(
    model: PretextNet,
    *,
    patch_size: int,
    stride: int,
    n_h: int,
    n_w: int,
    group: int,
    batch_size: int,
    l2_normalize: bool,
    mesh,
):
    """The jitted patch embedding of :func:`patch_features` for ``group`` images at a time."""
    per_pass = min(batch_size, group * n_h * n_w)
    n_passes = -(-group * n_h * n_w // per_pass)

    def forward(variables, images):
        def embed_chunk(patches):
            if per_pass % mesh.devices.size == 0:
                patches = jax.lax.with_sharding_constraint(patches, NamedSharding(mesh, P("data")))
            return pooled_features(variables, patches, model=model, l2_normalize=l2_normalize)

        patches = localization.extract_patches(images, size=patch_size, stride=stride)
        flat = patches.reshape((-1, patch_size, patch_size, images.shape[-1]))
        total = flat.shape[0]
        flat = jnp.pad(flat, ((0, n_passes * per_pass - total), (0, 0), (0, 0), (0, 0)))
        feats = jax.lax.map(embed_chunk, flat.reshape((n_passes, per_pass) + flat.shape[1:]))
        return feats.reshape((n_passes * per_pass, -1))[:total].reshape((images.shape[0], n_h, n_w, -1))

    return jax.jit(forward, out_shardings=NamedSharding(mesh, P()))
