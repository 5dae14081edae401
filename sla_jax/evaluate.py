"""Main task: embed with the trained backbone, fit the GDE on training images, score the test set.

``python -m sla_jax.evaluate --workdir=DIR`` re-evaluates a finished (or interrupted) run from its
newest checkpoint; training calls :func:`evaluate` at its end.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from sla_jax import runtime  # noqa: E402
from sla_jax import data as data_lib  # noqa: E402
from sla_jax import density, heatmaps, localization, metrics, report  # noqa: E402
from sla_jax import state as state_lib  # noqa: E402
from sla_jax import transforms as transforms_lib  # noqa: E402
from sla_jax.models import PretextNet, normalize  # noqa: E402
from sla_jax.validation import ConfigError, validate  # noqa: E402
from sla_jax import workdir as workdir_lib  # noqa: E402


class Dataset(NamedTuple):
    train: data_lib.Split
    test: data_lib.Split
    root: str
    category: str


def model_from_config(config: ml_collections.ConfigDict) -> PretextNet:
    return PretextNet(num_classes=transforms_lib.num_classes(config.transform.name), head=tuple(config.model.head),
                      stem=config.model.stem, conv_impl=config.model.conv_impl, dtype=jnp.dtype(config.model.dtype))


def optimizer_from_config(config: ml_collections.ConfigDict):
    """The training optimizer; the backbone freeze applies only to a loaded backbone (``model.init``)."""
    return state_lib.make_optimizer(learning_rate=config.train.learning_rate, momentum=config.train.momentum,
                                    weight_decay=config.train.weight_decay, total_steps=config.train.steps,
                                    freeze_backbone_steps=config.train.freeze_steps if config.model.init else 0)


def pooled_features(variables, images_uint8: jax.Array, *, model: PretextNet, l2_normalize: bool) -> jax.Array:
    """Eval-mode pooled backbone features of uint8 images, optionally L2-normalised (traceable)."""
    _, feats = model.apply(variables, normalize(images_uint8.astype(jnp.float32) / 255.0), train=False)
    if l2_normalize:
        feats = feats / jnp.maximum(jnp.linalg.norm(feats, axis=-1, keepdims=True), 1e-12)
    return feats


def model_input_size(config: ml_collections.ConfigDict) -> int:
    """Side of the network's input: the patch size for patch models, else the image size."""
    return config.localization.patch_size or config.data.image_size


