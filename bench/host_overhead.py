"""The training loop's host overhead per step, and what running several steps per dispatch saves.

Runs ``sla_jax.training.loop.fit`` (the real loop: dispatch, bounded in-flight window, window sums, bar, log records)
on the real jitted CPS step of a tiny problem (``--size`` px images, batch ``--batch``, head (8,)), where
the device's share of a step is small and the host's shows, once per ``steps_per_call`` variant
(``train.steps_per_call``: k steps in one compiled ``lax.scan``), interleaved over ``--rounds``. Reports
the wall time per step of each variant; the host overhead per step is what one step per call costs above
the variant with the most steps per call. First, the host's share alone: the paper network's real state
through a step that only counts, in ``loop.fit`` and in a bare loop. Compilation is outside the timed loop.

    python bench/host_overhead.py [--size 32] [--batch 4] [--steps 256] [--per_call 1,4,16,64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402


def measure(*, size: int, batch: int, steps: int, variants: list[int], rounds: int) -> list[dict]:
    from functools import partial

    import jax
    import numpy as np

    from sla_jax.training import loop, pretext
    from sla_jax.training.models import PretextNet
    from sla_jax.training.state import data_mesh, init_state

    model = PretextNet(num_classes=2, head=(8,))
    optimizer = common.sla_jax_optimizer(total_steps=steps)
    spec = pretext.StepSpec(batch_size=batch, transform="cps")
    mesh = data_mesh()
    init = jax.jit(partial(init_state, model=model, optimizer=optimizer, image_size=size))
    images = jax.device_put(np.random.default_rng(0).integers(0, 256, (16, size, size, 3), dtype=np.uint8))
    key, hparams = jax.random.key(1), pretext.HParams.create()
    single = pretext.compile_train_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh)
    programs = {
        k: pretext.compile_train_steps(
            model=model, optimizer=optimizer, spec=spec, mesh=mesh, steps=k, summed=loop.AVERAGED_METRICS
        )
        for k in variants
        if k > 1
    }
    for k, program in programs.items():  # compile outside the timed loop
        jax.block_until_ready(program(init(jax.random.key(0)), images, key, hparams))
    jax.block_until_ready(single(init(jax.random.key(0)), images, key, hparams))

    rows = []
    for round_ in range(rounds):
        for k in variants:
            state = init(jax.random.key(0))
            jax.block_until_ready(state)
            start = time.perf_counter()
            state = loop.fit(
                state,
                images,
                key,
                step_fn=lambda s, x, r: single(s, x, r, hparams),
                total_steps=steps,
                images_per_step=batch,
                manager=None,
                checkpoint_every=steps,
                log_every=steps,
                log=None,
                progress=False,
                steps_per_call=k,
                chunk_fn=lambda n: lambda s, x, r: programs[n](s, x, r, hparams),
            )
            jax.block_until_ready(state)
            seconds = time.perf_counter() - start
            rows.append({"round": round_ + 1, "steps_per_call": k, "ms_per_step": 1000 * seconds / steps})
            print(f"round {round_ + 1}: {k} step(s) per call: {rows[-1]['ms_per_step']:.3f} ms/step", flush=True)
    return rows


def host_only(*, steps: int, rounds: int, variants: list[int]) -> list[dict]:
    """The host's share alone: the real state of the paper's network (ResNet-18, the 9-layer head, SGD
    momentum) through a jitted step that only counts (``step + 1``, constant metrics; the state donated), so
    the device does next to nothing. ``loop.fit`` (dispatch plus the loop's bookkeeping) against a bare Python
    loop of the same calls (dispatch alone), and ``loop.fit`` with k > 1 counting steps per dispatch (a
    ``lax.scan``, as ``train.steps_per_call`` = k runs the real step): what is left of the host's share."""
    from functools import partial

    import jax
    import jax.numpy as jnp

    from sla_jax.training import loop
    from sla_jax.training.models import PretextNet
    from sla_jax.training.state import init_state

    model = PretextNet(num_classes=2, head=common.PAPER_HEAD)
    optimizer = common.sla_jax_optimizer(total_steps=steps)
    init = jax.jit(partial(init_state, model=model, optimizer=optimizer, image_size=64))
    metrics = {
        "loss": jnp.float32(1.0),
        "accuracy": jnp.float32(0.5),
        "mean_label": jnp.float32(0.9),
        "invalid_fraction": jnp.float32(0.0),
    }

    def counted(s, x, k):
        return s.replace(step=s.step + 1), metrics

    def counted_steps(s, x, k, *, n):
        s, stacked = jax.lax.scan(lambda c, _: counted(c, x, k), s, length=n)
        return s, {"last": metrics, "sum": {name: jnp.sum(v, axis=0) for name, v in stacked.items()}}

    count = jax.jit(counted, donate_argnums=(0,))
    chunks = {n: jax.jit(partial(counted_steps, n=n), donate_argnums=(0,)) for n in variants if n > 1}
    hows = [("loop.fit", 1), ("bare dispatch", 1), *((f"loop.fit, {n} steps per call", n) for n in chunks)]
    leaves = len(jax.tree_util.tree_leaves(init(jax.random.key(0))))
    rows = []
    for round_ in range(rounds):
        for how, per_call in hows:
            state = init(jax.random.key(0))
            state, _ = count(state, None, None)
            for program in chunks.values():  # compiled outside the timed loop
                state, _ = program(state, None, None)
            state = state.replace(step=jnp.int32(0))
            jax.block_until_ready(state)
            start = time.perf_counter()
            if how.startswith("loop.fit"):
                state = loop.fit(
                    state,
                    None,
                    None,
                    step_fn=count,
                    total_steps=steps,
                    images_per_step=1,
                    manager=None,
                    checkpoint_every=steps,
                    log_every=steps,
                    log=None,
                    progress=False,
                    steps_per_call=per_call,
                    chunk_fn=chunks.get,
                )
            else:
                for _ in range(steps):
                    state, out = count(state, None, None)
            jax.block_until_ready(state)
            rows.append(
                {
                    "round": round_ + 1,
                    "how": how,
                    "leaves": leaves,
                    "steps_per_call": per_call,
                    "ms_per_step": 1000 * (time.perf_counter() - start) / steps,
                }
            )
            print(f"round {round_ + 1}: host only, {how}: {rows[-1]['ms_per_step']:.3f} ms/step", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=256, help="steps per timed run (a multiple of every variant)")
    parser.add_argument("--per_call", default="1,4,16,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(common.REPO, "bench", "host_overhead.json"))
    args = parser.parse_args()
    variants = [int(k) for k in args.per_call.split(",")]
    if any(args.steps % k for k in variants):
        parser.error(f"--steps={args.steps} must be a multiple of every --per_call value")
    host = host_only(steps=args.steps, rounds=args.rounds, variants=variants)
    rows = measure(size=args.size, batch=args.batch, steps=args.steps, variants=variants, rounds=args.rounds)

    import numpy as np

    summary = []
    for k in variants:
        times = [r["ms_per_step"] for r in rows if r["steps_per_call"] == k]
        summary.append(
            {"steps_per_call": k, "ms_per_step": float(np.median(times)), "min": min(times), "max": max(times)}
        )
    best = min(s["ms_per_step"] for s in summary)
    for s in summary:
        s["above_best_ms"] = s["ms_per_step"] - best
    print(
        common.table(
            summary,
            [
                ("steps_per_call", "steps per call", ""),
                ("ms_per_step", "ms/step (median)", ".3f"),
                ("min", "min", ".3f"),
                ("max", "max", ".3f"),
                ("above_best_ms", "ms/step above the best", ".3f"),
            ],
        )
    )
    host_summary = [
        {
            "how": how,
            "leaves": host[0]["leaves"],
            "ms_per_step": float(np.median([r["ms_per_step"] for r in host if r["how"] == how])),
        }
        for how in dict.fromkeys(r["how"] for r in host)
    ]
    print(
        common.table(
            host_summary,
            [
                ("how", "host only (a step that only counts)", ""),
                ("leaves", "state arrays", ""),
                ("ms_per_step", "ms/step (median)", ".3f"),
            ],
        )
    )
    common.write_json(
        args.out,
        {
            "rows": rows,
            "summary": summary,
            "host_only": host,
            "host_summary": host_summary,
            "size": args.size,
            "batch": args.batch,
            "steps": args.steps,
            "machine": common.machine(),
            "command": " ".join(["python bench/host_overhead.py", *sys.argv[1:]]),
        },
    )


if __name__ == "__main__":
    main()
