"""ImageNet ResNet-18 weights: torchvision state dict → sla_jax backbone variables, saved without pickle.

A torchvision ``resnet18`` state dict (``.pth``, read with ``torch.load(weights_only=True)``; or a
``.safetensors`` file with the same keys, read without torch) is converted once by
``python -m sla_jax.convert_weights IN OUT`` into ``.npz`` or ``.safetensors`` holding flat keys
``params/<module path>/<name>`` and ``batch_stats/<module path>/{mean,var}`` (and ``fc/kernel``,
``fc/bias`` when asked). Training loads that file with :func:`load_backbone` (``np.load(allow_pickle=False)``
or safetensors; never torch, never pickle).

The expected keys and shapes are derived from :class:`~sla_jax.training.models.ResNet18` itself, so a missing,
unknown or wrongly shaped entry is reported by name instead of failing later inside ``apply``.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sla_jax.common.errors import WeightsError
from sla_jax.outputs import atomic
from sla_jax.training.models import ResNet18

# sha256 of torchvision's ResNet18_Weights.IMAGENET1K_V1 file, resnet18-f37072fd.pth (46,830,571 bytes).
# torchvision itself checks only the 8 hex digits in the file name; the full digest is the value that
# public projects pinning this file record.
TORCHVISION_RESNET18_SHA256 = "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec"
CONVERTED_SUFFIXES = (".npz", ".safetensors")
_IGNORED_TORCH_SUFFIX = ".num_batches_tracked"
_FLAX_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_FC_SHAPES = {"fc/kernel": (512, 1000), "fc/bias": (1000,)}


def backbone_layout() -> dict[str, tuple[int, ...]]:
    """Flat ``collection/module/…/name`` → shape of the ImageNet-stem ResNet-18's variables."""
    variables = jax.eval_shape(
        lambda k: ResNet18(stem="imagenet").init(k, jnp.zeros((1, 64, 64, 3)), train=False), jax.random.key(0)
    )
    return {key: tuple(leaf.shape) for key, leaf in traverse_util.flatten_dict(variables, sep="/").items()}


def torch_key(flat_key: str) -> str:
    """``params/layer2_0/downsample_0/kernel`` → ``layer2.0.downsample.0.weight`` (torchvision's name)."""
    collection, *modules, name = flat_key.split("/")
    if collection == "fc":
        return f"fc.{'weight' if name == 'kernel' else name}"
    modules = [re.sub(r"_(\d+)$", r".\1", m) for m in modules]
    return ".".join(modules + [_FLAX_TO_TORCH[(collection, name)]])


def _to_flax_layout(value: np.ndarray) -> np.ndarray:
    """Conv OIHW → HWIO, Linear (out, in) → (in, out); vectors unchanged."""
    if value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))
    if value.ndim == 2:
        return value.T
    return value


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return shape[::-1]


def _check_layout(
    found: Mapping[str, tuple], expected: Mapping[str, tuple], *, source: str, what: str, allowed_extra=lambda k: False
) -> None:
    missing = sorted(k for k in expected if k not in found)
    unknown = sorted(k for k in found if k not in expected and not allowed_extra(k))
    wrong = sorted(
        f"{k}: {tuple(found[k])} (expected {tuple(expected[k])})"
        for k in expected
        if k in found and tuple(found[k]) != tuple(expected[k])
    )
    if missing or unknown or wrong:
        parts = [f"{source} is not {what}:"]
        for title, items in (("missing keys", missing), ("unknown keys", unknown), ("wrong shapes", wrong)):
            if items:
                parts.append(f"  {len(items)} {title}: " + ", ".join(items))
        raise WeightsError("\n".join(parts))


def from_torch_state_dict(
    state_dict: Mapping[str, np.ndarray], *, keep_fc: bool = False, source: str = "the state dict"
) -> dict[str, np.ndarray]:
    """Flat sla_jax variables (float32) from a torchvision ResNet-18 state dict of numpy arrays.

    Raises :class:`WeightsError` listing every missing key, unknown key and wrong shape (in torch's
    layout); ``*.num_batches_tracked`` is accepted and dropped, ``fc.*`` is dropped unless ``keep_fc``.
    """
    layout = backbone_layout()
    if keep_fc:
        layout.update(_FC_SHAPES)
    by_torch = {torch_key(k): k for k in layout}
    torch_shapes = {torch_key(k): _torch_shape(shape) for k, shape in layout.items()}
    found = {k: np.shape(v) for k, v in state_dict.items()}
    _check_layout(
        found,
        torch_shapes,
        source=source,
        what="a torchvision ResNet-18 state dict",
        allowed_extra=lambda k: k.endswith(_IGNORED_TORCH_SUFFIX) or k in ("fc.weight", "fc.bias"),
    )
    return {
        by_torch[k]: np.ascontiguousarray(_to_flax_layout(np.asarray(state_dict[k], np.float32))) for k in torch_shapes
    }


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A state dict as numpy arrays: ``.pth``/``.pt`` with torch (``weights_only=True``), or ``.safetensors``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return dict(load_file(path))
    if path.endswith((".pth", ".pt")):
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"reading {path} needs PyTorch: pip install 'sla_jax[torch]' (CPU wheel is enough), "
                "or give a .safetensors file with the same keys"
            ) from e
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise WeightsError(
                f"{path} holds a {type(loaded).__name__}, not a state dict of tensors "
                "(save model.state_dict(), as torchvision's files are)"
            )
        return {
            k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy() for k, v in loaded.items()
        }
    raise WeightsError(f"{path}: unknown weights format; give a torchvision .pth or a .safetensors file")


def sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_hash_prefix(path: str, digest: str) -> str | None:
    """torch.hub's check: a name like ``resnet18-f37072fd.pth`` must match the start of the sha256.

    Returns the prefix checked, or None when the name carries none; raises :class:`WeightsError` on mismatch.
    """
    match = re.search(r"-([0-9a-f]{8,64})\.[A-Za-z]+$", os.path.basename(path))
    if match is None:
        return None
    if not digest.startswith(match.group(1)):
        raise WeightsError(
            f"{path}: sha256 {digest} does not start with {match.group(1)} as its name says; "
            "the file is damaged or not the published one (download it again)"
        )
    return match.group(1)


def save_converted(path: str, flat: Mapping[str, np.ndarray]) -> None:
    """Write flat variables as ``.npz`` (uncompressed) or ``.safetensors``; chosen by the suffix."""
    if path.endswith(".safetensors"):
        from safetensors.numpy import save

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic.replacing(path, "wb") as f:
            f.write(save(dict(flat), metadata={"format": "sla_jax ResNet-18 backbone"}))
    elif path.endswith(".npz"):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic.save_npz(path, **flat)
    else:
        raise WeightsError(f"{path}: the converted file must end in {' or '.join(CONVERTED_SUFFIXES)}")


def load_backbone(path: str) -> dict:
    """``{'params': …, 'batch_stats': …}`` of the ResNet-18 backbone from a converted file (no pickle).

    Extra ``fc/*`` entries are ignored (the classifier head is always fresh).
    """
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        flat = dict(load_file(path))
    elif path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            flat = {k: data[k] for k in data.files}
    else:
        raise WeightsError(
            f"{path}: model.init must be a {' or '.join(CONVERTED_SUFFIXES)} file written by "
            "python -m sla_jax.convert_weights (a .pth must be converted first)"
        )
    layout = backbone_layout()
    _check_layout(
        {k: v.shape for k, v in flat.items()},
        layout,
        source=path,
        what="a ResNet-18 backbone written by python -m sla_jax.convert_weights",
        allowed_extra=lambda k: k in _FC_SHAPES,
    )
    return traverse_util.unflatten_dict({k: jnp.asarray(flat[k], jnp.float32) for k in layout}, sep="/")


def with_backbone(state, backbone: Mapping, *, optimizer):
    """``state`` with its backbone's parameters and BatchNorm statistics replaced (head kept), optimizer
    state re-initialised from the new parameters."""
    for collection in ("params", "batch_stats"):
        have = jax.tree_util.tree_map(np.shape, getattr(state, collection)["backbone"])
        want = jax.tree_util.tree_map(np.shape, backbone[collection])
        if have != want:
            raise WeightsError("the loaded backbone does not fit the model (config.model.stem must be 'imagenet')")
    params = {**state.params, "backbone": backbone["params"]}
    batch_stats = {**state.batch_stats, "backbone": backbone["batch_stats"]}
    return state.replace(params=params, batch_stats=batch_stats, opt_state=optimizer.init(params))


def convert(source: str, target: str, *, keep_fc: bool = False) -> dict:
    """Convert the torchvision state dict ``source`` into ``target``; returns what was checked and written."""
    if not target.endswith(CONVERTED_SUFFIXES):
        raise WeightsError(f"{target}: OUT must end in {' or '.join(CONVERTED_SUFFIXES)}")
    digest = sha256_file(source)
    prefix = check_hash_prefix(source, digest)
    flat = from_torch_state_dict(read_state_dict(source), keep_fc=keep_fc, source=source)
    save_converted(target, flat)
    return {
        "sha256": digest,
        "checked_prefix": prefix,
        "torchvision_imagenet": digest == TORCHVISION_RESNET18_SHA256,
        "arrays": len(flat),
        "scalars": int(sum(v.size for v in flat.values())),
    }
