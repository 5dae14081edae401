"""Detection metrics as jnp functions (jit- and vmap-friendly)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def average_ranks(values: jax.Array) -> jax.Array:
    """1-based ranks with ties sharing their average rank (scipy's ``rankdata(method='average')``)."""
    ordered = jnp.sort(values)
    below = jnp.searchsorted(ordered, values, side="left")
    upto = jnp.searchsorted(ordered, values, side="right")
    return (below + upto + 1).astype(jnp.float32) / 2.0


def auroc(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Area under the ROC curve, positives = ``labels == 1``; ties count ½ (Mann–Whitney U).

    Returns NaN when only one class is present.
    """
    scores = jnp.asarray(scores, jnp.float32).ravel()
    positive = jnp.asarray(labels).ravel() > 0
    n_pos = jnp.sum(positive).astype(jnp.float32)
    n_neg = positive.size - n_pos
    rank_sum = jnp.sum(jnp.where(positive, average_ranks(scores), 0.0))
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    return jnp.where((n_pos > 0) & (n_neg > 0), u / jnp.maximum(n_pos * n_neg, 1.0), jnp.nan)
