"""The main task: embed images with the trained backbone, fit the density on the training images' features,
score test images (and their patches), set the decision threshold, draw the defect maps.

No config and no files: :class:`EvalSpec` (and :class:`PatchSpec` for patch models) hold the options;
:func:`evaluate` returns the scores, the fitted Gaussian, the threshold and the maps, and the caller
writes them.
"""

from __future__ import annotations

import dataclasses
import os
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sla_jax import data as data_lib
from sla_jax import density, localization
from sla_jax.common.settings import Section, choice, setting
from sla_jax.metrics import detection_report, pixel_metrics
from sla_jax.scoring.features import embed, patch_features


@dataclasses.dataclass(frozen=True)
class PatchSpec:
    """Patch-level scoring (paper eq. 4): ``size`` px patches, test patches every ``stride`` px, training
    patches for the Gaussian every ``train_stride`` px, receptive-field upsampling with ``sigma``."""

    size: int
    stride: int = 4
    train_stride: int = 4
    sigma: float = 10.0
    normalize: bool = False  # RFU: divide by the summed kernel weights
    gde: str = "shared"  # shared (one Gaussian on all patches) | per_position
    batch_size: int = 1024  # patches per forward pass (bounds memory)
    threshold_images: int = 32  # training images scored for the threshold (maps are costly)


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Options of the main task; ``patches`` is None for an image-level model."""

    batch_size: int = 64
    l2_normalize: bool = True
    density: str = "gde"  # gde | kde (sla_jax.density)
    threshold_quantile: float = 0.99
    threshold_folds: int = 5
    patches: PatchSpec | None = None


@dataclasses.dataclass(frozen=True)
class PatchSettings(Section):
    """``config.localization``: the patch-level model and its defect maps (paper eq. 4, RFU)."""

    SECTION = "localization"
    patch_size: int = setting(0, "> 0: patch-level model and defect maps (paper: 32); 0: image level only")
    stride: int = setting(4, "test patches every `stride` pixels (paper: 4)")
    train_stride: int = setting(4, "training patches for the GDE every `train_stride` pixels")
    sigma: float = setting(10.0, "RFU Gaussian (FCDD's value for a 32 px field)")
    normalize: bool = setting(False, "RFU: divide by the summed kernel weights (weighted mean of overlaps)")
    gde: str = setting("shared", "shared (one GDE on all patches) | per_position (aligned objects)")
    batch_size: int = setting(1024, "patches per forward pass (bounds memory)")
    heatmaps: int = setting(16, "test images drawn in heatmaps.png")

    def check(self) -> None:
        choice("localization.gde", self.gde, ("shared", "per_position"))
        if not self.patch_size:
            return
        for key in ("stride", "train_stride", "batch_size"):
            if not getattr(self, key) > 0:
                raise ValueError(f"config.localization.{key}={getattr(self, key)} must be > 0")
        if self.gde == "per_position" and self.train_stride != self.stride:
            raise ValueError("config.localization.gde='per_position' needs localization.train_stride == stride")
        if self.sigma <= 0:
            raise ValueError(f"config.localization.sigma={self.sigma} must be > 0")


@dataclasses.dataclass(frozen=True)
class EvalSettings(Section):
    """``config.eval``: the main task's density and decision threshold."""

    SECTION = "eval"
    batch_size: int = setting(64)
    l2_normalize: bool = setting(True, "GDE on L2-normalised pooled features")
    density: str = setting("gde", "gde (Gaussian, squared Mahalanobis) | kde (Gaussian kernels, DROC's bandwidth)")
    threshold_quantile: float = setting(0.99, "decision threshold: this quantile of out-of-fold training-image scores")
    threshold_folds: int = setting(5, "folds for those out-of-fold scores")
    threshold_images: int = setting(32, "patch models: training images scored for the threshold (maps are costly)")

    def check(self) -> None:
        choice("eval.density", self.density, tuple(density.DENSITIES))
        if self.batch_size <= 0:
            raise ValueError(f"config.eval.batch_size={self.batch_size} must be > 0")
        if not 0 < self.threshold_quantile <= 1:
            raise ValueError(f"config.eval.threshold_quantile={self.threshold_quantile} must lie in (0, 1]")
        for key in ("threshold_folds", "threshold_images"):
            if getattr(self, key) < 2:
                raise ValueError(f"config.eval.{key}={getattr(self, key)} must be >= 2")


class Evaluation(NamedTuple):
    """What :func:`evaluate` found: ``results`` (the JSON-ready numbers) and the arrays behind them."""

    results: dict
    scores: np.ndarray  # (M,) anomaly score per test image
    fitted: density.Gaussian | density.KDE  # the image density, or the shared (centre, for per_position) patch one
    threshold: float
    maps: np.ndarray | None = None  # M×H×W defect maps (patch models)
    scores_low: np.ndarray | None = None  # M×h×w patch scores before upsampling
    masks: np.ndarray | None = None  # M×H×W ground truth cropped to the maps


