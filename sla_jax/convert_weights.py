"""Convert a torchvision ResNet-18 state dict for sla_jax: ``python -m sla_jax.convert_weights IN OUT``.

IN: torchvision's ``resnet18-f37072fd.pth`` (needs ``pip install 'sla_jax[torch]'``) or a ``.safetensors``
file with torchvision's keys. OUT: ``.npz`` or ``.safetensors``, loaded by ``--config.model.init=OUT``
without torch. Prints IN's sha256 and checks it against the hash prefix in IN's name, as torch.hub does
(:func:`sla_jax.training.pretrained.convert`).
"""

from __future__ import annotations

import os

from absl import flags

from sla_jax import cli
from sla_jax.training import pretrained

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) != 3:
        raise cli.UsageError("usage: python -m sla_jax.convert_weights IN.pth|IN.safetensors OUT.npz|OUT.safetensors")
    source, target = argv[1], argv[2]
    if os.path.exists(target) and not FLAGS.overwrite:
        raise cli.UsageError(f"{target} exists: pass --overwrite to replace it, or choose another file")
    try:
        report = pretrained.convert(source, target, keep_fc=FLAGS.keep_fc)
    except ImportError as error:
        raise pretrained.WeightsError(str(error)) from None
    print(f"{source}: sha256 {report['sha256']}")
    if report["torchvision_imagenet"]:
        print("  = torchvision's ResNet18_Weights.IMAGENET1K_V1 (resnet18-f37072fd.pth)")
    elif report["checked_prefix"]:
        print(f"  matches the hash prefix {report['checked_prefix']} in its name")
    else:
        print("  (no hash prefix in the name to check against)")
    print(
        f"wrote {os.path.abspath(target)}: {report['arrays']} arrays, {report['scalars']:,} numbers "
        f"(backbone{' + fc' if FLAGS.keep_fc else ''}); use --config.model.init={target}"
    )


if __name__ == "__main__":
    flags.DEFINE_bool("overwrite", False, "Replace an existing output file (without it, it is refused and kept).")
    flags.DEFINE_bool("keep_fc", False, "Also keep the 1000-way ImageNet classifier (fc/kernel, fc/bias).")
    cli.run(main, compilation_cache=False)
