"""3-way CutPaste-Fusion (normal / CP / CPS) with soft labels. Needs --config.data.root and --config.data.category."""

from sla_jax.defaults import base_config


def get_config():
    config = base_config()
    config.transform.name = "cpf"
    return config
