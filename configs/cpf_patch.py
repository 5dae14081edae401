"""CPF-SLA on 32×32 patches (paper Table 2): 3-way CutPaste-Fusion with soft labels, defect maps by
patch GDE (stride 4) and receptive-field upsampling. Needs --config.data.root and --config.data.category."""

from sla_jax.defaults import base_config


def get_config():
    config = base_config()
    config.transform.name = "cpf"
    config.localization.patch_size = 32
    config.localization.stride = 4
    config.localization.train_stride = 4
    return config
