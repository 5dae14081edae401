import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from sla_jax import density, metrics


def correlated(rng, n, d):
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mixing + rng.normal(size=d)).astype(np.float32)


@pytest.mark.parametrize("n,d", [(500, 16), (200, 64), (100, 128), (64, 512)])
def test_gde_matches_sklearn_ledoit_wolf(n, d):
    rng = np.random.default_rng(n + d)
    train, test = correlated(rng, n, d), correlated(rng, 50, d)
    ref = LedoitWolf().fit(train.astype(np.float64))
    g = jax.jit(density.fit_gaussian)(jnp.asarray(train))
    assert float(g.shrinkage) == pytest.approx(ref.shrinkage_, rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(np.asarray(g.mean), ref.location_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(g.covariance), ref.covariance_, rtol=1e-4, atol=1e-6)
    scores = np.asarray(jax.jit(density.mahalanobis)(g, jnp.asarray(test)))
    np.testing.assert_allclose(scores, ref.mahalanobis(test.astype(np.float64)), rtol=1e-4)


def test_gde_on_l2_normalised_embeddings_like_the_pipeline():
    rng = np.random.default_rng(0)
    feats = np.abs(correlated(rng, 300, 512))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    ref = LedoitWolf().fit(feats[:250].astype(np.float64))
    g = density.fit_gaussian(jnp.asarray(feats[:250]))
    np.testing.assert_allclose(
        np.asarray(density.mahalanobis(g, jnp.asarray(feats[250:]))),
        ref.mahalanobis(feats[250:].astype(np.float64)),
        rtol=1e-4,
    )


def test_gde_vmaps_over_an_ensemble():
    rng = np.random.default_rng(1)
    stack = np.stack([correlated(rng, 200, 8) for _ in range(3)])
    gs = jax.vmap(density.fit_gaussian)(jnp.asarray(stack))
    scores = jax.vmap(density.mahalanobis)(gs, jnp.asarray(stack[:, :10]))
    for k in range(3):
        ref = LedoitWolf().fit(stack[k].astype(np.float64)).mahalanobis(stack[k, :10].astype(np.float64))
        np.testing.assert_allclose(np.asarray(scores[k]), ref, rtol=1e-4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=80))
def test_auroc_matches_sklearn_with_ties(pairs):
    scores = np.array([s for s, _ in pairs], np.float32)
    labels = np.array([int(y) for _, y in pairs])
    if len(set(labels)) < 2:
        assert np.isnan(float(metrics.auroc(scores, labels)))
        return
    assert float(metrics.auroc(scores, labels)) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)


def test_auroc_continuous_scores_and_vmap():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(4, 300)).astype(np.float32)
    labels = rng.integers(0, 2, size=(4, 300))
    scores += labels
    batched = jax.jit(jax.vmap(metrics.auroc))(jnp.asarray(scores), jnp.asarray(labels))
    for k in range(4):
        assert float(batched[k]) == pytest.approx(roc_auc_score(labels[k], scores[k]), abs=1e-6)
