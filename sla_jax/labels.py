"""Soft label assignment (paper eq. 6–9), hard labels, and soft-target cross-entropy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

LABEL_MODES = ("soft", "hard")


def pixel_difference(original: jax.Array, edited: jax.Array) -> jax.Array:
    """Δ = Σ_c |x − x̃| per pixel (eq. 7); a 1-channel or H×W image counts as 3 replicated channels."""
    diff = jnp.abs(original.astype(jnp.float32) - edited.astype(jnp.float32))
    if diff.ndim == 2:
        return 3.0 * diff
    return jnp.sum(diff, axis=-1) * (3.0 / diff.shape[-1] if diff.shape[-1] == 1 else 1.0)


def changed_fraction(original: jax.Array, edited: jax.Array, mask: jax.Array, *, epsilon: float = 0.02) -> jax.Array:
    """V' = #{Δ > ε} / area(mask), clipped to [0, 1] (eq. 6 and 8); 0 for an empty mask."""
    changed = jnp.sum(pixel_difference(original, edited) > epsilon)
    area = jnp.sum(mask)
    return jnp.clip(jnp.where(area > 0, changed / jnp.maximum(area, 1.0), 0.0), 0.0, 1.0)


def soft_label(original: jax.Array, edited: jax.Array, mask: jax.Array, *, alpha: float = 10.0,
               epsilon: float = 0.02) -> jax.Array:
    """y = 2 / (1 + exp(−α V')) − 1 = tanh(α V' / 2) (eq. 9): 0 when nothing changed, < 1 always."""
    return jnp.tanh(alpha * changed_fraction(original, edited, mask, epsilon=epsilon) / 2.0)


def hard_label(original: jax.Array, edited: jax.Array, mask: jax.Array) -> jax.Array:
    """The ablation "w/o SLA" (eq. 5): 1 for every transformed sample, whatever it changed."""
    del original, edited, mask
    return jnp.float32(1.0)


def targets(classes: jax.Array, strengths: jax.Array, *, num_classes: int) -> jax.Array:
    """Soft target distributions B×K: ``[1 − y, …, y at the edit's class, …]``, ``[1, 0, …]`` for originals."""
    strengths = jnp.where(classes > 0, strengths, 0.0)
    onehot = jax.nn.one_hot(classes, num_classes)
    normal = jax.nn.one_hot(jnp.zeros_like(classes), num_classes)
    return (1.0 - strengths)[:, None] * normal + strengths[:, None] * onehot


def batch_labels(originals: jax.Array, edited: jax.Array, masks: jax.Array, classes: jax.Array, *,
                 mode: str = "soft", alpha: float = 10.0, epsilon: float = 0.02) -> jax.Array:
    """Per-sample label strength y for a batch (0 for originals)."""
    if mode == "soft":
        y = jax.vmap(lambda a, b, m: soft_label(a, b, m, alpha=alpha, epsilon=epsilon))(originals, edited, masks)
    elif mode == "hard":
        y = jnp.ones(classes.shape, jnp.float32)
    else:
        raise ValueError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
    return jnp.where(classes > 0, y, 0.0)


def soft_cross_entropy(logits: jax.Array, target_probs: jax.Array) -> jax.Array:
    """Mean cross-entropy of logits B×K against soft target distributions B×K."""
    return jnp.mean(optax.softmax_cross_entropy(logits, target_probs))