def spec_patch_features(
    variables, images_uint8, *, model, spec: EvalSpec, mesh, stride: int, progress: str = ""
) -> np.ndarray:
    """:func:`sla_jax.scoring.features.patch_features` with the patch size, batch and normalisation of ``spec``,
    every ``stride`` px (the evaluation's test and training strides, the detector's test stride)."""
    loc = spec.patches
    return patch_features(
        variables,
        images_uint8,
        model=model,
        patch_size=loc.size,
        stride=stride,
        batch_size=loc.batch_size,
        mesh=mesh,
        l2_normalize=spec.l2_normalize,
        progress=progress,
    )


def image_scores(
    train_feats_NxD: np.ndarray, test_feats_MxD: np.ndarray, *, kind: str = "gde"
) -> tuple[density.Gaussian | density.KDE, np.ndarray]:
    """Fit the density ``kind`` on training embeddings; the anomaly scores of the test embeddings (squared
    Mahalanobis distances for the GDE)."""
    fitted = jax.jit(partial(density.fit, kind=kind))(jnp.asarray(train_feats_NxD))
    return fitted, np.asarray(jax.jit(density.score)(fitted, jnp.asarray(test_feats_MxD)))


def patch_scores(
    train_feats_NxhxwxD: np.ndarray, query_feats_Mxhxw_xD: np.ndarray, *, gde: str, kind: str = "gde"
) -> tuple[density.Gaussian | density.KDE, np.ndarray]:
    """Fit the patch GDE (one ``shared`` Gaussian, or one ``per_position``) on training patch features; the
    squared Mahalanobis scores (M, h', w') of the query patches. For ``per_position`` the returned Gaussian
    is the centre one (for the record)."""
    m, n_h, n_w, dim = query_feats_Mxhxw_xD.shape
    if gde == "per_position":

        def per_position(f):
            return jnp.asarray(f.reshape(len(f), n_h * n_w, dim).transpose(1, 0, 2))

        gaussians = jax.jit(jax.vmap(density.fit_gaussian))(per_position(train_feats_NxhxwxD))
        scores = jax.jit(jax.vmap(density.mahalanobis))(gaussians, per_position(query_feats_Mxhxw_xD))
        centre = jax.tree_util.tree_map(lambda x: x[(n_h * n_w) // 2], gaussians)
        return centre, np.asarray(scores).T.reshape(m, n_h, n_w)
    fitted, scores = image_scores(
        train_feats_NxhxwxD.reshape(-1, dim), query_feats_Mxhxw_xD.reshape(-1, dim), kind=kind
    )
    return fitted, scores.reshape(m, n_h, n_w)


def upsample_scores(scores_low_Mxhxw: np.ndarray, *, patches: PatchSpec) -> np.ndarray:
    """Patch scores at the test stride → pixel maps (RFU with the run's field, stride and sigma)."""
    upsample = partial(
        localization.receptive_field_upsample,
        field=patches.size,
        stride=patches.stride,
        sigma=patches.sigma,
        normalize=patches.normalize,
    )
    return np.asarray(jax.jit(upsample)(jnp.asarray(scores_low_Mxhxw)))


MIN_TRAIN_IMAGES = 5  # image-level models: each out-of-fold GDE is then fitted on at least 4 images
MIN_TRAIN_IMAGES_PATCHES = 2  # patch models: a held-out image is scored by a GDE on another image's patches


def check_train_size(n_train: int, spec: EvalSpec, *, where: str) -> None:
    """Refuse a training set too small for the density and the decision threshold (a DataError naming the
    count needed). Measured by ``bench/small_train.py`` (``bench/small_train.json``, magnetic_tile): with 2 or
    3 training images the out-of-fold threshold lay below every good test image in all 40 draws; from 5 on,
    the median test false-positive rate was 0.3-8 %."""
    needed = MIN_TRAIN_IMAGES_PATCHES if spec.patches is not None else MIN_TRAIN_IMAGES
    if n_train < needed:
        kind = "a patch model" if spec.patches is not None else "an image-level model"
        hint = (
            ""
            if spec.patches is not None
            else (f"; a patch model (localization.patch_size > 0) needs {MIN_TRAIN_IMAGES_PATCHES}")
        )
        raise data_lib.DataError(
            f"{where} holds {n_train} usable training image(s), but {kind} needs at least {needed} to fit its "
            f"density and set the decision threshold from out-of-fold scores (with fewer, that threshold "
            f"calls good images defective){hint}. Add defect-free images to train/good."
        )


def fold_of(n: int, *, folds: int) -> np.ndarray:
    """Fold index of each of ``n`` items, interleaved (item i in fold i mod folds)."""
    return np.arange(n) % max(2, min(folds, n))


def decision_threshold(
    variables, train: data_lib.Split, *, model, spec: EvalSpec, mesh, train_feats: np.ndarray, progress: bool = False
) -> tuple[float, np.ndarray]:
    """The score above which a new image is called defective: the ``spec.threshold_quantile`` quantile of
    out-of-fold scores of training images (each scored by a GDE fitted without its fold, as a new
    defect-free image would be). Returns (threshold, the out-of-fold scores).

    Image models score every training image; patch models score up to ``patches.threshold_images`` of them
    (their patches at the test stride, RFU maps, maximum), the GDE fitted without those images' patches.
    """
    folds = int(spec.threshold_folds)
    if spec.patches is None:
        fold = fold_of(len(train_feats), folds=folds)
        oof = np.empty(len(train_feats), np.float64)
        for k in np.unique(fold):
            oof[fold == k] = image_scores(train_feats[fold != k], train_feats[fold == k], kind=spec.density)[1]
        return float(np.quantile(oof, spec.threshold_quantile)), oof
    loc = spec.patches
    n = len(train.images)
    held = np.unique(np.linspace(0, n - 1, min(n, int(loc.threshold_images))).round().astype(int))
    held_feats = spec_patch_features(
        variables,
        train.images[held],
        model=model,
        spec=spec,
        mesh=mesh,
        stride=loc.stride,
        progress="threshold maps" if progress else "",
    )
    fold = fold_of(len(held), folds=folds)
    oof = np.empty(len(held), np.float64)
    for k in np.unique(fold):
        keep = np.ones(n, bool)
        keep[held[fold == k]] = False
        _, low = patch_scores(train_feats[keep], held_feats[fold == k], gde=loc.gde, kind=spec.density)
        oof[fold == k] = np.asarray(localization.image_scores_from_maps(jnp.asarray(upsample_scores(low, patches=loc))))
    return float(np.quantile(oof, spec.threshold_quantile)), oof


def localize(variables, dataset: data_lib.Dataset, *, model, spec: EvalSpec, mesh, progress: bool = False):
    """Defect maps of the test images: patch GDE scores at ``stride``, receptive-field upsampled.

    Returns the image scores (map maximum), the (shared) Gaussian, the pixel metrics, the training patch
    features, the maps, the patch scores before upsampling and the masks cropped to the maps.
    """
    loc = spec.patches
    options = dict(model=model, spec=spec, mesh=mesh)
    train_feats = spec_patch_features(
        variables,
        dataset.train.images,
        stride=loc.train_stride,
        **options,
        progress="train patches" if progress else "",
    )
    test_feats = spec_patch_features(
        variables, dataset.test.images, stride=loc.stride, **options, progress="test patches" if progress else ""
    )
    n, n_h, n_w, dim = test_feats.shape
    fitted, scores_low = patch_scores(train_feats, test_feats, gde=loc.gde, kind=spec.density)
    maps = upsample_scores(scores_low, patches=loc)
    masks = dataset.test.masks[:, : maps.shape[1], : maps.shape[2]]
    image_scores_n = np.asarray(localization.image_scores_from_maps(jnp.asarray(maps)))
    report = {
        **pixel_metrics(maps, masks),
        "image_score": "maximum of the defect map",
        "map_shape": [int(maps.shape[1]), int(maps.shape[2])],
        "patches_per_test_image": int(n_h * n_w),
        "train_patches": int(train_feats.shape[0] * train_feats.shape[1] * train_feats.shape[2]),
    }
    return image_scores_n, fitted, report, train_feats, maps, scores_low, masks


def evaluate(
    variables, dataset: data_lib.Dataset, *, model, spec: EvalSpec, mesh, progress: bool = False
) -> Evaluation:
    """Embed, fit, score, threshold (and map, for patch models) the dataset's test images; with ``progress``,
    a named progress bar for each phase that embeds images."""
    pixel_report, maps, scores_low, masks = {}, None, None, None
    if spec.patches is not None:
        scores, fitted, pixel_report, train_feats, maps, scores_low, masks = localize(
            variables, dataset, model=model, spec=spec, mesh=mesh, progress=progress
        )
    else:
        options = dict(model=model, batch_size=spec.batch_size, mesh=mesh, l2_normalize=spec.l2_normalize)
        train_feats = embed(variables, dataset.train.images, **options, progress="embed train" if progress else "")
        test_feats = embed(variables, dataset.test.images, **options, progress="embed test" if progress else "")
        fitted, scores = image_scores(train_feats, test_feats, kind=spec.density)
    threshold, _ = decision_threshold(
        variables, dataset.train, model=model, spec=spec, mesh=mesh, train_feats=train_feats, progress=progress
    )
    report = detection_report(scores, dataset.test)
    flagged = scores > threshold
    labels = dataset.test.labels
    results = {
        "category": dataset.category,
        "data_root": os.path.abspath(dataset.root),
        "n_train": int(len(dataset.train.images)),
        "density": spec.density,
        **density.DENSITIES[spec.density].summary(fitted),
        "threshold": threshold,
        "threshold_quantile": float(spec.threshold_quantile),
        "test_false_positive_rate": float(np.mean(flagged[labels == 0])) if np.any(labels == 0) else None,
        "test_true_positive_rate": float(np.mean(flagged[labels == 1])) if np.any(labels == 1) else None,
        "skipped_files": list(dataset.train.skipped + dataset.test.skipped),
        "nonbinary_masks": len(dataset.test.nonbinary_masks),
        **report,
        **pixel_report,
    }
    return Evaluation(results, scores, fitted, threshold, maps, scores_low, masks)
