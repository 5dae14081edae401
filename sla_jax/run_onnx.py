"""Score images with an exported detector, without JAX: ``python -m sla_jax.run_onnx FILE.onnx IMAGE_OR_FOLDER...
[--out=DIR]``.

Needs onnxruntime, numpy and pillow alone (``pip install -e '.[onnx]'``; JAX is never imported). Resizes each
image as the run did (size and filter from the model's metadata), writes ``predictions.jsonl`` and
``predictions.csv`` (path, score, threshold, good/defective) into ``--out`` (default: ``predictions/`` beside
FILE.onnx) and, for patch models, a defect-map overlay per image; a file that cannot be read is reported and
skipped, as in ``sla_jax.predict`` (:func:`sla_jax.scoring.inspection.inspect`).
"""

from __future__ import annotations

import os

from absl import flags

from sla_jax import cli
from sla_jax.scoring import inspection

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) < 3:
        raise cli.UsageError("usage: python -m sla_jax.run_onnx FILE.onnx IMAGE_OR_FOLDER... [--out=DIR]")
    model = argv[1]
    if not model.endswith(".onnx"):
        raise cli.UsageError(f"{model}: the first argument must be an .onnx file written by python -m sla_jax.export")
    detector = inspection.OnnxDetector(model, threads=FLAGS.threads)
    out_dir = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(model)), "predictions")
    return inspection.inspect(detector, argv[2:], out_dir=out_dir, overlays=FLAGS.heatmaps, overwrite=FLAGS.overwrite)


if __name__ == "__main__":
    flags.DEFINE_string("out", None, "Output folder (default: predictions/ beside FILE.onnx).")
    flags.DEFINE_bool(
        "overwrite",
        False,
        "Replace the predictions of an earlier scoring in the output folder "
        "(without it, such a folder is refused and kept).",
    )
    flags.DEFINE_bool("heatmaps", True, "Patch models: write a defect-map overlay PNG per image.")
    flags.DEFINE_integer("threads", 0, "onnxruntime's intra-op threads (0: one per core).")
    cli.run(main, compilation_cache=False)
