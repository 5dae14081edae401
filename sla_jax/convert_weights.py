"""Convert a torchvision ResNet-18 state dict for sla_jax: ``python -m sla_jax.convert_weights IN OUT``.

IN: torchvision's ``resnet18-f37072fd.pth`` (needs ``pip install 'sla_jax[torch]'``) or a ``.safetensors``
file with torchvision's keys. OUT: ``.npz`` or ``.safetensors``, loaded by ``--config.model.init=OUT``
without torch. Prints IN's sha256 and checks it against the hash prefix in IN's name, as torch.hub does.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from sla_jax import pretrained


def convert(source: str, target: str, *, keep_fc: bool = False) -> dict:
    """Convert ``source`` into ``target``; returns what was checked and written."""
    if not target.endswith(pretrained.CONVERTED_SUFFIXES):
        raise pretrained.WeightsError(f"{target}: OUT must end in {' or '.join(pretrained.CONVERTED_SUFFIXES)}")
    digest = pretrained.sha256_file(source)
    prefix = pretrained.check_hash_prefix(source, digest)
    flat = pretrained.from_torch_state_dict(pretrained.read_state_dict(source), keep_fc=keep_fc, source=source)
    pretrained.save_converted(target, flat)
    return {"sha256": digest, "checked_prefix": prefix, "torchvision_imagenet": digest ==
            pretrained.TORCHVISION_RESNET18_SHA256, "arrays": len(flat),
            "scalars": int(sum(v.size for v in flat.values()))}


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) != 3:
        raise app.UsageError("usage: python -m sla_jax.convert_weights IN.pth|IN.safetensors OUT.npz|OUT.safetensors")
    source, target = argv[1], argv[2]
    try:
        report = convert(source, target, keep_fc=FLAGS.keep_fc)
    except (pretrained.WeightsError, FileNotFoundError, ImportError) as e:
        raise SystemExit(f"error: {e}")
    print(f"{source}: sha256 {report['sha256']}")
    if report["torchvision_imagenet"]:
        print("  = torchvision's ResNet18_Weights.IMAGENET1K_V1 (resnet18-f37072fd.pth)")
    elif report["checked_prefix"]:
        print(f"  matches the hash prefix {report['checked_prefix']} in its name")
    else:
        print("  (no hash prefix in the name to check against)")
    print(f"wrote {os.path.abspath(target)}: {report['arrays']} arrays, {report['scalars']:,} numbers "
          f"(backbone{' + fc' if FLAGS.keep_fc else ''}); use --config.model.init={target}")


FLAGS = flags.FLAGS

if __name__ == "__main__":
    flags.DEFINE_bool("keep_fc", False, "Also keep the 1000-way ImageNet classifier (fc/kernel, fc/bias).")
    app.run(main)
