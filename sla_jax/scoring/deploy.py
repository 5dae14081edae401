"""A trained detector as one ONNX graph, for inspection stations without Python ML stacks.

The graph takes a batch of images ``images``: N×S×S×3 uint8 RGB (N chosen at run time; S the run's
``data.image_size``; the caller resizes to S×S, sla_jax uses PIL's ``data.resize`` filter, antialiased,
named in the metadata) and returns ``scores`` (N,), the anomaly score (higher = more anomalous; above the
``threshold`` in the metadata = defective). Inside: /255, ImageNet normalisation, the backbone in eval
mode, global average pooling, L2 normalisation and the fitted density (the Gaussian's squared Mahalanobis
distance, or the KDE's score). Patch models also return ``maps`` (N×H×W): every patch scored, then
receptive-field upsampled; their score is the map's maximum.

Converted by jax2onnx from the same JAX functions as evaluation, in their plain inference form: XLA's
convolutions (not im2col), the stem's max-pool as ``reduce_window`` (not its custom-VJP form), RFU as
matrix products (not a transposed convolution) and the KDE unchunked — the same values to float rounding.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from importlib import metadata as importlib_metadata

import jax
import jax.numpy as jnp

from sla_jax import density, localization
from sla_jax.common.runtime import source_commit
from sla_jax.outputs import atomic
from sla_jax.scoring.detector import Detector
from sla_jax.scoring.features import l2_normalized
from sla_jax.training.models import ResNet18, normalize

INPUT, SCORES, MAPS = "images", "scores", "maps"


def inference_function(detector: Detector):
    """``images_uint8 → scores`` (and maps, for patch models) of ``detector``, in the plain inference form."""
    model = detector.model.clone(conv_impl="xla", pool_impl="reduce_window")
    variables, fitted, spec = detector.variables, detector.fitted, detector.spec
    score = lambda feats: density.score(fitted, feats, chunk=None)  # noqa: E731

    # The backbone alone: scoring needs no projection head, and tracing the head under the symbolic batch size
    # "N" fails with jax 0.11 (flax's parameter shape check sees a traced feature width).
    backbone = ResNet18(stem=model.stem, conv_impl=model.conv_impl, dtype=model.dtype, pool_impl=model.pool_impl)
    backbone_variables = {kind: variables[kind]["backbone"] for kind in ("params", "batch_stats")}

    def features(images_uint8):
        feats = backbone.apply(backbone_variables, normalize(images_uint8.astype(jnp.float32) / 255.0), train=False)
        return l2_normalized(feats) if spec.l2_normalize else feats

    if spec.patches is None:
        return lambda images_uint8: score(features(images_uint8))
    loc = spec.patches
    n_h = n_w = localization.num_patches(detector.image_size, size=loc.size, stride=loc.stride)
    per_image = n_h * n_w
    chunk = max(c for c in range(1, min(per_image, loc.batch_size) + 1) if per_image % c == 0)

    def patch_model(images_uint8):
        patches = localization.extract_patches(images_uint8, size=loc.size, stride=loc.stride)
        flat = patches.reshape((-1, chunk, loc.size, loc.size, images_uint8.shape[-1]))
        feats = jax.lax.map(features, flat)
        low = score(feats.reshape((-1, feats.shape[-1]))).reshape((-1, n_h, n_w))
        maps = localization.receptive_field_upsample(
            low, field=loc.size, stride=loc.stride, sigma=loc.sigma, normalize=loc.normalize, method="matmul"
        )
        return localization.image_scores_from_maps(maps), maps

    return patch_model


@contextlib.contextmanager
def _quiet_converter():
    """jax2onnx prints debugging lines and logs a traceback for each optional plugin (dm_pix, equinox) that
    does not load beside this JAX; none of it concerns the export, whose own failures still raise."""
    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "jax2onnx")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        absl_logging.set_verbosity(verbosity)
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def model_metadata(detector: Detector, **facts) -> dict[str, str]:
    """What a deployment needs to know besides the graph (ONNX metadata values are strings)."""
    try:
        version = importlib_metadata.version("sla_jax")
    except importlib_metadata.PackageNotFoundError:
        version = "unknown"
    info = {
        "threshold": repr(float(detector.threshold)),
        "image_size": str(detector.image_size),
        "resize": detector.resample,
        "density": detector.spec.density,
        "step": str(detector.step),
        "input": f"{INPUT}: N×{detector.image_size}×{detector.image_size}×3 uint8 RGB",
        "outputs": SCORES if detector.spec.patches is None else f"{SCORES},{MAPS}",
        **({"patch_size": str(detector.spec.patches.size)} if detector.spec.patches is not None else {}),
        "sla_jax_version": version,
        "sla_jax_commit": source_commit(),
        **{k: str(v) for k, v in facts.items()},
    }
    if detector.spec.patches is not None:
        loc = detector.spec.patches
        n = localization.num_patches(detector.image_size, size=loc.size, stride=loc.stride)
        info["map_size"] = str(localization.upsampled_size(n, field=loc.size, stride=loc.stride))
    return info


def to_onnx(detector: Detector, *, metadata: dict[str, str]):
    """The ONNX ``ModelProto`` of ``detector`` (batch size N chosen at run time), shapes re-inferred and
    checked, ``metadata`` in ``metadata_props``."""
    import onnx

    fn = inference_function(detector)
    size = detector.image_size
    outputs = [SCORES] if detector.spec.patches is None else [SCORES, MAPS]
    with _quiet_converter():
        from jax2onnx import to_onnx as convert

        proto = convert(
            fn,
            [jax.ShapeDtypeStruct(("N", size, size, 3), jnp.uint8)],
            model_name="sla_jax",
            input_names=[INPUT],
            output_names=outputs,
        )
    del proto.graph.value_info[:]  # the converter records some NCHW tensors with NHWC shapes: onnxruntime
    # infers the intermediate shapes itself when it loads the model
    for output in proto.graph.output:  # after the patch model's Loop the converter fixes N to 1; N stays free
        first = output.type.tensor_type.shape.dim[0]
        first.ClearField("dim_value")
        first.dim_param = "N"
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    return proto


def export_detector(detector: Detector, path: str, **facts) -> dict:
    """Write ``detector`` to ``path`` (.onnx); returns the metadata and the file's size."""

    info = model_metadata(detector, **facts)
    proto = to_onnx(detector, metadata=info)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic.replacing(path, "wb") as f:
        f.write(proto.SerializeToString())
    return {
        "path": os.path.abspath(path),
        "bytes": os.path.getsize(path),
        "nodes": len(proto.graph.node),
        "metadata": info,
        "megabytes": math.ceil(os.path.getsize(path) / 2**20),
    }
