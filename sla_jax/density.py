"""Gaussian density estimation (GDE) on embeddings: mean, Ledoit–Wolf covariance, Mahalanobis scores.

Closed forms identical to ``sklearn.covariance.LedoitWolf`` (``assume_centered=False``), in jnp so that
fitting and scoring jit, vmap (ensembles) and run on the accelerator.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Gaussian(NamedTuple):
    mean: jax.Array  # (D,)
    precision: jax.Array  # D×D
    covariance: jax.Array  # D×D (shrunk)
    shrinkage: jax.Array  # scalar in [0, 1]


def ledoit_wolf_shrinkage(centered_NxD: jax.Array) -> jax.Array:
    """Ledoit–Wolf shrinkage coefficient of centred data (sklearn's ``ledoit_wolf_shrinkage``)."""
    n, p = centered_NxD.shape
    x2 = centered_NxD**2
    emp_cov_trace = jnp.sum(x2, axis=0) / n
    mu = jnp.sum(emp_cov_trace) / p
    beta_ = jnp.sum(x2.T @ x2)
    delta_ = jnp.sum((centered_NxD.T @ centered_NxD) ** 2) / n**2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * jnp.sum(emp_cov_trace) + p * mu**2) / p
    beta = jnp.minimum(beta, delta)
    return jnp.where(beta == 0, 0.0, beta / jnp.where(delta == 0, 1.0, delta))


def fit_gaussian(features_NxD: jax.Array) -> Gaussian:
    """Mean and Ledoit–Wolf-shrunk covariance of ``features_NxD``, with its (pseudo-)inverse."""
    x = features_NxD.astype(jnp.float32)
    n, p = x.shape
    mean = jnp.mean(x, axis=0)
    centered = x - mean
    emp_cov = centered.T @ centered / n
    shrinkage = ledoit_wolf_shrinkage(centered)
    mu = jnp.trace(emp_cov) / p
    covariance = (1.0 - shrinkage) * emp_cov + shrinkage * mu * jnp.eye(p, dtype=x.dtype)
    evals, evecs = jnp.linalg.eigh(covariance)
    cutoff = jnp.max(jnp.abs(evals)) * p * jnp.finfo(x.dtype).eps
    inv = jnp.where(jnp.abs(evals) > cutoff, 1.0 / jnp.where(evals == 0, 1.0, evals), 0.0)
    precision = (evecs * inv) @ evecs.T
    return Gaussian(mean, precision, covariance, shrinkage)


def mahalanobis(gaussian: Gaussian, features_MxD: jax.Array) -> jax.Array:
    """Squared Mahalanobis distances (M,) of ``features_MxD`` under ``gaussian``."""
    centered = features_MxD.astype(jnp.float32) - gaussian.mean
    return jnp.einsum("md,de,me->m", centered, gaussian.precision, centered)
