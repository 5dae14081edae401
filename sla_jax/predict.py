"""Score new images with a trained run: ``python -m sla_jax.predict --workdir=DIR IMAGE_OR_FOLDER...``.

Uses the run's newest checkpoint and the Gaussian and decision threshold saved at training time in
``WORKDIR/gde.npz`` (nothing is refitted). Writes one line per image to ``predictions.jsonl`` and
``predictions.csv`` (path, score, threshold, decision, or the error that kept it from being scored) and,
for patch models, a defect-map overlay PNG per image. A file that cannot be read is reported and skipped.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from sla_jax import runtime
from sla_jax import data as data_lib
from sla_jax import density, evaluate, heatmaps, localization
from sla_jax import state as state_lib
from sla_jax.validation import ConfigError, validate

CHUNK = 64  # images decoded and scored at a time (bounds memory for large folders)


class Detector:
    """A trained run ready to score images: model, variables, Gaussian, threshold."""

    def __init__(self, workdir: str):
        self.config = evaluate.load_run_config(workdir)
        validate(self.config)
        if self.config.localization.patch_size and self.config.localization.gde == "per_position":
            raise ConfigError("this run uses localization.gde='per_position', whose Gaussians (one per patch "
                              "position) are not stored; prediction supports the shared patch GDE")
        path = os.path.join(workdir, "gde.npz")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: run `python -m sla_jax.evaluate --workdir={workdir}` first")
        with np.load(path, allow_pickle=False) as saved:
            if "threshold" not in saved:
                raise FileNotFoundError(f"{path} has no decision threshold (written by an older version): run "
                                        f"`python -m sla_jax.evaluate --workdir={workdir}` to refit and store it")
            self.gaussian = density.Gaussian(*(jnp.asarray(saved[k]) for k in density.Gaussian._fields))
            self.threshold = float(saved["threshold"])
        self.model, self.variables, self.step = evaluate.restore_model(self.config, workdir)
        self.mesh = state_lib.data_mesh()

    @property
    def image_size(self) -> int:
        return int(self.config.data.image_size)

    def score(self, images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Anomaly scores (N,) and, for patch models, defect maps (N, H, W)."""
        return score_images(images_uint8, variables=self.variables, model=self.model, gaussian=self.gaussian,
                            config=self.config, mesh=self.mesh)


def score_images(images_uint8: np.ndarray, *, variables, model, gaussian: density.Gaussian,
                 config: ml_collections.ConfigDict, mesh) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores of images under a fitted Gaussian, by the same path as evaluation (maps for patch models)."""
    mahalanobis = jax.jit(density.mahalanobis)
    loc = config.localization
    if not loc.patch_size:
        feats = evaluate.embed(variables, images_uint8, model=model, batch_size=config.eval.batch_size, mesh=mesh,
                               l2_normalize=config.eval.l2_normalize)
        return np.asarray(mahalanobis(gaussian, jnp.asarray(feats))), None
    feats = evaluate.patch_features(variables, images_uint8, model=model, patch_size=loc.patch_size,
                                    stride=loc.stride, batch_size=loc.batch_size, mesh=mesh,
                                    l2_normalize=config.eval.l2_normalize)
    n, n_h, n_w, dim = feats.shape
    low = np.asarray(mahalanobis(gaussian, jnp.asarray(feats.reshape(-1, dim)))).reshape(n, n_h, n_w)
    maps = evaluate.upsample_scores(low, config=config)
    return np.asarray(localization.image_scores_from_maps(jnp.asarray(maps))), maps


def collect_files(paths: list[str]) -> tuple[list[Path], list[dict]]:
    """Image files named or inside the named folders (recursively, sorted; hidden files and non-image
    names skipped), and an error record for each path that does not exist."""
    files, errors = [], []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if data_lib.is_image_name(p) and p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.exists():
            files.append(path)
        else:
            errors.append({"path": str(path), "error": "no such file or folder"})
    return files, errors


def _read(path: Path, *, size: int) -> np.ndarray | str:
    """The decoded image, or the reason it cannot be used."""
    try:
        return data_lib.decode_image(path.read_bytes(), size=size, name=str(path))
    except data_lib.DataError as error:
        return str(error)
    except OSError as error:
        return f"cannot read {path} ({error.strerror or error})"


def predict(detector: Detector, files: list[Path], *, out_dir: str, overlays: bool = True) -> list[dict]:
    """Score ``files`` in chunks; returns one record per file (in order) and writes the overlays."""
    records = []
    overlay_dir = os.path.join(out_dir, "heatmaps")
    for start in range(0, len(files), CHUNK):
        chunk = files[start:start + CHUNK]
        decoded = [_read(p, size=detector.image_size) for p in chunk]
        good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
        scores, maps = (detector.score(np.stack([decoded[i] for i in good])) if good else (np.zeros(0), None))
        by_index = dict(zip(good, range(len(good))))
        for i, path in enumerate(chunk):
            if i not in by_index:
                records.append({"path": str(path), "error": decoded[i]})
                continue
            score = float(scores[by_index[i]])
            record = {"path": str(path), "score": score, "threshold": detector.threshold,
                      "decision": "defective" if score > detector.threshold else "good"}
            if maps is not None and overlays:
                os.makedirs(overlay_dir, exist_ok=True)
                png = os.path.join(overlay_dir, f"{start + i:05d}_{path.stem}.png")
                image_map = maps[by_index[i]]
                heatmaps.plot_heatmap_grid(
                    decoded[i][None, : image_map.shape[0], : image_map.shape[1]], np.zeros((1,) + image_map.shape),
                    image_map[None], path=png, titles=[f"{path.name}: {record['decision']} ({score:.4g})"],
                    max_images=1, columns=1, scale=(float(image_map.min()), detector.threshold),
                    score_label="score (red: above the decision threshold)")
                record["heatmap"] = png
            records.append(record)
    return records


def write_predictions(records: list[dict], out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "predictions.jsonl"), "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    with open(os.path.join(out_dir, "predictions.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "score", "threshold", "decision", "heatmap", "error"])
        writer.writeheader()
        for record in records:
            writer.writerow(record)


def main(argv):
    logging.set_verbosity(logging.WARNING)
    runtime.enable_compilation_cache()
    f = flags.FLAGS
    if f.workdir is None:
        raise app.UsageError("--workdir is required: a run folder written by sla_jax.train")
    if len(argv) < 2:
        raise app.UsageError("name at least one image file or folder to score")
    out_dir = f.out or os.path.join(f.workdir, "predictions")
    try:
        detector = Detector(f.workdir)
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    files, missing = collect_files(argv[1:])
    records = predict(detector, files, out_dir=out_dir, overlays=f.heatmaps) + missing
    write_predictions(records, out_dir)
    errors = [r for r in records if "error" in r]
    for r in errors:
        print(f"skipped {r['path']}: {r['error']}", file=sys.stderr)
    flagged = sum(r.get("decision") == "defective" for r in records)
    print(f"scored {len(records) - len(errors)} image(s): {flagged} defective (score > {detector.threshold:.4g}), "
          f"{len(errors)} skipped")
    print(f"predictions: {os.path.join(os.path.abspath(out_dir), 'predictions.jsonl')} (and .csv)")
    if len(errors) == len(records):
        sys.exit(1)


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A run folder written by sla_jax.train.")
    flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/predictions).")
    flags.DEFINE_bool("heatmaps", True, "Patch models: write a defect-map overlay PNG per image.")
    app.run(main)
