"""Where a training step of a config spends its time: the whole jitted step against its parts.

At the config's image size and batch, on 64 device-resident random training images, each compiled on its
own: the whole step (``pretext.train_step``, as ``sla_jax.train`` runs it), the whole step with one
option changed (no whole-image jitter, Cutout for the edit), the data part alone
(draw sources, whole-image jitter, edit, labels: ``pretext_edit`` + ``label_targets``) and the network
update alone on that data part's batch (``apply_gradients``: forward, backward, optimizer). Median of ``--steps``
calls after one
warm-up, in one process; ``--rounds`` runs the list again in turn, so drift on a shared machine reaches
every variant alike.

    python bench/step_parts.py --config=configs/cps_cpu.py [--steps 6] [--rounds 2] [--out runs/step_parts.json]
        [--set data.image_size=64 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

VARIANTS = {
    "whole step": {},
    "whole step, no whole-image jitter": {"transform.global_jitter": 0.0},
    "whole step, Cutout for the edit": {"transform.name": "co"},
}


def build(config) -> dict:
    """name → a call that runs one step of that variant or part and waits for it."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sla_jax import experiment
    from sla_jax.training import pretext
    from sla_jax.training.models import normalize
    from sla_jax.training.state import init_state

    size = config.data.image_size
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (64, size, size, 3), dtype=np.uint8))
    key, hparams = jax.random.key(1), experiment.read(config).hparams
    calls = {}
    for name, changes in VARIANTS.items():
        c = config.copy_and_resolve_references()
        c.update_from_flattened_dict(changes)
        run = experiment.read(c)
        model, optimizer, spec = run.model, run.optimizer, run.step
        state = jax.jit(partial(init_state, model=model, optimizer=optimizer, image_size=size))(jax.random.key(0))
        step = jax.jit(partial(pretext.train_step, model=model, optimizer=optimizer, spec=spec))
        calls[name] = partial(lambda fn, s: jax.block_until_ready(fn(s, images, key, hparams)), step, state)
        if changes:
            continue

        def data_part(k, spec=spec):
            originals, edit = pretext.pretext_edit(k, images, spec=spec)
            return edit.images, pretext.label_targets(originals, edit, hparams, spec=spec)[0]

        data_fn = jax.jit(data_part)
        calls["data part: sources, jitter, edit, labels"] = partial(lambda fn: jax.block_until_ready(fn(key)), data_fn)
        inputs, targets = data_fn(key)
        update = jax.jit(
            lambda s, x, t, model=model, optimizer=optimizer: pretext.apply_gradients(
                s, normalize(x), lambda p: (t, None), model=model, optimizer=optimizer
            )[:2]
        )  # the state too: no dead code
        calls["network update alone"] = partial(
            lambda fn, s: jax.block_until_ready(fn(s, inputs, targets)), update, state
        )
    return calls


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cps_cpu.py")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="runs/step_parts.json")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config change, as a Python literal: --set data.image_size=32",
    )
    args = parser.parse_args()
    import numpy as np

    from launch.sweep import base_config, parse_set
    from sla_jax.common.runtime import source_commit

    config = base_config(args.config)
    config.update_from_flattened_dict(dict(parse_set(s) for s in args.set))
    calls = build(config)
    times = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            times[name] += common.median_seconds(call, repeats=args.steps)[1]
    whole = float(np.median(times["whole step"]))
    rows = [
        {"part": name, "ms": 1e3 * float(np.median(t)), "of_whole_step": float(np.median(t)) / whole, "times": t}
        for name, t in times.items()
    ]
    meta = {
        "config": args.config,
        "set": args.set,
        "size": config.data.image_size,
        "batch": config.train.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "machine": common.machine(),
        "commit": source_commit(),
        "command": " ".join(["python bench/step_parts.py", *sys.argv[1:]]),
    }
    common.write_json(args.out, {"meta": meta, "rows": rows})
    print(f"{args.config}: {config.data.image_size} px, batch {config.train.batch_size}, median ms per call")
    print(
        common.table(rows, [("part", "part", ""), ("ms", "ms", ".1f"), ("of_whole_step", "of the whole step", ".2f")])
    )


if __name__ == "__main__":
    main()
