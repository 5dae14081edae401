"""Inspecting parts: score image files with a detector, call each good or defective, draw the defect maps.

A detector is the trained run in JAX (:class:`sla_jax.scoring.detector.Detector`, from
``sla_jax.experiment.load_detector``) or an exported ONNX model (:class:`OnnxDetector`): both resize
images as the run did and score a batch of uint8 images. This module imports neither JAX nor flax, so
``python -m sla_jax.run_onnx`` runs with onnxruntime, numpy and PIL alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sla_jax.common.errors import DataError, UsageError, WorkdirError
from sla_jax.data.decode import read_image
from sla_jax.data.scan import IMAGE_SUFFIXES, collect_files
from sla_jax.outputs import atomic, files, plots

CHUNK = 64  # images decoded and scored at a time (bounds memory for large folders)


def overlay_name(index: int, path: Path) -> str:
    """``00012_<stem>.png``: the file's index keeps names unique; the stem is made printable and cut so that the
    name stays within the 255 bytes a file system allows."""
    stem = atomic.printable(path.stem).encode("utf-8")[:120].decode("utf-8", "ignore")
    return f"{index:05d}_{stem}.png"


def overlay_title(path: Path, record: dict) -> str:
    """``scratch/000.png`` over ``defective (score 15,640)``: the folder tells ``good/000.png`` from
    ``scratch/000.png``."""
    shown = atomic.printable(os.path.join(path.parent.name, path.name))
    return f"{shown}\n{record['decision']} (score {plots.number(record['score'])})"


def map_label(detector) -> str:
    """The colour-bar label of ``detector``'s defect maps: its density and patch size (a trained run's spec, or
    an exported model's metadata)."""
    spec = getattr(detector, "spec", None)
    if spec is not None:
        return plots.map_label(spec.density, patch_size=spec.patches.size if spec.patches else None)
    meta = getattr(detector, "metadata", {})
    return plots.map_label(
        meta.get("density", "gde"), patch_size=int(meta["patch_size"]) if "patch_size" in meta else None
    )


def score_files(
    detector, image_files: Sequence[Path], *, out_dir: str, overlay_dir: str | None = None, overlays: bool = True
) -> list[dict]:
    """Score ``image_files`` in chunks with ``detector`` (``image_size``, ``resample``, ``threshold`` and
    ``score(images_uint8) -> (scores, maps or None)``); returns one record per file, in order: path, score,
    threshold, decision, or the error that kept the file from being scored. Patch models' defect-map
    overlays are written into ``OUT_DIR/heatmaps`` and recorded as ``OVERLAY_DIR/heatmaps/...`` (the folder
    they will have once ``out_dir`` is renamed into place; default ``out_dir``)."""
    records = []
    for start in range(0, len(image_files), CHUNK):
        chunk = image_files[start : start + CHUNK]
        decoded = [read_image(p, size=detector.image_size, resample=detector.resample) for p in chunk]
        good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
        scores, maps = detector.score(np.stack([decoded[i] for i in good])) if good else (np.zeros(0), None)
        by_index = dict(zip(good, range(len(good))))
        for i, path in enumerate(chunk):
            if i not in by_index:
                records.append({"path": atomic.printable(path), "error": atomic.printable(decoded[i])})
                continue
            score = float(scores[by_index[i]])
            record = {
                "path": atomic.printable(path),
                "score": score,
                "threshold": detector.threshold,
                "decision": "defective" if score > detector.threshold else "good",
            }
            if maps is not None and overlays:
                os.makedirs(os.path.join(out_dir, "heatmaps"), exist_ok=True)
                name = overlay_name(start + i, path)
                image_map = maps[by_index[i]]
                plots.plot_heatmap_grid(
                    decoded[i][None, : image_map.shape[0], : image_map.shape[1]],
                    np.zeros((1,) + image_map.shape),
                    image_map[None],
                    path=os.path.join(out_dir, "heatmaps", name),
                    titles=[overlay_title(path, record)],
                    max_images=1,
                    columns=1,
                    threshold=detector.threshold,
                    score_label=map_label(detector),
                )
                record["heatmap"] = os.path.join(overlay_dir or out_dir, "heatmaps", name)
            records.append(record)
    return records


