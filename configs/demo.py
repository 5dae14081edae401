"""CPU demo: Cutout with soft labels (CO-SLA) on the embedded synthetic dataset, 64 px, about 3 minutes on 2 cores.

Cutout rather than CutPaste-Scar: at 64 px the scaled scars are 0.5-4 px wide and CPS does not train to a
useful pretext accuracy within a CPU-minutes budget (measured 2026-11-28: 600 steps on the demo washer, then on a
textured belt, pretext accuracy
stayed near chance, image AUROC 0.81); Cutout learns in about 100 steps.
"""

from sla_jax.defaults import base_config


def get_config():
    config = base_config()
    config.data.demo = True
    config.data.category = "weave"
    config.data.image_size = 64
    config.transform.name = "co"
    config.model.head = (512, 128)
    config.train.batch_size = 32
    config.train.steps = 300
    config.train.checkpoint_every = 100
    config.train.log_every = 20
    return config
