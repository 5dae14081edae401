"""Example sweep: SLA steepness α × 2 seeds of the CPU demo (CO-SLA, 64 px) at 100 steps, 4 points.

``python -m launch.sweep --sweep=configs/demo_sweep.py --sweep_dir=runs/demo_sweep`` then
``python -m launch.collect --sweep_dir=runs/demo_sweep``; see launch/README.md.
"""


def get_sweep():
    return dict(
        config="demo.py",  # relative to this file's folder
        fixed={"train.steps": 100, "train.checkpoint_every": 50},
        grid={"labels.alpha": [1.0, 10.0], "seed": [0, 1]},
        executor=dict(timeout_min=60, cpus_per_task=2, mem_gb=8),  # submitit; add e.g. slurm_partition="gpu"
    )