PREDICTIONS = "predictions.jsonl"


def check_out_dir(out_dir: str, *, overwrite: bool) -> None:
    """``out_dir`` may be new, empty, or (with ``overwrite``) the folder of an earlier scoring; anything else
    is refused before any image is scored, so that no earlier result is replaced unasked."""
    if not os.path.exists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise UsageError(f"--out={out_dir} is a file, not a folder: choose a folder for the predictions")
    entries = os.listdir(out_dir)
    if not entries:
        return
    if PREDICTIONS not in entries:
        raise UsageError(
            f"--out={out_dir} holds other files ({len(entries)} entries, no {PREDICTIONS}): choose "
            "a new or empty folder for the predictions"
        )
    if not overwrite:
        raise UsageError(
            f"{out_dir} holds the predictions of an earlier scoring: pass --overwrite to replace "
            "them, or --out=DIR to write these elsewhere"
        )


def inspect(
    detector,
    paths: Sequence[str],
    *,
    out_dir: str,
    overwrite: bool = False,
    overlays: bool = True,
    log=print,
    warn=lambda message: print(message, file=sys.stderr),
) -> int:
    """Score every image named or found in ``paths`` (folders recursively) and write ``predictions.jsonl`` and
    ``.csv`` (and overlays) into ``out_dir`` as one folder that appears whole once every image is scored;
    report each skipped file (``warn``) and a summary (``log``). A named path that does not exist, no image
    file at all, or none that can be read is an error, and then nothing is written. Returns the exit status."""
    image_files, missing = collect_files(paths)
    if missing:
        raise FileNotFoundError(f"{missing[0]['path']}: no such file or folder (nothing was scored)")
    if not image_files:
        raise DataError(
            f"no image file ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(atomic.printable, paths))} "
            "(nothing was scored)"
        )
    check_out_dir(out_dir, overwrite=overwrite)
    with atomic.replacing_folder(out_dir) as folder:
        records = score_files(
            detector, image_files, out_dir=folder, overlay_dir=os.path.abspath(out_dir), overlays=overlays
        )
        errors = [r for r in records if "error" in r]
        if len(errors) == len(records):
            raise DataError(
                f"none of the {len(records)} image file(s) could be read; the first: {errors[0]['error']} "
                "(nothing was written)"
            )
        files.write_predictions(records, folder)
    for r in errors:
        warn(f"skipped {r['path']}: {r['error']}")
    flagged = sum(r.get("decision") == "defective" for r in records)
    threshold = plots.number(detector.threshold)
    scored = len(records) - len(errors)
    log(f"scored {scored} image(s): {flagged} defective (score > {threshold}), {len(errors)} skipped")
    log(f"predictions: {os.path.join(os.path.abspath(out_dir), PREDICTIONS)} (and .csv)")
    return 0


class OnnxDetector:
    """An ONNX model written by ``python -m sla_jax.export``, run by onnxruntime on the CPU."""

    def __init__(self, path: str, *, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise WorkdirError(f"onnxruntime is not installed ({error}): pip install -e '.[onnx]'") from None
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such ONNX file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # spinning threads cost here
        options.log_severity_level = 3  # its shape inference cannot follow a patch model's Loop and warns
        try:
            self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types for a file that is no model
            raise WorkdirError(
                f"{path} is not an ONNX model onnxruntime can load ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:200]})"
            ) from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if "threshold" not in self.metadata or "image_size" not in self.metadata:
            raise WorkdirError(
                f"{path} has no sla_jax metadata (threshold, image_size): export it with python -m sla_jax.export"
            )
        self.threshold = float(self.metadata["threshold"])
        self.image_size = int(self.metadata["image_size"])
        self.resample = self.metadata.get("resize", "bilinear")
        self.outputs = [o.name for o in self.session.get_outputs()]

    def score(self, images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Anomaly scores (N,) and, for patch models, defect maps (N, H, W)."""
        results = self.session.run(None, {self.session.get_inputs()[0].name: np.ascontiguousarray(images_uint8)})
        return results[0], (results[1] if len(results) > 1 else None)
