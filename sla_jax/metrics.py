"""Detection metrics as jnp functions (jit- and vmap-friendly)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sla_jax import localization


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


def undefined_auroc_reason(labels: np.ndarray) -> str | None:
    """Why an AUROC of these labels is undefined (it needs good and defective images), or None."""
    n_good, n_bad = int(np.sum(labels == 0)), int(np.sum(labels == 1))
    if n_good and n_bad:
        return None
    missing = " and ".join(w for w, n in (("good", n_good), ("defective", n_bad)) if not n)
    return f"undefined: the test set has no {missing} images, and an AUROC compares the two"


def detection_report(scores: np.ndarray, split) -> dict:
    """Image AUROC overall and per defect type (that type's images against all good test images). An AUROC
    that is undefined (no good or no defective test images) is None, with ``image_auroc_undefined`` saying
    why."""
    labels = split.labels
    types = np.asarray(split.defect_types)
    reason = undefined_auroc_reason(labels)
    per_type = {}
    for name in sorted(set(split.defect_types) - {"good"}):
        keep = (types == name) | (labels == 0)
        per_type[name] = None if reason else float(auroc(scores[keep], labels[keep]))
    report = {
        "image_auroc": None if reason else float(auroc(scores, labels)),
        "per_defect_type_auroc": per_type,
        "n_test": int(len(labels)),
        "n_test_good": int(np.sum(labels == 0)),
        "n_test_defective": int(np.sum(labels == 1)),
    }
    if reason:
        report["image_auroc_undefined"] = reason
    return report


def pixel_metrics(maps: np.ndarray, masks: np.ndarray) -> dict:
    """Pixel AUROC and AUPRO; None with ``KEY_undefined`` saying why when the masks hold one class only."""
    if np.any(masks > 0) and not np.all(masks > 0):
        return {"pixel_auroc": localization.pixel_auroc(maps, masks), "pixel_aupro": localization.aupro(maps, masks)}
    reason = (
        "undefined: no test mask marks a defect pixel"
        if not np.any(masks > 0)
        else "undefined: the test masks mark every pixel defective"
    )
    return {"pixel_auroc": None, "pixel_auroc_undefined": reason, "pixel_aupro": None, "pixel_aupro_undefined": reason}
