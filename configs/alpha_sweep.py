"""The paper's Table 4 α ablation as one CPU job: 6 α × 2 seeds with soft labels, plus hard labels × 2 seeds.

All 14 members train in one program (``sla_jax.training.ensemble``: one jitted, vmapped step) on the embedded demo
data and share its source images; each member draws its own edits and initialisation from its seed.
Scale: 60 steps of batch 8 per member (the single-model demo: 300 of 32), to fit CPU minutes.
Writes results.json, alpha_sweep.{json,md,png} into the workdir. The paper ran CPS at 256 px for 65,536
steps; this demo runs Cutout (CO) at 64 px for a CPU-minutes budget (see configs/demo.py for why CO).
"""

import ml_collections

from sla_jax.defaults import base_config


def get_config():
    config = base_config()
    config.data.demo = True
    config.data.category = "weave"
    config.data.image_size = 64
    config.transform.name = "co"
    config.model.head = (512, 128)
    # Under vmap XLA:CPU runs the 16×16 convolutions as grouped convolutions, slower than im2col matmuls.
    config.model.conv_impl = "im2col"
    config.train.batch_size = 8
    config.train.steps = 60
    config.train.checkpoint_every = 30
    config.train.log_every = 10

    config.ensemble = ml_collections.ConfigDict()
    config.ensemble.alphas = (1.0, 2.0, 5.0, 7.0, 10.0, 15.0)  # Table 4
    config.ensemble.epsilons = ()  # () = (labels.epsilon,)
    config.ensemble.seeds = (0, 1)  # every grid point once per seed; seed 0 is also the data seed
    config.ensemble.hard = True  # plus one hard-label ("w/o SLA") member per seed
    return config