def embed(variables, images_uint8, *, model: PretextNet, batch_size: int, mesh,
          l2_normalize: bool = True, stacked: bool = False) -> np.ndarray:
    """Pooled backbone features (N, 512) of uint8 images in eval mode, batched and sharded over ``mesh``.

    ``stacked``: ``variables`` carry a leading member axis (a vmapped ensemble) and the features are
    (K, N, 512), all members embedded in one pass per batch.
    """
    n_dev = mesh.devices.size
    batch_size = max(n_dev, (batch_size // n_dev) * n_dev)
    batch_sharding = NamedSharding(mesh, P("data"))
    features = partial(pooled_features, model=model, l2_normalize=l2_normalize)
    if stacked:
        features = jax.vmap(features, in_axes=(0, None))
    forward = jax.jit(features, out_shardings=NamedSharding(mesh, P()))
    variables = jax.device_put(variables, NamedSharding(mesh, P()))

    out = []
    for start in range(0, len(images_uint8), batch_size):
        chunk = np.asarray(images_uint8[start:start + batch_size])
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        feats = forward(variables, jax.device_put(chunk, batch_sharding))
        out.append(np.asarray(feats)[..., : batch_size - pad, :])
    if not out:
        return np.zeros((0, 512), np.float32)
    return np.concatenate(out, axis=-2)


def patch_features(variables, images_uint8, *, model: PretextNet, patch_size: int, stride: int, batch_size: int,
                   mesh, l2_normalize: bool = True) -> np.ndarray:
    """Features (N, Nh, Nw, 512) of every ``patch_size`` patch at ``stride`` of each image.

    Patches are cut inside jit (``localization.extract_patches``) and embedded in chunks of at most
    ``batch_size`` patches (``lax.map`` inside the same jit), which bounds the memory: a 256 px image has
    3,249 patches.
    """
    n, height, width = images_uint8.shape[:3]
    n_h = localization.num_patches(height, size=patch_size, stride=stride)
    n_w = localization.num_patches(width, size=patch_size, stride=stride)
    group = max(1, batch_size // (n_h * n_w))
    per_pass = min(batch_size, group * n_h * n_w)
    n_passes = -(-group * n_h * n_w // per_pass)
    replicated = NamedSharding(mesh, P())

    def embed_chunk(patches):
        if per_pass % mesh.devices.size == 0:
            patches = jax.lax.with_sharding_constraint(patches, NamedSharding(mesh, P("data")))
        return pooled_features(variables, patches, model=model, l2_normalize=l2_normalize)

    @partial(jax.jit, out_shardings=replicated)
    def forward(images):
        patches = localization.extract_patches(images, size=patch_size, stride=stride)
        flat = patches.reshape((-1, patch_size, patch_size, images.shape[-1]))
        total = flat.shape[0]
        flat = jnp.pad(flat, ((0, n_passes * per_pass - total), (0, 0), (0, 0), (0, 0)))
        feats = jax.lax.map(embed_chunk, flat.reshape((n_passes, per_pass) + flat.shape[1:]))
        return feats.reshape((n_passes * per_pass, -1))[:total].reshape((images.shape[0], n_h, n_w, -1))

    out = []
    for start in range(0, n, group):
        chunk = np.asarray(images_uint8[start:start + group])
        pad = group - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        out.append(np.asarray(forward(jax.device_put(chunk, replicated)))[: group - pad])
    return np.concatenate(out)


def load_dataset(config: ml_collections.ConfigDict, workdir: str) -> Dataset:
    """Train and test splits named by ``config.data`` (the demo set is generated into WORKDIR/demo_data)."""
    root, category = config.data.root, config.data.category
    if config.data.demo:
        from sla_jax import demo

        root = root or demo.write_demo_dataset(os.path.join(workdir, "demo_data"), seed=config.seed)
    options = dict(category=category, image_size=config.data.image_size,
                   cache_dir=config.data.cache_dir or None, require_masks=config.data.require_masks,
                   skip_bad_files=config.data.skip_bad_files)
    train = data_lib.load_split(root, split="train", **options)
    test = data_lib.load_split(root, split="test", **options)
    return Dataset(train, test, root, category)


def image_scores(train_feats_NxD: np.ndarray, test_feats_MxD: np.ndarray) -> tuple[density.Gaussian, np.ndarray]:
    """Fit the GDE on training embeddings; squared Mahalanobis scores of the test embeddings."""
    gaussian = jax.jit(density.fit_gaussian)(jnp.asarray(train_feats_NxD))
    return gaussian, np.asarray(jax.jit(density.mahalanobis)(gaussian, jnp.asarray(test_feats_MxD)))


def detection_report(scores: np.ndarray, split: data_lib.Split) -> dict:
    """Image AUROC overall and per defect type (that type's images against all good test images)."""
    labels = split.labels
    types = np.asarray(split.defect_types)
    per_type = {}
    for name in sorted(set(split.defect_types) - {"good"}):
        keep = (types == name) | (labels == 0)
        per_type[name] = float(metrics.auroc(scores[keep], labels[keep]))
    return {"image_auroc": float(metrics.auroc(scores, labels)), "per_defect_type_auroc": per_type,
            "n_test": int(len(labels)), "n_test_good": int(np.sum(labels == 0)),
            "n_test_defective": int(np.sum(labels == 1))}


def plot_roc(scores: np.ndarray, split: data_lib.Split, path: str, *, title: str) -> None:
    """ROC curves (overall and per defect type) as a PNG."""
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    types = np.asarray(split.defect_types)
    curves = [("all defects", np.ones_like(split.labels, bool))]
    curves += [(name, (types == name) | (split.labels == 0)) for name in sorted(set(split.defect_types) - {"good"})]
    for name, keep in curves:
        if len(set(split.labels[keep])) < 2:
            continue
        fpr, tpr, _ = roc_curve(split.labels[keep], scores[keep])
        auc = float(metrics.auroc(scores[keep], split.labels[keep]))
        ax.plot(fpr, tpr, lw=2.5 if name == "all defects" else 1.2, label=f"{name} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate (good images flagged)", ylabel="true positive rate (defects found)",
           title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_scores_csv(scores: np.ndarray, split: data_lib.Split, path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "defect_type", "label", "score"])
        for p, t, y, s in zip(split.paths, split.defect_types, split.labels, scores):
            writer.writerow([p, t, int(y), f"{float(s):.6g}"])


def patch_scores(train_feats_NxhxwxD: np.ndarray, query_feats_Mxhxw_xD: np.ndarray, *,
                 gde: str) -> tuple[density.Gaussian, np.ndarray]:
    """Fit the patch GDE (one ``shared`` Gaussian, or one ``per_position``) on training patch features; the
    squared Mahalanobis scores (M, h', w') of the query patches. For ``per_position`` the returned Gaussian
    is the centre one (for the record)."""
    m, n_h, n_w, dim = query_feats_Mxhxw_xD.shape
    if gde == "per_position":
        per_position = lambda f: jnp.asarray(f.reshape(len(f), n_h * n_w, dim).transpose(1, 0, 2))
        gaussians = jax.jit(jax.vmap(density.fit_gaussian))(per_position(train_feats_NxhxwxD))
        scores = jax.jit(jax.vmap(density.mahalanobis))(gaussians, per_position(query_feats_Mxhxw_xD))
        centre = jax.tree_util.tree_map(lambda x: x[(n_h * n_w) // 2], gaussians)
        return centre, np.asarray(scores).T.reshape(m, n_h, n_w)
    gaussian, scores = image_scores(train_feats_NxhxwxD.reshape(-1, dim), query_feats_Mxhxw_xD.reshape(-1, dim))
    return gaussian, scores.reshape(m, n_h, n_w)


def upsample_scores(scores_low_Mxhxw: np.ndarray, *, config: ml_collections.ConfigDict) -> np.ndarray:
    """Patch scores at the test stride → pixel maps (RFU with the run's field, stride and sigma)."""
    loc = config.localization
    upsample = partial(localization.receptive_field_upsample, field=loc.patch_size, stride=loc.stride,
                       sigma=loc.sigma, normalize=loc.normalize)
    return np.asarray(jax.jit(upsample)(jnp.asarray(scores_low_Mxhxw)))


def fold_of(n: int, *, folds: int) -> np.ndarray:
    """Fold index of each of ``n`` items, interleaved (item i in fold i mod folds)."""
    return np.arange(n) % max(2, min(folds, n))


def decision_threshold(variables, train: data_lib.Split, *, model, config: ml_collections.ConfigDict, mesh,
                       train_feats: np.ndarray) -> tuple[float, np.ndarray]:
    """The score above which a new image is called defective: the ``eval.threshold_quantile`` quantile of
    out-of-fold scores of training images (each scored by a GDE fitted without its fold, as a new
    defect-free image would be). Returns (threshold, the out-of-fold scores).

    Image models score every training image; patch models score up to ``eval.threshold_images`` of them
    (their patches at the test stride, RFU maps, maximum), the GDE fitted without those images' patches.
    """
    folds = int(config.eval.threshold_folds)
    if not config.localization.patch_size:
        fold = fold_of(len(train_feats), folds=folds)
        oof = np.empty(len(train_feats), np.float64)
        for k in np.unique(fold):
            oof[fold == k] = image_scores(train_feats[fold != k], train_feats[fold == k])[1]
        return float(np.quantile(oof, config.eval.threshold_quantile)), oof
    loc = config.localization
    n = len(train.images)
    held = np.unique(np.linspace(0, n - 1, min(n, int(config.eval.threshold_images))).round().astype(int))
    held_feats = patch_features(variables, train.images[held], model=model, patch_size=loc.patch_size,
                                stride=loc.stride, batch_size=loc.batch_size, mesh=mesh,
                                l2_normalize=config.eval.l2_normalize)
    fold = fold_of(len(held), folds=folds)
    oof = np.empty(len(held), np.float64)
    for k in np.unique(fold):
        keep = np.ones(n, bool)
        keep[held[fold == k]] = False
        _, low = patch_scores(train_feats[keep], held_feats[fold == k], gde=loc.gde)
        oof[fold == k] = np.asarray(localization.image_scores_from_maps(
            jnp.asarray(upsample_scores(low, config=config))))
    return float(np.quantile(oof, config.eval.threshold_quantile)), oof


def localize(variables, dataset: Dataset, *, model, config: ml_collections.ConfigDict, workdir: str | None,
             mesh) -> tuple[np.ndarray, density.Gaussian, dict]:
    """Defect maps of the test images: patch GDE scores at ``stride``, receptive-field upsampled.

    Writes maps.npz (maps, low-resolution scores, masks, paths) and heatmaps.png; returns the image
    scores (map maximum), the (shared) Gaussian, the pixel metrics and the training patch features.
    """
    loc = config.localization
    options = dict(model=model, patch_size=loc.patch_size, batch_size=loc.batch_size, mesh=mesh,
                   l2_normalize=config.eval.l2_normalize)
    train_feats = patch_features(variables, dataset.train.images, stride=loc.train_stride, **options)
    test_feats = patch_features(variables, dataset.test.images, stride=loc.stride, **options)
    n, n_h, n_w, dim = test_feats.shape
    gaussian, scores_low = patch_scores(train_feats, test_feats, gde=loc.gde)
    maps = upsample_scores(scores_low, config=config)
    masks = dataset.test.masks[:, : maps.shape[1], : maps.shape[2]]
    if workdir:
        np.savez_compressed(os.path.join(workdir, "maps.npz"), maps=maps.astype(np.float32), scores_low=scores_low,
                            masks=masks, paths=np.asarray(dataset.test.paths))
        titles = [f"{t} {os.path.basename(p)}" for t, p in zip(dataset.test.defect_types, dataset.test.paths)]
        heatmaps.plot_heatmap_grid(dataset.test.images[:, : maps.shape[1], : maps.shape[2]], masks, maps,
                                   path=os.path.join(workdir, "heatmaps.png"), titles=titles, max_images=loc.heatmaps,
                                   title=f"{dataset.category}: defect maps (outline: ground truth)",
                                   score_label="squared Mahalanobis distance, RFU-summed")
    image_scores_n = np.asarray(localization.image_scores_from_maps(jnp.asarray(maps)))
    report = {"pixel_auroc": localization.pixel_auroc(maps, masks), "pixel_aupro": localization.aupro(maps, masks),
              "image_score": "maximum of the defect map", "map_shape": [int(maps.shape[1]), int(maps.shape[2])],
              "patches_per_test_image": int(n_h * n_w), "train_patches": int(train_feats.shape[0] * train_feats.shape[1]
                                                                             * train_feats.shape[2])}
    return image_scores_n, gaussian, report, train_feats


def evaluate(variables, dataset: Dataset, *, model, config: ml_collections.ConfigDict, workdir: str | None,
             mesh) -> dict:
    """Embed, fit, score; writes roc.png, scores.csv and gde.npz (and, for patch models, maps.npz and
    heatmaps.png) into ``workdir`` (nothing when None: the other processes of a multi-process run);
    returns the results."""
    pixel_report = {}
    if config.localization.patch_size:
        scores, gaussian, pixel_report, train_feats = localize(variables, dataset, model=model, config=config,
                                                               workdir=workdir, mesh=mesh)
    else:
        options = dict(model=model, batch_size=config.eval.batch_size, mesh=mesh,
                       l2_normalize=config.eval.l2_normalize)
        train_feats = embed(variables, dataset.train.images, **options)
        test_feats = embed(variables, dataset.test.images, **options)
        gaussian, scores = image_scores(train_feats, test_feats)
    threshold, _ = decision_threshold(variables, dataset.train, model=model, config=config, mesh=mesh,
                                      train_feats=train_feats)
    report = detection_report(scores, dataset.test)
    flagged = scores > threshold
    labels = dataset.test.labels
    if workdir:
        np.savez(os.path.join(workdir, "gde.npz"), threshold=np.float64(threshold),
                 **{k: np.asarray(v) for k, v in gaussian._asdict().items()})
        write_scores_csv(scores, dataset.test, os.path.join(workdir, "scores.csv"))
        title = f"{dataset.category}: {config.transform.name.upper()}-{'hard' if config.labels.mode == 'hard' else 'SLA'}"
        plot_roc(scores, dataset.test, os.path.join(workdir, "roc.png"), title=title)
    return {"category": dataset.category, "data_root": os.path.abspath(dataset.root),
            "transform": config.transform.name, "labels": config.labels.mode, "alpha": float(config.labels.alpha),
            "image_size": int(config.data.image_size), "n_train": int(len(dataset.train.images)),
            "gde_shrinkage": float(gaussian.shrinkage),
            "threshold": threshold, "threshold_quantile": float(config.eval.threshold_quantile),
            "test_false_positive_rate": float(np.mean(flagged[labels == 0])) if np.any(labels == 0) else None,
            "test_true_positive_rate": float(np.mean(flagged[labels == 1])) if np.any(labels == 1) else None,
            "skipped_files": list(dataset.train.skipped + dataset.test.skipped),
            "nonbinary_masks": len(dataset.test.nonbinary_masks), **report, **pixel_report}


def write_results(results: dict, workdir: str) -> str:
    path = os.path.join(workdir, "results.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    return path


def write_timing(timing: dict, workdir: str) -> str:
    """Wall times and resume point, added to ``timing.json``: what varies between runs of the same command
    (kept out of results.json)."""
    path = os.path.join(workdir, "timing.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            timing = {**json.load(f), **timing}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(timing, f, indent=2, sort_keys=True)
    return path


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was started with (``WORKDIR/config.json``), over the current defaults."""
    from sla_jax.defaults import base_config

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --workdir must be a folder written by sla_jax.train")
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    if "ensemble" in saved:
        raise ValueError(f"{workdir} holds an ensemble (alpha sweep): re-run its sla_jax.train command, which "
                         "resumes from the newest checkpoint and evaluates every member")
    config = base_config()
    config.update_from_flattened_dict({".".join(k): v for k, v in _flatten(saved)})
    return config


def _flatten(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, prefix + (key,))
        else:
            yield prefix + (key,), tuple(value) if isinstance(value, list) else value


def restore_model(config: ml_collections.ConfigDict, workdir: str) -> tuple[PretextNet, dict, int]:
    """The run's model, its variables from the newest checkpoint in ``workdir``, and that step."""
    from sla_jax.train import hparams_from_config, network_params, with_label_params  # train imports this module

    model = model_from_config(config)
    optimizer = optimizer_from_config(config)
    state = state_lib.init_state(jax.random.key(0), model=model, optimizer=optimizer,
                                 image_size=model_input_size(config))
    state = with_label_params(state, hparams_from_config(config), learn=tuple(config.labels.learn),
                              optimizer=optimizer)
    manager = state_lib.checkpoint_manager(workdir, keep=config.train.keep_checkpoints)
    try:
        if manager.latest_step() is None:
            raise FileNotFoundError(f"no checkpoint in {manager.directory}: train first with sla_jax.train")
        state = state_lib.restore_latest(manager, state)
    finally:
        manager.close()
    return model, {"params": network_params(state.params), "batch_stats": state.batch_stats}, int(state.step)


def evaluate_workdir(workdir: str) -> dict:
    """Evaluate the newest checkpoint of a run; rewrites its results.json."""
    started = time.perf_counter()
    config = load_run_config(workdir)
    validate(config)
    with workdir_lib.claimed(workdir):
        return _evaluate_workdir(config, workdir, started=started)


def _evaluate_workdir(config: ml_collections.ConfigDict, workdir: str, *, started: float) -> dict:
    mesh = state_lib.data_mesh()
    model, variables, step = restore_model(config, workdir)
    dataset = load_dataset(config, workdir)
    results = evaluate(variables, dataset, model=model, config=config, workdir=workdir, mesh=mesh)
    results.update(steps=step)
    write_results(results, workdir)
    write_timing({"evaluate_seconds": time.perf_counter() - started}, workdir)
    report.write_run_report(workdir)
    return results


def main(argv):
    logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every file operation at INFO
    runtime.enable_compilation_cache()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if flags.FLAGS.workdir is None:
        raise app.UsageError("--workdir is required")
    try:
        results = evaluate_workdir(flags.FLAGS.workdir)
    except (ConfigError, data_lib.DataError, workdir_lib.WorkdirError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2 if isinstance(error, ConfigError) else 1)
    print(f"image AUROC: {results['image_auroc']:.4f}")
    print(f"results: {os.path.join(os.path.abspath(flags.FLAGS.workdir), 'results.json')}")


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A run directory written by sla_jax.train.")
    app.run(main)
