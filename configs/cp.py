"""CutPaste with soft labels (Table 3, CP row). Needs --config.data.root and --config.data.category."""

from sla_jax.defaults import base_config


def get_config():
    config = base_config()
    config.transform.name = "cp"
    return config
