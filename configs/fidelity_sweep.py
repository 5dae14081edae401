"""What each fidelity option does: configs/cps_cpu.py, and each option turned back to sla_jax's earlier choice
(or to the ports' where the recipe keeps sla_jax's), one at a time, 3 seeds, at 300 steps (a CPU budget).

``python -m launch.benchmark --sweep=configs/fidelity_sweep.py --root=../shared/data/magnetic_tile
--out=runs/fidelity`` trains the 18 runs and writes the table: 188 min on 2 cores (300 steps at 2.0-2.8 s
each plus evaluation). Stopped and rerun, it skips the finished runs, so it can be done a sitting at a time.

Measured 2026-12-03 (docs/results.md, "The fidelity options one at a time"): mean image AUROC over seeds
0-2 of the recipe 0.587 (0.612 / 0.534 / 0.615); ``scar_size=relative`` 0.542, pretext accuracy at chance
(0.50) on every seed, the one option that changes learning; ``global_jitter=0.0`` 0.562;
``jitter_order=fixed`` 0.567; ``resize=bicubic`` 0.609; ``weight_decay_on=all`` 0.567. Apart from the scar
rule, every option is within the recipe's seed spread (Welch's p 0.44-0.58). At this budget Magnetic-tile
barely learns; at 750 steps (docs/results.md) the recipe reaches 0.75-0.78, and ``resize=bicubic`` 0.771
(three seeds, 2026-12-04) against the recipe's 0.766: within noise there too.
"""


def get_sweep():
    return dict(
        config="cps_cpu.py",  # relative to this file's folder
        fixed={"train.steps": 300, "train.checkpoint_every": 100, "train.keep_checkpoints": 3},
        points=[
            {},
            {"transform.scar_size": "relative"},
            {"transform.global_jitter": 0.0},
            {"transform.jitter_order": "fixed"},
            {"data.resize": "bicubic"},
            {"train.weight_decay_on": "all"},
        ],
        grid={"seed": [0, 1, 2]},
        executor=dict(timeout_min=60, cpus_per_task=2, mem_gb=8),
    )
