"""The paper's Table 3 at a CPU budget: CO, CP and CPS, each with hard labels ("w/o SLA") and with SLA,
3 seeds each (18 runs per category), 64 px, 300 steps of 32 images, head (512, 128).

``python -m launch.benchmark --sweep=configs/ablation_sweep.py --root=../shared/data --out=runs/ablation``
trains all 18 on every category under the root and writes the table with the relative improvement;
docs/results.md has the measured one. The paper trains 65,536 steps of 64 at 256 px (a GPU's budget).
"""


def get_sweep():
    return dict(
        config="cps.py",  # relative to this file's folder
        fixed={
            "data.image_size": 64,
            "train.batch_size": 32,
            "train.steps": 300,
            "model.head": (512, 128),
            "train.checkpoint_every": 100,
            "train.log_every": 50,
        },
        grid={"transform.name": ["co", "cp", "cps"], "labels.mode": ["hard", "soft"], "seed": [0, 1, 2]},
        executor=dict(timeout_min=60, cpus_per_task=2, mem_gb=8),
    )
