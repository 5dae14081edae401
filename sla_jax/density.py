"""Densities on embeddings: the Gaussian (GDE: mean, Ledoit–Wolf covariance, Mahalanobis scores) and the KDE.

Closed forms identical to ``sklearn.covariance.LedoitWolf`` (``assume_centered=False``), in jnp so that
fitting and scoring jit, vmap (ensembles) and run on the accelerator.
"""

from __future__ import annotations

from collections.abc import Callable
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


class KDE(NamedTuple):
    """Gaussian kernel density on embeddings (the DROC code CutPaste builds on): the training features and γ."""

    features: jax.Array  # N×D
    gamma: jax.Array  # scalar


def kde_gamma(train_features_NxD: jax.Array) -> jax.Array:
    """DROC's default bandwidth: γ = 10 / (D · var), the variance taken over every entry of the features."""
    x = train_features_NxD.astype(jnp.float32)
    return 10.0 / (x.shape[1] * jnp.var(x))


def fit_kde(train_features_NxD: jax.Array, *, gamma=None) -> KDE:
    """The KDE of ``train_features_NxD`` (γ from :func:`kde_gamma` unless given)."""
    x = train_features_NxD.astype(jnp.float32)
    return KDE(x, kde_gamma(x) if gamma is None else jnp.asarray(gamma, jnp.float32))


def kde_score(kde: KDE, features_MxD: jax.Array, *, chunk: int | None = 4096) -> jax.Array:
    """Anomaly scores (M,) under ``kde``: −(1/γ)·log Σₙ exp(−γ‖x − xₙ‖²), higher = more anomalous.

    Squared distances by ‖x‖² + ‖xₙ‖² − 2x·xₙ (one matmul), ``chunk`` query rows at a time (``lax.map``)
    so that M×N never has to fit in memory at once; ``chunk=None`` scores all rows in one product (the
    form an exported graph with a batch size chosen at run time takes).
    """
    train = kde.features
    train_sq = jnp.sum(train**2, axis=1)
    x = features_MxD.astype(jnp.float32)

    def score_chunk(q):
        d2 = jnp.maximum(jnp.sum(q**2, axis=1)[:, None] + train_sq[None, :] - 2.0 * q @ train.T, 0.0)
        return -jax.nn.logsumexp(-kde.gamma * d2, axis=1) / kde.gamma

    if chunk is None:
        return score_chunk(x)
    m = x.shape[0]
    rows = max(1, min(chunk, m))
    n_chunks = -(-m // rows)
    padded = jnp.pad(x, ((0, n_chunks * rows - m), (0, 0)))
    return jax.lax.map(score_chunk, padded.reshape(n_chunks, rows, -1)).reshape(-1)[:m]


def kde_scores(train_features_NxD: jax.Array, test_features_MxD: jax.Array, *, gamma=None) -> jax.Array:
    """KDE anomaly scores (M,) of test features given training features: :func:`fit_kde` then
    :func:`kde_score` (paper §2.3's alternative to the GDE)."""
    return kde_score(fit_kde(train_features_NxD, gamma=gamma), test_features_MxD)


class Density(NamedTuple):
    """A registered density: how it is fitted and scores, what its fitted arrays are (the NamedTuple class
    whose fields are saved in ``WORKDIR/NAME.npz``), the numbers it adds to results.json, and what its
    score is called on the figures."""

    fit: Callable[[jax.Array], NamedTuple]  # features N×D -> the fitted arrays
    score: Callable[..., jax.Array]  # (fitted, features M×D, *, chunk) -> anomaly scores (M,), higher = worse
    fitted: type  # the NamedTuple class ``fit`` returns
    summary: Callable[[NamedTuple], dict]  # JSON-ready numbers for results.json
    score_name: str  # what a score is, for axes and colour bars


DENSITIES: dict[str, Density] = {
    "gde": Density(
        fit=fit_gaussian,
        score=lambda fitted, feats, *, chunk=None: mahalanobis(fitted, feats),
        fitted=Gaussian,
        summary=lambda fitted: {"gde_shrinkage": float(fitted.shrinkage)},
        score_name="squared Mahalanobis distance",
    ),
    "kde": Density(
        fit=fit_kde,
        score=kde_score,
        fitted=KDE,
        summary=lambda fitted: {"kde_gamma": float(fitted.gamma)},
        score_name="KDE score",
    ),
}


def register(name: str, density: Density) -> None:
    """Make ``eval.density=name`` fit, score, save and load with ``density`` (an entry here is all a new
    density needs)."""
    DENSITIES[name] = density


def kind_of(fitted: NamedTuple) -> str:
    """The registered name of a fitted density."""
    for name, entry in DENSITIES.items():
        if isinstance(fitted, entry.fitted):
            return name
    raise ValueError(f"{type(fitted).__name__} is not a registered density's fit: one of {tuple(DENSITIES)}")


def fit(features_NxD: jax.Array, *, kind: str = "gde") -> NamedTuple:
    """The registered density ``kind`` (``gde``, ``kde``, ...) fitted on ``features_NxD``."""
    if kind not in DENSITIES:
        raise ValueError(f"density must be one of {tuple(DENSITIES)}, got {kind!r}")
    return DENSITIES[kind].fit(features_NxD)


def score(fitted: NamedTuple, features_MxD: jax.Array, *, chunk: int | None = 4096) -> jax.Array:
    """Anomaly scores (M,) under a fitted density (``chunk``: query rows at a time where the density
    chunks, see :func:`kde_score`)."""
    return DENSITIES[kind_of(fitted)].score(fitted, features_MxD, chunk=chunk)
