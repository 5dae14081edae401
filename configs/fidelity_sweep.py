"""What each fidelity option does: configs/cps_cpu.py, and each option turned back to sla_jax's earlier choice
(or to the ports' where the recipe keeps sla_jax's), one at a time, 3 seeds, at 300 steps (a CPU budget).

``python -m launch.benchmark --sweep=configs/fidelity_sweep.py --root=../shared/data/magnetic_tile
--out=runs/fidelity`` trains the 18 runs and writes the table: about 4 h on 2 cores (300 steps at 2.4-2.8 s
each, the step time of the side-by-side runs, plus evaluation). Stopped and rerun, it skips the finished
runs, so it can be done a sitting at a time.

Measured 2026-12-03 (the command above, the first three points; docs/results.md): the recipe's seeds 0, 1 and 2
reached image AUROC 0.612, 0.534 and 0.615, pretext accuracy 0.63, 0.55 and 0.65 at step 300;
``scar_size=relative`` 0.541, 0.547 and 0.539, accuracy 0.50 on every seed; ``global_jitter=0.0`` 0.569,
0.553 and 0.563, accuracy 0.54, 0.58 and 0.56. At this budget Magnetic-tile barely
learns, so options with smaller effects than the scar rule's may be within seed noise; at 750 steps
(docs/results.md) the recipe reaches 0.75-0.78.
"""


def get_sweep():
    return dict(
        config="cps_cpu.py",  # relative to this file's folder
        fixed={"train.steps": 300, "train.checkpoint_every": 100, "train.keep_checkpoints": 3},
        points=[{}, {"transform.scar_size": "relative"}, {"transform.global_jitter": 0.0},
                {"transform.jitter_order": "fixed"}, {"data.resize": "bicubic"},
                {"train.weight_decay_on": "all"}],
        grid={"seed": [0, 1, 2]},
        executor=dict(timeout_min=60, cpus_per_task=2, mem_gb=8),
    )
