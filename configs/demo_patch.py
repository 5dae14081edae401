"""CPU localization demo: CPF-SLA on 32 px patches of the embedded demo data at 128 px, defect maps and
pixel AUROC / AUPRO, a few minutes on 2 cores.

The category is ``washer``: a metal washer on a flat black belt, as on MVTec AD's metal_nut. About a fifth of
the edits move belt onto belt and change (almost) nothing, so their soft labels are near 0: ``metrics.jsonl``
shows a mean soft label near 0.8 and an invalid-edit fraction near 0.2 (on a texture such as ``weave`` every
edit changes the image and the labels stay at 1)."""

from sla_jax.defaults import base_config


def get_config():
    config = base_config()
    config.data.demo = True
    config.data.category = "washer"
    config.data.image_size = 128
    config.transform.name = "cpf"
    config.localization.patch_size = 32
    config.localization.stride = 4
    config.localization.train_stride = 8
    config.model.head = (512, 128)
    config.train.batch_size = 64
    config.train.steps = 500
    config.train.checkpoint_every = 250
    config.train.log_every = 25
    return config
