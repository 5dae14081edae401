"""CPU localization demo: CPF-SLA on 32 px patches of the embedded demo data at 128 px, defect maps and
pixel AUROC / AUPRO, a few minutes on 2 cores."""

from sla_jax.defaults import base_config


def get_config():
    config = base_config()
    config.data.demo = True
    config.data.category = "weave"
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
