"""Export a trained run as one ONNX file: ``python -m sla_jax.export --workdir=DIR --out=FILE.onnx``.

The graph maps a batch of uint8 RGB images (N×S×S×3, S = the run's image size) to anomaly scores (and, for
patch models, defect maps), with normalisation, backbone, pooling, L2 normalisation and the fitted density
inside; the decision threshold, image size, resize filter, category, commit and sla_jax version are in its
metadata (:mod:`sla_jax.scoring.deploy`). Score with it anywhere onnxruntime runs: ``python -m sla_jax.run_onnx``.
Needs ``pip install -e '.[onnx]'``.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from sla_jax import cli, experiment

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments: {argv[1:]}")
    workdir = cli.run_workdir(FLAGS.workdir)
    out = cli.require(FLAGS.out, "--out is required: the .onnx file to write")
    if not out.endswith(".onnx"):
        raise cli.UsageError(f"--out={out} must end in .onnx")
    if os.path.exists(out) and not FLAGS.overwrite:
        raise cli.UsageError(f"--out={out} exists: pass --overwrite to replace it, or choose another file")
    experiment.load_run_config(workdir)  # a folder that holds no run is named before a missing package
    try:
        import jax2onnx  # noqa: F401
        import onnx  # noqa: F401
    except ImportError as error:
        if sys.version_info >= (3, 12):
            raise cli.UsageError(
                f"exporting needs jax2onnx ({error}), which the onnx extra installs on Python 3.11 "
                "only: jax2onnx 0.12.5 does not trace jax 0.11, and later ones need an older "
                "orbax-checkpoint; export from a Python 3.11 environment (pip install -e "
                "'.[onnx]'). Scoring an exported model (sla_jax.run_onnx) works here."
            ) from None
        raise cli.UsageError(f"exporting needs the onnx extra ({error}): pip install -e '.[onnx]'") from None
    written = experiment.export_workdir(workdir, out)
    meta = written["metadata"]
    print(
        f"wrote {written['path']}: {written['megabytes']} MB, {written['nodes']} nodes; input "
        f"{meta['input']}, output(s) {meta['outputs']}, threshold {float(meta['threshold']):.4g}"
    )


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A run folder written by sla_jax.train.")
    flags.DEFINE_string("out", None, "The .onnx file to write.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing --out file (without it, it is refused and kept).")
    cli.run(main)
