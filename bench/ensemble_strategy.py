"""How one program should run an ensemble's members: batched (``vmap``), one after another (``lax.map``) or,
with several devices, split over them (``devices``), against one single run, on this machine's platform.

The real ensemble step (``sla_jax.training.ensemble.compile_ensemble_step``: edits, soft labels, update) of
``--members`` members (α grid, own seeds, shared data), each ``--batch`` images of ``--size`` px, head
``(512, 128)``; the median step time of each strategy after warm-up, interleaved over ``--rounds``, and the
images/s over all members beside the plain single-run step's (on all devices, its batch split over them).
``sla_jax.training.ensemble.PLATFORM_STRATEGY`` (one device) and ``MULTI_DEVICE_STRATEGY`` record the winner per
platform (``train.ensemble_strategy=auto``).

    python bench/ensemble_strategy.py [--members 4] [--size 64] [--batch 16] [--steps 8] [--rounds 3]
                                      [--cpu_devices 1] [--strategies vmap,map,devices]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402


def measure(*, members: int, size: int, batch: int, steps: int, rounds: int, only: tuple = ()) -> list[dict]:
    from functools import partial

    import jax
    import jax.numpy as jnp
    import numpy as np

    from sla_jax.training import ensemble, pretext
    from sla_jax.training.models import PretextNet
    from sla_jax.training.state import data_mesh, init_state

    model = PretextNet(num_classes=2, head=(512, 128))
    optimizer = common.sla_jax_optimizer(total_steps=1000)
    spec = pretext.StepSpec(batch_size=batch, transform="cps")
    mesh = data_mesh()
    grid = [
        ensemble.Member(seed=k, alpha=float(a), epsilon=0.02, mode="soft")
        for k, a in enumerate(([1, 2, 5, 10, 15, 20, 7, 3] * members)[:members])
    ]
    hparams = ensemble.stack_hparams(grid)
    init_keys, step_keys = (jnp.stack(k) for k in zip(*(ensemble.member_keys(m.seed) for m in grid)))
    data_key = ensemble.member_keys(0)[1]
    images = jax.device_put(np.random.default_rng(0).integers(0, 256, (64, size, size, 3), dtype=np.uint8))
    strategies = [
        s
        for s in ensemble.STRATEGIES
        if (s != "devices" or (mesh.size > 1 and members % mesh.size == 0)) and (not only or s in only)
    ]  # devices: the members split over several devices
    steps_of = {
        s: ensemble.compile_ensemble_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh, strategy=s)
        for s in strategies
    }
    single = pretext.compile_train_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh)
    init_single = jax.jit(partial(init_state, model=model, optimizer=optimizer, image_size=size))
    one_hparams = pretext.HParams.create()

    rows = []
    for round_ in range(rounds):
        for name in (*strategies, "single run"):
            if name == "single run":
                holder = {"s": init_single(jax.random.key(0))}

                def once():
                    holder["s"], out = single(holder["s"], images, step_keys[0], one_hparams)
                    out["loss"].block_until_ready()

                count = 1
            else:
                along = ensemble.member_axis_sharding(mesh, strategy=name)
                placed = (jax.device_put(step_keys, along), jax.device_put(hparams, along))
                states = ensemble.init_ensemble(init_keys, hparams, model=model, optimizer=optimizer, image_size=size)
                holder = {"s": jax.device_put(states, ensemble.member_shardings(mesh, strategy=name))}
                step = steps_of[name]

                def once(step=step, placed=placed):
                    holder["s"], out = step(holder["s"], images, placed[0], placed[1], data_key)
                    out["loss"].block_until_ready()

                count = members
            seconds, _ = common.median_seconds(once, repeats=steps, warmup=2)
            rows.append(
                {
                    "round": round_ + 1,
                    "strategy": name,
                    "members": count,
                    "seconds_per_step": seconds,
                    "images_per_s": count * batch / seconds,
                }
            )
            print(
                f"round {round_ + 1}: {name}: {seconds * 1000:.1f} ms/step, {rows[-1]['images_per_s']:.0f} images/s",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per strategy and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--strategies", default="", help="comma-separated subset of them (default: all that apply)")
    parser.add_argument(
        "--cpu_devices",
        type=int,
        default=1,
        help="on the CPU, split it into this many devices (XLA's host platform device count): with several, "
        "the members can also be split over the devices (strategy devices)",
    )
    parser.add_argument("--out", default=None, help="default: bench/ensemble_strategy[.Ndevices].json")
    args = parser.parse_args()
    if args.cpu_devices > 1:
        flag = f"--xla_force_host_platform_device_count={args.cpu_devices}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    name = "ensemble_strategy.json" if args.cpu_devices == 1 else f"ensemble_strategy.{args.cpu_devices}devices.json"
    args.out = args.out or os.path.join(common.REPO, "bench", name)
    only = tuple(s for s in args.strategies.split(",") if s)
    rows = measure(
        members=args.members, size=args.size, batch=args.batch, steps=args.steps, rounds=args.rounds, only=only
    )

    import jax
    import numpy as np

    summary = []
    for name in dict.fromkeys(r["strategy"] for r in rows):
        mine = [r for r in rows if r["strategy"] == name]
        summary.append(
            {
                "strategy": name,
                "members": mine[0]["members"],
                "seconds_per_step": float(np.median([r["seconds_per_step"] for r in mine])),
                "images_per_s": float(np.median([r["images_per_s"] for r in mine])),
            }
        )
    single = next(s for s in summary if s["strategy"] == "single run")
    for s in summary:
        s["vs_single_run"] = s["images_per_s"] / single["images_per_s"]
    print(
        common.table(
            summary,
            [
                ("strategy", "strategy", ""),
                ("members", "members", ""),
                ("seconds_per_step", "s/step (median)", ".3f"),
                ("images_per_s", "images/s, all members", ".0f"),
                ("vs_single_run", "× one run's images/s", ".2f"),
            ],
        )
    )
    fastest = min((s for s in summary if s["strategy"] != "single run"), key=lambda s: s["seconds_per_step"])
    print(f"fastest on {jax.default_backend()}: {fastest['strategy']}")
    common.write_json(
        args.out,
        {
            "rows": rows,
            "summary": summary,
            "platform": jax.default_backend(),
            "devices": jax.device_count(),
            "fastest": fastest["strategy"],
            "members": args.members,
            "size": args.size,
            "batch": args.batch,
            "machine": common.machine(),
            "command": " ".join(["python bench/ensemble_strategy.py", *sys.argv[1:]]),
        },
    )


if __name__ == "__main__":
    main()
