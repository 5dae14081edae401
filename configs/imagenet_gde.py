"""Baseline: pretrained ResNet-18 features + Gaussian density, no pretext training (train.steps=0).

Needs --config.model.init=FILE (converted by python -m sla_jax.convert_weights) and
--config.data.root / --config.data.category. Evaluation is the same as after training: L2-normalised
pooled features of the eval-mode backbone, Ledoit–Wolf Gaussian, squared Mahalanobis score.
"""

from ml_collections import config_dict

from sla_jax.defaults import base_config


def get_config():
    config = base_config()
    config.model.init = config_dict.placeholder(str)  # required: validation names the flag when unset
    config.train.steps = 0
    return config
