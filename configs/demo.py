"""CPU demo: CPS-SLA on the embedded synthetic dataset at 64 px, a few minutes on 2 cores."""

from sla_jax.defaults import base_config


def get_config():
    config = base_config()
    config.data.demo = True
    config.data.category = "weave"
    config.data.image_size = 64
    config.model.head = (512, 128)
    config.train.batch_size = 32
    config.train.steps = 400
    config.train.checkpoint_every = 100
    config.train.log_every = 20
    return config
