"""A trained model ready to score new images (``python -m sla_jax.predict``, the ONNX export): the network,
its variables, the fitted density and the decision threshold; images scored by the same path as the
evaluation (maps for patch models)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from sla_jax import density, localization
from sla_jax.scoring.detection import EvalSpec, spec_patch_features, upsample_scores
from sla_jax.scoring.features import embed
from sla_jax.training.models import PretextNet


def score_images(
    images_uint8: np.ndarray, *, variables, model, fitted: density.Gaussian | density.KDE, spec: EvalSpec, mesh
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores of images under a fitted density, by the same path as evaluation (maps for patch models)."""
    score = jax.jit(density.score)
    loc = spec.patches
    if loc is None:
        feats = embed(
            variables, images_uint8, model=model, batch_size=spec.batch_size, mesh=mesh, l2_normalize=spec.l2_normalize
        )
        return np.asarray(score(fitted, jnp.asarray(feats))), None
    feats = spec_patch_features(variables, images_uint8, model=model, spec=spec, mesh=mesh, stride=loc.stride)
    n, n_h, n_w, dim = feats.shape
    low = np.asarray(score(fitted, jnp.asarray(feats.reshape(-1, dim)))).reshape(n, n_h, n_w)
    maps = upsample_scores(low, patches=loc)
    return np.asarray(localization.image_scores_from_maps(jnp.asarray(maps))), maps


@dataclasses.dataclass(frozen=True)
class Detector:
    """A trained model ready to score images: network, variables, fitted density, decision threshold."""

    model: PretextNet
    variables: dict
    fitted: density.Gaussian | density.KDE
    threshold: float
    spec: EvalSpec
    image_size: int
    step: int
    mesh: jax.sharding.Mesh
    resample: str = "bilinear"  # the filter that resized the training images (data.resize)

    def score(self, images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Anomaly scores (N,) and, for patch models, defect maps (N, H, W)."""
        return score_images(
            images_uint8, variables=self.variables, model=self.model, fitted=self.fitted, spec=self.spec, mesh=self.mesh
        )
