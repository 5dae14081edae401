"""CPS-SLA, the paper's default experiment (Table 1). Needs --config.data.root and --config.data.category."""

from sla_jax.defaults import base_config


def get_config():
    return base_config()
